"""A checker for event-store histories, after Jepsen's Elle list-append checker.

A stream is an append-only list whose elements (event ids) are unique, so a read does not
only say *what* a stream held but *in which order* the appends that built it took effect.
From every read of a stream (and every acknowledged version, and the log readers' rows) the
checker infers each stream's version order, then looks for two kinds of trouble:

- **contradictions** the order cannot absorb, each named: ``incompatible-order`` (two
  events claimed one version), ``append-at-two-versions`` (one event seen at two versions,
  or acknowledged at a version reads do not show), ``duplicate`` (an event twice in one
  read), ``G1a`` (a refused append's event visible), ``G1b`` (part of a batch visible),
  ``phantom-event`` (an event nobody appended), ``lost-append`` (acknowledged, never seen
  though the stream was read after), ``expected-version-violated`` (an append took effect
  where its expected version forbids), ``wrong-refusal`` (a refused append whose expected
  version held, or that reported a version the stream was not at);
- **cycles** in the dependency graph of operations, built with networkx: write-write edges
  between consecutive appends of a stream, write-read from an append to each read that saw
  it, read-write from a read to the append right after what it saw, and real-time edges
  from an operation to those invoked after it completed. A cycle is named as Adya and Elle
  name them: ``G0`` (write-write only), ``G1c`` (write-write and write-read), ``G-single``
  (exactly one read-write edge), ``G2`` (more), with ``-realtime`` when it needs a
  real-time edge - a read that goes back in time is a ``G-single-realtime``.

A refused append (``WrongExpectedVersion`` reporting the actual version) is an observation:
it is checked like a read of the stream's first ``actual + 1`` events.

Checks of the database log, subscriptions, projections and process managers are in
`simulations.es_checker_log`; `check_eventstore` runs them all. The record types are in
docs/simulations.md ("Event-store histories").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .checker import Anomaly, CheckResult, Report, finish
from .history import FAIL, OK, History, Op, short

NO_STREAM, ANY, STREAM_EXISTS = -1, "any", "exists"
ALL = "$all"

APPEND, READ, READ_ALL, READ_CATEGORY = "append", "read", "read_all", "read_category"
SUBSCRIBE, DELIVER, PROJECT, COMMAND = "subscribe", "deliver", "project", "command"
KNOWN_F = (APPEND, READ, READ_ALL, READ_CATEGORY, SUBSCRIBE, DELIVER, PROJECT, COMMAND)

WW, WR, RW, RT = "ww", "wr", "rw", "rt"


# ============================================================================ records


def expected_of(value: Any) -> int | str:
    """The expected version of an append: a version >= 0, ``NO_STREAM`` (-1), ``"any"`` or
    ``"exists"`` (the event store's ANY, -2, and STREAM_EXISTS, -4, are accepted too)."""
    expected = value.get("expected", ANY) if isinstance(value, dict) else ANY
    if expected in (ANY, -2, None):
        return ANY
    if expected in (STREAM_EXISTS, -4):
        return STREAM_EXISTS
    if expected == "no_stream":
        return NO_STREAM
    if isinstance(expected, int) and expected >= -1:
        return expected
    raise ValueError(f"bad expected version {expected!r}")


@dataclass
class Append:
    """One append op, read as the checker needs it."""

    op: Op
    stream: str
    expected: int | str
    ids: tuple[str, ...]
    version: int | None = None  # the last event's version, when acknowledged
    position: int | None = None  # the last event's log position, when acknowledged

    @property
    def first(self) -> int | None:
        return None if self.version is None else self.version - len(self.ids) + 1


@dataclass
class Row:
    """One event as a log or category reader (or a subscriber) saw it."""

    position: int
    stream: str
    version: int
    id: str


def row(value: Any) -> Row:
    position, stream, version, event = value
    return Row(int(position), str(stream), int(version), str(event))


def rows_of(output: Any) -> list[Row]:
    return [row(r) for r in (output or ())]


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Facts:
    """What a whole event-store history says, indexed once for every check."""

    def __init__(self, ops: Iterable[Op]) -> None:
        self.ops = list(ops)
        self.appends: list[Append] = []
        self.writers: dict[str, list[Append]] = defaultdict(list)  # event id -> appends carrying it
        self.reads: dict[str, list[Op]] = defaultdict(list)  # stream -> ok stream reads
        self.refusals: dict[str, list[Append]] = defaultdict(list)
        self.log_reads: list[Op] = []  # ok $all and category reads
        self.other: dict[str, list[Op]] = defaultdict(list)
        self.problems: list[Anomaly] = []
        for op in self.ops:
            if op.f not in KNOWN_F:
                raise ValueError(f"op #{op.index}: unknown event-store op {op.f!r}")
            if op.f == APPEND:
                value = as_dict(op.value)
                ids = tuple(str(i) for i in value.get("events", ()))
                if not ids:
                    raise ValueError(f"op #{op.index}: an append needs events")
                a = Append(op, str(op.key), expected_of(value), ids)
                if op.type == OK:
                    out = as_dict(op.output)
                    a.version, a.position = out.get("version"), out.get("position")
                self.appends.append(a)
                for event in ids:
                    self.writers[event].append(a)
                if op.type == FAIL:
                    self.refusals[a.stream].append(a)
            elif op.type != OK:
                if op.f in (SUBSCRIBE, DELIVER, PROJECT, COMMAND):
                    self.other[op.f].append(op)
            elif op.f == READ:
                self.reads[str(op.key)].append(op)
            elif op.f in (READ_ALL, READ_CATEGORY):
                self.log_reads.append(op)
            else:
                self.other[op.f].append(op)
        self.by_stream: dict[str, list[Append]] = defaultdict(list)
        for a in self.appends:
            self.by_stream[a.stream].append(a)
        self.by_index = {op.index: op for op in self.ops}
        self._rows: dict[int, list[Row]] = {}
        self._log_rows: dict[str, list[tuple[Row, Op]]] | None = None
        self.cache: dict[str, Any] = {}  # what several checks derive alike (the reference log)

    # Rows are parsed once and indexed: the checks ask for them per stream and per append,
    # and parsing every log read's rows each time made a run's check quadratic.

    def rows(self, op: Op) -> list[Row]:
        """The rows of a log read, parsed once."""
        found = self._rows.get(op.index)
        if found is None:
            found = self._rows[op.index] = rows_of(op.output)
        return found

    def log_rows(self, stream: str) -> list[tuple[Row, Op]]:
        """Every (row, log read) of `stream`, in the order of the log reads and their rows."""
        if self._log_rows is None:
            self._log_rows = defaultdict(list)
            for op in self.log_reads:
                for r in self.rows(op):
                    self._log_rows[r.stream].append((r, op))
        return self._log_rows.get(stream, [])

    def streams(self) -> list[str]:
        """The streams the history writes or reads. A stream only log readers saw (a
        projection's saved states, say) has writers the history does not record: its rows
        count for the log's checks, not for a stream order."""
        return sorted({a.stream for a in self.appends} | set(self.reads))

    def stream_of(self, event: str) -> str | None:
        writers = self.writers.get(event)
        return writers[0].stream if writers else None

    def effective(self, event: str) -> bool:
        """Some append carrying the event may have taken effect (ok or unknown outcome)."""
        return any(a.op.type != FAIL for a in self.writers.get(event, ()))

    def acked(self, event: str) -> bool:
        return any(a.op.type == OK for a in self.writers.get(event, ()))


def read_start(op: Op) -> int:
    return int(as_dict(op.value).get("from", 0) or 0)


def is_full(op: Op) -> bool:
    """A read of the whole stream (from version 0, no limit): it must see every append
    acknowledged before it was invoked."""
    value = as_dict(op.value)
    return read_start(op) == 0 and value.get("limit") is None


# ============================================================================ streams


@dataclass
class StreamOrder:
    """A stream's version order as inferred: version -> event id, and who saw what."""

    stream: str
    at: dict[int, str] = field(default_factory=dict)
    seen_at: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    read: set[str] = field(default_factory=set)  # events some reader saw (not only an ack)

    @property
    def length(self) -> int:
        """The longest prefix with no hole."""
        n = 0
        while n in self.at:
            n += 1
        return n


def check_streams(history: History | Iterable[Op], facts: Facts | None = None) -> CheckResult:
    """Every per-stream contradiction and dependency cycle (see the module docstring)."""
    facts = facts or Facts(_ops(history))
    result = CheckResult("es_streams")
    cycles = 0
    by_stream = facts.by_stream
    for stream in facts.streams():
        order = _infer(facts, stream, by_stream[stream], result)
        _check_appends(facts, order, by_stream[stream], result)
        _check_refusals(facts, order, result)
        cycles += _cycles(facts, order, by_stream[stream], result)
    result.stats = {
        "streams": len(facts.streams()),
        "appends_ok": sum(a.op.type == OK for a in facts.appends),
        "events_ok": sum(len(a.ids) for a in facts.appends if a.op.type == OK),
        "reads": sum(len(v) for v in facts.reads.values()),
        "refusals": sum(len(v) for v in facts.refusals.values()),
        "cycles": cycles,
    }
    return finish(result)


def _infer(facts: Facts, stream: str, appends: list[Append], result: CheckResult) -> StreamOrder:
    order = StreamOrder(stream)
    claims: dict[int, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))

    def claim(version: int, event: str, op: Op) -> None:
        claims[version][event].append(op)

    for read in facts.reads[stream]:
        start, ids = read_start(read), [str(i) for i in read.output or ()]
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            result.anomalies.append(Anomaly("duplicate", stream, f"read saw {short(twice)} twice", [read]))
        for offset, event in enumerate(ids):
            claim(start + offset, event, read)
            order.read.add(event)
    for r, op in facts.log_rows(stream):
        claim(r.version, r.id, op)
        order.read.add(r.id)
    for a in appends:
        if a.op.type == OK and a.version is not None:
            for offset, event in enumerate(a.ids):
                claim(a.first + offset, event, a.op)  # type: ignore[operator]
    for version in sorted(claims):
        events = claims[version]
        if len(events) > 1:
            told = "; ".join(f"{short(e)} by {', '.join(f'#{o.index}' for o in ops[:3])}" for e, ops in events.items())
            result.anomalies.append(Anomaly(
                "incompatible-order", stream, f"v{version} holds different events: {told}",
                [ops[0] for ops in events.values()]))
        # The most-witnessed claim stands for the order; the others are reported above.
        event = max(events, key=lambda e: len(events[e]))
        order.at[version] = event
        for e in events:
            order.seen_at[e].add(version)
    for event, versions in order.seen_at.items():
        if len(versions) > 1:
            witnesses = [o for v in sorted(versions) for o in claims[v][event][:1]]
            result.anomalies.append(Anomaly(
                "append-at-two-versions", stream,
                f"event {short(event)} seen at versions {sorted(versions)}", witnesses))
    return order


def _check_appends(facts: Facts, order: StreamOrder, appends: list[Append], result: CheckResult) -> None:
    stream = order.stream
    for event in order.seen_at:
        if event not in facts.writers:
            result.anomalies.append(Anomaly("phantom-event", stream, f"event {short(event)} was appended by nobody",
                                            _witness(facts, stream, event)))
        elif not facts.effective(event):
            result.anomalies.append(Anomaly("G1a", stream, f"event {short(event)} of a refused append is visible",
                                            [a.op for a in facts.writers[event]] + _witness(facts, stream, event)))
        elif facts.stream_of(event) != stream:
            result.anomalies.append(Anomaly("wrong-stream", stream,
                                            f"event {short(event)} was appended to {facts.stream_of(event)!r}",
                                            _witness(facts, stream, event)))
    reads_after = [r for r in facts.reads[stream] if is_full(r)]
    for a in appends:
        if a.op.type == FAIL:
            continue
        seen = [e for e in a.ids if e in order.read]
        if seen and len(seen) < len(a.ids):
            result.anomalies.append(Anomaly("G1b", stream, f"only {len(seen)} of the {len(a.ids)} events of one "
                                            "append are visible", [a.op]))
        first = min(order.seen_at[a.ids[0]]) if a.ids[0] in order.seen_at else None
        if first is not None and not _expected_holds(a.expected, first):
            result.anomalies.append(Anomaly("expected-version-violated", stream,
                                            f"expected {a.expected} but took effect at v{first}", [a.op]))
        if not seen and a.op.type == OK and any(r.invoked_at > a.op.completed_at for r in reads_after):
            result.anomalies.append(Anomaly("lost-append", stream, "acknowledged, but no read of the stream "
                                            "after it shows it", [a.op]))


def _expected_holds(expected: int | str, first: int) -> bool:
    if expected == ANY:
        return True
    if expected == STREAM_EXISTS:
        return first >= 1
    return first == int(expected) + 1


def _witness(facts: Facts, stream: str, event: str) -> list[Op]:
    for read in facts.reads[stream]:
        if event in (str(i) for i in read.output or ()):
            return [read]
    for r, op in facts.log_rows(stream):
        if r.id == event:
            return [op]
    return []


def _check_refusals(facts: Facts, order: StreamOrder, result: CheckResult) -> None:
    """A refusal that reported the version it saw must have seen a version other than the
    expected one; one that reported nothing is wrong only if the stream provably sat at the
    expected version for its whole call."""
    for a in facts.refusals[order.stream]:
        seen = as_dict(a.op.output).get("version")
        if a.expected == ANY:
            result.anomalies.append(Anomaly("wrong-refusal", order.stream, "an append expecting any version was "
                                            "refused", [a.op]))
        elif seen is not None:
            if not _refusal_consistent(a.expected, int(seen)):
                result.anomalies.append(Anomaly("wrong-refusal", order.stream,
                                                f"refused reporting v{seen}, which meets expected {a.expected}",
                                                [a.op]))
        elif isinstance(a.expected, int) and _sat_at(facts, order, a):
            result.anomalies.append(Anomaly("wrong-refusal", order.stream,
                                            f"refused, but the stream was at v{a.expected} throughout the call",
                                            [a.op]))


def _refusal_consistent(expected: int | str, seen: int) -> bool:
    if expected == STREAM_EXISTS:
        return seen == NO_STREAM
    return seen != expected


def _sat_at(facts: Facts, order: StreamOrder, refusal: Append) -> bool:
    """Whether every event up to ``expected`` was acknowledged before the refusal was invoked
    and no append that could have added the next one was invoked before it completed."""
    expected = int(refusal.expected)
    for version in range(expected + 1):
        event = order.at.get(version)
        if event is None or not any(w.op.type == OK and w.op.completed_at < refusal.op.invoked_at
                                    for w in facts.writers.get(event, ())):
            return False
    later = {order.at[v] for v in order.at if v > expected}
    for a in facts.by_stream.get(order.stream, ()):
        concurrent = a.op is not refusal.op and a.op.type != FAIL and a.op.invoked_at < refusal.op.completed_at
        if concurrent and (set(a.ids) & later or not any(e in order.seen_at for e in a.ids)):
            return False  # it may have moved the stream during the call
    return True


# ============================================================================ the dependency graph


def _cycles(facts: Facts, order: StreamOrder, appends: list[Append], result: CheckResult) -> int:
    """Build the stream's dependency graph and report one cycle per strongly connected part."""
    graph = nx.DiGraph()
    writer_at: dict[int, Op] = {}  # version -> the op whose event sits there
    span: dict[int, tuple[Any, Any]] = {}  # op index -> (invoked_at, completed_at or None)
    for version, event in order.at.items():
        candidates = [a.op for a in facts.writers.get(event, ()) if a.stream == order.stream and a.op.type != FAIL]
        if candidates:
            # Retries with the same ids are one append: it took effect after the first of
            # them was invoked and before the first acknowledgement.
            first = min(candidates, key=lambda o: o.invoked_at)
            acks = [o.completed_at for o in candidates if o.type == OK]
            writer_at[version] = first
            span[first.index] = (first.invoked_at, min(acks) if acks else None)
    def edge(a: Op, b: Op, kind: str) -> None:
        if a is b:
            return
        if graph.has_edge(a.index, b.index):
            graph[a.index][b.index]["kinds"].add(kind)
        else:
            graph.add_edge(a.index, b.index, kinds={kind})

    versions = sorted(writer_at)
    for v, w in zip(versions, versions[1:], strict=False):
        if writer_at[v] is not writer_at[w]:
            edge(writer_at[v], writer_at[w], WW)
    observers: list[tuple[Op, int]] = []  # (op, versions it saw from 0: a prefix length)
    for read in facts.reads[order.stream]:
        if read_start(read) == 0:
            observers.append((read, len(read.output or ())))
    for a in facts.refusals[order.stream]:
        seen = as_dict(a.op.output).get("version")
        if seen is not None:
            observers.append((a.op, int(seen) + 1))
    for obs, n in observers:
        seen_writers = {writer_at[v] for v in range(n) if v in writer_at}
        for writer in seen_writers:
            edge(writer, obs, WR)
        nxt = next((writer_at[v] for v in versions if v >= n), None)
        if nxt is not None and nxt not in seen_writers:
            edge(obs, nxt, RW)
    nodes = {op.index: op for op in list(writer_at.values()) + [o for o, _ in observers]}
    for op in nodes.values():
        span.setdefault(op.index, (op.invoked_at, op.completed_at if op.type in (OK, FAIL) else None))
    _realtime([nodes[i] for i in sorted(nodes)], span, edge)
    found = 0
    ops_by_index = facts.by_index
    for part in nx.strongly_connected_components(graph):
        if len(part) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(part))
        kinds = [_kind(graph[a][b]["kinds"]) for a, b, *_ in cycle]
        name = _name(kinds)
        steps = " ".join(f"#{a} -{k}-> #{b}" for (a, b, *_), k in zip(cycle, kinds, strict=True))
        result.anomalies.append(Anomaly(name, order.stream, f"dependency cycle {steps}",
                                        [ops_by_index[a] for a, *_ in cycle]))
        found += 1
    return found


def _realtime(ops: list[Op], span: dict[int, tuple[Any, Any]], edge: Any) -> None:
    """Real-time edges, transitively reduced as Elle does: each op gets an edge from the ops
    on the current frontier (completed, and not already before another completed op).
    ``span`` gives each op's (invoked, completed or None) interval."""
    events = []
    for op in ops:
        invoked, completed = span[op.index]
        events.append((invoked, 1, op))
        if completed is not None:
            events.append((completed, 0, op))
    events.sort(key=lambda e: (e[0], e[1]))
    frontier: list[Op] = []
    before: dict[int, list[Op]] = {}
    for _, is_invoke, op in events:
        if is_invoke:
            before[op.index] = list(frontier)
            for prior in frontier:
                edge(prior, op, RT)
        else:
            dominated = {p.index for p in before.get(op.index, ())}
            frontier = [p for p in frontier if p.index not in dominated] + [op]


def _kind(kinds: set[str]) -> str:
    for k in (WW, WR, RW, RT):  # a dependency explains more than time does
        if k in kinds:
            return k
    raise ValueError(kinds)


def _name(kinds: list[str]) -> str:
    rw = kinds.count(RW)
    base = "G0" if set(kinds) <= {WW, RT} else "G1c" if rw == 0 else "G-single" if rw == 1 else "G2"
    return base + ("-realtime" if RT in kinds else "")


# ============================================================================ all checks


def check_eventstore(history: History | Iterable[Op]) -> Report:
    """Every event-store check that applies to the history's records."""
    from .es_checker_log import (
        check_log,
        check_process_managers,
        check_projections,
        check_subscriptions,
    )

    facts = Facts(_ops(history))
    checks = {"es_streams": check_streams(facts.ops, facts), "es_log": check_log(facts)}
    if facts.other.get(DELIVER) or facts.other.get(SUBSCRIBE):
        checks["es_subscriptions"] = check_subscriptions(facts)
    if facts.other.get(PROJECT):
        checks["es_projections"] = check_projections(facts)
    if facts.other.get(COMMAND):
        checks["es_process_managers"] = check_process_managers(facts)
    return Report(checks)


def _ops(history: History | Iterable[Op]) -> list[Op]:
    return history.ops() if isinstance(history, History) else list(history)

