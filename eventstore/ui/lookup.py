"""Finding events by id and by correlation id, for the event page's links.

The store indexes streams by name, not events by id (SAFE.EventStore had no such index
either). The UI builds one itself from the database log, incrementally: each lookup first
reads the log from where the previous one stopped, so the first lookup in a big database
pays for the whole log and later ones only for what is new. It lives in memory, one per
database, and is lost when the UI stops.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from uuid import UUID

import trio

from ..database import Database
from ..events import RecordedEvent

PAGE = 1000  # log events read per request while catching up


@dataclass(frozen=True)
class Where:
    """An event's place: its stream and version (and log position, for ordering)."""

    stream: str
    version: int
    position: int
    type: str


@dataclass
class EventIndex:
    """Event ids and correlation ids of one database's log, as far as it has been read."""

    db: Database
    next_position: int = 0
    by_id: dict[UUID, Where] = field(default_factory=dict)
    by_correlation: defaultdict[UUID, list[Where]] = field(default_factory=lambda: defaultdict(list))
    lock: trio.Lock = field(default_factory=trio.Lock)

    async def refresh(self) -> None:
        async with self.lock:
            while True:
                events = await self.db.read_all(self.next_position, PAGE)
                for event in events:
                    self._add(event)
                if len(events) < PAGE:
                    return

    def _add(self, event: RecordedEvent) -> None:
        where = Where(event.stream, event.version, event.position, event.type)
        self.by_id[event.id] = where
        if event.correlation_id is not None:
            self.by_correlation[event.correlation_id].append(where)
        self.next_position = event.position + 1

    async def find(self, event_id: UUID) -> Where | None:
        await self.refresh()
        return self.by_id.get(event_id)

    async def correlated(self, correlation_id: UUID) -> list[Where]:
        """Every event carrying `correlation_id`, in log order."""
        await self.refresh()
        return list(self.by_correlation.get(correlation_id, []))


class Lookups:
    """One `EventIndex` per database, made on first use."""

    def __init__(self) -> None:
        self._indexes: dict[str, EventIndex] = {}

    def of(self, db: Database) -> EventIndex:
        index = self._indexes.get(db.name)
        if index is None or index.db is not db:
            index = self._indexes[db.name] = EventIndex(db)
        return index
