"""The versioned-register invariants a chaos run checks directly, cheaper than the
linearizability search: no conflicting acknowledgements, no lost writes, monotonic reads,
replicas that converge. They read versions, so they apply to MD-entry histories.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .checker_models import _MUTATIONS, TOMBSTONE, MDEntryModel, _insert_content, _update_args, as_entry
from .checker_results import Anomaly, CheckResult, finish
from .history import FAIL, OK, History, Op, short


def produced(op: Op) -> tuple[bytes, int]:
    """The entry an MD mutation (insert/update/delete) leaves if it takes effect."""
    if op.f == "insert":
        return (_insert_content(op.value), 0)
    if op.f == "update":
        return _update_args(op)
    if op.f == "delete":
        return (TOMBSTONE, op.value)
    raise ValueError(f"{op.f} is not an MD mutation (op #{op.index})")


def _version(entry: tuple[bytes, int] | None) -> int:
    return -1 if entry is None else entry[1]


def _ops(history: History | Iterable[Op]) -> list[Op]:
    return history.ops() if isinstance(history, History) else list(history)


def conflicting_acks(history: History | Iterable[Op]) -> CheckResult:
    """No two acknowledged mutations of one key may claim the same entry version: only one
    insert can succeed (tombstones stay), and only one update/delete can move v to v+1."""
    result = CheckResult("conflicting_acks")
    claims: dict[tuple[Hashable, int], list[Op]] = defaultdict(list)
    for op in _ops(history):
        if op.outcome == OK and op.f in _MUTATIONS:
            claims[(op.key, produced(op)[1])].append(op)
    for (key, version), ops in claims.items():
        if len(ops) > 1:
            result.anomalies.append(
                Anomaly(
                    "conflicting-acks", key, f"{len(ops)} acknowledged writes of v{version}", ops
                )
            )
    result.stats = {"acked_writes": sum(len(v) for v in claims.values())}
    return finish(result)


def lost_writes(history: History | Iterable[Op], final_reads: Mapping[Any, Any]) -> CheckResult:
    """Every acknowledged write must survive in ``final_reads`` (key -> None or (content,
    version), read after healing): the final version is at least the version each ok write
    produced, the final value at an acknowledged version is that write's value, and a final
    version above every ok write must have been written by some ``info`` op of the history.

    Keys with acknowledged writes but no final read make the result ``unknown``.
    """
    result = CheckResult("lost_writes")
    by_key: dict[Hashable, list[Op]] = defaultdict(list)
    for op in _ops(history):
        if op.f in _MUTATIONS and op.outcome != FAIL:
            by_key[op.key].append(op)
    missing = []
    for key, writes in by_key.items():
        acked = [w for w in writes if w.outcome == OK]
        if key not in final_reads:
            if acked:
                missing.append(key)
            continue
        _check_final(result, key, as_entry(final_reads[key]), acked, writes)
    result.stats = {"keys": len(by_key), "unread_keys": len(missing)}
    incomplete = (
        f"no final read for {len(missing)} key(s) with acknowledged writes" if missing else None
    )
    return finish(result, incomplete)


def _check_final(
    result: CheckResult, key: Hashable, final: Any, acked: list[Op], writes: list[Op]
) -> None:
    shown = MDEntryModel().show(final)
    for w in acked:
        content, version = produced(w)
        if _version(final) < version:
            result.anomalies.append(
                Anomaly(
                    "lost-write",
                    key,
                    f"acknowledged v{version} but the final state is {shown}",
                    [w],
                )
            )
        elif final[1] == version and final[0] != content:
            result.anomalies.append(
                Anomaly(
                    "lost-write",
                    key,
                    f"final value at v{version} is not the acknowledged one: {shown}",
                    [w],
                )
            )
    top = max((produced(w)[1] for w in acked), default=-1)
    if _version(final) > top and not any(produced(w) == final for w in writes):
        result.anomalies.append(
            Anomaly(
                "unexplained-final", key, f"final state {shown} was written by no recorded op", []
            )
        )


def monotonic_reads(history: History | Iterable[Op]) -> CheckResult:
    """Per process and key, a read never sees an older entry version than a read the same
    process completed before invoking it (concurrent reads of one process may reorder)."""
    result = CheckResult("monotonic_reads")
    ops = _ops(history)
    events = []  # (time, seq, op, is_invoke)
    for op in ops:
        if op.f == "read" and op.outcome == OK:
            events.append((*op.invoked_at, op, True))
            events.append((*op.completed_at, op, False))
    events.sort(key=lambda e: (e[0], e[1]))
    floor: dict[tuple[Hashable, Hashable], Op] = {}  # the highest-version read completed so far
    seen_at_invoke: dict[int, Op | None] = {}
    for _, _, op, is_invoke in events:
        where = (op.process, op.key)
        if is_invoke:
            seen_at_invoke[op.index] = floor.get(where)
            continue
        before = seen_at_invoke.pop(op.index)
        version = _version(as_entry(op.output))
        if before is not None and version < _version(as_entry(before.output)):
            result.anomalies.append(
                Anomaly(
                    "non-monotonic-read",
                    op.key,
                    f"process {op.process} read back in time",
                    [before, op],
                )
            )
        current = floor.get(where)
        if current is None or version > _version(as_entry(current.output)):
            floor[where] = op
    result.stats = {"reads": len(events) // 2}
    return finish(result)


def convergence(replica_states: Mapping[Any, Mapping[Any, Any]]) -> CheckResult:
    """All replicas holding an item agree on it. A key missing from a replica's map means the
    replica does not hold that item (not its close group); a replica that should hold an item
    but lost it must report ``key: None`` so the loss shows."""
    result = CheckResult("convergence")
    keys = dict.fromkeys(k for states in replica_states.values() for k in states)
    for key in keys:
        groups: list[tuple[Any, list[Hashable]]] = []  # by equality: states need not be hashable
        for replica, states in replica_states.items():
            if key not in states:
                continue
            for state, members in groups:
                if state == states[key]:
                    members.append(replica)
                    break
            else:
                groups.append((states[key], [replica]))
        if len(groups) > 1:
            groups.sort(key=lambda g: -len(g[1]))
            text = "; ".join(f"{short(s)} on {', '.join(map(str, r))}" for s, r in groups)
            result.anomalies.append(Anomaly("divergent", key, f"replicas disagree: {text}"))
    result.stats = {"keys": len(keys), "replicas": len(replica_states)}
    return finish(result)
