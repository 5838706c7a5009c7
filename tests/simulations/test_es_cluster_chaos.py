"""Chaos on real node processes: a cluster the user started, and the event-store workload.

A small real cluster (free ports, its own temp dir, stopped by the test whatever happens)
with a replication the chaos runner would never pick itself: a run with `data_dir` naming
it must not start, stop or resize it, must say it uses it, and must leave every node up
with the data written before the run still readable. And a short event-store run on a
cluster the runner starts (and stops) itself, whose followers must get work done.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from client.network import NetworkClient
from node.clusterfile import BadClusterRequest
from node.keys import Keypair
from node.launcher import LocalCluster
from simulations.cluster_chaos import run_cluster
from simulations.scenarios import get_scenario


async def _put(addresses: list[str], replication: int, value: bytes) -> bytes:
    async with NetworkClient.open(addresses, Keypair.generate(), replication=replication, timeout=20.0) as client:
        return bytes(await client.put_idata(value))


async def _get(addresses: list[str], replication: int, name: bytes) -> bytes:
    async with NetworkClient.open(addresses, Keypair.generate(), replication=replication, timeout=20.0) as client:
        return bytes(await client.get_idata(name))


@pytest.mark.cluster
def test_chaos_on_a_users_cluster_uses_it_as_it_is_and_leaves_it_running(tmp_path) -> None:
    lc = LocalCluster(tmp_path / "mine")
    try:
        trio.run(partial(lc.up, 4, replication=3, timeout=120.0))
        before = lc.load()
        name = trio.run(_put, before.addresses, 3, b"the user's own data")
        said: list[str] = []
        scenario = get_scenario("partitions").with_(workload=get_scenario("calm").workload)
        with pytest.raises(BadClusterRequest, match="has 4 nodes, not 6"):
            trio.run(lambda: run_cluster(scenario, 1, nodes=6, duration=1.0, data_dir=lc.data_dir, quiet=0.0,
                                         log=said.append))
        result = trio.run(lambda: run_cluster(scenario, 1, duration=6.0, data_dir=lc.data_dir, quiet=3.0,
                                              log=said.append))
        assert not any("starting" in line for line in said), said
        assert any("using the running 4-node cluster" in line for line in said), said
        assert result.nodes == 4
        after = lc.load()
        assert [e.name for e in after.nodes] == [e.name for e in before.nodes]
        assert after.replication == 3
        assert all(lc.is_alive(e) for e in after.nodes), "chaos stopped a node of the user's cluster"
        assert [e.pid for e in after.nodes] == [e.pid for e in before.nodes]  # not restarted either
        assert trio.run(_get, after.addresses, 3, name) == b"the user's own data"
    finally:
        try:
            lc.down(timeout=10.0)
        finally:
            lc.kill_everything()  # never leave processes behind


@pytest.mark.cluster
def test_the_event_store_followers_get_work_done_between_kills_on_real_processes(tmp_path) -> None:
    """On node processes a follower's catch-up takes far longer than in the simulator: killed
    as often as there (every 3-15 s), the process manager of `chaos run eventstore --mode
    cluster --seed 1` never finished one and issued no command, so its check had nothing to
    check. Followers on a cluster now live longer between kills; a short run must see the
    process manager issue commands, every one exactly once, and every check hold."""
    result = trio.run(lambda: run_cluster(get_scenario("eventstore"), 1, nodes=6, duration=30.0,
                                          data_dir=tmp_path / "cluster", quiet=10.0, log=lambda line: None))
    failed = {name: check.anomalies[:3] for name, check in result.report.checks.items() if not check.valid}
    assert not failed, failed
    assert result.ops["command:applied"] > 0, result.ops
    assert "es_process_managers" in result.report.checks
    assert result.ops["append:ok"] > 100, result.ops
