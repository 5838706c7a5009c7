"""Checks that catch what an attacker would be after, read straight from the nodes.

The history checkers (`simulations.checker`) judge what clients saw; an attacker that
rewrites an MD behind their backs, or poisons a node's disk, may show up there late or not
at all. These checks look at the result directly, and name each kind of harm:

``md_integrity`` - every copy of a workload MD, on any node (not just its close group), and
every value a client read, must be a state the signed requests allow. The workload creates
each MD once with one owner and fixed permissions and then only changes entries, so:

- ``forged-owner``: a copy whose owners are not the creator's key;
- ``forged-permissions``: permissions or the MD's version differ from what was created;
- ``forged-entry``: an entry key the workload never used, or content no client ever sent;
- ``forged-read``: a client read (or a final read) returned such content;
- ``forged-members``: a copy names as its group (or previous group) an identity that never
  ran as a node;
- ``md-from-nothing``: a copy of an MD (at the workload's tag) that no client created.

``store_integrity`` - the nodes themselves:

- ``unencodable-record``: a record a node holds that does not encode and decode back;
- ``unbounded-ballot``: a stored ballot counter over node/paxos.py's bound (the bound numbers
  decoded from the wire must respect);
- ``unreadable-store``: a node's disk that does not load (it could not start again);
- ``node-down``: a node not running at the end, after every node was restarted.

``unpaid_chunks`` - ``unpaid-chunk``: a chunk on some node's disk that no client put.

Event-store runs write MDs and chunks the register workload does not list; there
``md-from-nothing`` and ``unpaid_chunks`` are not checked.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from node.paxos import MAX_COUNTER, AcceptorRecord, item_key
from node.store import Store

from .checker import Anomaly, CheckResult
from .history import OK
from .simulator import Simulator
from .workloads import MD_TAG, Workload

BALLOT_BOUND = MAX_COUNTER + 1  # what node/paxos.py lets a ballot counter reach
VALID, INVALID = "valid", "invalid"


def _result(name: str, anomalies: list[Anomaly], stats: dict[str, Any]) -> CheckResult:
    result = CheckResult(name, anomalies=anomalies, stats=stats)
    if anomalies:
        result.status = INVALID
    return result


def _written(workload: Workload) -> dict[str, set[bytes]]:
    """Per entry key, every content a client ever sent for it (whatever the outcome)."""
    out: dict[str, set[bytes]] = {}
    for op in workload.history.ops():
        if op.f in ("insert", "update"):
            content = op.value if op.f == "insert" else op.value[0]
            out.setdefault(op.key[1], set()).add(content)  # type: ignore[index]  # keys are (md, entry)
    return out


def _node_names(sim: Simulator) -> set[str]:
    """Short names of every identity that ever ran as a node in this run."""
    names = {str(e.details.get("name")) for e in sim.trace.events if e.what == "node-start"}
    return names | {n.name.short() for n in sim.nodes}


def md_integrity(sim: Simulator, workload: Workload, finals: Mapping[Hashable, Any], *,
                 check_unknown: bool = True) -> CheckResult:
    anomalies: list[Anomaly] = []
    written = _written(workload)
    nodes = _node_names(sim)
    ours = {item_key(md.address): (i, md) for i, md in enumerate(workload.mds)}
    copies = 0
    for node in sim.nodes:
        core = node.core
        if core is None:
            continue
        for key, record in sorted(core.replicator.records.items()):
            md = record.value.state.md if record.value is not None else None
            if md is None:
                continue
            where = f"{node.label}"
            if key not in ours:
                if check_unknown and md.tag == MD_TAG:
                    anomalies.append(Anomaly("md-from-nothing", where,
                                             f"holds MD {md.name.hex()[:12]} (tag {md.tag}) that no client created, "
                                             f"owned by {sorted(o.hex()[:12] for o in md.owners)}"))
                continue
            copies += 1
            index, created = ours[key]
            label = workload.md_label(index)
            if md.owners != created.owners:
                anomalies.append(Anomaly("forged-owner", (label, where),
                                         f"{where}'s copy is owned by {sorted(o.hex()[:12] for o in md.owners)}, "
                                         f"created by {sorted(o.hex()[:12] for o in created.owners)} "
                                         "and never changed"))
            elif dict(md.permissions) != dict(created.permissions) or md.version != created.version:
                anomalies.append(Anomaly("forged-permissions", (label, where),
                                         f"{where}'s copy has version {md.version} and {len(md.permissions)} "
                                         "permission entries; no client changed them"))
            for entry, value in sorted(md.entries.items()):
                allowed = written.get(entry.decode(errors="replace"), set())
                if value.content and value.content not in allowed:
                    anomalies.append(Anomaly("forged-entry", (label, entry.decode(errors="replace"), where),
                                             f"{where}'s copy holds {value.content[:24]!r} v{value.entry_version}, "
                                             "which no client wrote"))
            assert record.value is not None
            strangers = [m.short() for m in (*record.value.members, *record.value.prev) if m.short() not in nodes]
            if strangers:
                anomalies.append(Anomaly("forged-members", (label, where),
                                         f"{where}'s copy names {', '.join(strangers)} in its group; "
                                         "they never ran as nodes"))
    reads = 0
    seen: list[tuple[Any, Any, str]] = [(op.key, op.output, f"op #{op.index} at t={op.invoke_time:.3f}")
                                        for op in workload.history.ops() if op.f == "read" and op.outcome == OK]
    seen += [(key, value, "the final read") for key, value in finals.items()]
    for key, output, when in seen:
        reads += 1
        if output is None or not isinstance(key, tuple) or len(key) != 2:
            continue
        content = output[0]
        if content and content not in written.get(key[1], set()):
            anomalies.append(Anomaly("forged-read", key, f"{when} returned {content[:24]!r}, which no client wrote"))
    return _result("md_integrity", anomalies, {"copies": copies, "reads": reads})


def _loads(store: Store) -> str | None:
    from node.mdstore import RecordStore

    try:
        RecordStore(store).load()
    except Exception as exc:  # whatever stops a restart
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def store_integrity(sim: Simulator) -> CheckResult:
    anomalies: list[Anomaly] = []
    records = 0
    for node in sim.nodes:
        if node.state != "up" or node.core is None or not node.core.ready:
            anomalies.append(Anomaly("node-down", node.label, f"{node.label} is {node.state} at the end, "
                                     "after every node was restarted"))
        problem = _loads(node.store)
        if problem is not None:
            anomalies.append(Anomaly("unreadable-store", node.label, f"{node.label}'s disk does not load: {problem}"))
        if node.core is None:
            continue
        for key, record in sorted(node.core.replicator.records.items()):
            records += 1
            top = max(record.promised.counter, record.accepted.counter)
            if top >= BALLOT_BOUND:
                anomalies.append(Anomaly("unbounded-ballot", (node.label, key.hex()[:12]),
                                         f"{node.label} stored ballot counter {top} (over the bound {BALLOT_BOUND})"))
            try:
                AcceptorRecord.decode(record.encode())
            except Exception as exc:  # noqa: BLE001 - any failure is the anomaly
                anomalies.append(Anomaly("unencodable-record", (node.label, key.hex()[:12]),
                                         f"{type(exc).__name__}: {exc}"[:200]))
    return _result("store_integrity", anomalies, {"nodes": len(sim.nodes), "records": records})


def unpaid_chunks(sim: Simulator, workload: Workload) -> CheckResult:
    anomalies: list[Anomaly] = []
    paid = set(workload.chunk_values)
    held = 0
    for node in sim.nodes:
        for name in sorted(node.store.chunk_names()):
            held += 1
            if name not in paid:
                anomalies.append(Anomaly("unpaid-chunk", (node.label, name.hex()[:12]),
                                         f"{node.label} stores chunk {name.hex()[:12]} that no client put"))
    return _result("unpaid_chunks", anomalies, {"chunks_held": held, "paid": len(paid)})


def integrity_checks(sim: Simulator, workload: Workload, finals: Mapping[Hashable, Any],
                     *, events: bool = False) -> dict[str, CheckResult]:
    """The checks of this module, by name (`events`: the run had an event-store workload)."""
    checks = {
        "md_integrity": md_integrity(sim, workload, finals, check_unknown=not events),
        "store_integrity": store_integrity(sim),
    }
    if not events:
        checks["unpaid_chunks"] = unpaid_chunks(sim, workload)
    return checks
