"""Snapshots: an aggregate's state at a version, kept in the network next to its stream.

The snapshots of `NoteBook@mine` are the events of `NoteBook-snapshot@mine`, one per
snapshot; loading reads the last one and then only the events after its version. A
snapshot is taken when a save carries the aggregate across a multiple of `every` events.

A snapshot is only ever a shortcut. It is derived from saved events, so any snapshot is
correct for its version, whoever wrote it and in whatever order; losing one (a failed
write) costs a longer replay, never a wrong state. That is why taking one never fails a
save, and why its stream needs no expected version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from eventstore.database import Database
from eventstore.errors import EventStoreError, StreamNotFound
from eventstore.events import END, EventData
from node import errors as E

from .aggregate import Aggregate
from .streams import snapshot_stream

A = TypeVar("A", bound=Aggregate)
SNAPSHOT_EVENT = "Snapshot"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    stream: str  # the aggregate's stream
    version: int
    data: dict[str, Any]  # what `Aggregate.to_snapshot` made


class Snapshots:
    """Take and find snapshots of aggregates in `db`, one every `every` events."""

    def __init__(self, db: Database, *, every: int = 50) -> None:
        if every < 1:
            raise ValueError("snapshots are taken every 1 or more events")
        self.db = db
        self.every = every

    def due(self, before: int, after: int) -> bool:
        """Did a save from version `before` to `after` cross a multiple of `every` events?
        (Versions count from 0, so version v means v + 1 events.)"""
        return (after + 1) // self.every > (before + 1) // self.every

    async def take(self, aggregate: Aggregate) -> bool:
        """Record a snapshot of `aggregate`; False (and a log line) if it could not be
        written - the aggregate loads from its events instead."""
        event = EventData(SNAPSHOT_EVENT, aggregate.to_snapshot())
        try:
            await self.db.append(snapshot_stream(aggregate.stream), [event])
        except (EventStoreError, E.NetworkError) as exc:
            log.warning("snapshot of %s at version %d not taken: %s", aggregate.stream, aggregate.version, exc)
            return False
        return True

    async def latest(self, stream: str) -> Snapshot | None:
        """The last snapshot taken of `stream`, if any."""
        try:
            found = await self.db.read_stream(snapshot_stream(stream), END, backward=True, count=1)
        except StreamNotFound:
            return None
        if not found or not isinstance(found[0].data, dict):
            return None
        data = found[0].data
        return Snapshot(stream, int(data.get("version", -1)), data)

    async def load(self, cls: type[A], id: str) -> A | None:
        """The aggregate as its last usable snapshot has it (None if there is none)."""
        snapshot = await self.latest(cls.stream_for(id))
        if snapshot is None:
            return None
        aggregate = cls.from_snapshot(id, snapshot.data)
        return aggregate if isinstance(aggregate, cls) else None
