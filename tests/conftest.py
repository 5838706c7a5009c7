"""Fixtures shared by every test package: a real multi-process cluster on loopback.

`cluster8` starts eight `safenet node run` processes (R = 5) once per test session, in a
temporary dir, and stops them all at the end however the session went. Tests that crash
nodes leave it to `healthy_cluster`, which restarts whatever is down before the next test,
so tests do not depend on each other's order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import pytest
import trio
from hypothesis import settings

from node.cluster import ClusterFile, LocalCluster

# Hypothesis's per-example deadline measures the machine's load, not the code: on two shared
# cores (and under `pytest -n 2`) an example that takes 5 ms alone can take 300 ms. Tests that
# care about time say so themselves.
settings.register_profile("shared-cores", deadline=None)
settings.load_profile("shared-cores")

# Generous: the machine has two cores shared with other test runs.
CLUSTER_START_TIMEOUT = 120.0


@dataclass
class RunningCluster:
    """A started cluster and what it took to start it."""

    lc: LocalCluster
    nodes: int
    replication: int
    startup_seconds: float

    def info(self) -> ClusterFile:
        return self.lc.load()

    def addresses(self) -> list[str]:
        return self.info().addresses


def start_cluster(data_dir, nodes: int, replication: int) -> RunningCluster:
    """Start a cluster in `data_dir` (sync: for fixtures outside the trio loop)."""
    lc = LocalCluster(data_dir)
    started = time.monotonic()
    trio.run(partial(lc.up, nodes, replication=replication, timeout=CLUSTER_START_TIMEOUT))
    return RunningCluster(lc, nodes, replication, time.monotonic() - started)


def stop_cluster(lc: LocalCluster) -> None:
    """Stop every node; SIGKILL whatever does not stop (never leave processes behind)."""
    try:
        lc.down(timeout=10.0)
    finally:
        lc.kill_everything()


@pytest.fixture(scope="session")
def cluster8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    data_dir = tmp_path_factory.mktemp("cluster8")
    lc = LocalCluster(data_dir)
    try:
        running = start_cluster(data_dir, nodes=8, replication=5)
        print(f"\n[cluster8] 8 nodes up and converged in {running.startup_seconds:.2f}s")
        yield running
    finally:
        stop_cluster(lc)


@pytest.fixture
def healthy_cluster(cluster8: RunningCluster) -> RunningCluster:
    """`cluster8` with every node running and routing converged (restarts crashed nodes)."""
    lc = cluster8.lc

    async def heal() -> None:
        info = lc.load()
        for entry in info.nodes:
            if not lc.is_alive(entry):
                await lc.start(entry.index, timeout=CLUSTER_START_TIMEOUT)
        await lc.wait_converged(timeout=CLUSTER_START_TIMEOUT)

    trio.run(heal)
    return cluster8
