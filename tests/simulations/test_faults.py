"""Every fault of the nemesis does what it says, within its budget, and heals; churn and the
Byzantine wrapper too."""

from __future__ import annotations

import random

import pytest
import trio

from node.errors import CorruptRecord
from node.peer import Peer
from node.wire import new_message
from simulations.byzantine import LyingEndpoint
from simulations.determinism import run_seeded, sub_rng
from simulations.faults import FAULTS, Churn, ChurnConfig, Nemesis, NemesisConfig, session_length
from simulations.network import Delivery
from simulations.simulator import Simulator
from simulations.workloads import Workload, WorkloadConfig


def _effect(sim: Simulator) -> dict:
    net = sim.network
    return {
        "blocked": len(net.blocked), "clogged": len(net.clogged), "down": sum(n.state == "down" for n in sim.nodes),
        "paused": sum(n.state == "paused" for n in sim.nodes), "link": net.link, "slow": len(net.slot_links),
    }


def _rotten(store) -> int:
    """How many stored items fail their checksum (or were already quarantined)."""
    bad = len(store.quarantined())
    for ns, keys in (("md", store.record_keys("md")), ("chunk", store.chunk_names())):
        for key in keys:
            try:
                store.get_chunk(key) if ns == "chunk" else store.get_record(ns, key)
            except CorruptRecord:
                bad += 1
    return bad


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_takes_effect_and_heals(name: str) -> None:
    async def main() -> None:
        async with Simulator.open(5) as sim:
            await sim.add_nodes(6)
            workload = Workload(sim, WorkloadConfig(processes=1, chunk_processes=0), 5)
            await workload.setup()
            async with trio.open_nursery() as clients:
                clients.start_soon(workload.register_process, 0)
                await trio.sleep(1)
                # Something stored on every node, for "corrupt" to rot.
                async with sim.client() as client:
                    await client.put_idata(b"some chunk")
                before = _effect(sim)
                nemesis = Nemesis(sim, random.Random(1), {name: 1.0}, NemesisConfig(), workload)
                active = await FAULTS[name][1](nemesis)
                assert active is not None, f"{name} did not start"
                nemesis.active.append(active)
                await trio.sleep(0.6)  # swizzle clogs in steps
                during = _effect(sim)
                if name == "client-crash":
                    await trio.sleep(1)
                    assert workload.counts["client_crashes"] == 1
                elif name == "corrupt":
                    victim = next(n for n in sim.nodes if n.label == active.details["node"])
                    assert _rotten(victim.store) >= 1 and len(nemesis.destroyed) == 1
                else:
                    assert during != before, f"{name} changed nothing"
                await nemesis.heal_all()
                workload.stopping = True
            after = _effect(sim)
            assert after == {**before, "down": 0, "paused": 0}

    run_seeded(main, seed=5)


def test_faults_stay_within_the_down_budget() -> None:
    async def main() -> None:
        async with Simulator.open(6) as sim:
            await sim.add_nodes(8)
            nemesis = Nemesis(sim, random.Random(2), {"kill": 1.0})
            started = [await FAULTS["kill"][1](nemesis) for _ in range(5)]
            assert sum(a is not None for a in started) == sim.config.replication // 2
            pause = await FAULTS["pause"][1](nemesis)
            assert pause is None  # the budget is spent by the kills

    run_seeded(main, seed=6)


def test_data_destroying_faults_are_spaced_per_neighbourhood() -> None:
    async def main() -> None:
        async with Simulator.open(7) as sim:
            await sim.add_nodes(10)
            nemesis = Nemesis(sim, random.Random(3), {"wipe": 1.0}, NemesisConfig(max_down=10, recovery=30.0))
            wiped = [await FAULTS["wipe"][1](nemesis) for _ in range(6)]
            assert sum(a is not None for a in wiped) <= 3  # R // 2 per 2R nearest, in 10 nodes
            await trio.sleep(31)
            assert nemesis.may_destroy(sim.nodes[0])

    run_seeded(main, seed=7)


def test_a_loss_counts_where_the_node_was_and_in_each_items_group() -> None:
    async def main() -> None:
        async with Simulator.open(7) as sim:
            await sim.add_nodes(10)
            r = sim.config.replication
            workload = Workload(sim, WorkloadConfig(processes=1, chunk_processes=0), 7)
            await workload.setup()
            nemesis = Nemesis(sim, random.Random(3), {"wipe": 1.0}, NemesisConfig(max_down=10, recovery=30.0),
                              workload)
            item = int.from_bytes(workload.mds[0].name, "big")
            group = sorted(sim.nodes, key=lambda n: int.from_bytes(n.name, "big") ^ item)[:r]
            before = {n.slot: bytes(n.name) for n in sim.nodes}
            assert await FAULTS["wipe"][1](nemesis) is not None
            _t, slot, where = nemesis.destroyed[-1]
            wiped = next(n for n in sim.nodes if n.slot == slot)
            # Counted where it held data, not at the new name its next start will have.
            assert where == before[slot] != bytes(wiped.name)
            # Two losses in the item's group are a minority of five; a third is refused.
            already = sum(1 for n in group if before[n.slot] == where)
            for node in [n for n in group if n.slot != slot][: r // 2 - already]:
                sim.crash(node)
                nemesis.destroyed_now(node)
                sim.wipe(node)
            survivors = [n for n in group if n.up]
            assert len(survivors) == r - r // 2
            assert not any(nemesis.may_destroy(n) for n in survivors)

    run_seeded(main, seed=7)


def test_session_times_are_heavy_tailed_with_the_requested_mean() -> None:
    rng = random.Random(1)
    for distribution, shape in (("pareto", 1.5), ("weibull", 0.6)):
        config = ChurnConfig(session_mean=100.0, distribution=distribution, shape=shape)
        draws = sorted(session_length(config, rng) for _ in range(50_000))
        mean = sum(draws) / len(draws)
        assert 80 < mean < 120, (distribution, mean)
        assert draws[len(draws) // 2] < mean  # median below the mean: a long right tail
        assert draws[-1] > 10 * mean


def test_churn_replaces_nodes_with_new_identities() -> None:
    async def main() -> None:
        async with Simulator.open(8) as sim:
            await sim.add_nodes(8)
            names = {n.name for n in sim.nodes}
            nemesis = Nemesis(sim, random.Random(4), {}, NemesisConfig(recovery=1.0))
            churn = Churn(sim, sub_rng(8, "churn"), ChurnConfig(session_mean=10.0, dead_mean=2.0), nemesis)
            await churn.run(trio.current_time() + 40)
            assert churn.leaves >= 3 and churn.joins >= 1
            assert {n.name for n in sim.nodes} != names

    run_seeded(main, seed=8)


def test_a_lying_endpoint_forges_and_replays_reads_and_flips_chunks() -> None:
    async def main() -> None:
        async with Simulator.open(9) as sim:
            await sim.add_nodes(3)
            inner = sim.nodes[0].endpoint
            counts: dict[str, int] = {}
            liar = LyingEndpoint(inner, random.Random(1), ("forge", "stale", "chunks"), counts)
            sent = []
            inner.send_nowait = lambda to, address, msg: sent.append(msg) or True  # type: ignore[method-assign]
            peer = Peer(sim.nodes[1].name, "client", None)
            for n in range(6):
                read = new_message("read", req={"op": ["get_value", ["x", b"k"]]})
                liar.saw(Delivery(peer, read))
                reply = new_message("read_reply", result=[b"honest", n], acc=[n, b""], digest=b"d%d" % n)
                reply["re"] = read["id"]
                liar.send_nowait(peer.name, None, reply)
            liar.send_nowait(peer.name, None, new_message("chunk", value=b"chunk bytes"))
            results = [m["result"] for m in sent if m["k"] == "read_reply"]
            assert [b"forged:n0", 1] in results  # forged: a value nobody wrote
            assert any(m.get("digest") == b"d0" for m in sent[1:6])  # stale: the first answer again
            assert sent[-1]["value"] != b"chunk bytes"
            assert counts["forged_replies"] >= 1 and counts["stale_replies"] >= 1

    run_seeded(main, seed=9)
