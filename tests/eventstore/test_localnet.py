"""The same store on real node cores: eight nodes on an in-memory network under MockClock,
reached through the real NetworkClient (quorum reads, group ordering, retries)."""

from __future__ import annotations

import pytest
import trio
from es_testing import check_consistent, ev

from client.localnet import LocalNetwork
from eventstore.api import NO_STREAM, EventStore, StreamNotFound, WrongExpectedVersion
from node.keys import Keypair

KEYS = Keypair(b"\x05" * 32)


@pytest.fixture
async def local(autojump_clock):
    async with LocalNetwork.start(nodes=8, seed=3) as network:
        yield network


async def test_appends_reads_and_listings(local, autojump_clock):
    async with local.client(KEYS) as client:
        store = EventStore(client, pending_grace=1.0, poll_interval=0.1)
        db = await store.create_database("shop")
        assert await store.databases() == ["shop"]
        await db.append("order@1", [ev(n=0), ev(n=1)], expected_version=NO_STREAM)
        await db.append("order@1", [ev(n=2)], expected_version=1)
        with pytest.raises(WrongExpectedVersion) as info:
            await db.append("order@1", [ev()], expected_version=0)
        assert info.value.actual == 2
        await db.append("order@2", [ev(n=0)])
        assert [e.data["n"] for e in await db.read_stream("order@1")] == [0, 1, 2]
        assert [e.version for e in await db.read_stream("order@1", backward=True, from_version=-1)] == [2, 1, 0]
        assert await db.categories() == ["order"]
        assert await db.list_streams("order") == ["order@1", "order@2"]
        with pytest.raises(StreamNotFound):
            await db.read_stream("order@3")
        await check_consistent(db)


async def test_concurrent_writers_with_exact_versions(local, autojump_clock):
    """Five apps of one account, each with its own key (as the account's authorised apps),
    race on one stream."""
    apps = [Keypair(bytes([0x20 + i]) * 32) for i in range(5)]
    async with local.client(KEYS) as owner:
        await owner.create_account()
        for version, app in enumerate(apps, start=1):
            await owner.ins_auth_key(app.public, version)
    async with local.client(apps[0], owner=KEYS.public) as first:
        db = await EventStore(first).create_database("shop", writers=[a.public for a in apps])
        acknowledged: dict[object, int] = {}
        losers = 0

        async def writer(w: int) -> None:
            nonlocal losers
            async with local.client(apps[w], owner=KEYS.public) as client:
                mine = await EventStore(client).add_database(db.info)
                for i in range(2):
                    while True:
                        version = await mine.stream_version("hot@1")
                        event = ev(w=w, i=i)
                        try:
                            result = await mine.append("hot@1", [event], expected_version=version)
                        except WrongExpectedVersion:
                            losers += 1
                            continue
                        acknowledged[event.id] = result.next_expected_version
                        break

        async with trio.open_nursery() as nursery:
            for w in range(5):
                nursery.start_soon(writer, w)
        events = await db.read_stream("hot@1")
        assert [e.version for e in events] == list(range(10))
        assert {e.id: e.version for e in events} == acknowledged
        assert len(await check_consistent(db)) == 10


async def test_a_writer_killed_mid_append_then_a_subscriber_and_the_next_writer(local, autojump_clock):
    """One key, used by one process at a time (the in-memory transport keys a client's
    connection by its key, so two live clients with one key would cross their replies)."""
    async with local.client(KEYS) as client:
        await EventStore(client).create_database("shop")
        await EventStore(client).database("shop").append("acct@1", [ev(n=0)])
    acked: list[int] = []
    async with local.client(KEYS) as doomed:
        mine = EventStore(doomed).database("shop")
        send, sent = doomed._send, [0]

        async def counting(request):  # the kill lands at the 40th request, inside an append
            sent[0] += 1
            if sent[0] == 40:
                scope.cancel()
                await trio.lowlevel.checkpoint()
            return await send(request)

        doomed._send = counting  # type: ignore[method-assign]
        with trio.CancelScope() as scope:
            for i in range(1, 100):
                await mine.append("acct@1", [ev(n=i)])
                acked.append(i)
    assert 0 < len(acked) < 99
    async with local.client(KEYS) as client:
        db = EventStore(client, pending_grace=1.0, poll_interval=0.1).database("shop")
        subscription = db.subscribe_to_all()
        seen = []
        with trio.fail_after(60):
            async for event in subscription:
                seen.append(event.data["n"])
                if len(seen) >= len(acked) + 1:
                    break
        assert seen[: len(acked) + 1] == list(range(len(acked) + 1))
        await db.append("acct@1", [ev(n="after")])
        log = await check_consistent(db)
        assert log[-1].data == {"n": "after"}
