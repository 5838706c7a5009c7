"""Projections: read models folded from events by a local agent and saved back to the
network as streams, so any machine can read them - the current state and every past one.

    index = Projection("notebooks", count_notes, initial={}, categories=["NoteBook"])
    agent = ProjectionAgent(db, [index])
    await agent.catch_up()                       # fold what is there, save, return
    await agent.run()                            # ... or keep following (cancel to stop)
    state = await read_projection(db, "notebooks")   # from any machine

`apply(state, event) -> state` must be a pure function of its arguments (JSON in, JSON
out; it may change `state` in place and return it). The agent follows the log with a
catch-up subscription and saves to `projection@NAME` one event per save - the state, the
checkpoint (the log position of the last event in it), how many events it holds and a
generation number - after `save_every` events, and whenever the log goes quiet.

Why each event counts once in the saved state (see `follower.py`): the state and its
checkpoint are one event, appended expecting the previous one. An agent killed between
saves loses only unsaved work, which it redoes from the last saved pair; two agents
racing on one projection cannot both build on the same state.

`rebuild` starts a projection over (after its code changed, say): it saves the initial
state with the checkpoint cleared and the generation bumped, then folds the whole log
again. Past states stay readable; readers see the new generation grow back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from eventstore.database import Database
from eventstore.errors import WrongExpectedVersion
from eventstore.events import RecordedEvent
from node import errors as E

from .errors import SavedStateConflict
from .follower import Saved, SavedStream, open_feed
from .streams import projection_stream

JSON = Any
STATE_EVENT = "ProjectionState"
MAX_CONFLICTS = 16  # reloads after losing a save race before giving up


@dataclass(frozen=True)
class Projection:
    """A read model: `apply` folded over the events of `categories` (None: every domain
    event of the database), starting from a copy of `initial`."""

    name: str
    apply: Callable[[JSON, RecordedEvent], JSON]
    initial: JSON = field(default_factory=dict)
    categories: Sequence[str] | None = None

    @property
    def stream(self) -> str:
        return projection_stream(self.name)


@dataclass(frozen=True)
class ProjectionState:
    """A saved state of a projection, as any reader sees it."""

    name: str
    state: JSON
    checkpoint: int | None  # log position of the last event folded in (None: none yet)
    events: int  # how many events the state holds
    generation: int  # bumped by each rebuild
    version: int  # this save's place in the projection's stream (0 = the first save)
    saved_at: datetime

    @classmethod
    def of(cls, name: str, saved: Saved) -> ProjectionState:
        d = saved.data
        return cls(
            name, d.get("state"), d.get("checkpoint"), int(d.get("events", 0)), int(d.get("generation", 0)),
            saved.version, saved.event.timestamp,
        )


async def read_projection(db: Database, name: str) -> ProjectionState | None:
    """The current saved state of projection `name` (None if it was never saved)."""
    saved = await SavedStream(db, projection_stream(name), STATE_EVENT).load()
    return None if saved is None else ProjectionState.of(name, saved)


async def projection_history(db: Database, name: str) -> list[ProjectionState]:
    """Every saved state of projection `name`, oldest first."""
    return [ProjectionState.of(name, s) for s in await SavedStream(db, projection_stream(name), STATE_EVENT).history()]


class _Run:
    """One projection's fold: the state in memory, and where it stands against the saved one."""

    def __init__(self, db: Database, projection: Projection) -> None:
        self.projection = projection
        self.saved = SavedStream(db, projection.stream, STATE_EVENT)
        self.state: JSON = None
        self.checkpoint: int | None = None
        self.events = 0
        self.generation = 0
        self.unsaved = 0
        self.saves = 0  # saves since the last load

    async def load(self) -> None:
        saved = await self.saved.load()
        if saved is None:
            self._reset(0)
        else:
            current = ProjectionState.of(self.projection.name, saved)
            self.state, self.checkpoint = current.state, current.checkpoint
            self.events, self.generation = current.events, current.generation
        self.unsaved = self.saves = 0

    def _reset(self, generation: int) -> None:
        self.state = copy.deepcopy(self.projection.initial)
        self.checkpoint, self.events, self.generation = None, 0, generation

    def fold(self, event: RecordedEvent) -> None:
        self.state = self.projection.apply(self.state, event)
        self.checkpoint = event.position
        self.events += 1
        self.unsaved += 1

    async def save(self) -> None:
        """Save state + checkpoint as one event (WrongExpectedVersion if another agent won)."""
        await self.saved.save({
            "state": self.state, "checkpoint": self.checkpoint, "events": self.events,
            "generation": self.generation,
        })
        self.unsaved = 0
        self.saves += 1

    async def restart(self) -> None:
        """Save the initial state as a new generation: the start of a rebuild."""
        await self.load()
        self._reset(self.generation + 1)
        await self.save()


class ProjectionAgent:
    """Runs projections over the log of `db`, saving their states back into it.

    `save_every` bounds the events folded between saves (and so the work a killed agent
    redoes); `idle` is how long the log must be quiet before unsaved work is saved."""

    def __init__(self, db: Database, projections: Sequence[Projection], *, save_every: int = 100,
                 idle: float | None = None) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError("projection names must be distinct")
        if save_every < 1:
            raise ValueError("save_every is at least 1")
        self.db = db
        self.projections = {p.name: p for p in projections}
        self.save_every = save_every
        self.idle = idle if idle is not None else 2 * db.store.poll_interval

    def _get(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise KeyError(f"this agent runs no projection {name!r}") from None

    async def run(self) -> None:
        """Follow the log and keep every projection's saved state current, until cancelled."""
        with E.single_errors():
            async with trio.open_nursery() as nursery:
                for projection in self.projections.values():
                    nursery.start_soon(self._follow, projection, False)

    async def catch_up(self, name: str | None = None) -> dict[str, ProjectionState]:
        """Fold what the log holds now into the saved states (of one projection, or all),
        save, and return the current states."""
        chosen = [self._get(name)] if name is not None else list(self.projections.values())
        with E.single_errors():
            async with trio.open_nursery() as nursery:
                for projection in chosen:
                    nursery.start_soon(self._follow, projection, True)
        states = {}
        for projection in chosen:
            current = await read_projection(self.db, projection.name)
            assert current is not None  # a catch-up always saves at least once
            states[projection.name] = current
        return states

    async def rebuild(self, name: str) -> ProjectionState:
        """Start projection `name` over from the first event (a new generation), fold the
        whole log, save, and return the new current state."""
        run = _Run(self.db, self._get(name))
        for _ in range(MAX_CONFLICTS):
            try:
                await run.restart()
                break
            except WrongExpectedVersion:
                continue
        else:
            raise SavedStateConflict(run.projection.stream, MAX_CONFLICTS)
        return (await self.catch_up(name))[name]

    async def _follow(self, projection: Projection, once: bool) -> None:
        run = _Run(self.db, projection)
        conflicts = 0
        while True:
            await run.load()
            try:
                await self._fold(run, once)
                if once and run.saved.version < 0:
                    await run.save()  # nothing to fold yet: save the initial state for readers
                return
            except WrongExpectedVersion:
                # Another agent saved first: its state is as good as ours and further on
                # or behind - reload it and go on from its checkpoint. Give up only when we
                # keep losing without ever saving in between.
                conflicts = 1 if run.saves else conflicts + 1
                if conflicts >= MAX_CONFLICTS:
                    raise SavedStateConflict(projection.stream, conflicts) from None

    async def _fold(self, run: _Run, once: bool) -> None:
        # Following: wait as long as it takes, but save unsaved work once the log has been
        # quiet for `idle`. Catching up: look often at whether the end has been reached.
        check = self.db.store.poll_interval / 4
        async with open_feed(self.db, run.projection.categories, run.checkpoint) as feed:
            while True:
                wait = check if once else (self.idle if run.unsaved else math.inf)
                event = await feed.next(wait)
                if event is not None:
                    run.fold(event)
                    if run.unsaved >= self.save_every:
                        await run.save()
                    if not (once and feed.caught_up):
                        continue
                if once and not feed.caught_up:
                    continue
                if run.unsaved:
                    await run.save()
                if once:
                    return
