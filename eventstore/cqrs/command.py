"""Commands: requests to change one aggregate, and the handler that runs them safely.

    @dataclass(frozen=True)
    class AddNote(Command):
        aggregate = NoteBook                   # the target's type ...
        notebook: str
        text: str

        def target(self) -> str:               # ... and its id: together, the stream
            return self.notebook

        def handle(self, notebook: NoteBook) -> None:
            notebook.add_note(self.text)

    result = await CommandHandler(repository).execute(AddNote("mine", "hello"))

The command type declares where it goes (`aggregate` + `target()`), so there is no
central switch to keep in step with the commands (SAFE.CQRS had one).

Running a command: load the target, let the command act on it, save its new events
expecting the version loaded. If another writer got there first (WrongExpectedVersion),
reload and run the command again on the newer state - a bounded number of times. If the
network failed (the outcome of the save is unknown), reload too: the aggregate knows the
ids of the commands whose events it holds, so a command that did land is recognised and
not applied twice. Every event carries the command's id (causation) and its correlation id.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

import trio

from eventstore.errors import WrongExpectedVersion
from node import errors as E

from .aggregate import Aggregate
from .errors import ConcurrencyConflict
from .repository import Repository

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of commands: frozen dataclasses. Subclasses set `aggregate` and implement
    `target()` and `handle()`.

    `id` identifies the command across retries: send it again with the same id and it
    takes effect once. `correlation_id` ties together everything one request caused (it
    defaults to the command's own id); `causation_id` is what caused the command, e.g. the
    event a process manager reacted to. `expected_version`, if set, is the version the
    sender saw: the command is then refused (WrongExpectedVersion) rather than retried
    when the aggregate has moved on.
    """

    aggregate: ClassVar[type[Aggregate]]
    type_name: ClassVar[str] = "Command"

    id: UUID = field(default_factory=uuid4)
    correlation_id: UUID | None = None
    causation_id: UUID | None = None
    expected_version: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__

    def target(self) -> str:
        """The id of the aggregate this command changes."""
        raise NotImplementedError

    def handle(self, aggregate: Any) -> None:
        """Act on the loaded aggregate: call its methods, which raise events or DomainError."""
        raise NotImplementedError

    @property
    def stream(self) -> str:
        return self.aggregate.stream_for(self.target())

    @property
    def correlation(self) -> UUID:
        return self.correlation_id or self.id

    # For process managers, which keep the commands they are about to send in their stream.
    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = str(value) if isinstance(value, UUID) else value
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("id", "correlation_id", "causation_id"):
            if values.get(key) is not None:
                values[key] = UUID(str(values[key]))
        return cls(**values)


@dataclass(frozen=True)
class CommandResult:
    """What running a command did.

    `changed` is False when the command was valid but changed nothing (a duplicate note);
    `duplicate` is True when this very command (same id) had already taken effect.
    `position` is the log position of its last event (None if it wrote none): a reader
    that waits for a projection to pass it sees the command's effect.
    """

    command_id: UUID
    stream: str
    version: int
    changed: bool
    duplicate: bool = False
    attempts: int = 1
    position: int | None = None


class CommandHandler:
    """Runs commands against aggregates loaded from `repository`."""

    def __init__(self, repository: Repository, *, max_attempts: int = DEFAULT_ATTEMPTS,
                 retry_delay: float = 0.05) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts is at least 1")
        self.repository = repository
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay

    async def execute(self, command: Command) -> CommandResult:
        """Run `command` (see the module docstring). Raises the aggregate's DomainError,
        WrongExpectedVersion when `command.expected_version` is stale, ConcurrencyConflict
        after `max_attempts` lost races, or the last NetworkError after as many failures."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._attempt(command, attempt)
            except WrongExpectedVersion:
                if command.expected_version is not None:
                    raise  # the sender asked for that version: say it moved on
                if attempt == self.max_attempts:
                    raise ConcurrencyConflict(command.id, command.stream, attempt) from None
                log.debug("command %s lost the race for %s; reloading", command.id, command.stream)
            except E.NetworkError:
                if attempt == self.max_attempts:
                    raise
                # A failed save may or may not have landed; the reload will tell.
                log.debug("command %s: network failure on %s; reloading", command.id, command.stream)
                await trio.sleep(self.retry_delay * attempt)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    async def _attempt(self, command: Command, attempt: int) -> CommandResult:
        aggregate = await self.repository.load(command.aggregate, command.target())
        if aggregate.has_handled(command.id):
            return CommandResult(command.id, aggregate.stream, aggregate.version, False, True, attempt)
        if command.expected_version is not None and command.expected_version != aggregate.version:
            raise WrongExpectedVersion(aggregate.stream, command.expected_version, aggregate.version)
        command.handle(aggregate)
        result = await self.repository.save(aggregate, command_id=command.id, correlation_id=command.correlation)
        if result is None:
            return CommandResult(command.id, aggregate.stream, aggregate.version, False, False, attempt)
        return CommandResult(
            command.id, aggregate.stream, aggregate.version, True, False, attempt, result.log_position
        )
