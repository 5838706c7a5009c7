"""Apps written with the `eventsourcing` library, under chaos (filled in below)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EsChaosApp:
    name: str
    application: Any = None
    commands: Any = None
    invariants: list[Any] = field(default_factory=list)
