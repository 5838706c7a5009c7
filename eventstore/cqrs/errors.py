"""The CQRS library's errors: types a caller can catch, each with the facts to act on.

Store errors (`WrongExpectedVersion`, `StreamDeleted`, ...) and network errors
(`node.errors.NetworkError`) are not wrapped: they reach the caller as themselves.
"""

from __future__ import annotations

from uuid import UUID


class CQRSError(Exception):
    """Root of every error this library raises on purpose."""


class DomainError(CQRSError):
    """A command broke a rule of its aggregate; nothing was written.

    Aggregates raise subclasses of it (the NoteBook's `InvalidNote`), so a caller can tell
    "the domain said no" from "the network failed"."""


class AggregateNotFound(CQRSError):
    """`Repository.get` found no events in the aggregate's stream."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"no aggregate at {stream!r}")


class UnknownEvent(CQRSError):
    """An aggregate met an event type it has no `@applies` method for (a stream written by
    other code, or an event class renamed without keeping its `type_name`)."""

    def __init__(self, aggregate: str, event_type: str) -> None:
        self.aggregate = aggregate
        self.event_type = event_type
        super().__init__(f"{aggregate} has no handler for event type {event_type!r}")


class ConcurrencyConflict(CQRSError):
    """A command lost the race for its stream on every attempt (each attempt reloaded the
    aggregate and ran the command again); nothing of it was written."""

    def __init__(self, command_id: UUID, stream: str, attempts: int) -> None:
        self.command_id = command_id
        self.stream = stream
        self.attempts = attempts
        super().__init__(f"command {command_id} on {stream!r}: lost {attempts} races in a row")


class SavedStateConflict(CQRSError):
    """A projection or process manager kept losing the race to save its state: another
    agent is running it at the same time and keeps winning."""

    def __init__(self, stream: str, attempts: int) -> None:
        self.stream = stream
        self.attempts = attempts
        super().__init__(f"{stream!r}: another agent saved first {attempts} times in a row")
