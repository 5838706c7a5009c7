"""Checkers for recorded histories: linearizability (Knossos/Porcupine style) and the
cheaper invariants a chaos run must keep - no lost or doubly-acknowledged writes, monotonic
reads, replicas that converge.

This module is the linearizability search and `check_all`; the rest lives beside it and is
re-exported here, so `from simulations.checker import ...` keeps working: the result types
in `checker_results`, the models in `checker_models`, the versioned-register invariants in
`checker_invariants`, and the history generator of the tests in `checker_gen`.

No Python library checks linearizability, so this module carries its own checker:

- **Models** say what one key's object does when an operation takes effect. ``MDEntryModel``
  is an MD entry as a versioned register (docs/data-model.md §1.3: insert only if absent,
  update/delete only at ``entry_version == current + 1``, delete leaves an empty tombstone);
  ``RegisterModel`` is the classic read/write/cas register. A model is a small class with
  ``init()`` and ``step(state, op) -> (ok, new_state)``, so others (an event-store stream with
  expected versions) plug in the same way. The models are written from the spec on purpose,
  not on top of ``node.rules``: a checker that shared the code under test would share its bugs.
- **check_linearizable** partitions the history by key (P-compositionality: a history of
  independent objects is linearizable iff each object's sub-history is) and runs the
  Wing & Gong search with Lowe's improvements, as Porcupine does: linked lists of call/return
  entries, "lift" an op when it is linearized, backtrack when a return is reached whose op
  was not, and a cache of (linearized ops, model state) that prunes configurations already
  explored. ``info`` ops have no return entry - they may take effect at any point after their
  invoke, or never - and reads with unknown output are dropped since they constrain nothing.
  A *refusal* (a ``fail`` the model calls one: a version or existence check that failed) is
  not dropped: it is an observation, linearized like a read at some instant between its
  invoke and completion where the precondition did not hold (and the state matched what the
  refusal reported, if it reported anything). Dropping it would pass ``write(1) ok;
  cas(1->2) refused``. Other ``fail`` ops (access denied, malformed) did nothing and are dropped.
  Crashed clients are what makes such searches blow up, so three further prunings, each
  sound (a brute-force oracle in the tests agrees): ok ops are tried before info ops and a
  configuration is pruned when an explored one reached the same ok ops and state with a
  *subset* of its info ops (subsumption); identical info ops are taken in invoke order
  (twins); and a model may *guard* conditional ops so that a crashed update at a version long
  passed is never retried. A per-key budget (model steps, optionally seconds) turns a search
  that did not finish into ``unknown``; a key is never called valid unless its search completed.
- **lost_writes**, **conflicting_acks**, **monotonic_reads**, **convergence** check the
  versioned-register invariants directly; ``check_all`` runs what applies and gives a ``Report``.

Every checker returns a ``CheckResult`` (``status`` valid / invalid / unknown, ``anomalies``,
``summary()``). ``random_history`` generates linearizable histories for tests and benchmarks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .checker_gen import random_history
from .checker_invariants import _ops, conflicting_acks, convergence, lost_writes, monotonic_reads, produced
from .checker_models import (
    MODELS,
    TOMBSTONE,
    MDEntryModel,
    Model,
    RegisterModel,
    as_entry,
    error_name,
    get_model,
    observed_field,
)
from .checker_results import INVALID, UNKNOWN, VALID, Anomaly, CheckResult, Report, finish
from .history import FAIL, OK, History, Op, short

DETERMINATE = (OK, FAIL)  # completions the search must place: acknowledged ops and refusals
DEFAULT_MAX_STEPS = 2_000_000  # per key; about a second or two of search in CPython


# ============================================================================ linearizability


@dataclass
class Counterexample:
    """Why one key is not linearizable: the longest linearization the search found, and the
    ops that had to come next (invoked before the first unplaced op completed) - none of which
    could be placed."""

    key: Hashable
    model: Model
    prefix: list[tuple[Op, Hashable]]  # (op, state after it), in linearization order
    state: Hashable  # the state after the prefix
    blocked: list[tuple[Op, str]]  # (op, why it cannot come next)

    def format(self, tail: int = 8, blocked: int = 10) -> str:
        show = self.model.show
        lines = [f"key {short(self.key)} is not linearizable."]
        lines.append(f"Longest linearizable prefix found ({len(self.prefix)} ops):")
        if len(self.prefix) > tail:
            lines.append(f"    ... {len(self.prefix) - tail} earlier ops")
        for op, after in self.prefix[-tail:]:
            lines.append(f"    {op.describe()}  => {show(after)}")
        lines.append(f"State after it: {show(self.state)}. None of these can come next:")
        for op, why in self.blocked[:blocked]:
            lines.append(f"    {op.describe()}\n        {why}")
        if len(self.blocked) > blocked:
            lines.append(f"    ... and {len(self.blocked) - blocked} more concurrent ops")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@dataclass
class KeyVerdict:
    key: Hashable
    status: str
    ops: int  # ops searched (ok, refusals, info; other fails and unknown-output reads left out)
    steps: int  # model steps tried
    seconds: float
    reason: str | None = None
    counterexample: Counterexample | None = None


@dataclass
class LinearizabilityResult(CheckResult):
    keys: dict[Hashable, KeyVerdict] = field(default_factory=dict)

    def summary(self, limit: int = 3) -> str:
        lines = self.headline()
        for verdict in [v for v in self.keys.values() if v.status == INVALID][:limit]:
            text = str(verdict.counterexample).replace("\n", "\n    ")
            lines.append(f"  INVALID {text}")
        for verdict in [v for v in self.keys.values() if v.status == UNKNOWN][:limit]:
            lines.append(f"  UNKNOWN key {short(verdict.key)}: {verdict.reason}")
        return "\n".join(lines)


def check_linearizable(
    history: History | Iterable[Op],
    model: str | Model = "md_entry",
    *,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    max_seconds: float | None = None,
) -> LinearizabilityResult:
    """Check each key's sub-history for linearizability against ``model``.

    ``max_steps`` / ``max_seconds`` bound the search *per key*; a key that runs out is
    ``unknown``. Prefer the step budget in seeded simulations: it gives the same verdict on
    every machine, where a time budget does not.
    """
    m = get_model(model)
    ops = history.ops() if isinstance(history, History) else list(history)
    per_key: dict[Hashable, list[Op]] = defaultdict(list)
    for op in ops:
        if op.outcome == FAIL and not m.is_refusal(op):
            continue  # did not happen and saw nothing: it constrains nothing
        if op.outcome != FAIL and not op.output_known and m.is_read(op):
            continue  # a read that could have seen anything
        per_key[op.key].append(op)
    result = LinearizabilityResult("linearizable")
    for key, key_ops in per_key.items():
        verdict = _check_key(m, key, key_ops, max_steps, max_seconds)
        result.keys[key] = verdict
        if verdict.status == INVALID:
            result.anomalies.append(Anomaly("nonlinearizable", key, str(verdict.counterexample)))
    unknown = [v for v in result.keys.values() if v.status == UNKNOWN]
    result.stats = {
        "ops": sum(v.ops for v in result.keys.values()),
        "keys": len(result.keys),
        "invalid_keys": len(result.anomalies),
        "unknown_keys": len(unknown),
        "steps": sum(v.steps for v in result.keys.values()),
    }
    incomplete = f"search budget exhausted on {len(unknown)} key(s)" if unknown else None
    return finish(result, incomplete)


MAIN, ANY, GUARDED = 0, 1, 2  # the search's scan phases


class _Search:
    """The WGL/Lowe search over one key's ops, on arrays rather than node objects (speed).

    Doubly linked lists share one node space: the *main* list holds the call and return
    entries of determinate ops (ok ops and refusals) in real-time order; indeterminate ops have calls only
    (no return) and
    sit in an *info* list per model guard (``Model.guard``), plus one for ops with no guard.
    At each configuration the ops that may go next are the main-list calls before the first
    remaining return R, then the unguarded info calls invoked before R, then those guarded by
    the current state. Trying ok ops first matters: configurations reached with fewer info
    ops are explored first, so the subsumption cache (``_fresh``) prunes those that used
    more. The guards matter on long histories: crashed writes that can no longer apply (an
    update at a version long passed) are never looked at again.
    """

    def __init__(self, model: Model, ops: list[Op]) -> None:
        self.model, self.ops = model, ops
        entries = []  # (time, seq, op number, is_call)
        for i, op in enumerate(ops):
            entries.append((*op.invoked_at, i, True))
            if op.type in DETERMINATE:
                entries.append((*op.completed_at, i, False))
        entries.sort(key=lambda e: (e[0], e[1]))
        m = len(entries)
        # entries are nodes 0..m-1 (node = real-time rank); list heads and tails come after
        self.rank = list(range(m))
        self.op_of = [e[2] for e in entries]
        self.is_call = [e[3] for e in entries]
        self.ret_node = [0] * len(ops)  # 0 = none: node 0 is always a call, never a return
        chains: dict[Any, list[int]] = {MAIN: [], ANY: []}
        for node, (_, _, i, is_call) in enumerate(entries):
            if not is_call:
                self.ret_node[i] = node
            chains.setdefault(self._chain(ops[i]), []).append(node)
        self.nxt, self.prv = [0] * m, [0] * m
        self.heads: dict[Any, int] = {}
        for name, chain in chains.items():
            head, tail = self._sentinel(m), self._sentinel(m if name is MAIN else m + 1)
            self.heads[name] = head
            linked = [head, *chain, tail]
            for a, b in zip(linked, linked[1:], strict=False):
                self.nxt[a], self.prv[b] = b, a
            self.nxt[tail], self.prv[head] = tail, head
        self.twin_before = _twins(ops)
        self.steps = 0
        self.best_path: Any = None

    def _chain(self, op: Op) -> Any:
        if op.type in DETERMINATE:
            return MAIN
        guard = self.model.guard(op)
        try:
            hash(guard)
        except TypeError:
            guard = None
        return ANY if guard is None else ("guard", guard)

    def _sentinel(self, rank: int) -> int:
        # A tail ranks after every entry, so "past the bound" also means "end of list"; the
        # main tail ranks just below the info tails so that, once reached, all info ops count.
        self.rank.append(rank)
        self.op_of.append(-1)
        self.is_call.append(False)
        self.nxt.append(0)
        self.prv.append(0)
        return len(self.rank) - 1

    def run(self, max_steps: int | None, max_seconds: float | None) -> str:
        """Returns VALID, INVALID or UNKNOWN; ``best_path`` holds the deepest linearization."""
        ops, nxt, prv, op_of, rank = self.ops, self.nxt, self.prv, self.op_of, self.rank
        is_call, ret_node, twin_before = self.is_call, self.ret_node, self.twin_before
        heads, head_main, head_any = self.heads, self.heads[MAIN], self.heads[ANY]
        state_guard = self.model.state_guard
        placed = bytearray(len(ops))
        step = self.model.apply
        must = [op.type in DETERMINATE for op in ops]
        remaining = sum(must)
        if remaining == 0:
            return VALID
        bits = [1 << i for i in range(len(ops))]
        step_limit = max_steps if max_steps is not None else -1
        deadline = time.perf_counter() + max_seconds if max_seconds is not None else None
        state, done, extra, path = self.model.init(), 0, 0, None
        stack: list[tuple[int, Any, Any, int, int]] = []
        # (ok ops linearized, state) -> the sets of info ops linearized on the way there. A
        # configuration that used a superset of an explored one's info ops, with the same ok
        # ops and state, has fewer options than it and is pruned (subsumption). With no info
        # ops this is exactly the (bitset, state) cache of Lowe and Porcupine.
        cache: dict[tuple[int, Any], list[int]] = {}
        best_depth, steps = 0, 0
        e, phase, limit = nxt[head_main], MAIN, 0
        while True:
            if phase == MAIN:
                if not is_call[e]:
                    # The first remaining return: now the info ops invoked before it.
                    phase, limit, e = ANY, rank[e], nxt[head_any]
                    continue
            elif rank[e] > limit:
                if phase == ANY:
                    phase = GUARDED
                    head = heads.get(("guard", state_guard(state)))
                    if head is not None:
                        e = nxt[head]
                        continue
                # Every op that could go next was tried: undo the last choice (backtrack).
                if not stack:
                    self.steps = steps
                    return INVALID
                e, state, path, phase, limit = stack.pop()
                i = op_of[e]
                if must[i]:
                    done ^= bits[i]
                    remaining += 1
                else:
                    extra ^= bits[i]
                placed[i] = 0
                r = ret_node[i]
                if r:
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                nxt[prv[e]] = e
                prv[nxt[e]] = e
                e = nxt[e]
                continue
            i = op_of[e]
            twin = twin_before[i]
            if twin >= 0 and not placed[twin]:
                e = nxt[e]  # its identical elder goes first (see _twins)
                continue
            steps += 1
            if steps == step_limit or (
                deadline is not None and steps & 1023 == 0 and time.perf_counter() > deadline
            ):
                self.steps = steps
                return UNKNOWN
            ok, new_state = step(state, ops[i])
            if ok:
                if must[i]:
                    new_done, new_extra = done | bits[i], extra
                else:
                    new_done, new_extra = done, extra | bits[i]
                if _fresh(cache, (new_done, new_state), new_extra):
                    stack.append((e, state, path, phase, limit))
                    state, done, extra = new_state, new_done, new_extra
                    path = (i, new_state, path)
                    placed[i] = 1
                    # lift the call and its return out of their list (dancing links)
                    nxt[prv[e]] = nxt[e]
                    prv[nxt[e]] = prv[e]
                    r = ret_node[i]
                    if r:
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                    if must[i]:
                        remaining -= 1
                        if remaining == 0:
                            self.steps, self.best_path = steps, path
                            return VALID
                    if len(stack) > best_depth:
                        best_depth, self.best_path = len(stack), path
                    e, phase = nxt[head_main], MAIN
                    continue
            e = nxt[e]

    def counterexample(self, key: Hashable) -> Counterexample:
        model, ops = self.model, self.ops
        prefix_rev = []
        node = self.best_path
        while node is not None:
            i, after, node = node
            prefix_rev.append((ops[i], after))
        prefix = prefix_rev[::-1]
        state = prefix[-1][1] if prefix else model.init()
        placed = {id(op) for op, _ in prefix}
        unplaced = [op for op in ops if id(op) not in placed]
        # The op that must have taken effect first among those left: the earliest to complete.
        first = min((op for op in unplaced if op.type in DETERMINATE), key=lambda o: o.completed_at)
        deadline = first.completed_at
        candidates = [op for op in unplaced if op.invoked_at < deadline]
        candidates.sort(key=lambda o: (o is not first, o.invoked_at))
        blocked = []
        for op in candidates:
            ok, _ = model.apply(state, op)
            why = (
                "could take effect here, but no order of the remaining ops works after it"
                if ok
                else model.explain(state, op)
            )
            blocked.append((op, why))
        return Counterexample(key, model, prefix, state, blocked)


def _fresh(cache: dict[tuple[int, Any], list[int]], where: tuple[int, Any], extra: int) -> bool:
    """Record a configuration unless an explored one subsumes it (used a subset of ``extra``).

    Sound because the ops still allowed to go next depend only on which *ok* ops are
    linearized (only they have return entries), and an info op left unused is only an option
    more. The stored sets are kept an antichain so the list stays short."""
    seen = cache.get(where)
    if seen is None:
        cache[where] = [extra]
        return True
    for old in seen:
        if old | extra == extra:
            return False
    seen[:] = [old for old in seen if old | extra != old]
    seen.append(extra)
    return True


def _twins(ops: list[Op]) -> list[int]:
    """For each indeterminate op, the previous indeterminate op with the same ``f`` and
    ``value`` (or -1). Such twins are interchangeable - neither has an output to match nor a
    completion to meet - and the elder was invoked first, so whenever the younger could take
    effect the elder could too. Taking twins in invoke order loses no linearization and turns
    the 2^n subsets of n identical crashed writes into n+1 choices."""
    last: dict[tuple[str, Any], int] = {}
    twin_before = [-1] * len(ops)
    for i in sorted(range(len(ops)), key=lambda i: ops[i].invoked_at):
        op = ops[i]
        if op.type in DETERMINATE:
            continue
        try:
            signature = (op.f, op.value)
            twin_before[i] = last.get(signature, -1)
        except TypeError:  # an unhashable value: no twins, just a larger search
            continue
        last[signature] = i
    return twin_before


def _check_key(
    model: Model, key: Hashable, ops: list[Op], max_steps: int | None, max_seconds: float | None
) -> KeyVerdict:
    started = time.perf_counter()
    search = _Search(model, ops)
    status = search.run(max_steps, max_seconds)
    verdict = KeyVerdict(key, status, len(ops), search.steps, time.perf_counter() - started)
    if status == UNKNOWN:
        verdict.reason = (
            f"search stopped after {search.steps} steps / {verdict.seconds:.2f}s "
            f"(max_steps={max_steps}, max_seconds={max_seconds}) on {len(ops)} ops"
        )
    elif status == INVALID:
        verdict.counterexample = search.counterexample(key)
    return verdict


def check_all(
    history: History | Iterable[Op],
    final_reads: Mapping[Any, Any] | None = None,
    replicas: Mapping[Any, Mapping[Any, Any]] | None = None,
    *,
    model: str | Model = "md_entry",
    max_steps: int | None = DEFAULT_MAX_STEPS,
    max_seconds: float | None = None,
) -> Report:
    """Linearizability plus, for MD-entry histories, conflicting acks and monotonic reads;
    lost writes when ``final_reads`` is given; convergence when ``replicas`` is given."""
    ops = _ops(history)
    m = get_model(model)
    checks: dict[str, CheckResult] = {}
    checks["linearizable"] = check_linearizable(
        ops, m, max_steps=max_steps, max_seconds=max_seconds
    )
    if isinstance(m, MDEntryModel):
        checks["conflicting_acks"] = conflicting_acks(ops)
        checks["monotonic_reads"] = monotonic_reads(ops)
        if final_reads is not None:
            checks["lost_writes"] = lost_writes(ops, final_reads)
    if replicas is not None:
        checks["convergence"] = convergence(replicas)
    return Report(checks)


__all__ = [
    "DEFAULT_MAX_STEPS", "DETERMINATE", "INVALID", "MODELS", "TOMBSTONE", "UNKNOWN", "VALID", "Anomaly",
    "CheckResult", "Counterexample", "KeyVerdict", "LinearizabilityResult", "MDEntryModel", "Model",
    "RegisterModel", "Report", "finish", "_ops", "as_entry", "check_all", "check_linearizable",
    "conflicting_acks", "convergence", "error_name", "get_model", "lost_writes", "monotonic_reads",
    "observed_field", "produced", "random_history",
]
