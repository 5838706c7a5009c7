"""The real node core, several instances, over the in-memory transport under MockClock.

Every test takes `autojump_clock`, so the `trio.sleep` calls below pass virtual time: a
simulated half minute of churn costs milliseconds, and no test waits on the wall clock.

These prove the core is sans-IO (docs/architecture.md principle 1): the same NodeCore and
NodeHost that run in a process over TCP run here on virtual time, with no sockets.
"""

from __future__ import annotations

import pytest
import trio

from client.localnet import LocalNetwork
from node import ANYONE, Action, Ins, MutableData, PermissionSet, Update, XorName
from node import errors as E


def _open_md(owner, rng_name: bytes) -> MutableData:
    return MutableData(
        XorName.hash_of(rng_name), 15000, {}, {ANYONE: PermissionSet.allowing(Action.INSERT, Action.UPDATE)},
        0, frozenset({owner}),
    )


async def test_routing_converges_and_data_round_trips(autojump_clock):
    async with LocalNetwork.start(nodes=8, seed=1) as net:
        assert all(n.core.ready for n in net.nodes)
        assert all(len(n.core.routing) == 7 for n in net.nodes)
        async with net.client() as client:
            name = await client.put_idata(b"hello world")
            assert await client.get_idata(name) == b"hello world"
            assert sorted(net.holders(name)) == sorted(net.close_group(name))
            md = _open_md(client.public_key, b"md-1")
            await client.put_mdata(md)
            await client.mutate_entries(md.address, {b"a": Ins(b"1")})
            await client.mutate_entries(md.address, {b"a": Update(b"2", 1)})
            value = await client.get_value(md.address, b"a")
            assert (value.content, value.entry_version) == (b"2", 1)
            with pytest.raises(E.InvalidEntryActions):
                await client.mutate_entries(md.address, {b"a": Update(b"3", 1)})
            with pytest.raises(E.DataExists):
                await client.put_mdata(md)


async def test_conflicting_inserts_one_wins(autojump_clock):
    async with LocalNetwork.start(nodes=8, seed=2) as net:
        async with net.client() as a, net.client() as b:
            md = _open_md(a.public_key, b"race")
            await a.put_mdata(md)
            for round_ in range(20):
                outcomes = []

                async def write(client, value, key=b"k%d" % round_, outcomes=outcomes):
                    try:
                        await client.mutate_entries(md.address, {key: Ins(value)})
                        outcomes.append(("ok", value))
                    except E.InvalidEntryActions:
                        outcomes.append(("exists", value))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write, a, b"from-a")
                    nursery.start_soon(write, b, b"from-b")
                winners = [v for kind, v in outcomes if kind == "ok"]
                assert len(winners) == 1, outcomes
                stored = await a.get_value(md.address, b"k%d" % round_)
                assert stored.content == winners[0]


async def test_crash_of_two_group_members_loses_nothing(autojump_clock):
    async with LocalNetwork.start(nodes=8, seed=3) as net:
        async with net.client() as client:
            names = [await client.put_idata(b"chunk %d" % i) for i in range(20)]
            md = _open_md(client.public_key, b"survivor")
            await client.put_mdata(md)
            await client.mutate_entries(md.address, {b"k%d" % i: Ins(b"v") for i in range(10)})
            group = net.close_group(md.name)
            for index in group[:2]:
                await net.crash(index)
            # Anti-entropy brings every item back to R live holders (virtual seconds).
            await net.until(lambda: all(sorted(net.holders(n)) == sorted(net.close_group(n))
                                        for n in [md.name, *names]), within=30)
            assert len(await client.list_entries(md.address)) == 10
            for name in names:
                assert await client.get_idata(name) == b"chunk %s" % name_index(names, name)
            # Anti-entropy brought every item back to R live holders.
            assert sorted(net.holders(md.name)) == sorted(net.close_group(md.name))
            for name in names:
                assert sorted(net.holders(name)) == sorted(net.close_group(name)), name.hex()


def name_index(names, name) -> bytes:
    return str(names.index(name)).encode()


async def test_restarted_node_keeps_its_data_and_rejoins(autojump_clock):
    async with LocalNetwork.start(nodes=6, seed=4) as net:
        async with net.client() as client:
            md = _open_md(client.public_key, b"restart")
            await client.put_mdata(md)
            await client.mutate_entries(md.address, {b"x": Ins(b"1")})
            member = net.close_group(md.name)[0]
            before = net.nodes[member].core.replicator.record(next(iter(net.nodes[member].core.replicator.records)))
            await net.crash(member)
            others = [n for n in net.live() if n.index != member]
            await net.until(lambda: all(net.nodes[member].keys.name not in n.core.routing for n in others), within=30)
            await client.mutate_entries(md.address, {b"y": Ins(b"2")})  # written while it is gone
            await net.restart(member)
            node = net.nodes[member]
            await net.until(lambda: node.core.ready and len(node.core.routing) == 5 and member in net.holders(md.name),
                            within=30)
            assert node.core.ready and len(node.core.routing) == 5
            assert before is not None
            # It rejoined the group and caught up on what it missed while down.
            assert member in net.holders(md.name)
            assert set(await client.list_keys(md.address)) == {b"x", b"y"}


async def test_a_lying_member_never_fools_the_client(autojump_clock):
    import dataclasses

    async with LocalNetwork.start(nodes=8, seed=5) as net:
        async with net.client() as client:
            md = _open_md(client.public_key, b"truth")
            await client.put_mdata(md)
            await client.mutate_entries(md.address, {b"k": Ins(b"v0")})
            chunk = await client.put_idata(b"the real chunk")
            liar = net.nodes[net.close_group(md.name)[0]]
            liar.core.config = dataclasses.replace(liar.core.config, lie=frozenset({"forge", "stale", "corrupt"}))
            chunk_liar = net.nodes[net.close_group(chunk)[0]]
            chunk_liar.core.config = liar.core.config
            reads = 0
            for i in range(1, 51):  # 50 updates, each read back 10 times, plus 10 chunk reads
                await client.mutate_entries(md.address, {b"k": Update(b"v%d" % i, i)})
                for _ in range(10):
                    value = await client.get_value(md.address, b"k")
                    assert (value.content, value.entry_version) == (b"v%d" % i, i)
                    assert await client.get_idata(chunk) == b"the real chunk"
                    reads += 2
            assert reads == 1000


async def test_a_chunk_that_rots_unread_is_found_and_stored_again(autojump_clock):
    async with LocalNetwork.start(nodes=6, seed=6) as net:
        async with net.client() as client:
            name = await client.put_idata(b"a chunk nobody reads again")
            await net.until(lambda: sorted(net.holders(name)) == sorted(net.close_group(name)), within=30)
            victim = net.nodes[net.close_group(name)[0]]
            victim.store.corrupt("chunk", name)
            assert victim.store.contains_chunk(name)  # the index still lists it: only a read finds the rot
            await trio.sleep(30)  # nobody reads it; the scrubber does
            assert victim.store.get_chunk(name) == b"a chunk nobody reads again"


async def test_self_lookups_back_off_while_the_neighbourhood_stays_and_resume_when_it_moves(autojump_clock):
    async with LocalNetwork.start(nodes=6, seed=7) as net:
        node = net.nodes[0]

        def self_lookups_sent() -> int:
            return node.core.metrics.msgs_out["find_node"]

        # Settled: the interval stretches to its limit once the neighbourhood stays put.
        await net.until(lambda: node.core._neighbour_backoff == node.core.config.neighbour_backoff, within=200)
        assert node.core._neighbour_backoff == node.core.config.neighbour_backoff
        before = self_lookups_sent()
        await trio.sleep(240)  # a window, not a wait: 16 ticks of 15 s give 2 lookups (16 without the back-off)
        settled_rate = self_lookups_sent() - before
        assert 0 < settled_rate <= 2 * 6  # a lookup here asks each of the 6 others at most once

        newcomer = await net.add()  # it joins next to everyone in a network this small
        await trio.sleep(5)
        assert newcomer.core.name in node.core._neighbourhood()
        before = self_lookups_sent()
        await trio.sleep(60)  # back to every 15 s, then stretching again
        assert node.core._neighbour_backoff < node.core.config.neighbour_backoff
        assert self_lookups_sent() - before > settled_rate  # more in 60 s than in the 240 s before
