"""The event-store workload's followers built on the CQRS library: a projection agent and a
process manager, each killed every few seconds and restarted from what it saved.

- The projection ``orders`` counts the events of each stream of the ``order`` category.
  After the run every state it saved is read back and recorded as a ``project`` op (state
  and checkpoint); `simulations.es_checker_log` checks that each equals the fold of the log
  up to its checkpoint.
- The process manager ``billing`` reacts to each invoice event marked ``bill`` by sending
  an ``Acknowledge`` command to the aggregate ``receipt@N`` (N: the invoice stream's
  number), which records the cause. After the run every receipt is read back and each
  acknowledgement recorded as a ``command`` op: a cause acknowledged twice is a command
  that took effect twice.

The followers write streams of their own (``projection@orders``, ``process@billing``,
``receipt@N``), which the history names only through the log readers' rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from eventstore.api import EventStoreError, StreamNotFound
from eventstore.cqrs import (
    Aggregate,
    Command,
    CommandHandler,
    DomainEvent,
    ProcessManager,
    ProcessRunner,
    Projection,
    ProjectionAgent,
    Reaction,
    Repository,
    applies,
    projection_history,
)
from eventstore.events import RecordedEvent

if TYPE_CHECKING:
    from .es_workload import EventStoreLoad

PROJECTION = "orders"
PROJECTED = "order"  # the category the projection folds
MANAGER = "billing"
RECEIPTS = "receipt"
SAVE_EVERY = 25  # events folded between a projection's saves


def count_events(state: dict[str, int], event: RecordedEvent) -> dict[str, int]:
    state[event.stream] = state.get(event.stream, 0) + 1
    return state


@dataclass(frozen=True)
class Acknowledged(DomainEvent):
    cause: str  # the invoice event (its id's first 12 hex digits, as in the history)


class Receipt(Aggregate):
    category = RECEIPTS

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.causes: list[str] = []

    def acknowledge(self, cause: str) -> None:
        # No check that the cause is new: a command applied twice must show, not be hidden.
        self.raise_event(Acknowledged(cause))

    @applies(Acknowledged)
    def _acknowledged(self, event: Acknowledged) -> None:
        self.causes.append(event.cause)


@dataclass(frozen=True, kw_only=True)
class Acknowledge(Command):
    aggregate = Receipt
    receipt: str
    cause: str

    def target(self) -> str:
        return self.receipt

    def handle(self, aggregate: Any) -> None:
        aggregate.acknowledge(self.cause)


def react(state: dict[str, int], event: RecordedEvent) -> Reaction:
    if not (isinstance(event.data, dict) and event.data.get("bill")):
        return Reaction(state)
    state = {"billed": int(state.get("billed", 0)) + 1}
    receipt = event.stream.partition("@")[2]
    return Reaction(state, [Acknowledge(receipt=receipt, cause=event.id.hex[:12])])


BILLING = ProcessManager(MANAGER, react, commands=[Acknowledge], categories=["invoice"])
ORDERS = Projection(PROJECTION, count_events, categories=[PROJECTED])


async def projection_agent(load: EventStoreLoad, number: int) -> None:
    await _follow(load, number, "projection", lambda db: ProjectionAgent(db, [ORDERS], save_every=SAVE_EVERY).run())


async def process_manager(load: EventStoreLoad, number: int) -> None:
    await _follow(load, number, "process_manager",
                  lambda db: ProcessRunner(db, BILLING, CommandHandler(Repository(db))).run())


async def _follow(load: EventStoreLoad, number: int, name: str, run: Any) -> None:
    """Run a follower, killing it every few seconds (it restarts from what it saved)."""
    from .es_workload import FOLLOWER_POLL

    wl = load.workload
    rng = wl.op_rng(f"es-follower:{name}")

    async def body(client: Any) -> None:
        db = await load.store(client, FOLLOWER_POLL).add_database(load.info)
        while not wl.stopping:
            with trio.move_on_after(rng.uniform(*wl.config.es_follower_life)):
                try:
                    await run(db)
                except EventStoreError as exc:  # not a network failure: the store or the library broke
                    load.errors.append(f"{name} at t={trio.current_time():.3f}: {type(exc).__name__}: {exc}")
                    wl.counts[f"{name}_errors"] += 1
                except Exception:  # noqa: BLE001 - network failures: the follower restarts
                    wl.counts[f"{name}_network_failures"] += 1
            wl.counts[f"{name}_kills"] += 1
            await trio.sleep(0.5)

    await wl.with_clients(3950 + number, body, keys=load.follower_keys(number))


async def observe(load: EventStoreLoad, db: Any, attempts: int) -> None:
    """Record what the followers saved: each projection state, each acknowledgement."""
    wl = load.workload
    for attempt in range(attempts):
        try:
            states = await projection_history(db, PROJECTION)
            receipts = await db.list_streams(RECEIPTS) if RECEIPTS in await db.categories() else []
            acks = []
            for stream in receipts:
                try:
                    acks += await db.read_stream(stream)
                except StreamNotFound:
                    continue
            break
        except Exception:  # noqa: BLE001 - retried: the network may still be settling
            await trio.sleep(2.0 * (attempt + 1))
    else:
        wl.counts["followers_unread"] += 1
        return
    now = trio.current_time()
    for state in states:
        op = wl.streams.invoke(PROJECTION, PROJECTION, "project", {"filter": PROJECTED}, now)
        checkpoint = -1 if state.checkpoint is None else state.checkpoint
        wl.streams.ok(op, {"state": state.state, "checkpoint": checkpoint, "generation": state.generation}, now)
    for event in acks:
        data = event.data if isinstance(event.data, dict) else {}
        op = wl.streams.invoke(MANAGER, MANAGER, "command", {"cause": data.get("cause"),
                                                            "command": event.id.hex[:12]}, now)
        wl.streams.ok(op, None, now)
    wl.counts["project:saved"] += len(states)
    wl.counts["command:applied"] += len(acks)
