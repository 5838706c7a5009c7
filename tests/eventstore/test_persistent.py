"""Persistent subscriptions on the mock network: competing consumers share a group's events,
none lost and none handled twice while one of them dies mid-event; retries, parking and
replay; groups on a stream, a category and `$all`; the ledger's snapshots."""

from __future__ import annotations

import contextlib

import pytest
import trio

from client.mock import MockNetwork
from eventstore import persistent_consumer
from eventstore.api import EventData, EventStore, InvalidEvent
from eventstore.errors import PersistentSubscriptionDropped, PersistentSubscriptionExists
from eventstore.persistent import NackAction, PersistentSettings
from node.keys import Keypair

KEYS = Keypair(b"\x0c" * 32)


class _Died(Exception):
    """A consumer's sudden end: it gives back nothing it holds."""


def new_store(net: MockNetwork) -> EventStore:
    """Another process of the app: nothing shared in memory, the clock is trio's (MockClock)."""
    return EventStore(net.client(KEYS), clock=trio.current_time, pending_grace=1.0, poll_interval=0.05)


@pytest.fixture
async def shop():
    net = MockNetwork(seed=3)
    db = await new_store(net).create_database("shop")
    return net, db


async def test_competing_consumers_share_the_events_and_a_dead_ones_go_to_the_other(shop, autojump_clock):
    net, db = shop
    for i in range(30):
        await db.append(f"order@{i % 4}", [EventData("Placed", {"i": i})])
    await db.append("other@1", [EventData("Noise", {})])
    await db.persistent.create("$ce-order", "billing", PersistentSettings(start_from="start", message_timeout=10))
    handled: list[tuple[str, int]] = []
    held_by_a: set[int] = set()

    async def consumer(name: str, die_after: int | None, task_status=trio.TASK_STATUS_IGNORED) -> None:
        db_ = new_store(net).database("shop")
        sub = db_.persistent.subscribe("$ce-order", "billing", name, buffer_size=4)
        task_status.started()
        n = 0
        async for message in sub:  # no `async with`: a consumer that dies gives nothing back
            n += 1
            if die_after is not None and n > die_after:
                held_by_a.update(m.event.data["i"] for m in [message, *sub._ready])
                raise _Died()
            await trio.sleep(0.1)  # the work
            handled.append((name, message.event.data["i"]))
            await sub.ack(message)
            if len(handled) == 30:
                return

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async def a() -> None:
                with contextlib.suppress(_Died):
                    await consumer("a", 5)

            nursery.start_soon(a)
            await consumer("b", None)
    assert sorted(i for _n, i in handled) == list(range(30))  # none lost, none twice
    assert {n for n, _i in handled} == {"a", "b"}  # they did compete
    assert held_by_a and all(("b", i) in handled for i in held_by_a)  # a's in-flight went to b
    info = await db.persistent.info("$ce-order", "billing")
    assert (info.in_flight, info.parked, info.acked, info.delivered, info.lag) == (0, 0, 30, 30, 0)
    assert {c.name.split("-")[0] for c in info.consumers} == {"a", "b"}


async def test_retries_park_and_replay(shop, autojump_clock):
    _net, db = shop
    await db.append("job@1", [EventData("Run", {"n": n}) for n in range(3)])
    await db.persistent.create("job@1", "workers", PersistentSettings(start_from="start", max_retry_count=2))
    seen: list[tuple[int, int]] = []
    async with db.persistent.subscribe("job@1", "workers", "w") as sub:
        with trio.fail_after(600):
            async for message in sub:
                seen.append((message.event.data["n"], message.retry_count))
                if message.event.data["n"] == 1:
                    await sub.nack(NackAction.RETRY, "flaky", message)
                elif message.event.data["n"] == 2:
                    await sub.nack(NackAction.SKIP, "not needed", message)
                else:
                    await sub.ack(message)
                if seen[-1] == (1, 2):
                    break
        with trio.move_on_after(5):  # the next claim parks it, and finds nothing to deliver
            await sub.__anext__()
    info = await db.persistent.info("job@1", "workers")
    assert (info.parked, info.in_flight) == (1, 0)
    assert seen[:3] == [(0, 0), (1, 0), (2, 0)] and sorted(seen[3:]) == [(1, 1), (1, 2)]
    [parked] = await db.persistent.parked("job@1", "workers")
    assert parked.event.data == {"n": 1} and parked.retry_count == 2 and "retried 2" in parked.reason
    record = await db.read_stream("$persistentsubscription-job@1::workers-parked")
    assert [e.data["version"] for e in record] == [1]
    assert await db.persistent.replay_parked("job@1", "workers") == 1
    async with db.persistent.subscribe("job@1", "workers", "w2") as sub:
        async for message in sub:
            assert (message.event.data, message.retry_count) == ({"n": 1}, 0)
            await sub.nack(NackAction.PARK, "still bad", message)
            break
    [parked] = await db.persistent.parked("job@1", "workers")
    assert parked.reason == "still bad"


async def test_sources_start_positions_update_delete_and_snapshots(shop, autojump_clock, monkeypatch):
    with trio.fail_after(600):
        await sources_start_positions_update_delete_and_snapshots(*shop, monkeypatch)


async def sources_start_positions_update_delete_and_snapshots(net, db, monkeypatch):
    monkeypatch.setattr(persistent_consumer, "SNAPSHOT_EVERY", 4)
    await db.append("a@1", [EventData("Old", {})])
    await db.persistent.create("$all", "audit")  # from the end: only what comes next
    await db.persistent.create("a@1", "from1", PersistentSettings(start_from=1))
    with pytest.raises(PersistentSubscriptionExists):
        await db.persistent.create("$all", "audit")
    with pytest.raises(InvalidEvent):
        await db.persistent.create("$ce-", "bad")
    for i in range(6):
        await db.append(f"{'ab'[i % 2]}@1", [EventData("New", {"i": i})])
    got = []
    async with db.persistent.subscribe("$all", "audit", "x", buffer_size=2) as sub:
        async for message in sub:
            got.append(message.event.data["i"])
            await sub.ack(message)
            if len(got) == 6:
                break
    assert got == list(range(6))  # no system event (ledgers, registry) is delivered
    async with db.persistent.subscribe("a@1", "from1", "y") as sub:
        first = await sub.__anext__()
        assert (first.event.stream, first.event.version) == ("a@1", 1)
        await sub.ack(first)
    # A process that joins late folds the ledger from a snapshot, to the same state.
    fresh = new_store(net).database("shop")
    info = await fresh.persistent.info("$all", "audit")
    assert (info.acked, info.in_flight, info.delivered) == (6, 0, 6)
    assert (await db.read_stream("$persistentsubscription-$all::audit-checkpoint"))
    # An update drops the consumers; a deleted group made again starts afresh.
    sub = db.persistent.subscribe("$all", "audit", "z")
    await db.append("a@1", [EventData("New", {"i": 6})])
    assert (await sub.__anext__()).event.data == {"i": 6}
    await db.persistent.update("$all", "audit", PersistentSettings(message_timeout=1))
    with pytest.raises(PersistentSubscriptionDropped), trio.fail_after(30):
        await sub.__anext__()
    await db.persistent.delete("$all", "audit")
    assert [i.group for i in await db.persistent.list()] == ["from1"]
    await db.persistent.create("$all", "audit", PersistentSettings(start_from="start"))
    info = await db.persistent.info("$all", "audit")
    assert (info.acked, info.delivered, info.lag) == (0, 0, 8)
