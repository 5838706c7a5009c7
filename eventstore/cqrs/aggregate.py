"""Aggregates: consistency boundaries whose state is the fold of their own stream.

    class NoteBook(Aggregate):
        def add_note(self, text: str) -> None:
            self.raise_event(NoteAdded(text))       # checks first, then raise

        @applies(NoteAdded)
        def _added(self, event: NoteAdded) -> None:  # state changes only here
            self.notes.append(event.note)

An aggregate lives in the stream `category@id` (the category is the class name unless set,
as SAFE.CQRS named streams). Its version is that of its last event, NO_STREAM (-1) before
the first, so "save" is an append expecting the version the aggregate was loaded at.

An aggregate also remembers the ids of the commands whose events it holds (each event's
causation id). That is what lets a command sent twice - a client retry after a timeout, a
process manager restarted mid-step - take effect once: the second time it is recognised.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventstore.events import NO_STREAM, RecordedEvent, check_stream_name

from .errors import UnknownEvent
from .event import DomainEvent

E = TypeVar("E", bound=DomainEvent)
F = TypeVar("F", bound=Callable[..., Any])

JSON = Any


def applies(event_type: type[DomainEvent]) -> Callable[[F], F]:
    """Mark an aggregate method as the one that applies `event_type` to its state."""

    def mark(method: F) -> F:
        method.__applies__ = event_type  # type: ignore[attr-defined]
        return method

    return mark


class Aggregate:
    """Base of aggregates. Subclasses raise events from their command methods and change
    state only in `@applies` methods, so replaying the stream rebuilds the same state."""

    category: ClassVar[str] = "Aggregate"
    # Bump when the shape of `snapshot_state` changes: older snapshots are then ignored and
    # the aggregate is rebuilt from its events.
    snapshot_version: ClassVar[int] = 1
    _appliers: ClassVar[dict[type[DomainEvent], str]] = {}
    _event_types: ClassVar[dict[str, type[DomainEvent]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "category" not in cls.__dict__:
            cls.category = cls.__name__
        appliers: dict[type[DomainEvent], str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                event_type = getattr(member, "__applies__", None)
                if inspect.isfunction(member) and event_type is not None:
                    appliers[event_type] = name
        cls._appliers = appliers
        cls._event_types = {t.type_name: t for t in appliers}

    def __init__(self, id: str) -> None:
        if not isinstance(id, str) or not id:
            raise ValueError("an aggregate id is a non-empty string")
        self.id = id
        self.version = NO_STREAM
        self._pending: list[DomainEvent] = []
        self._commands: set[str] = set()
        check_stream_name(self.stream)

    # ------------------------------------------------------------------ identity

    @classmethod
    def stream_for(cls, id: str) -> str:
        return f"{cls.category}@{id}"

    @property
    def stream(self) -> str:
        return self.stream_for(self.id)

    @property
    def exists(self) -> bool:
        """True once the aggregate has an event (recorded or pending)."""
        return self.version != NO_STREAM

    # ------------------------------------------------------------------ events

    def raise_event(self, event: DomainEvent) -> None:
        """Apply `event` and queue it to be saved."""
        self._apply(event)
        self.version += 1
        self._pending.append(event)

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        return tuple(self._pending)

    @property
    def committed_version(self) -> int:
        """The version of the last saved event: what a save expects the stream to be at."""
        return self.version - len(self._pending)

    def replay(self, event: RecordedEvent) -> None:
        """Apply an event read back from the stream."""
        event_type = self._event_types.get(event.type)
        if event_type is None:
            raise UnknownEvent(type(self).__name__, event.type)
        self._apply(event_type.from_data(event.data))
        self.version = event.version
        if event.causation_id is not None:
            self._commands.add(str(event.causation_id))

    def mark_saved(self, command_id: UUID | None) -> None:
        """The pending events are in the stream now."""
        self._pending.clear()
        if command_id is not None:
            self._commands.add(str(command_id))

    def has_handled(self, command_id: UUID) -> bool:
        """True if events caused by this command are in the aggregate's history."""
        return str(command_id) in self._commands

    def _apply(self, event: DomainEvent) -> None:
        name = self._appliers.get(type(event))
        if name is None:
            raise UnknownEvent(type(self).__name__, event.type_name)
        getattr(self, name)(event)

    # ------------------------------------------------------------------ snapshots

    def snapshot_state(self) -> dict[str, JSON]:
        """The state to keep in a snapshot: by default every public attribute but id and
        version. Override (with `restore_state`) when the state is not plain JSON."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("id", "version")}

    def restore_state(self, state: dict[str, JSON]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def to_snapshot(self) -> dict[str, JSON]:
        if self._pending:
            raise RuntimeError("snapshot an aggregate only when all its events are saved")
        return {
            "schema": self.snapshot_version,
            "version": self.version,
            "state": self.snapshot_state(),
            "commands": sorted(self._commands),
        }

    @classmethod
    def from_snapshot(cls, id: str, snapshot: dict[str, JSON]) -> Aggregate | None:
        """The aggregate as a snapshot recorded it; None if the snapshot is of another
        schema (the caller then replays the stream from the start)."""
        if snapshot.get("schema") != cls.snapshot_version:
            return None
        aggregate = cls(id)
        aggregate.restore_state(snapshot["state"])
        aggregate.version = int(snapshot["version"])
        aggregate._commands = set(snapshot.get("commands", ()))
        return aggregate
