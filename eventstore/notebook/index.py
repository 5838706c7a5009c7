"""The notebook index: a projection of every NoteBook stream, saved back to the network
as `projection@notebooks`. It is what `safenet notebook list` reads, on any machine.

    {"notebooks": {"groceries": {"notes": 3, "last": "milk", "created": "2018-01-27T..."}}}
"""

from __future__ import annotations

from typing import Any

from eventstore.cqrs import Projection
from eventstore.cqrs.streams import split_stream
from eventstore.events import RecordedEvent

from .domain import NoteAdded, NoteBook, NoteBookCreated

INDEX_NAME = "notebooks"


def fold(state: dict[str, Any], event: RecordedEvent) -> dict[str, Any]:
    notebooks = state.setdefault("notebooks", {})
    _category, name = split_stream(event.stream)
    if event.type == NoteBookCreated.type_name:
        notebooks[name] = {"notes": 0, "last": None, "created": event.timestamp.isoformat()}
    elif event.type == NoteAdded.type_name and name in notebooks and isinstance(event.data, dict):
        entry = notebooks[name]
        entry["notes"] += 1
        entry["last"] = event.data.get("note")
    return state


NOTEBOOK_INDEX = Projection(INDEX_NAME, fold, initial={"notebooks": {}}, categories=[NoteBook.category])
