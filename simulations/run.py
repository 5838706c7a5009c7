"""Play one scenario for one seed in the simulator, and say what survived.

    result = run_sim(get_scenario("mixed"), seed=7)
    result.valid, result.digest, result.replay_command()

A run: boot the nodes (some of them liars if the scenario says so) and let routing settle;
create the hot MDs; run the client processes while the nemesis (and churn) attack for
`duration` virtual seconds; stop the attack and heal everything (restart crashed nodes,
resume paused ones, lift partitions and link faults) while the last operations finish; wait
a quiet period; read every register and chunk back; read the replicas out of the nodes; and
judge (`simulations.verdict`). Everything is drawn from the seed, so the same seed gives the
same trace digest, and a failing seed is its own bug report.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from node.core import NodeConfig
from node.paxos import item_key

from .attackers import Attackers
from .byzantine import liar
from .checker import Report
from .determinism import run_seeded, sub_rng
from .es_breaks import ES_BREAKS
from .es_breaks import applied as es_breaks_applied
from .faults import Churn, Nemesis
from .history import History
from .integrity import integrity_checks
from .scenarios import Scenario
from .simulator import Simulator
from .trace import Trace, TraceEvent
from .verdict import judge
from .workloads import Latency, Workload

SETTLE = 5.0  # virtual seconds for routing to converge before the workload starts (small networks)


def settle_time(nodes: int) -> float:
    """Joining takes longer when a thousand nodes join through the same three contacts."""
    return max(SETTLE, nodes / 25)
# trust_any_peer, accept_unvalidated, unbounded_numbers, trust_idle_members,
# trust_the_coordinator, adopt_any_certified and trust_the_ack (clients take a member's "ok" to
# a write on its word) switch off a trust defence (the attackers of the `byzantine` scenario
# find them), forget_lost_members a partition defence. ES_BREAKS break the event store.
BREAKS = ("ack_before_quorum", "skip_version_check", "no_anti_entropy",
          "trust_any_peer", "accept_unvalidated", "unbounded_numbers", "trust_idle_members",
          "trust_the_coordinator", "adopt_any_certified", "trust_the_ack", "forget_lost_members", *ES_BREAKS)


@dataclass
class Sample:
    """How many replicas an item had at one instant."""

    time: float
    item: str
    holders: int  # live nodes holding it
    in_group: int  # members of its current close group holding it


@dataclass
class RunResult:
    scenario: str
    seed: int
    nodes: int
    duration: float
    breaks: tuple[str, ...]
    digest: str
    report: Report
    wall: float = 0.0
    cpu: float = 0.0
    virtual: float = 0.0
    messages: int = 0
    bytes_sent: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    lookups: dict[str, int] = field(default_factory=dict)
    node_logs: dict[str, int] = field(default_factory=dict)
    byzantine: dict[str, int] = field(default_factory=dict)
    churn: dict[str, int] = field(default_factory=dict)
    events: list[TraceEvent] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    population: list[tuple[float, int]] = field(default_factory=list)
    history: History | None = None
    chunks: History | None = None
    streams: History | None = None
    trace_lines: list[str] | None = None
    topology: dict[str, list[str]] = field(default_factory=dict)  # node -> contacts, at the end
    mode: str = "sim"
    driver: str = "stepped"
    quiet: float | None = None  # set when it differs from the scenario's own
    keep_faults: frozenset[int] | None = None  # only these of the nemesis's faults (simulations.shrink)
    injected: list[tuple[int, float, str]] = field(default_factory=list)  # (number, time, fault) that took effect
    replay_args: list[str] = field(default_factory=list)  # how the scenario differs from the named one

    @property
    def valid(self) -> bool:
        return self.report.valid

    @property
    def status(self) -> str:
        return self.report.status

    def replay_command(self) -> str:
        if self.mode == "cluster":
            # Real time: the seed fixes which faults come in what order, not when they come.
            return (f"safenet chaos run {self.scenario} --mode cluster --seed {self.seed} --nodes {self.nodes} "
                    f"--duration {self.duration:g}")
        parts = [f"safenet chaos run {self.scenario} --seed {self.seed} --nodes {self.nodes}",
                 f"--duration {self.duration:g}", "--mode sim"]
        parts += [f"--break {b}" for b in self.breaks]
        if self.driver != "stepped":
            parts.append(f"--driver {self.driver}")
        if self.quiet is not None:
            parts.append(f"--quiet {self.quiet:g}")
        parts += self.replay_args
        if self.keep_faults is not None:
            parts.append(f"--keep-faults {format_numbers(self.keep_faults)}")
        return " ".join(parts)

    def failures(self) -> list[str]:
        """One line per check that did not pass."""
        return [f"{name}: {c.status}" + (f" ({len(c.anomalies)} anomalies)" if c.anomalies else f" ({c.reason})")
                for name, c in self.report.checks.items() if not c.valid]

    def summary(self) -> dict[str, Any]:
        """The figures of the run, JSON-ready (histories and events left out)."""
        return {
            "scenario": self.scenario, "seed": self.seed, "mode": self.mode, "driver": self.driver, "nodes": self.nodes,
            "duration": self.duration, "breaks": list(self.breaks), "status": self.status,
            "valid": self.valid, "failures": self.failures(), "digest": self.digest,
            "replay": self.replay_command(), "wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3),
            "virtual_s": round(self.virtual, 3), "messages": self.messages, "bytes": self.bytes_sent,
            "kinds": self.kinds,
            "drops": self.drops, "faults": self.faults, "ops": self.ops, "lookups": self.lookups,
            "node_logs": self.node_logs, "byzantine": self.byzantine, "churn": self.churn,
            "checks": {name: {"status": c.status, "stats": c.stats, "reason": c.reason,
                              "anomalies": [str(a) for a in c.anomalies[:20]]}
                       for name, c in self.report.checks.items()},
        }


def format_numbers(numbers: frozenset[int] | set[int] | list[int]) -> str:
    """1,2,3,7 as "1-3,7" (and the empty set as "none"), for --keep-faults."""
    ordered = sorted(numbers)
    if not ordered:
        return "none"
    runs: list[list[int]] = []
    for n in ordered:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def parse_numbers(text: str) -> frozenset[int]:
    """The inverse of `format_numbers`; ValueError for anything else."""
    text = text.strip()
    if text == "none":
        return frozenset()
    out: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        a, b = int(first), int(last) if sep else int(first)
        if a < 0 or b < a or b - a > 1_000_000:
            raise ValueError(f"not a range of fault numbers: {part!r}")
        out.update(range(a, b + 1))
    return frozenset(out)


def run_sim(
    scenario: Scenario,
    seed: int,
    *,
    breaks: tuple[str, ...] = (),
    keep_messages: bool = False,
    keep_histories: bool = True,
    config: NodeConfig | None = None,
    tick: float = 0.005,
    driver: str = "stepped",
    inspect: Callable[[Simulator, Workload], None] | None = None,
    progress: Callable[[float, Simulator], None] | None = None,
    max_steps: int = 2_000_000,
    keep_faults: frozenset[int] | None = None,
) -> RunResult:
    """Play `scenario` (its `nodes` and `duration` included) for `seed`; see the module doc."""
    unknown = set(breaks) - set(BREAKS)
    if unknown:
        raise ValueError(f"unknown breaks {sorted(unknown)}; known: {', '.join(BREAKS)}")
    wall, cpu = time.perf_counter(), time.process_time()
    with es_breaks_applied(breaks):
        result = run_seeded(_play, scenario, seed, tuple(breaks), keep_messages, config, tick, driver, inspect,
                            progress, max_steps, keep_faults, seed=seed)
    result.driver = driver
    result.keep_faults = keep_faults
    result.replay_args += _replay_args(scenario)
    from .scenarios import SCENARIOS

    named = SCENARIOS.get(scenario.name)
    if named is not None and named.quiet != scenario.quiet:
        result.quiet = scenario.quiet
    result.wall, result.cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not keep_histories:
        result.history = result.chunks = result.streams = None
    return result


def _replay_args(scenario: Scenario) -> list[str]:
    """What the replay command must add for `scenario` to be what the command line makes."""
    from .scenario_file import ScenarioError, format_faults, is_file, load
    from .scenarios import SCENARIOS

    try:
        named = load(scenario.name) if is_file(scenario.name) else SCENARIOS.get(scenario.name)
    except ScenarioError:
        named = None
    if named is None:
        return []
    out = []
    if named.quiet != scenario.quiet and is_file(scenario.name):
        out.append(f"--quiet {scenario.quiet:g}")  # named scenarios say it through RunResult.quiet
    if named.churn is not None and scenario.churn is None:
        out.append("--no-churn")
    if named.faults != scenario.faults:
        out.append(f"--faults {format_faults(scenario.faults)}")
    if named.nemesis.interval != scenario.nemesis.interval:
        out.append(f"--fault-interval {scenario.nemesis.interval:g}")
    return out


async def _play(scenario: Scenario, seed: int, breaks: tuple[str, ...], keep_messages: bool,
                config: NodeConfig | None, tick: float, driver: str,
                inspect: Callable[[Simulator, Workload], None] | None,
                progress: Callable[[float, Simulator], None] | None, max_steps: int,
                keep_faults: frozenset[int] | None) -> RunResult:
    trace = Trace(keep_messages=keep_messages)
    base = config or NodeConfig()
    config = replace(base, breaks=frozenset(breaks) | base.breaks)
    byzantine_counts: dict[str, int] = {}
    async with Simulator.open(seed, config=config, link=scenario.link, trace=trace, tick=tick, driver=driver) as sim:
        liars = set(sub_rng(seed, "byzantine").sample(range(scenario.nodes), scenario.byzantine))
        for slot in range(scenario.nodes):
            wrapper = liar(sub_rng(seed, f"liar:{slot}"), scenario.byzantine_modes, byzantine_counts) \
                if slot in liars else None
            await sim.add_node(wrapper)
        for slot in sorted(liars):
            trace.event(sim.now, "fault", "byzantine", node=f"n{slot}", modes=",".join(scenario.byzantine_modes))
        await trio.sleep(settle_time(scenario.nodes))

        workload = Workload(sim, scenario.workload, seed)
        await workload.setup()
        es = None
        if scenario.workload.es_processes:
            # Imported here: the event store is a layer above; runs without it must not need it.
            from .es_workload import EventStoreLoad

            es = EventStoreLoad(workload)
            await es.setup()
        attackers = None
        if scenario.attacks:
            attackers = Attackers(sim, workload, sub_rng(seed, "attackers"), scenario.attacks, scenario.attackers,
                                  counts=Counter())
            await attackers.setup()
        nemesis = Nemesis(sim, sub_rng(seed, "nemesis"), scenario.faults, scenario.nemesis, workload, keep_faults)
        churn = Churn(sim, sub_rng(seed, "churn"), scenario.churn, nemesis) if scenario.churn else None
        samples: list[Sample] = []
        until = sim.now + scenario.duration

        async with trio.open_nursery() as everything:
            everything.start_soon(_sample, sim, workload, samples, max(1.0, scenario.duration / 60))
            if progress is not None:
                everything.start_soon(_report_progress, sim, progress, max(1.0, scenario.duration / 20))
            async with trio.open_nursery() as clients:
                for worker in range(scenario.workload.processes):
                    clients.start_soon(workload.register_process, worker)
                for worker in range(scenario.workload.chunk_processes):
                    clients.start_soon(workload.chunk_process, worker)
                for worker in range(scenario.workload.lookup_processes):
                    clients.start_soon(workload.lookup_process, worker)
                for worker in range(scenario.workload.es_processes if es is not None else 0):
                    clients.start_soon(es.process, worker)  # type: ignore[union-attr]
                async with trio.open_nursery() as chaos:
                    chaos.start_soon(nemesis.run, until)
                    if churn is not None:
                        chaos.start_soon(churn.run, until)
                    if attackers is not None:
                        chaos.start_soon(attackers.run, until)
                    await trio.sleep_until(until)
                    chaos.cancel_scope.cancel()
                workload.stopping = True  # each process finishes the operation it is in
                await nemesis.heal_all()
            await trio.sleep(scenario.quiet)
            # Attackers can leave no node running; the checks then say so, and nothing is read.
            up = bool(sim.contacts())
            finals = await workload.final_reads() if up else {}
            chunk_finals = await workload.final_chunks() if sim.contacts() else {}
            stream_finals = await es.final_reads() if es is not None and sim.contacts() else None
            everything.cancel_scope.cancel()

        if inspect is not None:
            inspect(sim, workload)  # a debugging hook: look at the nodes before they stop
        report = judge(sim, workload, finals, chunk_finals, max_steps=max_steps)
        report.checks.update(integrity_checks(sim, workload, finals, events=es is not None))
        if attackers is not None:
            byzantine_counts.update({f"attack:{k}": v for k, v in sorted(attackers.counts.items())})
        if es is not None:
            from .es_workload import es_checks

            report.checks.update(es_checks(workload, es, stream_finals or {}, max_steps=max_steps))
        return RunResult(
            topology=_topology(sim),
            scenario=scenario.name, seed=seed, nodes=scenario.nodes, duration=scenario.duration,
            breaks=breaks, digest=trace.digest(), report=report, virtual=sim.now,
            messages=trace.delivered, bytes_sent=sim.network.bytes_sent, kinds=dict(trace.kinds.most_common()),
            drops=dict(trace.drops),
            faults=dict(sorted(nemesis.counts.items())), ops=dict(sorted(workload.counts.items())),
            lookups=dict(workload.lookups), node_logs=dict(sim.logs), byzantine=dict(byzantine_counts),
            churn={"leaves": churn.leaves, "joins": churn.joins, "deferred": churn.deferred} if churn else {},
            events=[e for e in trace.events if e.kind != "op"] + [e for e in trace.events if e.kind == "op"],
            latencies=workload.latencies, samples=samples,
            population=churn.population if churn else [],
            history=workload.history, chunks=workload.chunks, trace_lines=trace.lines,
            streams=workload.streams if es is not None else None,
            injected=[(e.details["i"], e.time, e.what) for e in trace.events
                      if e.kind == "fault" and "i" in e.details],
        )


async def _report_progress(sim: Simulator, progress: Callable[[float, Simulator], None], every: float) -> None:
    while True:
        await trio.sleep(every)
        progress(sim.now, sim)


def _topology(sim: Simulator, limit: int = 200) -> dict[str, list[str]]:
    """Who knows whom at the end (for the report's picture); skipped for large networks."""
    tables = {n.label: n.core.routing for n in sim.live() if n.core is not None}
    if len(tables) > limit:
        return {}
    labels = {n.name: n.label for n in sim.live() if n.label in tables}
    return {label: sorted(labels[c.name] for c in table.contacts() if c.name in labels)
            for label, table in tables.items()}


async def _sample(sim: Simulator, workload: Workload, samples: list[Sample], every: float) -> None:
    """Replicas per item over time: live holders, and members of the current group holding it."""
    while True:
        now = sim.now
        items: list[tuple[str, bytes, bool]] = [(workload.md_label(i), bytes(md.name), True)
                                                for i, md in enumerate(workload.mds)]
        items += [(f"chunk:{n.hex()[:8]}", n, False) for n in list(workload.chunk_values)[:4]]  # the first put
        for label, name, is_md in items:
            holders = in_group = 0
            group = {bytes(n.name) for n in sim.close_group(name)}
            for node in sim.live():
                core = node.core
                if core is None:
                    continue
                if is_md:
                    md = workload.mds[int(label[2:])]
                    record = core.replicator.records.get(item_key(md.address))
                    held = record is not None and record.value is not None
                else:
                    held = core.chunks.holds(name)
                if held:
                    holders += 1
                    in_group += bytes(node.name) in group
            samples.append(Sample(now, label, holders, in_group))
        await trio.sleep(every)


def percentiles(values: list[float], points: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{round(p * 100)}": ordered[min(len(ordered) - 1, math.floor(p * len(ordered)))] for p in points}

