"""Process managers (sagas): react to events by sending commands, keeping their own state
in a stream, and surviving restarts without a command taking effect twice.

    def react(state, event) -> Reaction:
        if event.type == "TransferRequested":
            return Reaction({**state, event.stream: "withdrawing"}, [Withdraw(...)])
        return Reaction(state)

    transfers = ProcessManager("transfers", react, commands=[Withdraw, Deposit], categories=["Transfer", "Account"])
    await ProcessRunner(db, transfers, CommandHandler(repository)).run()

For each event that changes its state or asks for commands, the runner
1. saves a *Step* to `process@NAME` - the new state, the event's log position, and the
   commands it is about to send - in one append expecting the stream's last version;
2. sends the commands, in order, through the command handler;
3. saves *Dispatched* (same state and checkpoint, plus each command's outcome).

Why each command takes effect exactly once:
- a command exists only once a Step holds it, and a Step is saved once per event (its
  append expects the previous version, and the checkpoint inside moves the runner past
  the event) - so `react` need not even be deterministic;
- a command's id is derived from the runner's name, the triggering event's id and the
  command's place in the Step, so sending it again is sending *the same* command;
- a runner that restarts after a Step but before its Dispatched sends that Step's
  commands again, and the target aggregate, which remembers the ids of the commands whose
  events it holds, recognises those that already took effect.
Sending is at least once; taking effect is at most once; together, exactly once.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid5

from eventstore.database import Database
from eventstore.errors import WrongExpectedVersion
from eventstore.events import RecordedEvent

from .command import Command, CommandHandler, CommandResult
from .errors import DomainError, SavedStateConflict
from .follower import SavedStream, open_feed
from .streams import process_stream

JSON = Any
STEP = "Step"  # state + checkpoint + commands about to be sent
DISPATCHED = "Dispatched"  # the last Step's commands were sent; their outcomes
CHECKPOINT = "Checkpoint"  # the log went quiet after events that changed nothing
MAX_CONFLICTS = 16
# Namespace of derived command ids (uuid5 of "NAME/event id/index").
COMMAND_NAMESPACE = UUID("6b0c4a5e-3a57-4d7e-9b57-7f0e2c1d9a11")


@dataclass(frozen=True)
class Reaction:
    """What a process manager does about one event: its next state, and commands to send."""

    state: JSON
    commands: Sequence[Command] = ()


@dataclass(frozen=True)
class ProcessManager:
    """A saga: `react(state, event) -> Reaction` over the events of `categories` (None:
    every domain event). `commands` lists the command types it may send, so the commands
    kept in its stream can be read back."""

    name: str
    react: Callable[[JSON, RecordedEvent], Reaction]
    commands: Sequence[type[Command]]
    initial: JSON = field(default_factory=dict)
    categories: Sequence[str] | None = None

    @property
    def stream(self) -> str:
        return process_stream(self.name)


def command_id(manager: str, trigger: UUID, index: int) -> UUID:
    return uuid5(COMMAND_NAMESPACE, f"{manager}/{trigger}/{index}")


@dataclass(frozen=True)
class Outcome:
    command_id: UUID
    outcome: str  # "applied", "duplicate" (it had taken effect already), "unchanged", "rejected"
    detail: str = ""


class ProcessRunner:
    """Runs one process manager against `db`, sending its commands through `handler`."""

    def __init__(self, db: Database, manager: ProcessManager, handler: CommandHandler, *,
                 idle: float | None = None) -> None:
        self.db = db
        self.manager = manager
        self.handler = handler
        self.idle = idle if idle is not None else 2 * db.store.poll_interval
        self.saved = SavedStream(db, manager.stream, STEP)
        self._types = {c.type_name: c for c in manager.commands}
        self.state: JSON = None
        self.checkpoint: int | None = None
        self._moved = False  # checkpoint advanced past events that changed nothing, unsaved
        self._sent = 0  # commands sent in this pass of `catch_up`
        self._saves = 0  # saves since the last load

    async def run(self) -> None:
        """Follow the log and react, until cancelled."""
        await self._run(once=False)

    async def catch_up(self, *, max_passes: int = 100) -> JSON:
        """React to everything the log holds now, and to what the commands sent cause, until
        a pass sends nothing; return the state."""
        for _ in range(max_passes):
            self._sent = 0
            await self._run(once=True)
            if not self._sent:
                return self.state
        raise RuntimeError(f"{self.manager.name}: still sending commands after {max_passes} passes")

    async def current_state(self) -> JSON:
        """The state as saved in the network (what any machine reads)."""
        await self._load()
        return self.state

    # ------------------------------------------------------------------ the loop

    async def _run(self, once: bool) -> None:
        conflicts = 0
        while True:
            try:
                await self._load(resume=True)
                await self._follow(once)
                return
            except WrongExpectedVersion:
                # Another runner saved first: reload its state. Give up only when we keep
                # losing without ever saving in between.
                conflicts = 1 if self._saves else conflicts + 1
                if conflicts >= MAX_CONFLICTS:
                    raise SavedStateConflict(self.manager.stream, conflicts) from None

    async def _load(self, resume: bool = False) -> None:
        saved = await self.saved.load()
        self._moved = False
        self._saves = 0
        if saved is None:
            self.state, self.checkpoint = copy.deepcopy(self.manager.initial), None
            return
        self.state, self.checkpoint = saved.data.get("state"), saved.data.get("checkpoint")
        if resume and saved.event.type == STEP and saved.data.get("commands"):
            # Stopped between a Step and its Dispatched: send that Step's commands again.
            commands = [self._command(c) for c in saved.data.get("commands", [])]
            await self._dispatch(commands)

    async def _follow(self, once: bool) -> None:
        check = self.db.store.poll_interval / 4
        async with open_feed(self.db, self.manager.categories, self.checkpoint) as feed:
            while True:
                wait = check if once else (self.idle if self._moved else math.inf)
                event = await feed.next(wait)
                if event is not None:
                    await self._react(event)
                    if not (once and feed.caught_up):
                        continue
                if once and not feed.caught_up:
                    continue
                if self._moved:
                    await self._save(CHECKPOINT, {})
                if once:
                    return

    async def _react(self, event: RecordedEvent) -> None:
        reaction = self.manager.react(copy.deepcopy(self.state), event)
        if reaction.state == self.state and not reaction.commands:
            self.checkpoint, self._moved = event.position, True
            return
        correlation = event.correlation_id or event.id
        commands = [
            dataclasses.replace(c, id=command_id(self.manager.name, event.id, i), correlation_id=correlation,
                                causation_id=event.id)
            for i, c in enumerate(reaction.commands)
        ]
        self.state, self.checkpoint = reaction.state, event.position
        await self._save(STEP, {"trigger": str(event.id), "commands": [
            {"type": c.type_name, "data": c.to_data()} for c in commands
        ]})
        if commands:
            await self._dispatch(commands)

    async def _dispatch(self, commands: list[Command]) -> list[Outcome]:
        self._sent += len(commands)
        outcomes = []
        for command in commands:
            try:
                result = await self.handler.execute(command)
            except DomainError as exc:
                outcomes.append(Outcome(command.id, "rejected", f"{type(exc).__name__}: {exc}"))
                continue
            outcomes.append(Outcome(command.id, _outcome(result)))
        await self._save(DISPATCHED, {"outcomes": [
            {"command_id": str(o.command_id), "outcome": o.outcome, "detail": o.detail} for o in outcomes
        ]})
        return outcomes

    async def _save(self, kind: str, extra: dict[str, Any]) -> None:
        await self.saved.save({"state": self.state, "checkpoint": self.checkpoint, **extra}, kind)
        self._moved = False
        self._saves += 1

    def _command(self, obj: dict[str, Any]) -> Command:
        cls = self._types.get(obj.get("type", ""))
        if cls is None:
            raise TypeError(f"{self.manager.name}: its stream holds a {obj.get('type')!r} command it does not list")
        return cls.from_data(obj["data"])


def _outcome(result: CommandResult) -> str:
    if result.duplicate:
        return "duplicate"
    return "applied" if result.changed else "unchanged"
