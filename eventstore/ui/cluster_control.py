"""What the network pages know about a cluster, and the buttons that shake it.

`ClusterControl` wraps the cluster's `LocalCluster` (its data dir: cluster.json, pids,
admin key) and a `NodeTools` client: it reports every node with message rates computed
between two looks, and kills, restarts and adds nodes of a cluster launched on this machine.

The launcher's methods are blocking (file locks, waits on processes), so they run in worker
threads; restarting and adding wait for routing to converge, which takes seconds, so those
run as background operations whose progress the nodes page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.clusterfile import ClusterError, parse_name
from node.launcher import ADMIN_KEY_FILE, LocalCluster, NodeReport
from node.tools import NodeTools

from .operations import Operation, Operations

START_TIMEOUT = 60.0  # restarting or adding a node: spawn, join, converge


@dataclass(frozen=True)
class NodeRow:
    """One node as the nodes page shows it. Figures are None when the node did not answer."""

    index: int
    id: str
    address: str
    pid: int | None
    alive: bool  # the process runs (or, for a node not launched here, it answers)
    responding: bool
    ready: bool | None
    contacts: int | None
    chunks: int | None
    mds: int | None
    bytes: int | None
    uptime: float | None
    rate_in: float | None  # messages a second since the previous look
    rate_out: float | None
    client_requests: int | None

    @property
    def items(self) -> int | None:
        if self.chunks is None and self.mds is None:
            return None
        return (self.chunks or 0) + (self.mds or 0)

    @property
    def state(self) -> str:
        if not self.alive:
            return "down"
        if not self.responding:
            return "silent"
        return "up" if self.ready else "joining"


def _total(counters: Any) -> int:
    """A node reports messages per kind; the rate is of all of them."""
    if isinstance(counters, dict):
        return sum(int(v) for v in counters.values() if isinstance(v, int | float))
    return int(counters) if isinstance(counters, int | float) else 0


class ClusterControl:
    """The cluster behind the UI's client: a `LocalCluster` data dir and a tools client."""

    def __init__(self, cluster_file: Path, tools: NodeTools) -> None:
        self.cluster_file = cluster_file
        self.lc = LocalCluster(cluster_file.parent)
        self.tools = tools
        # Only a cluster this machine's launcher made can be shaken: its admin key and node
        # dirs are here, and its pids are processes of this machine.
        self.controllable = (cluster_file.parent / ADMIN_KEY_FILE).is_file()
        self.operations = Operations()
        self._samples: dict[str, tuple[float, int, int]] = {}

    @property
    def replication(self) -> int:
        return self.lc.load().replication

    # ------------------------------------------------------------------ looking

    async def nodes(self) -> list[NodeRow]:
        reports = await self.lc.status(self.tools)
        now = trio.current_time()
        return [self._row(report, now) for report in reports]

    def _row(self, report: NodeReport, now: float) -> NodeRow:
        entry, status = report.entry, report.status
        s = status or {}
        rate_in = rate_out = None
        if status is not None:
            total_in, total_out = _total(s.get("msgs_in")), _total(s.get("msgs_out"))
            before = self._samples.get(entry.id)
            self._samples[entry.id] = (now, total_in, total_out)
            if before is not None and now > before[0] and total_in >= before[1] and total_out >= before[2]:
                rate_in = (total_in - before[1]) / (now - before[0])
                rate_out = (total_out - before[2]) / (now - before[0])
            elif s.get("uptime"):
                # First look, or the node restarted (its counters began again): its average.
                rate_in, rate_out = total_in / float(s["uptime"]), total_out / float(s["uptime"])
        return NodeRow(
            entry.index, entry.id, entry.address, entry.pid if report.alive else None,
            report.alive or status is not None, status is not None, s.get("ready"),
            s.get("contacts"), s.get("chunks"), s.get("mds"), s.get("bytes"), s.get("uptime"),
            rate_in, rate_out, _total(s.get("client_requests")) if status is not None else None,
        )

    async def locate(self, name: str) -> dict[str, Any]:
        """`LocalCluster.locate`: the close group of `name` and who holds a copy."""
        return await self.lc.locate(parse_name(name), self.tools)

    # ------------------------------------------------------------------ shaking

    def _check_controllable(self) -> None:
        if not self.controllable:
            raise ClusterError(
                f"{self.cluster_file} was not made by `safenet cluster up` on this machine "
                "(no admin key beside it): its nodes cannot be killed or started from here"
            )

    async def kill(self, index: int) -> str:
        """SIGKILL node `index` now (quick: no need for the background)."""
        self._check_controllable()
        killed = await trio.to_thread.run_sync(self.lc.kill, index)
        self._samples.pop(self._id_of(index), None)
        return f"node {index} killed (SIGKILL)" if killed else f"node {index} was not running"

    def restart(self, nursery: trio.Nursery, index: int) -> Operation:
        """Start stopped node `index` again with its data, in the background."""
        self._check_controllable()
        self.lc.node(self.lc.load(), index)  # ClusterError now for an unknown index

        async def run() -> str:
            started = await _in_thread(partial(self.lc.start, index, timeout=START_TIMEOUT))
            return f"node {index} is up and routing has converged" if started else f"node {index} was running"

        return self.operations.start(nursery, f"restart node {index}", run)

    def add(self, nursery: trio.Nursery) -> Operation:
        """Add one node to the cluster, in the background."""
        self._check_controllable()

        async def run() -> str:
            new = await _in_thread(partial(self.lc.add, 1, timeout=START_TIMEOUT))
            return ", ".join(f"node {e.index} joined at {e.address}" for e in new)

        return self.operations.start(nursery, "add a node", run)

    def _id_of(self, index: int) -> str:
        try:
            return self.lc.node(self.lc.load(), index).id
        except ClusterError:
            return ""


async def _in_thread(coroutine_fn: Any) -> Any:
    """Run an async launcher call under its own trio loop in a worker thread: the launcher
    blocks on file locks and process waits, which must not stall the pages. Abandoned on
    shutdown: a node half started is left to the cluster, as `safenet cluster start`
    interrupted would leave it."""
    return await trio.to_thread.run_sync(partial(trio.run, coroutine_fn), abandon_on_cancel=True)
