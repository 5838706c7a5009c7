"""CQRS and DDD on the event store: aggregates and commands, snapshots, projections saved
back to the network, and process managers (docs/cqrs.md).

    repository = Repository(db, snapshots=Snapshots(db, every=50))
    handler = CommandHandler(repository)
    result = await handler.execute(AddNote("mine", "hello"))

    agent = ProjectionAgent(db, [Projection("notebooks", fold, categories=["NoteBook"])])
    await agent.catch_up()
    print((await read_projection(db, "notebooks")).state)
"""

from .aggregate import Aggregate, applies
from .command import Command, CommandHandler, CommandResult
from .errors import (
    AggregateNotFound,
    ConcurrencyConflict,
    CQRSError,
    DomainError,
    SavedStateConflict,
    UnknownEvent,
)
from .event import DomainEvent
from .process import Outcome, ProcessManager, ProcessRunner, Reaction
from .projection import (
    Projection,
    ProjectionAgent,
    ProjectionState,
    projection_history,
    read_projection,
)
from .repository import Repository
from .snapshot import Snapshot, Snapshots
from .streams import is_internal, process_stream, projection_stream, snapshot_stream

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "CQRSError",
    "Command",
    "CommandHandler",
    "CommandResult",
    "ConcurrencyConflict",
    "DomainError",
    "DomainEvent",
    "Outcome",
    "ProcessManager",
    "ProcessRunner",
    "Projection",
    "ProjectionAgent",
    "ProjectionState",
    "Reaction",
    "Repository",
    "SavedStateConflict",
    "Snapshot",
    "Snapshots",
    "UnknownEvent",
    "applies",
    "is_internal",
    "process_stream",
    "projection_history",
    "projection_stream",
    "read_projection",
    "snapshot_stream",
]
