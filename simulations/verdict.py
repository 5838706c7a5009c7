"""What a run must prove at its end, read from its histories and from the nodes themselves.

`judge` runs the history checkers of `simulations.checker` on the register history
(linearizability per key, conflicting acknowledgements, monotonic reads, lost writes
against reads made after the final heal, convergence of the replicas), the chunk history as
a register per chunk, and adds what only the simulator can see: that no node crashed, that
every node knows its own neighbourhood again (`routing`), that every item sits on its current
close group (`placement`), that no acknowledged chunk is gone, and that no MD vanished under
the workload.

Replica states come straight from each node core (`core.replicator.records`,
`core.chunks.holds`), for the nodes a brute-force sort says form each item's close group.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from node.paxos import item_key

from .checker import Anomaly, CheckResult, Report, check_all, check_linearizable
from .history import OK
from .simulator import Simulator
from .workloads import Workload

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"


def _result(name: str, anomalies: list[Anomaly], stats: dict[str, Any], unknown: str | None = None) -> CheckResult:
    result = CheckResult(name, anomalies=anomalies, stats=stats)
    if anomalies:
        result.status = INVALID
    elif unknown:
        result.status, result.reason = UNKNOWN, unknown
    return result


def replica_states(sim: Simulator, workload: Workload) -> dict[Hashable, dict[Hashable, Any]]:
    """Per close-group member: each register's (content, version) or None, and each MD's digest."""
    states: dict[Hashable, dict[Hashable, Any]] = {}
    for index, md in enumerate(workload.mds):
        key = item_key(md.address)
        label = workload.md_label(index)
        for node in sim.close_group(md.name):
            record = node.core.replicator.records.get(key) if node.core is not None else None
            value = record.value if record is not None else None
            current = value.state.md if value is not None else None
            mine = states.setdefault(node.label, {})
            mine[(label, "digest")] = value.digest().hex() if value is not None else None
            for j in range(workload.config.entries_per_md):
                entry = current.entries.get(f"k{j}".encode()) if current is not None else None
                mine[(label, f"k{j}")] = None if entry is None else (entry.content, entry.entry_version)
    return states


def placement(sim: Simulator, workload: Workload) -> CheckResult:
    """Every MD's agreed members are its current close group, and every acknowledged chunk
    is held by its whole close group."""
    anomalies = []
    for index, md in enumerate(workload.mds):
        group = sim.close_group(md.name)
        want = tuple(n.name for n in group)
        seen: dict[tuple[bytes, ...], int] = {}
        for node in group:
            record = node.core.replicator.records.get(item_key(md.address)) if node.core else None
            if record is not None and record.value is not None:
                members = tuple(record.value.members)
                seen[members] = seen.get(members, 0) + 1
        agreed = max(seen, key=lambda m: seen[m]) if seen else ()
        if tuple(agreed) != want:
            shown = lambda names: ",".join(n.hex()[:6] for n in names)  # noqa: E731
            anomalies.append(Anomaly("misplaced", workload.md_label(index),
                                     f"agreed members [{shown(agreed)}] but the close group is [{shown(want)}]"))
    acked = {op.key for op in workload.chunks.ops() if op.f == "write" and op.outcome == OK}
    for name in sorted(workload.chunk_values):
        key = ("chunk", name.hex()[:16])
        if key not in acked:
            continue
        missing = [n.label for n in sim.close_group(name) if n.core is None or not n.core.chunks.holds(name)]
        if missing:
            anomalies.append(Anomaly("under-replicated", key, f"not held by close-group members {', '.join(missing)}"))
    return _result("placement", anomalies, {"mds": len(workload.mds), "chunks": len(acked)})


def routing(sim: Simulator) -> CheckResult:
    """After the quiet period every node knows its own close group (its R nearest live
    nodes): without that, nothing can move data to where it belongs."""
    anomalies = []
    r = sim.config.replication
    tables = {n.label: n.core.routing for n in sim.live() if n.core is not None}
    live = [n for n in sim.live() if n.label in tables]
    for node in live:
        table = tables[node.label]
        target = int.from_bytes(node.name, "big")
        nearest = sorted((n for n in live if n is not node), key=lambda n: int.from_bytes(n.name, "big") ^ target)[:r]
        missing = [n.label for n in nearest if n.name not in table]
        if missing:
            anomalies.append(Anomaly("lost-neighbours", node.label,
                                     f"knows {len(table)} contacts but not its neighbours {', '.join(missing)}"))
    sizes = sorted(len(t) for t in tables.values())
    stats = {"nodes": len(live), "table_min": sizes[0] if sizes else 0,
             "table_median": sizes[len(sizes) // 2] if sizes else 0}
    return _result("routing", anomalies, stats)


def lost_chunks(workload: Workload, finals: Mapping[Hashable, Any]) -> CheckResult:
    anomalies, unread = [], 0
    for op in workload.chunks.ops():
        if op.f != "write" or op.outcome != OK:
            continue
        if op.key not in finals:
            unread += 1
        elif finals[op.key] != op.value:
            anomalies.append(Anomaly("lost-chunk", op.key,
                                     f"acknowledged, but the final get found {finals[op.key]!r}", [op]))
    unknown = f"{unread} acknowledged chunk(s) could not be read at the end" if unread else None
    return _result("lost_chunks", anomalies, {"checked": len(finals)}, unknown)


def node_errors(sim: Simulator) -> CheckResult:
    anomalies = [Anomaly("node-crash", e.label, f"at t={e.time:.3f}: {e.error}\n{e.traceback}") for e in sim.errors]
    return _result("node_errors", anomalies, {"nodes": len(sim.nodes)})


def workload_anomalies(workload: Workload) -> CheckResult:
    anomalies = [Anomaly("vanished", "md", text) for text in workload.anomalies]
    return _result("md_presence", anomalies, {"mds": len(workload.mds)})


def judge(
    sim: Simulator,
    workload: Workload,
    finals: Mapping[Hashable, Any],
    chunk_finals: Mapping[Hashable, Any],
    *,
    max_steps: int = 2_000_000,
) -> Report:
    report = check_all(workload.history, finals, replica_states(sim, workload), max_steps=max_steps)
    checks = dict(report.checks)
    chunks = check_linearizable(workload.chunks, "register", max_steps=max_steps)
    chunks.name = "chunks_linearizable"
    checks["chunks_linearizable"] = chunks
    checks["lost_chunks"] = lost_chunks(workload, chunk_finals)
    checks["placement"] = placement(sim, workload)
    checks["routing"] = routing(sim)
    checks["node_errors"] = node_errors(sim)
    checks["md_presence"] = workload_anomalies(workload)
    return Report(checks)
