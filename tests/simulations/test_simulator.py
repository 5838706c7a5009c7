"""Real nodes in the simulator: they boot, serve a real client, crash, restart, lose their disks,
pause, and a node that raises is recorded rather than taking the run down. Both drivers."""

from __future__ import annotations

import pytest
import trio

from node import ANYONE, Action, Ins, MutableData, PermissionSet, XorName
from node.paxos import item_key
from simulations.determinism import run_seeded
from simulations.simulator import Simulator

DRIVERS = ["host", "stepped"]


def _md(owner, label: bytes) -> MutableData:
    return MutableData(XorName.hash_of(label), 15000, {}, {ANYONE: PermissionSet.allowing(Action.INSERT)}, 0,
                       frozenset({owner}))


@pytest.mark.parametrize("driver", DRIVERS)
def test_nodes_boot_and_serve_a_client(driver: str) -> None:
    async def main() -> None:
        async with Simulator.open(1, driver=driver) as sim:
            await sim.add_nodes(8)
            assert all(len(n.core.routing) == 7 for n in sim.nodes)
            async with sim.client() as client:
                name = await client.put_idata(b"hello")
                assert await client.get_idata(name) == b"hello"
                md = _md(client.public_key, b"boot")
                await client.put_mdata(md)
                await client.mutate_entries(md.address, {b"k": Ins(b"v")})
                assert (await client.get_value(md.address, b"k")).content == b"v"
                assert {n.slot for n in sim.holders(md.name)} == {n.slot for n in sim.close_group(md.name)}

    run_seeded(main, seed=1)


@pytest.mark.parametrize("driver", DRIVERS)
def test_crash_restart_keeps_the_disk_and_wipe_makes_a_new_node(driver: str) -> None:
    async def main() -> None:
        async with Simulator.open(2, driver=driver) as sim:
            await sim.add_nodes(8)
            async with sim.client() as client:
                md = _md(client.public_key, b"crash")
                await client.put_mdata(md)
                member = sim.close_group(md.name)[0]
                name = member.name
                sim.crash(member)
                assert member.state == "down" and not member.up
                await trio.sleep(5)
                await sim.restart(member)
                assert member.name == name and member.label == f"n{member.slot}.2"
                assert member.core.replicator.records.get(item_key(md.address)) is not None  # synced, so kept
                sim.crash(member)
                sim.wipe(member)
                await sim.restart(member)
                assert member.name != name and member.store.record_keys("md") == []
                await trio.sleep(10)
                await client.mutate_entries(md.address, {b"after": Ins(b"1")})

    run_seeded(main, seed=2)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_paused_node_fires_no_timers(driver: str) -> None:
    async def main() -> None:
        async with Simulator.open(3, driver=driver) as sim:
            await sim.add_nodes(6)
            node = sim.nodes[2]
            handled = node.core.metrics.msgs_in.total()
            sim.pause(node)
            await trio.sleep(20)
            assert node.core.metrics.msgs_in.total() == handled  # it read nothing
            assert node.core.now < trio.current_time() - 19  # and no timer woke it
            sim.resume(node)
            await trio.sleep(2)
            assert node.core.metrics.msgs_in.total() > handled
            assert node.core.now >= trio.current_time() - 2

    run_seeded(main, seed=3)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_node_that_raises_is_recorded_and_the_run_goes_on(driver: str) -> None:
    async def main() -> None:
        async with Simulator.open(4, driver=driver) as sim:
            await sim.add_nodes(5)
            victim = sim.nodes[1]

            def broken(*args, **kwargs):
                raise RuntimeError("a bug in the core")

            victim.core.handle = broken  # type: ignore[method-assign]
            await trio.sleep(5)
            assert [e.label for e in sim.errors] == ["n1"]
            assert "a bug in the core" in sim.errors[0].error
            assert victim.state == "down"
            assert all(n.state == "up" for n in sim.nodes if n is not victim)

    run_seeded(main, seed=4)


def test_both_drivers_reach_the_same_verdict() -> None:
    from simulations.run import run_sim
    from simulations.scenarios import get_scenario

    scenario = get_scenario("kill-restart").with_(nodes=6, duration=8.0, quiet=6.0)
    host, stepped = run_sim(scenario, 2), run_sim(scenario, 2, driver="stepped")
    assert host.valid and stepped.valid
    assert host.faults == stepped.faults  # the nemesis draws from its own stream: same faults either way
