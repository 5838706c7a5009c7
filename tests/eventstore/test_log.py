"""The database log: order, exactly-once, writers that die between steps, pending appends,
and catch-up subscriptions that turn live without a gap or a duplicate."""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict

import pytest
import trio
from es_testing import check_consistent, ev

from eventstore.api import EventStore, Fate, StreamDeleted
from eventstore.events import split_position
from node.keys import Keypair
from node.requests import MutateEntries, PutMData


class Crash(BaseException):
    """A writer process dying: nothing of it runs any more."""


async def test_the_log_orders_every_append_once(db, autojump_clock):
    await db.append("a@1", [ev(n=0), ev(n=1)])
    await db.append("b@1", [ev(n=0)])
    await db.append("a@1", [ev(n=2)])
    log = await db.read_all()
    assert [(e.stream, e.data["n"]) for e in log] == [("a@1", 0), ("a@1", 1), ("b@1", 0), ("a@1", 2)]
    assert [e.position for e in log] == sorted(e.position for e in log)
    # Resume from any position (inclusive), in pages.
    assert [e.id for e in await db.read_all(log[1].position)] == [e.id for e in log[1:]]
    assert [e.id for e in await db.read_all(log[1].position, count=2)] == [e.id for e in log[1:3]]
    assert [e.stream for e in await db.read_category("b")] == ["b@1"]
    assert await db.log_end() == log[-1].position + 1000 - split_position(log[-1].position)[1] - 1


async def test_the_log_continues_over_segments(store, autojump_clock):
    db = await store.create_database("tiny", log_segment_size=7)
    for i in range(30):
        await db.append(f"s@{i % 4}", [ev(n=i)])
    log = await db.read_all()
    assert [e.data["n"] for e in log] == list(range(30))
    assert await db.log.tip() == 30
    fresh = await EventStore(store.client).database("tiny").open()
    assert await fresh.log.tip() == 30  # found by galloping over the segments
    assert [e.data["n"] for e in await fresh.read_all(log[12].position)] == list(range(12, 30))


async def test_group_commit_across_small_segments_under_concurrency(net, store, make_store, autojump_clock):
    db = await store.create_database("tiny", log_segment_size=7, stream_segment_size=5)
    rng = random.Random(7)
    net.set_delay(0.001)  # requests take (virtual) time, so appends overlap

    async def writer(k: int) -> None:
        mine = db if k % 3 else await make_store().database("tiny").open()
        for i in range(10):
            stream = f"s@{rng.randrange(3)}"
            await mine.append(stream, [ev(k=k, i=i, j=j) for j in range(rng.randint(1, 7))])

    async with trio.open_nursery() as nursery:
        for k in range(10):
            nursery.start_soon(writer, k)
    log = await check_consistent(db)
    assert db.log.stats["claimed"] > db.log.stats["flushes"]  # intents shared mutations
    for k in range(10):
        mine = [(e.data["i"], e.data["j"]) for e in log if e.data["k"] == k]
        assert mine == sorted(mine)  # each writer's appends in its order, each append whole


@pytest.mark.parametrize("seed", range(4))
async def test_writers_killed_between_steps_leave_nothing_inconsistent(seed, net, db, make_store, autojump_clock):
    """Writers die at random points of their appends (between payload, intent, registration
    and stream write); afterwards the next writer runs, and the log and the streams agree."""
    rng = random.Random(seed)
    net.set_delay(lambda _request: rng.choice([0.001, 0.002, 0.005]))
    acknowledged: dict[object, tuple[str, int]] = {}

    async def doomed_writer(k: int) -> None:
        mine = make_store().database("shop")
        with trio.move_on_after(rng.uniform(0.01, 0.3)):  # the kill
            for i in range(100):
                stream = f"acct@{rng.randrange(6)}"
                event = ev(k=k, i=i)
                result = await mine.append(stream, [event, ev(k=k, i=i, second=True)])
                acknowledged[event.id] = (stream, result.next_expected_version - 1)

    async with trio.open_nursery() as nursery:
        for k in range(6):
            nursery.start_soon(doomed_writer, k)
    # The next writer: appends to the same streams (voiding or following what was left).
    survivor = make_store(pending_grace=0.5).database("shop")
    for stream in (f"acct@{i}" for i in range(6)):
        await survivor.append(stream, [ev(after=True)])
    log = await check_consistent(survivor)
    logged = {e.id: (e.stream, e.version) for e in log}
    for event_id, place in acknowledged.items():
        assert logged[event_id] == place  # every acknowledged append is in the log, where it was put
    for stream in (f"acct@{i}" for i in range(6)):
        events = await survivor.read_stream(stream)
        assert events[-1].data == {"after": True}
        for e in events:  # appends are whole: each first event has its second right after it
            if "second" not in e.data and "after" not in e.data:
                assert events[e.version + 1].data == {**e.data, "second": True}


@pytest.mark.parametrize("seed", range(8))
async def test_a_claim_is_served_only_at_a_slot_that_holds_it(seed, net, db, autojump_clock):
    """Leaders of group-commit rounds die right after their write landed. The claims of such
    a round that wait on, and those that join them, clash with it at the same slot next; each
    must end at the slot that holds its own value, not at one its dead leader's round wrote
    (the bug: the next round saw its first value there and took the whole write for its own)."""
    rng = random.Random(seed)
    net.set_delay(lambda _request: rng.choice([0.001, 0.002, 0.003]))
    segment = db.layout.log_segment(0)
    await db.log.claim(b"first")  # the segment exists: later rounds are plain inserts
    net.fail_next(count=4, error=Crash, applied=True,
                  when=lambda r: isinstance(r.op, MutateEntries) and r.op.address == segment)
    served: dict[bytes, int] = {}

    async def claimer(k: int) -> None:
        await trio.sleep(rng.uniform(0, 0.02))
        value = b"intent %d" % k
        with contextlib.suppress(Crash):  # a claimer that led a round dies with it
            served[value] = await db.log.claim(value)

    async with trio.open_nursery() as nursery:
        for k in range(16):
            nursery.start_soon(claimer, k)
    assert len(served) >= 16 - 4
    for value, slot in served.items():
        assert await db.log.at(slot) == value, f"{value!r} was told slot {slot}"


async def test_a_writer_dead_after_its_intent_is_finished_by_the_next_reader(net, db, make_store, autojump_clock):
    await db.append("acct@1", [ev(n=0)])
    net.fail_next(count=100, error=Crash, when=lambda r: isinstance(r.op, MutateEntries | PutMData)
                  and r.op.address == db.layout.stream_segment("acct@1", 0))
    with pytest.raises(Crash):
        await db.append("acct@1", [ev(n=1)], expected_version=0)  # intent written, events not
    net.faults.injections.clear()
    reader = await make_store().database("shop").open()
    slot = (await reader.log.tip()) - 1
    intent = reader.log.decode(await reader.log.at(slot))
    assert await reader.resolve(slot, intent) is Fate.PENDING
    # A reader waits out the grace period, then finishes the append itself.
    log = await reader.read_all()
    assert [e.data["n"] for e in log] == [0, 1]
    assert await reader.resolve(slot, intent) is Fate.COMMITTED
    assert [e.data["n"] for e in await reader.read_stream("acct@1")] == [0, 1]


async def test_a_slow_writer_is_waited_for_then_overtaken_harmlessly(net, db, make_store, autojump_clock):
    segment = db.layout.stream_segment("acct@1", 0)
    await db.append("acct@1", [ev(n=0)])
    net.set_delay(lambda r: 30.0 if isinstance(r.op, MutateEntries) and r.op.address == segment else 0.0)
    reader = make_store().database("shop")
    results = {}
    start = trio.current_time()

    async def slow() -> None:
        results["append"] = await db.append("acct@1", [ev(n=1)], expected_version=0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        await trio.sleep(0.5)
        net.set_delay(None)
        subscription = reader.subscribe_to_all()
        seen = [await subscription.__anext__(), await subscription.__anext__()]
        assert trio.current_time() - start < 30  # finished by the reader after the grace, not the writer
    assert [e.data["n"] for e in seen] == [0, 1]
    assert results["append"].log_position == seen[1].position  # the writer found its own events
    assert [e.data["n"] for e in await db.read_stream("acct@1")] == [0, 1]


async def test_a_reader_without_the_key_waits_at_a_pending_append(net, db, make_store, autojump_clock):
    await db.append("acct@1", [ev(n=0)])
    net.fail_next(count=100, error=Crash, when=lambda r: isinstance(r.op, MutateEntries)
                  and r.op.address == db.layout.stream_segment("acct@1", 0))
    with pytest.raises(Crash):
        await db.append("acct@1", [ev(n=1)])
    net.faults.injections.clear()
    # Another key opening the same database (its record copied, as a later issue will share
    # it): it may read everything, but not finish appends.
    foreign = EventStore(net.client(Keypair(b"\x0b" * 32)), pending_grace=0.5, poll_interval=0.05)
    other = foreign.database("shop")
    other.setup(db.info)
    assert [e.data["n"] for e in await other.read_all()] == [0]  # stops before the pending one
    assert [e.data["n"] for e in await make_store().database("shop").read_all()] == [0, 1]


async def test_subscription_mid_writes_and_after_restart_delivers_each_event_once(db, make_store, autojump_clock):
    streams = [f"acct@{i}" for i in range(8)]
    acknowledged: list[object] = []

    async def writer(k: int) -> None:
        mine = make_store().database("shop") if k % 2 else db
        for i in range(25):
            stream = streams[(k + i) % len(streams)]
            event = ev(k=k, i=i)
            await mine.append(stream, [event] if i % 3 else [event, ev(k=k, i=i, extra=1)])
            acknowledged.append(event.id)
            await trio.sleep(0.01)

    delivered = []
    checkpoint: list[int | None] = [None]

    async def subscriber(stop_after: int | None) -> None:
        subscription = make_store().database("shop").subscribe_to_all(checkpoint[0])
        async for event in subscription:
            delivered.append(event)
            checkpoint[0] = subscription.checkpoint
            if stop_after is not None and len(delivered) >= stop_after:
                return  # the subscriber process stops; it will resume from its checkpoint

    with trio.fail_after(600):  # virtual seconds: a hang fails with a traceback
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as writers:
                for k in range(6):
                    writers.start_soon(writer, k)
                await trio.sleep(0.15)  # the subscription starts in the middle of the writes
                await subscriber(stop_after=40)
                nursery.start_soon(subscriber, None)
            while not set(acknowledged) <= {e.id for e in delivered}:
                await trio.sleep(0.1)
            await trio.sleep(5)  # time for anything extra (a duplicate) to show up
            nursery.cancel_scope.cancel()
    ids = [e.id for e in delivered]
    assert len(ids) == len(set(ids))  # nothing twice, across the restart
    assert set(acknowledged) <= set(ids)  # nothing acknowledged missing
    per_stream = defaultdict(list)
    for e in delivered:
        per_stream[e.stream].append(e.version)
    assert all(versions == list(range(len(versions))) for versions in per_stream.values())
    assert [e.position for e in delivered] == sorted(e.position for e in delivered)


async def test_category_and_stream_subscriptions(db, autojump_clock):
    await db.append("a@1", [ev(n=0)])
    await db.append("b@1", [ev(n=0)])
    by_category = db.subscribe_to_category("a")
    by_stream = db.subscribe_to_stream("a@1")
    assert (await by_category.__anext__()).stream == "a@1"
    assert (await by_stream.__anext__()).version == 0
    async with trio.open_nursery() as nursery:
        async def later() -> None:
            await trio.sleep(1)
            await db.append("b@1", [ev(n=1)])
            await db.append("a@1", [ev(n=1), ev(n=2)])

        nursery.start_soon(later)
        live = [await by_category.__anext__(), await by_category.__anext__()]
        assert [(e.stream, e.data["n"]) for e in live] == [("a@1", 1), ("a@1", 2)]
        assert by_category.caught_up
        assert [(await by_stream.__anext__()).version for _ in range(2)] == [1, 2]
    again = db.subscribe_to_stream("a@1", from_checkpoint=by_stream.checkpoint - 1)
    assert (await again.__anext__()).version == 2
    resumed = db.subscribe_to_category("a", from_checkpoint=live[0].position)
    assert (await resumed.__anext__()).id == live[1].id
    await db.delete_stream("a@1", hard=True)
    tail = [event async for event in again]  # ends after the tombstone
    assert [e.type for e in tail] == ["$streamDeleted"]
    with pytest.raises(StreamDeleted):
        await db.read_stream("a@1")
