"""The chaos runner against a real cluster: node processes on loopback TCP, real faults.

The same workloads and checkers as the simulator, against a `node.launcher.LocalCluster`:

- processes: SIGKILL then a restart with the same data dir (`kill`), SIGSTOP / SIGCONT
  (`pause`);
- network: each node's transport `FaultRules`, set over the admin channel (the cluster's
  admin key): partitions of every shape as blocked names (one way for asymmetric ones),
  message loss and delay. Kernel traffic shaping (netem) is not available here.
- clients crashed mid-operation (`client-crash`).

Faults the simulator has but a process cluster cannot do safely (lost disks, bit rot,
duplication, reordering, clogging, churn, liars) are skipped, and the report says so.

Time here is real, so a seed fixes *which* faults happen in what order, not *when*: a cluster
run cannot be replayed exactly. At the end every fault is healed, the killed nodes
restarted, a quiet period waited out, every register and chunk read back and each close
group asked for its copy (`read` of each register to every member: their accepted values
must agree) and whether it holds each item (`locate`), and every node for how many contacts
it knows (`status`). Node logs are scanned for internal errors and stderr for tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from client.network import NetworkClient
from node.clusterfile import BadClusterRequest, ClusterError, ClusterFile, NodeEntry
from node.keys import Keypair
from node.launcher import LocalCluster
from node.requests import GetValue, Request
from node.tools import UNANSWERED, NodeTools, open_tools

from .checker import Anomaly, CheckResult, Report, check_all, check_linearizable
from .determinism import sub_rng
from .run import RunResult
from .scenarios import Scenario
from .trace import Trace
from .verdict import lost_chunks
from .workloads import Workload, WorkloadConfig

CLUSTER_FOLLOWER_LIFE = (20.0, 45.0)  # seconds a follower runs between kills on real processes
SUPPORTED = {"kill", "pause", "partition-halves", "partition-one", "partition-ring", "partition-asym", "loss",
             "delay", "client-crash"}


@dataclass
class _Rules:
    block_out: set[str] = field(default_factory=set)
    block_in: set[str] = field(default_factory=set)
    loss: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)

    def wire(self) -> dict[str, Any]:
        return {"block_out": sorted(self.block_out), "block_in": sorted(self.block_in), "loss": self.loss,
                "delay": list(self.delay)}


class ClusterTarget:
    """A running cluster as a workload target (see `workloads.Target`)."""

    def __init__(self, cluster: LocalCluster, trace: Trace, rng: random.Random) -> None:
        self.cluster = cluster
        self.trace = trace
        self.rng = rng
        self.info = cluster.load()
        self.config = SimpleNamespace(replication=self.info.replication)

    def reload(self) -> ClusterFile:
        self.info = self.cluster.load()
        return self.info

    def alive(self) -> list[NodeEntry]:
        return [e for e in self.info.nodes if self.cluster.is_alive(e)]

    @contextlib.asynccontextmanager
    async def client(self, keys: Keypair | None = None, **kwargs: Any) -> AsyncIterator[NetworkClient]:
        contacts = [e.address for e in self.alive()] or self.info.addresses
        kwargs.setdefault("replication", self.info.replication)
        kwargs.setdefault("rng", random.Random(self.rng.getrandbits(64)))
        async with NetworkClient.open(contacts, keys or Keypair.generate(self.rng), **kwargs) as client:
            yield client

    def close_group(self, name: bytes, count: int | None = None) -> Sequence[Any]:
        target = int.from_bytes(name, "big")
        live = sorted(self.alive(), key=lambda e: int.from_bytes(e.name, "big") ^ target)
        return live[: count or self.info.replication]


class ClusterNemesis:
    """Faults by signals and by the admin fault channel, one at a time per kind."""

    def __init__(self, target: ClusterTarget, tools: NodeTools, rng: random.Random, menu: dict[str, float],
                 workload: Workload, interval: float, duration: tuple[float, float]) -> None:
        self.target, self.tools, self.rng = target, tools, rng
        self.menu = {k: v for k, v in menu.items() if k in SUPPORTED and v > 0}
        self.skipped = sorted(set(menu) - SUPPORTED)
        self.workload = workload
        self.interval, self.duration = interval, duration
        self.rules: dict[int, _Rules] = {e.index: _Rules() for e in target.info.nodes}
        self.killed: set[int] = set()
        self.paused: set[int] = set()
        self.counts: dict[str, int] = {}
        self.busy: set[str] = set()

    def event(self, kind: str, what: str, **details: Any) -> None:
        self.target.trace.event(trio.current_time(), kind, what, **details)

    async def run(self, until: float) -> None:
        if not self.menu:
            return
        names = sorted(self.menu)
        async with trio.open_nursery() as nursery:
            while trio.current_time() < until:
                await trio.sleep(self.rng.expovariate(1.0 / self.interval))
                if trio.current_time() >= until:
                    break
                name = self.rng.choices(names, [self.menu[n] for n in names])[0]
                undo = await self.start(name)
                if undo is not None:
                    self.counts[name] = self.counts.get(name, 0) + 1
                    nursery.start_soon(self._later, undo, self.rng.uniform(*self.duration))
            nursery.cancel_scope.cancel()

    async def _later(self, undo: Any, delay: float) -> None:
        await trio.sleep(delay)
        await undo()

    # ------------------------------------------------------------------ faults

    async def start(self, name: str) -> Any:
        info = self.target.reload()
        up = [e for e in info.nodes if e.index not in self.killed | self.paused and self.target.cluster.is_alive(e)]
        budget = info.replication // 2 - len(self.killed | self.paused)
        if name in ("kill", "pause"):
            if budget <= 0 or not up:
                return None
            entry = self.rng.choice(up)
            return await (self._kill(entry) if name == "kill" else self._pause(entry))
        if name.startswith("partition"):
            return await self._partition(name, info)
        if name in ("loss", "delay"):
            return await self._weather(name, info)
        if name == "client-crash":
            worker = self.workload.crash_client(self.rng)
            if worker is not None:
                self.event("fault", "client-crash", worker=worker)

                async def nothing() -> None:
                    return None

                return nothing
        return None

    async def _kill(self, entry: NodeEntry) -> Any:
        await trio.to_thread.run_sync(self.target.cluster.kill, entry.index)
        self.killed.add(entry.index)
        self.event("fault", "kill", node=entry.index)

        async def undo() -> None:
            await self._restart(entry.index)

        return undo

    async def _restart(self, index: int) -> None:
        if index not in self.killed:
            return
        cluster = self.target.cluster
        with cluster.locked():
            info = cluster.load()
            entry = cluster.node(info, index)
            if not cluster.is_alive(entry):
                contacts = [e.address for e in info.nodes if e.index != index and cluster.is_alive(e)][:3]
                cluster.spawn(info, entry, contacts)
                cluster.save(info)
        self.killed.discard(index)
        self.event("heal", "kill", node=index)
        # Its fault rules died with it; give the new process the ones in force.
        await trio.sleep(1.0)
        await self._push(index)

    async def _pause(self, entry: NodeEntry) -> Any:
        if not entry.pid:
            return None
        os.kill(entry.pid, signal.SIGSTOP)
        self.paused.add(entry.index)
        self.event("fault", "pause", node=entry.index)

        async def undo() -> None:
            await self._resume(entry.index)

        return undo

    async def _resume(self, index: int) -> None:
        if index not in self.paused:
            return
        entry = self.target.cluster.node(self.target.reload(), index)
        if entry.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry.pid, signal.SIGCONT)
        self.paused.discard(index)
        self.event("heal", "pause", node=index)

    async def _push(self, index: int) -> None:
        entry = self.target.cluster.node(self.target.info, index)
        if index in self.killed or index in self.paused:
            return
        with contextlib.suppress(*UNANSWERED):
            await self.tools.set_fault(entry.address, self.rules[index].wire(), expect=entry.name)

    async def _push_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for index in sorted(self.rules):
                nursery.start_soon(self._push, index)

    async def _partition(self, name: str, info: ClusterFile) -> Any:
        if "partition" in self.busy:
            return None
        self.busy.add("partition")
        entries = list(info.nodes)
        self.rng.shuffle(entries)
        ids = {e.index: e.id for e in entries}
        blocked: set[tuple[int, int]] = set()
        if name == "partition-halves":
            half = len(entries) // 2
            a, b = entries[:half], entries[half:]
            blocked = {(x.index, y.index) for x in a for y in b} | {(y.index, x.index) for x in a for y in b}
        elif name == "partition-one":
            lone = entries[0]
            blocked = {(lone.index, y.index) for y in entries[1:]} | {(y.index, lone.index) for y in entries[1:]}
        elif name == "partition-ring":
            n = len(entries)
            reach = max(1, (n // 2 + 1) // 2)
            blocked = {(entries[i].index, entries[j].index) for i in range(n) for j in range(n)
                       if i != j and min((i - j) % n, (j - i) % n) > reach}
        else:  # partition-asym: a minority hears nothing from the rest
            k = max(1, len(entries) // 3)
            blocked = {(y.index, x.index) for x in entries[:k] for y in entries[k:]}
        for src, dst in blocked:
            self.rules[src].block_out.add(ids[dst])
            self.rules[dst].block_in.add(ids[src])
        await self._push_all()
        self.event("fault", name, pairs=len(blocked))

        async def undo() -> None:
            for rules in self.rules.values():
                rules.block_out.clear()
                rules.block_in.clear()
            await self._push_all()
            self.busy.discard("partition")
            self.event("heal", name)

        return undo

    async def _weather(self, name: str, info: ClusterFile) -> Any:
        if name in self.busy:
            return None
        self.busy.add(name)
        if name == "loss":
            loss = self.rng.choice([0.05, 0.1, 0.2])
            for rules in self.rules.values():
                rules.loss = loss
            details: dict[str, Any] = {"loss": loss}
        else:
            high = self.rng.choice([0.05, 0.2, 0.5])
            for rules in self.rules.values():
                rules.delay = (high / 4, high)
            details = {"delay": high}
        await self._push_all()
        self.event("fault", name, **details)

        async def undo() -> None:
            for rules in self.rules.values():
                if name == "loss":
                    rules.loss = 0.0
                else:
                    rules.delay = (0.0, 0.0)
            await self._push_all()
            self.busy.discard(name)
            self.event("heal", name)

        return undo

    def release_paused(self) -> None:
        """SIGCONT every paused node now (a stopped process would sit out a SIGTERM)."""
        for index in sorted(self.paused):
            entry = self.target.cluster.node(self.target.info, index)
            if entry.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.pid, signal.SIGCONT)
        self.paused.clear()

    async def heal_all(self) -> None:
        for index in sorted(self.paused):
            await self._resume(index)
        for index in sorted(self.killed):
            await self._restart(index)
        for rules in self.rules.values():
            rules.block_out.clear()
            rules.block_in.clear()
            rules.loss, rules.delay = 0.0, (0.0, 0.0)
        await self._push_all()
        self.busy.clear()
        self.event("heal", "all")


# ============================================================================ the end checks


async def _replica_states(target: ClusterTarget, tools: NodeTools,
                          workload: Workload) -> dict[Hashable, dict[Hashable, Any]]:
    """Ask each close-group member for its own copy of each register (as a quorum read does)."""
    states: dict[Hashable, dict[Hashable, Any]] = {}
    for key in workload.registers():
        address = workload.address(key)
        request = Request(GetValue(address, key[1].encode()), None)
        for entry in target.close_group(address.name):
            try:
                reply = await tools.request(entry.address, "read", expect=entry.name, req=request.to_obj())
            except Exception:  # noqa: BLE001 - any failure: this member did not answer
                states.setdefault(f"node-{entry.index}", {})[key] = "unanswered"
                continue
            result = reply.get("result")
            value = tuple(result) if isinstance(result, list) else None
            states.setdefault(f"node-{entry.index}", {})[key] = value
            states[f"node-{entry.index}"][(key[0], "digest")] = bytes(reply.get("digest") or b"").hex()
    return states


async def _placement(target: ClusterTarget, tools: NodeTools, workload: Workload) -> CheckResult:
    anomalies = []
    names: list[tuple[Hashable, bytes]] = [(workload.md_label(i), bytes(md.name)) for i, md in enumerate(workload.mds)]
    acked = {op.key for op in workload.chunks.ops() if op.f == "write" and op.outcome == "ok"}
    names += [(("chunk", n.hex()[:16]), n) for n in sorted(workload.chunk_values) if ("chunk", n.hex()[:16]) in acked]
    for label, name in names:
        missing = []
        for entry in target.close_group(name):
            try:
                located = await tools.locate(entry.address, name, expect=entry.name)
                if not located.holds:
                    missing.append(entry.index)
            except UNANSWERED:
                missing.append(entry.index)
        if missing:
            anomalies.append(Anomaly("under-replicated", label, f"not held by close-group nodes {missing}"))
    result = CheckResult("placement", anomalies=anomalies, stats={"items": len(names)})
    result.status = "invalid" if anomalies else "valid"
    return result


async def _routing(target: ClusterTarget, tools: NodeTools, received: Counter[str] | None = None,
                   k: int = 20) -> CheckResult:
    """Every node knows every other live one again (when there are at most k + 1 of them,
    a routing table holds them all): from each node's `status`, whose counts of messages
    received by kind are added to `received`."""
    live = target.alive()
    want = min(len(live) - 1, k)
    anomalies, sizes = [], []
    for entry in live:
        status = await tools.try_status(entry.address, expect=entry.name)
        if status is not None and received is not None and isinstance(status.get("msgs_in"), dict):
            received.update({str(kind): int(n) for kind, n in status["msgs_in"].items()})
        contacts = None if status is None else int(status.get("contacts", 0))
        sizes.append(contacts)
        if contacts is None or contacts < want:
            anomalies.append(Anomaly("lost-neighbours", f"node-{entry.index}",
                                     f"knows {contacts} contacts of the {want} it should know"))
    result = CheckResult("routing", anomalies=anomalies, stats={"nodes": len(live), "contacts": sizes})
    result.status = "invalid" if anomalies else "valid"
    return result


def _node_errors(info: ClusterFile) -> CheckResult:
    anomalies = []
    for entry in info.nodes:
        log = entry.path / "node.log"
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == "internal_error":
                        anomalies.append(Anomaly("internal-error", f"node-{entry.index}",
                                                 str(record.get("error"))[:300]))
        err = entry.path / "stderr.log"
        if err.exists() and "Traceback" in err.read_text(errors="replace"):
            anomalies.append(Anomaly("traceback", f"node-{entry.index}", f"see {err}"))
    result = CheckResult("node_errors", anomalies=anomalies, stats={"nodes": len(info.nodes)})
    result.status = "invalid" if anomalies else "valid"
    return result


# ============================================================================ a run


class Interrupted(Exception):
    """A cluster run stopped by SIGTERM or SIGINT, after it cleaned up (see `run_cluster`)."""

    def __init__(self, signum: int, cleanup: str) -> None:
        self.signum, self.cleanup = signum, cleanup
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {cleanup}")


async def run_cluster(scenario: Scenario, seed: int, *, nodes: int | None = None, duration: float | None = None,
                      data_dir: str | Path | None = None, quiet: float = 20.0,
                      log: Any = print) -> RunResult:
    """Attack a cluster and judge it.

    Given `data_dir` holding a cluster, that cluster is used as it is - its nodes, its
    replication - and left running with its data at the end (faults healed, killed nodes
    restarted); it must be running, and `nodes`, if given, must match it. Otherwise a new
    cluster of `nodes` (8 by default) is started in `data_dir` (or a temporary dir) and
    stopped at the end (the temporary dir removed).

    SIGTERM or SIGINT (when called from the main thread) ends the run the same way - the
    cluster it started stopped, the one it was given healed - and then raises `Interrupted`:
    node processes run in sessions of their own, so nothing else would stop them."""
    import threading

    cleanup: list[str] = []  # what the run did with the cluster at its end, in words
    if threading.current_thread() is not threading.main_thread():
        return await _run_cluster(scenario, seed, nodes, duration, data_dir, quiet, log, cleanup)
    caught: list[int] = []
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in signals:
                        caught.append(signum)
                        log(f"{signal.Signals(signum).name}: stopping the run and cleaning up ...")
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch)
                result = await _run_cluster(scenario, seed, nodes, duration, data_dir, quiet, log, cleanup)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The watcher never fails: the run's own error comes out as it is, not in a group
            # (callers and the CLI's error lines know BadClusterRequest, not groups of it).
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    if caught:
        raise Interrupted(caught[0], "; ".join(cleanup) or "no cluster was started yet")
    return result


async def _run_cluster(scenario: Scenario, seed: int, nodes: int | None, duration: float | None,
                       data_dir: str | Path | None, quiet: float, log: Any, cleanup: list[str]) -> RunResult:
    duration = scenario.duration if duration is None else duration
    made_dir = data_dir is None
    directory = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="safenet-chaos-"))
    cluster = LocalCluster(directory)
    theirs = cluster.exists()
    if theirs:
        info = cluster.load()
        down = [e.index for e in info.nodes if not cluster.is_alive(e)]
        if down:
            raise BadClusterRequest(f"the cluster in {directory} has stopped nodes {down}; chaos uses a cluster "
                                    "as it is (start them with `safenet cluster up`)")
        if nodes is not None and nodes != len(info.nodes):
            raise BadClusterRequest(f"the cluster in {directory} has {len(info.nodes)} nodes, not {nodes}; chaos "
                                    "never resizes a cluster it did not start (leave out --nodes)")
        nodes = len(info.nodes)
        log(f"using the running {nodes}-node cluster in {directory} (left running at the end) ...")
    else:
        nodes = 8 if nodes is None else nodes
        log(f"starting a {nodes}-node cluster in {directory} ...")
        try:
            await cluster.up(nodes, replication=5)
        except BaseException:
            _stop_ours(cluster, directory, made_dir)
            cleanup.append(f"the cluster it was starting in {directory} was stopped")
            raise
    trace = Trace()
    received: Counter[str] = Counter()  # messages the node processes counted (status), at the end
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    nemesis: ClusterNemesis | None = None
    try:
        target = ClusterTarget(cluster, trace, sub_rng(seed, "cluster-clients"))
        # Real processes: a follower's catch-up (a category read from its checkpoint) takes
        # tens of seconds under faults, so followers killed every 3-15 s, as in the simulator,
        # never finished one and the process manager issued no command to check. (A scenario
        # file that sets a range other than the simulator's keeps it.)
        config = scenario.workload
        if config.es_follower_life == WorkloadConfig.es_follower_life:
            config = dataclasses.replace(config, es_follower_life=CLUSTER_FOLLOWER_LIFE)
        workload = Workload(target, config, seed)  # type: ignore[arg-type]
        await workload.setup()
        es = None
        if scenario.workload.es_processes:
            from .es_workload import EventStoreLoad

            es = EventStoreLoad(workload)
            await es.setup()
        async with open_tools(cluster.admin_keys(), timeout=5.0) as tools:
            nemesis = ClusterNemesis(target, tools, sub_rng(seed, "nemesis"), scenario.faults, workload,
                                     scenario.nemesis.interval, scenario.nemesis.duration)
            if nemesis.skipped:
                log(f"faults this mode cannot inject, skipped: {', '.join(nemesis.skipped)}")
            until = trio.current_time() + duration
            log(f"running {scenario.name} for {duration:g} s (seed {seed}) ...")
            async with trio.open_nursery() as clients:
                for worker in range(scenario.workload.processes):
                    clients.start_soon(workload.register_process, worker)
                for worker in range(scenario.workload.chunk_processes):
                    clients.start_soon(workload.chunk_process, worker)
                for worker in range(scenario.workload.es_processes if es is not None else 0):
                    clients.start_soon(es.process, worker)  # type: ignore[union-attr]
                await nemesis.run(until)
                await trio.sleep_until(until)  # a scenario without faults runs its workload too
                workload.stopping = True
                await nemesis.heal_all()
            log(f"healed; {quiet:g} s quiet, then the final reads ...")
            await trio.sleep(quiet)
            target.reload()  # restarted nodes have new pids: who is alive is read afresh
            finals = await workload.final_reads()
            chunk_finals = await workload.final_chunks()
            stream_finals = await es.final_reads() if es is not None else None
            replicas = await _replica_states(target, tools, workload)
            report = check_all(workload.history, finals, replicas)
            checks = dict(report.checks)
            chunks = check_linearizable(workload.chunks, "register")
            chunks.name = "chunks_linearizable"
            checks["chunks_linearizable"] = chunks
            checks["lost_chunks"] = lost_chunks(workload, chunk_finals)
            if es is not None:
                from .es_workload import es_checks

                checks.update(es_checks(workload, es, stream_finals or {}))
            checks["placement"] = await _placement(target, tools, workload)
            checks["routing"] = await _routing(target, tools, received)
            checks["node_errors"] = _node_errors(target.reload())
    finally:
        if not theirs:
            if nemesis is not None:
                nemesis.release_paused()
            _stop_ours(cluster, directory, made_dir)
            cleanup.append(f"the {nodes}-node cluster it started in {directory} was stopped")
        elif nemesis is not None:
            # A run cut short still hands the user's cluster back whole: no node left paused,
            # killed or cut off.
            with contextlib.suppress(Exception):
                with trio.CancelScope(shield=True), trio.move_on_after(60.0):
                    await nemesis.heal_all()
            cleanup.append(f"the cluster in {directory} was healed and left running")
        else:
            cleanup.append(f"the cluster in {directory} was left running, no fault injected yet")
    result = RunResult(
        scenario=scenario.name, seed=seed, nodes=nodes, duration=duration, breaks=(), digest=trace.digest(),
        report=Report(checks), wall=time.perf_counter() - started_wall, cpu=time.process_time() - started_cpu,
        faults=dict(sorted(nemesis.counts.items())), ops=dict(sorted(workload.counts.items())),
        events=[e for e in trace.events if e.kind != "op"], latencies=workload.latencies,
        history=workload.history, chunks=workload.chunks, mode="cluster",
        streams=workload.streams if es is not None else None,
        messages=sum(received.values()), kinds=dict(received.most_common()),
    )
    result.virtual = result.wall
    return result


def _stop_ours(cluster: LocalCluster, directory: Path, made_dir: bool) -> None:
    """Stop a cluster this run started (and remove the temporary dir it made for it)."""
    with contextlib.suppress(ClusterError, OSError):
        cluster.down(purge=made_dir)
    if made_dir:
        with contextlib.suppress(OSError):
            directory.rmdir()
