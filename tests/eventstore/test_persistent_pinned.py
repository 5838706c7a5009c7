"""The Pinned consumer strategy on the mock network: the events of one stream go to one
consumer while it lives; when it dies its streams (and the events it held) move to the one
left, after the message timeout, none lost and none handled twice; a consumer that leaves
hands its streams on at once; an idle consumer keeps its streams."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import pytest
import trio

from client.mock import MockNetwork
from eventstore.api import EventData, EventStore, InvalidEvent
from eventstore.persistent import PersistentSettings
from eventstore.persistent_consumer import bucket_of
from node.keys import Keypair

KEYS = Keypair(b"\x0d" * 32)
STREAMS = [f"order@{i}" for i in range(6)]


class _Died(Exception):
    pass


def new_store(net: MockNetwork) -> EventStore:
    return EventStore(net.client(KEYS), clock=trio.current_time, pending_grace=1.0, poll_interval=0.05)


@pytest.fixture
async def shop():
    net = MockNetwork(seed=4)
    db = await new_store(net).create_database("shop")
    assert len({bucket_of(s) for s in STREAMS}) == len(STREAMS)  # the test needs distinct buckets
    return net, db


async def append_round(db, first: int, n: int) -> None:
    for i in range(first, first + n):
        await db.append(STREAMS[i % len(STREAMS)], [EventData("Placed", {"i": i})])


async def test_a_stream_stays_with_its_consumer_until_that_one_dies(shop, autojump_clock):
    net, db = shop
    await append_round(db, 0, 24)
    await db.persistent.create("$ce-order", "g", PersistentSettings(
        start_from="start", message_timeout=5, consumer_strategy="Pinned"))
    handled: list[tuple[str, str, int]] = []  # (consumer, stream, i)
    a_died = trio.Event()

    async def consumer(name: str, die_after: int | None) -> None:
        sub = new_store(net).database("shop").persistent.subscribe("$ce-order", "g", name, buffer_size=3)
        n = 0
        async for message in sub:
            n += 1
            if die_after is not None and n > die_after:
                a_died.set()
                raise _Died()  # holding events, saying nothing
            await trio.sleep(0.05)
            handled.append((name, message.event.stream, message.event.data["i"]))
            await sub.ack(message)
            if len(handled) == 48:
                return

    async def more_after_a_died() -> None:
        await a_died.wait()
        await append_round(db, 24, 24)

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async def a() -> None:
                with contextlib.suppress(_Died):
                    await consumer("a", 8)

            nursery.start_soon(a)
            nursery.start_soon(more_after_a_died)
            await consumer("b", None)
    assert sorted(i for _c, _s, i in handled) == list(range(48))  # none lost, none twice
    owners: dict[str, list[str]] = defaultdict(list)
    for who, stream, _i in handled:
        if not owners[stream] or owners[stream][-1] != who:
            owners[stream].append(who)
    # Each stream had one consumer, and moved at most once: from a (dead) to b.
    assert all(seq in (["a"], ["b"], ["a", "b"]) for seq in owners.values()), dict(owners)
    assert any(seq[0] == "a" for seq in owners.values()) and any(seq == ["b"] for seq in owners.values())
    for stream in STREAMS:  # and in order, per stream, but for the events a died holding
        order = [i for _w, s, i in handled if s == stream]
        assert order == sorted(order) or owners[stream] == ["a", "b"]


async def test_a_leaving_consumer_hands_its_streams_on_and_an_idle_one_keeps_them(shop, autojump_clock):
    net, db = shop
    await db.persistent.create("$ce-order", "g", PersistentSettings(
        start_from="start", message_timeout=2, consumer_strategy="Pinned"))
    got: dict[str, list[str]] = defaultdict(list)

    async def take(sub, name: str, n: int) -> None:
        with trio.fail_after(60):
            for _ in range(n):
                message = await sub.__anext__()
                got[name].append(message.event.stream)
                await sub.ack(message)

    a = new_store(net).database("shop").persistent.subscribe("$ce-order", "g", "a", buffer_size=50)
    b = new_store(net).database("shop").persistent.subscribe("$ce-order", "g", "b", buffer_size=50)

    async def appended_later(first: int) -> None:
        await trio.sleep(0.5)  # both consumers are waiting (and have said they are alive)
        await append_round(db, first, 12)

    async with a, b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, a, "a", 6)
            nursery.start_soon(take, b, "b", 6)
            nursery.start_soon(appended_later, 0)
        firsts = {name: set(streams) for name, streams in got.items()}
        assert len(firsts["a"]) == len(firsts["b"]) == 3 and not firsts["a"] & firsts["b"]  # balanced
        await trio.sleep(10)  # both idle for 5 timeouts: their heartbeats keep their streams
        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, a, "a", 6)
            nursery.start_soon(take, b, "b", 6)
            nursery.start_soon(appended_later, 12)
        assert set(got["a"]) == firsts["a"] and set(got["b"]) == firsts["b"]
    c = new_store(net).database("shop").persistent.subscribe("$ce-order", "g", "c", buffer_size=50)
    async with c:  # a and b left: every stream is c's at once, no timeout to wait out
        await append_round(db, 24, 6)
        with trio.fail_after(1):
            await take(c, "c", 6)
        assert sorted(got["c"]) == sorted(STREAMS)


def test_the_strategy_is_checked():
    assert PersistentSettings(consumer_strategy="Pinned").consumer_strategy == "Pinned"
    with pytest.raises(InvalidEvent):
        PersistentSettings(consumer_strategy="Random")
