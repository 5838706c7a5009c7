"""The repository: aggregates loaded from their streams and saved back with an expected
version.

    repo = Repository(db, snapshots=Snapshots(db, every=50))
    notebook = await repo.load(NoteBook, "mine")   # a new, empty one if the stream is empty
    notebook.add_note("hello")
    await repo.save(notebook)                      # WrongExpectedVersion if someone was faster

Loading starts from the latest snapshot and replays the events after it. Saving appends
the pending events expecting the version the aggregate was loaded at, so two writers that
loaded the same version cannot both save: the slower one gets WrongExpectedVersion and
nothing of it is written.
"""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID, uuid4, uuid5

from eventstore.database import Database
from eventstore.errors import StreamNotFound
from eventstore.events import AppendResult, EventData

from .aggregate import Aggregate
from .errors import AggregateNotFound
from .snapshot import Snapshots

A = TypeVar("A", bound=Aggregate)


def event_id(command_id: UUID, index: int) -> UUID:
    """The id of the index-th event a command causes. Derived, not random: an append
    retried after a timeout carries the same ids, which the store recognises."""
    return uuid5(command_id, str(index))


class Repository:
    def __init__(self, db: Database, *, snapshots: Snapshots | None = None) -> None:
        self.db = db
        self.snapshots = snapshots

    async def load(self, cls: type[A], id: str) -> A:
        """The aggregate `cls` with this id, as its stream has it (version NO_STREAM and
        initial state if the stream has no events)."""
        aggregate = await self.snapshots.load(cls, id) if self.snapshots is not None else None
        if aggregate is None:
            aggregate = cls(id)
        try:
            async for event in self.db.iter_stream(aggregate.stream, aggregate.version + 1):
                aggregate.replay(event)
        except StreamNotFound:
            pass  # no events yet: a new aggregate
        return aggregate

    async def get(self, cls: type[A], id: str) -> A:
        """Like `load`, but AggregateNotFound if the aggregate has no events."""
        aggregate = await self.load(cls, id)
        if not aggregate.exists:
            raise AggregateNotFound(aggregate.stream)
        return aggregate

    async def save(
        self,
        aggregate: Aggregate,
        *,
        command_id: UUID | None = None,
        correlation_id: UUID | None = None,
    ) -> AppendResult | None:
        """Append the aggregate's pending events (None if there are none).

        Each event carries the command that caused it (causation id) and the conversation
        it belongs to (correlation id; the command's own id when it starts one)."""
        pending = aggregate.pending_events
        if not pending:
            return None
        correlation = correlation_id or command_id
        events = [
            EventData(
                e.type_name,
                e.to_data(),
                id=event_id(command_id, i) if command_id is not None else uuid4(),
                causation_id=command_id,
                correlation_id=correlation,
            )
            for i, e in enumerate(pending)
        ]
        before = aggregate.committed_version
        result = await self.db.append(aggregate.stream, events, expected_version=before)
        aggregate.mark_saved(command_id)
        if self.snapshots is not None and self.snapshots.due(before, aggregate.version):
            await self.snapshots.take(aggregate)
        return result
