"""Checkers for recorded histories: linearizability (Knossos/Porcupine style) and the
cheaper invariants a chaos run must keep - no lost or doubly-acknowledged writes, monotonic
reads, replicas that converge.

Why one module of about 1,000 lines: the models, the linearizability search, the invariants
and the history generator its tests use all speak in the same `Op`, `Anomaly` and
`CheckResult` terms and are read together when a verdict is in doubt. The seam, when it is
split, is the results types (`Anomaly`, `CheckResult`, `Report`) into a module of their own,
which the event-store checkers import too; then the invariants and the generator can leave.

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

import random
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .history import FAIL, OK, History, Op, short

DETERMINATE = (OK, FAIL)  # completions the search must place: acknowledged ops and refusals

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"

DEFAULT_MAX_STEPS = 2_000_000  # per key; about a second or two of search in CPython
TOMBSTONE = b""


# ============================================================================ models


class Model:
    """What one key's object does when an op takes effect. States must be hashable."""

    name = "model"

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        """Whether ``op`` can take effect in ``state`` (with its recorded output, if known).

        It must depend only on ``op.f``, ``op.value`` and, when ``op.output_known``,
        ``op.output`` - not on the process or times (the search relies on it). Refusals go to
        ``refused`` instead (see ``apply``).
        """
        raise NotImplementedError

    def is_read(self, op: Op) -> bool:
        """Ops that never change the state: an indeterminate one constrains nothing."""
        return False

    def is_refusal(self, op: Op) -> bool:
        """Whether a ``fail`` op is a refusal that observed the state (checked with
        ``refused``) rather than a failure that says nothing about it (then it is dropped).
        By default no failure is an observation."""
        return False

    def refused(self, state: Hashable, op: Op) -> bool:
        """Whether refusing ``op`` is right in ``state``: it could not take effect there, and
        ``op.observed`` (what the refusal reported, if anything) matches. The state is left
        unchanged."""
        return not self.step(state, op)[0]

    def apply(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        """``step`` for ops that may take effect; ``refused`` for a refusal (state unchanged)."""
        if op.type == FAIL:
            return self.refused(state, op), state
        return self.step(state, op)

    def guard(self, op: Op) -> Hashable | None:
        """Optional speed-up: a value such that ``op`` can take effect only in states whose
        ``state_guard`` equals it (None: no such promise). Lets the search skip crashed
        conditional writes that can no longer apply instead of retrying them at every step."""
        return None

    def state_guard(self, state: Hashable) -> Hashable:
        return None

    def explain(self, state: Hashable, op: Op) -> str:
        """Why ``op`` cannot take effect in ``state``, for counterexamples."""
        return f"{op.f} is not possible in state {self.show(state)}"

    def show(self, state: Hashable) -> str:
        return short(state)


def as_entry(value: Any) -> tuple[bytes, int] | None:
    """An MD entry as ``(content, entry_version)`` from a tuple, list or Value-like object."""
    if value is None or (type(value) is tuple and len(value) == 2):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        return (value[0], value[1])
    if hasattr(value, "content") and hasattr(value, "entry_version"):
        return (value.content, value.entry_version)
    raise ValueError(f"not an MD entry (content, version): {value!r:.60}")


def _insert_content(value: Any) -> bytes:
    # SAFE's Ins carries a whole Value whose version is ignored; accept that form too.
    if isinstance(value, bytes):
        return value
    entry = as_entry(value)
    if entry is None:
        raise ValueError("insert needs content")
    return entry[0]


def _update_args(op: Op) -> tuple[bytes, int]:
    entry = as_entry(op.value)
    if entry is None:
        raise ValueError(f"update needs (content, version), op #{op.index} has None")
    return entry


class MDEntryModel(Model):
    """One MD entry (docs/data-model.md §1.3) as a versioned register.

    State: ``None`` (absent) or ``(content, entry_version)``; a tombstone is ``(b"", v)``.

    ======================  ======================  =================================
    op ``f``                ``value``               takes effect when / new state
    ======================  ======================  =================================
    ``read``                -                       output (None or (content, version)) == state
    ``insert``              content                 absent -> (content, 0)
    ``update``              (content, version)      present and version == current+1
    ``delete``              version                 present and version == current+1 -> (b"", version)
    ======================  ======================  =================================

    A refused mutation (a ``fail`` whose error names a failed check - ``InvalidEntryActions``,
    ``InvalidSuccessor``, ``EntryExists``, ``NoSuchEntry`` - or that carries an observation)
    is checked like a read: the mutation could not apply, and if it reported
    ``{"version": v}`` (-1 for absent) the entry was at version ``v``.
    """

    REFUSALS = frozenset({"InvalidEntryActions", "InvalidSuccessor", "EntryExists", "NoSuchEntry"})

    name = "md_entry"

    def is_read(self, op: Op) -> bool:
        return op.f == "read"

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (not op.output_known or as_entry(op.output) == state), state
        if f == "insert":
            if state is not None:
                return False, state
            return True, (_insert_content(op.value), 0)
        if f == "update":
            content, version = _update_args(op)
            if state is None or version != state[1] + 1:
                return False, state
            return True, (content, version)
        if f == "delete":
            if state is None or op.value != state[1] + 1:
                return False, state
            return True, (TOMBSTONE, op.value)
        raise ValueError(f"md_entry model has no op {f!r} (op #{op.index})")

    def guard(self, op: Op) -> Hashable | None:
        # insert applies only when absent (version -1); update/delete only at version v - 1
        if op.f == "insert":
            return -1
        if op.f == "update":
            return _update_args(op)[1] - 1
        if op.f == "delete":
            return op.value - 1
        return None

    def state_guard(self, state: Any) -> int:
        return -1 if state is None else state[1]

    def is_refusal(self, op: Op) -> bool:
        return op.f in _MUTATIONS and (
            op.observed is not None or error_name(op.error) in self.REFUSALS
        )

    def refused(self, state: Any, op: Op) -> bool:
        if self.step(state, op)[0]:
            return False
        seen = observed_field(op, "version")
        return seen is None or seen == self.state_guard(state)

    def explain(self, state: Any, op: Op) -> str:
        now = "absent" if state is None else f"{self.show(state)}"
        if op.type == FAIL:
            if self.step(state, op)[0]:
                return f"refused, but {op.f} applies to the entry as it is: {now}"
            return f"refused reporting v{observed_field(op, 'version')} but the entry is {now}"
        if op.f == "read":
            return f"read saw {short(op.output)} but the entry is {now}"
        if op.f == "insert":
            return f"insert needs the entry absent; it is {now}"
        if state is None:
            return f"{op.f} needs the entry present; it is absent"
        version = _update_args(op)[1] if op.f == "update" else op.value
        return f"{op.f} to v{version} needs current version v{version - 1}; it is {now}"

    def show(self, state: Any) -> str:
        if state is None:
            return "absent"
        content, version = state
        return f"{short(content)}@v{version}" + (" (tombstone)" if content == TOMBSTONE else "")


class RegisterModel(Model):
    """A read/write/compare-and-set register, initially ``None``.

    ``read`` -> output == state; ``write(v)`` -> v; ``cas((old, new))`` -> new if state == old.
    A failed ``cas`` is a refusal: the register did not hold ``old`` at some instant of the
    call, and held ``v`` if the refusal reported ``{"value": v}``.
    """

    name = "register"

    def is_read(self, op: Op) -> bool:
        return op.f == "read"

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (not op.output_known or op.output == state), state
        if f == "write":
            return True, op.value
        if f == "cas":
            old, new = op.value
            return (True, new) if state == old else (False, state)
        raise ValueError(f"register model has no op {f!r} (op #{op.index})")

    def guard(self, op: Op) -> Hashable | None:
        return op.value[0] if op.f == "cas" else None  # cas(old, new) needs state == old

    def is_refusal(self, op: Op) -> bool:
        return op.f == "cas"

    def refused(self, state: Any, op: Op) -> bool:
        if state == op.value[0]:
            return False
        seen = op.observed
        return not (isinstance(seen, dict) and "value" in seen) or seen["value"] == state

    def state_guard(self, state: Any) -> Hashable:
        return state

    def explain(self, state: Any, op: Op) -> str:
        if op.f == "read":
            return f"read saw {short(op.output)} but the register holds {short(state)}"
        if op.f == "cas" and op.type == FAIL:
            if state == op.value[0]:
                return f"cas refused, but the register holds {short(state)} as it expected"
            return f"cas refused reporting {short(op.observed)} but the register holds {short(state)}"
        if op.f == "cas":
            return f"cas expects {short(op.value[0])} but the register holds {short(state)}"
        return super().explain(state, op)


MODELS: dict[str, Model] = {m.name: m for m in (MDEntryModel(), RegisterModel())}


def error_name(error: Any) -> str:
    """The type name an error was recorded with: ``"InvalidSuccessor: current 3"`` ->
    ``"InvalidSuccessor"`` (also ``Name(...)`` forms)."""
    text = str(error or "")
    for stop in (":", "("):
        text = text.split(stop, 1)[0]
    return text.strip()


def observed_field(op: Op, name: str) -> Any:
    """One field of what a refusal reported (``op.observed``), or None."""
    seen = op.observed
    return seen.get(name) if isinstance(seen, dict) else None


def get_model(model: str | Model) -> Model:
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}") from None


# ============================================================================ results


@dataclass
class Anomaly:
    """One thing a checker found wrong, with the ops that show it."""

    kind: str
    key: Hashable
    message: str
    ops: list[Op] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"[{self.kind}] key {short(self.key)}: {self.message}"]
        lines += [f"    {op.describe()}" for op in self.ops]
        return "\n".join(lines)


@dataclass
class CheckResult:
    """A checker's verdict: ``valid`` only when it looked at everything and found nothing."""

    name: str
    status: str = VALID
    anomalies: list[Anomaly] = field(default_factory=list)
    reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.status == VALID

    @property
    def unknown(self) -> bool:
        return self.status == UNKNOWN

    def headline(self) -> list[str]:
        facts = ", ".join(f"{k}={v}" for k, v in self.stats.items())
        lines = [f"{self.name}: {self.status.upper()}" + (f" ({facts})" if facts else "")]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        return lines

    def summary(self, limit: int = 5) -> str:
        lines = self.headline()
        for anomaly in self.anomalies[:limit]:
            lines.append("  " + str(anomaly).replace("\n", "\n  "))
        if len(self.anomalies) > limit:
            lines.append(f"  ... and {len(self.anomalies) - limit} more")
        return "\n".join(lines)


R = TypeVar("R", bound=CheckResult)


def _finish(result: R, incomplete: str | None = None) -> R:
    if result.anomalies:
        result.status = INVALID
    elif incomplete:
        result.status, result.reason = UNKNOWN, incomplete
    return result


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
    return _finish(result, incomplete)


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


# ============================================================================ other checks
# These read versions, so they apply to MD-entry histories (the md_entry model's ops).

_MUTATIONS = ("insert", "update", "delete")


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
    return _finish(result)


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
    return _finish(result, incomplete)


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
    return _finish(result)


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
    return _finish(result)


# ============================================================================ report


@dataclass
class Report:
    """The verdicts of every check that ran, by name."""

    checks: dict[str, CheckResult]

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks.values()}
        return INVALID if INVALID in statuses else UNKNOWN if UNKNOWN in statuses else VALID

    @property
    def valid(self) -> bool:
        return self.status == VALID

    def summary(self) -> str:
        lines = [f"history check: {self.status.upper()}"]
        lines += [c.summary() for c in self.checks.values()]
        return "\n".join(lines)


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


# ============================================================================ generated histories


def random_history(
    rng: random.Random,
    n_ops: int,
    n_keys: int = 1,
    concurrency: int = 5,
    *,
    info_rate: float = 0.05,
    model: str | Model = "md_entry",
) -> tuple[History, dict[Hashable, Any]]:
    """A linearizable history by construction, and each key's true final state.

    ``concurrency`` clients run ops against a sequential model; each op takes effect at a
    random instant between its invoke and completion. About ``info_rate`` of the ops end as
    ``info`` instead: half of those took effect before the info was recorded; of the others
    most take effect at some random later moment (even long after) and the rest never do. A
    few ops are left pending at the end.
    """
    return _Generator(rng, get_model(model), n_keys, concurrency, info_rate).run(n_ops)


class _Generator:
    def __init__(
        self, rng: random.Random, model: Model, n_keys: int, concurrency: int, info_rate: float
    ):
        self.rng, self.model, self.info_rate = rng, model, info_rate
        self.keys = [f"k{i}" for i in range(n_keys)]
        self.states: dict[Hashable, Any] = {k: model.init() for k in self.keys}
        self.history = History()
        self.time = 0.0
        self.pids = list(range(concurrency))
        self.next_pid = concurrency
        # a busy slot is [op, applied?, output, took effect?]
        self.slots: list[list[Any] | None] = [None] * concurrency
        self.zombies: list[Op] = []  # reported info before taking effect; may take effect later

    def run(self, n_ops: int) -> tuple[History, dict[Hashable, Any]]:
        rng, invoked = self.rng, 0
        while invoked < n_ops or any(self.slots):
            self.time += rng.random() if rng.random() < 0.8 else 0.0  # equal times happen
            if self.zombies and rng.random() < 0.05:
                self._apply(self.zombies.pop(rng.randrange(len(self.zombies))))
            s = rng.randrange(len(self.slots))
            slot = self.slots[s]
            if slot is None:
                if invoked < n_ops:
                    self.slots[s] = [self._invoke(s), False, None, False]
                    invoked += 1
            elif invoked >= n_ops and rng.random() < 0.1:
                self.slots[s] = None  # left pending: the client never reported back
            elif not slot[1]:
                if rng.random() < self.info_rate / 2:  # half the info ops crash before applying
                    self._crash(s, slot[0], zombie=True)
                else:
                    slot[1] = True
                    slot[3], slot[2] = self._apply(slot[0])
            else:
                self._complete(s, slot)
        return self.history, dict(self.states)

    def _apply(self, op: Op) -> tuple[bool, Any]:
        state = self.states[op.key]
        ok, new_state = self.model.step(state, op)
        output = state if self.model.is_read(op) else None
        if not ok:  # refused: what the refusal reports having seen
            output = {"version": self.model.state_guard(state)} if isinstance(self.model, MDEntryModel) \
                else {"value": state}
        if ok:
            self.states[op.key] = new_state
        return ok, output

    def _complete(self, s: int, slot: list[Any]) -> None:
        op, _, output, took_effect = slot
        if self.rng.random() < self.info_rate / 2:
            self._crash(s, op, zombie=False)
        elif took_effect:
            self.history.ok(op, output, self.time)
            self.slots[s] = None
        else:
            self.history.fail(op, "precondition", self.time, observed=output)
            self.slots[s] = None

    def _crash(self, s: int, op: Op, zombie: bool) -> None:
        self.history.info(op, self.time, "timeout")
        if zombie and self.rng.random() < 0.7:
            self.zombies.append(op)
        # As in Jepsen, a client whose op is indeterminate is replaced by a fresh process.
        self.pids[s], self.next_pid = self.next_pid, self.next_pid + 1
        self.slots[s] = None

    def _invoke(self, s: int) -> Op:
        key = self.rng.choice(self.keys)
        f, value = self._choose(self.states[key], len(self.history))
        return self.history.invoke(self.pids[s], key, f, value, self.time)

    def _choose(self, state: Any, n: int) -> tuple[str, Any]:
        r = self.rng.random()
        if isinstance(self.model, MDEntryModel):
            content = f"v{n}".encode()
            if state is None:
                if r < 0.6:
                    return "insert", content
                return ("read", None) if r < 0.9 else ("update", (content, 1))
            version = state[1] + (1 if self.rng.random() < 0.9 else 0)  # some clients are stale
            if r < 0.4:
                return "read", None
            if r < 0.85:
                return "update", (content, version)
            return ("delete", version) if r < 0.95 else ("insert", content)
        value = self.rng.randrange(5)
        if r < 0.5:
            return "read", None
        return ("write", value) if r < 0.8 else ("cas", (state if r < 0.9 else value, value))
