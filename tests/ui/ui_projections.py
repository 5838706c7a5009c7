"""A projection the browser tests hand to `safenet ui --projections` (so it can rebuild it)
and run as the app's agent would."""

from __future__ import annotations

from typing import Any

from eventstore.api import RecordedEvent
from eventstore.cqrs import Projection


def count_titles(state: dict[str, Any], event: RecordedEvent) -> dict[str, Any]:
    data = event.data if isinstance(event.data, dict) else {}
    state.setdefault("titles", []).append(data.get("title"))
    return state


TITLES = Projection("titles", count_titles, initial={"titles": []}, categories=["book"])
SPEC = "tests.ui.ui_projections:TITLES"
