"""What a user hands `safenet chaos run app`: the description of an event-sourced app.

    # mybank/chaos.py
    def app() -> ChaosApp:
        return ChaosApp(
            "bank",
            commands=commands,                 # commands(rng) -> an iterable of Commands
            setup=[Open("a", 100), ...],       # run once, in order, before the faults start
            projections=[BALANCES],            # eventstore.cqrs Projections
            managers=[TRANSFERS],              # eventstore.cqrs ProcessManagers
            aggregates=[Account, Transfer],    # what `FinalState.aggregates` can fold
            invariants=[money_is_conserved],   # invariant(final) -> None, or what went wrong
        )

    safenet chaos run app --app mybank.chaos:app --seeds 1..20

An invariant is a function of a `FinalState` (the final event log, the projections' saved
states, the process managers' saved states). It passes by returning None (or True, or an
empty list); it fails by returning a message (or a list of them, or False) or by raising
AssertionError. Invariants should hold on every *prefix* of the log too (count money in
flight, say): the runner evaluates them on prefixes to find the shortest slice of history
that breaks them.

An app written with the `eventsourcing` library instead is described by `EsChaosApp`
(simulations.app_es): its commands are functions of the Application.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from eventstore.cqrs import Aggregate, Command, CommandHandler, ProcessManager, Projection, Repository
from eventstore.cqrs.errors import UnknownEvent
from eventstore.events import RecordedEvent, category_of

A = TypeVar("A", bound=Aggregate)

CommandSource = Callable[[random.Random], Iterable[Any]]
Invariant = Callable[["FinalState"], Any]


@dataclass
class ChaosApp:
    """An app built with this project's CQRS library (eventstore.cqrs), for the app runner.

    `handler` makes the command handler the runner sends every command through (clients'
    and process managers'); the default is the library's, which makes a retried command
    take effect once. `clients` command clients run at once, each pulling the next command
    from the one generator."""

    name: str
    commands: CommandSource | None = None
    setup: Sequence[Command] = ()
    projections: Sequence[Projection] = ()
    managers: Sequence[ProcessManager] = ()
    aggregates: Sequence[type[Aggregate]] = ()
    invariants: Sequence[Invariant] = ()
    handler: Callable[[Repository], CommandHandler] = CommandHandler
    clients: int = 3
    database: str = "app"


@dataclass
class FinalState:
    """What an invariant sees: the app's domain events in log order, and the saved states
    of its projections and process managers (as the network holds them at the end)."""

    events: list[RecordedEvent]
    projections: dict[str, Any] = field(default_factory=dict)  # name -> saved state (None: never saved)
    managers: dict[str, Any] = field(default_factory=dict)  # name -> saved state
    aggregate_types: Sequence[type[Aggregate]] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # for apps of other libraries

    def prefix(self, count: int) -> FinalState:
        """The state as the first `count` events make it (projections, managers and
        what other libraries read at the end left out)."""
        return FinalState(self.events[:count], {}, {}, self.aggregate_types, {})

    def stream(self, name: str) -> list[RecordedEvent]:
        return [e for e in self.events if e.stream == name]

    def category(self, name: str) -> list[RecordedEvent]:
        return [e for e in self.events if category_of(e.stream) == name]

    def aggregates(self, cls: type[A]) -> dict[str, A]:
        """Every aggregate of type `cls`, folded from its events."""
        out: dict[str, A] = {}
        prefix = cls.category + "@"
        for event in self.events:
            if event.stream.startswith(prefix):
                ident = event.stream[len(prefix):]
                aggregate = out.get(ident)
                if aggregate is None:
                    aggregate = out[ident] = cls(ident)
                try:
                    aggregate.replay(event)
                except UnknownEvent:
                    continue
        return out

    def caused_by(self, command_id: UUID) -> list[RecordedEvent]:
        return [e for e in self.events if e.causation_id == command_id]


def violations(invariant: Invariant, final: FinalState) -> list[str]:
    """What `invariant` says is wrong with `final` ([] if it holds)."""
    try:
        verdict = invariant(copy.copy(final))
    except AssertionError as exc:
        return [str(exc) or "assertion failed"]
    if verdict is None or verdict is True:
        return []
    if verdict is False:
        return ["returned False"]
    if isinstance(verdict, str):
        return [verdict]
    return [str(v) for v in verdict]


def describe(fn: Callable[..., Any]) -> str:
    """`name`, plus the first line of its docstring."""
    doc = inspect.getdoc(fn)
    name = getattr(fn, "__name__", repr(fn))
    return f"{name} ({' '.join(doc.split(chr(10) * 2)[0].split())})" if doc else name


class SpecError(Exception):
    """A --app, --commands or --invariant that cannot be loaded (one line for the user)."""


def load_object(spec: str, what: str) -> Any:
    """`package.module:name` -> the object (the current directory is importable, as for
    `python -m`)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"{what} takes module:name, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{what} {spec}: cannot import {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(f"{what} {spec}: {module_name!r} has no {attr!r}") from None
    return obj


def load_app(spec: str, commands: str | None = None, invariants: Sequence[str] = ()) -> Any:
    """The app of `--app` (a factory, called with no arguments, or an app object), with the
    generator of `--commands` and the extra invariants of `--invariant`."""
    from .app_es import EsChaosApp

    factory = load_object(spec, "--app")
    app = factory() if callable(factory) and not isinstance(factory, ChaosApp | EsChaosApp) else factory
    if not isinstance(app, ChaosApp | EsChaosApp):
        raise SpecError(f"--app {spec}: the factory returned {type(app).__name__}, not a ChaosApp or EsChaosApp")
    if commands is not None:
        app.commands = load_object(commands, "--commands")
    if app.commands is None:
        raise SpecError(f"--app {spec}: the app has no command generator; give --commands module:generator")
    extra = [load_object(s, "--invariant") for s in invariants]
    for fn in extra:
        if not callable(fn):
            raise SpecError(f"--invariant: {fn!r} is not a function")
    app.invariants = [*app.invariants, *extra]
    return app
