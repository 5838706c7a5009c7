"""Checks of an event-store history beyond single streams: the database log (``$all`` and
category readers), catch-up subscriptions, projections and process managers.

All of them compare with the *reference log*: every (position, stream, version, event)
row any reader or subscriber saw. Rows that disagree with each other are anomalies in
their own right (``slot-shared``: one position, two events - a log slot given to two
intents; ``position-moved``: one event at two positions); otherwise the rows are the one
log all readers must agree on.

- **Log**: a reader's rows are in increasing positions with no event twice; no reader
  skips a position that holds an event in the reference log between its first and last row
  (``log-gap``: a reader passed an intent that was later committed); within a stream,
  positions grow with versions (``log-contradicts-stream``); a full read invoked after an
  append was acknowledged, and reaching past its position, contains it (``lost-append`` if
  nobody ever saw it in the log, ``stale-log-read`` otherwise). (A full read may end early
  at an intent still pending after the grace period.)
- **Subscriptions** (``subscribe`` starts a session from a checkpoint, ``deliver`` is one
  event handed to the subscriber, ``ok`` once its checkpoint was saved): each event at
  most once after its checkpoint was saved (``duplicate-delivery``), in log order within
  a session (``delivery-out-of-order``), without holes (``delivery-gap``), and a session
  starts right after its checkpoint (``resumed-before-checkpoint`` /
  ``resumed-past-checkpoint``) which is where the last saved delivery left off
  (``checkpoint-mismatch``).
- **Projections** (``project``: a saved state and the checkpoint it is at): the state is
  the fold of the log up to the checkpoint - events per stream (``projection-state``).
- **Process managers** (``command``: a command issued for a cause event): each cause gets
  one command (``command-twice``), and causes are events of the log
  (``command-without-cause``).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .checker import Anomaly, CheckResult, finish
from .es_checker import (
    ALL,
    COMMAND,
    DELIVER,
    PROJECT,
    READ_ALL,
    SUBSCRIBE,
    Facts,
    Row,
    as_dict,
    row,
)
from .history import FAIL, OK, Op, short


def category_of(stream: str) -> str:
    """The event store's rule: ``order@42`` is in category ``order``."""
    return stream.split("@", 1)[0]


def matches(filter_: str, stream: str) -> bool:
    return filter_ in (ALL, "", None) or category_of(stream) == filter_ or stream == filter_


@dataclass
class ReferenceLog:
    """The one log every reader must agree on, as far as anyone saw it."""

    at: dict[int, Row] = field(default_factory=dict)  # position -> row
    position_of: dict[str, int] = field(default_factory=dict)

    _sorted: list[int] = field(default_factory=list)  # the positions of `at`, in order (built on first use)

    def between(self, low: int, high: int, filter_: str = ALL) -> list[Row]:
        """Rows with ``low < position < high`` that pass the filter."""
        if len(self._sorted) != len(self.at):
            self._sorted = sorted(self.at)
        i, j = bisect.bisect_right(self._sorted, low), bisect.bisect_left(self._sorted, high)
        rows = (self.at[p] for p in self._sorted[i:j])
        return [r for r in rows if matches(filter_, r.stream)]

    @property
    def end(self) -> int:
        return max(self.at, default=-1)


def reference_log(facts: Facts, result: CheckResult | None = None) -> ReferenceLog:
    """The reference log of `facts` (built once, shared by the checks); its own anomalies
    (``slot-shared``, ``position-moved``) go to `result` if given."""
    built = facts.cache.get("reference_log")
    if built is None:
        built = facts.cache["reference_log"] = _reference_log(facts)
    ref, anomalies = built
    if result is not None:
        result.anomalies.extend(anomalies)
    return ref


def _reference_log(facts: Facts) -> tuple[ReferenceLog, list[Anomaly]]:
    result = CheckResult("reference_log")
    claims: dict[int, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
    rows: dict[tuple[int, str], Row] = {}
    sources = list(facts.log_reads) + [o for o in facts.other.get(DELIVER, []) if o.type == OK]
    sources += [o for o in facts.ops if o.f == DELIVER and o.type != OK and o.output]
    for op in sources:
        for r in ([row(op.output)] if op.f == DELIVER else facts.rows(op)):
            claims[r.position][r.id].append(op)
            rows[(r.position, r.id)] = r
    for a in facts.appends:  # the writer's acknowledgement names a position too
        if a.op.type == OK and a.position is not None and int(a.position) in claims:
            claims[int(a.position)][a.ids[-1]].append(a.op)
            rows.setdefault((int(a.position), a.ids[-1]), Row(int(a.position), a.stream, int(a.version or 0),
                                                              a.ids[-1]))
    ref = ReferenceLog()
    positions: dict[str, dict[int, Op]] = defaultdict(dict)
    for position in sorted(claims):
        events = claims[position]
        if len(events) > 1:
            result.anomalies.append(Anomaly("slot-shared", ALL, f"position {position} holds different events: "
                                            f"{short(sorted(events))}", [ops[0] for ops in events.values()]))
        event = max(events, key=lambda e: len(events[e]))
        ref.at[position] = rows[(position, event)]
        for e, ops in events.items():
            positions[e].setdefault(position, ops[0])
    for a in facts.appends:
        if a.op.type == OK and a.position is not None:
            positions[a.ids[-1]].setdefault(int(a.position), a.op)
    for event, seen in positions.items():
        if len(seen) > 1:
            result.anomalies.append(Anomaly("position-moved", ALL, f"event {short(event)} seen at positions "
                                            f"{sorted(seen)}", list(seen.values())))
        ref.position_of[event] = min(seen)
    return ref, result.anomalies


# ============================================================================ the log


def check_log(facts: Facts) -> CheckResult:
    result = CheckResult("es_log")
    ref = reference_log(facts, result)
    for op in facts.log_reads:
        rows = facts.rows(op)
        filter_ = ALL if op.f == READ_ALL else str(op.key)
        ids = Counter(r.id for r in rows)
        twice = sorted(e for e, n in ids.items() if n > 1)
        if twice:
            result.anomalies.append(Anomaly("duplicate", op.key, f"log read saw {short(twice)} twice", [op]))
        if any(b.position <= a.position for a, b in zip(rows, rows[1:], strict=False)):
            result.anomalies.append(Anomaly("log-out-of-order", op.key, "positions do not increase", [op]))
        start = int(as_dict(op.value).get("from", 0) or 0)
        if rows:
            seen = {r.position for r in rows}
            missed = [r for r in ref.between(start - 1, rows[-1].position, filter_) if r.position not in seen]
            if missed:
                result.anomalies.append(Anomaly(
                    "log-gap", op.key, f"read passed {len(missed)} event(s) the log holds, first "
                    f"{short(missed[0].id)} at position {missed[0].position}", [op]))
    _stream_order(ref, result)
    _acked_in_log(facts, ref, result)
    result.stats = {"log_reads": len(facts.log_reads), "positions": len(ref.at)}
    return finish(result)


def _stream_order(ref: ReferenceLog, result: CheckResult) -> None:
    by_stream: dict[str, list[Row]] = defaultdict(list)
    for r in ref.at.values():
        by_stream[r.stream].append(r)
    for stream, rows in by_stream.items():
        rows.sort(key=lambda r: r.version)
        for a, b in zip(rows, rows[1:], strict=False):
            if b.position <= a.position:
                result.anomalies.append(Anomaly(
                    "log-contradicts-stream", stream, f"v{a.version} ({short(a.id)}) at position {a.position} "
                    f"but v{b.version} ({short(b.id)}) at {b.position}"))


def _acked_in_log(facts: Facts, ref: ReferenceLog, result: CheckResult) -> None:
    # Each full read once: when it was invoked, the last position it reached, what it saw.
    full = [(op, facts.rows(op)[-1].position, {x.id for x in facts.rows(op)}) for op in facts.log_reads
            if op.f == READ_ALL and not as_dict(op.value).get("from") and as_dict(op.value).get("limit") is None
            and facts.rows(op)]
    in_log = {r.id for op in facts.log_reads for r in facts.rows(op)}
    for a in facts.appends:
        if a.op.type != OK:
            continue
        if a.position is None:
            continue
        # A full read may stop at an intent still pending after the grace period; only one
        # that went past the append's position must show it.
        later = [(r, seen) for r, last, seen in full if r.invoked_at > a.op.completed_at and last > int(a.position)]
        if not later:
            continue
        missing = [r for r, seen in later if not seen >= set(a.ids)]
        if not missing:
            continue
        if not in_log & set(a.ids):
            result.anomalies.append(Anomaly("lost-append", a.stream, "acknowledged, but no log read after it "
                                            "shows it", [a.op, missing[0]]))
        else:
            result.anomalies.append(Anomaly("stale-log-read", a.stream, "a full log read invoked after the "
                                            "acknowledgement does not show it", [a.op, missing[0]]))


# ============================================================================ subscriptions


def check_subscriptions(facts: Facts) -> CheckResult:
    result = CheckResult("es_subscriptions")
    ref = reference_log(facts)
    per: dict[object, list[Op]] = defaultdict(list)
    for op in facts.ops:
        if op.f in (SUBSCRIBE, DELIVER):
            per[op.key].append(op)
    delivered = 0
    for subscriber, ops in per.items():
        ops.sort(key=lambda o: o.invoked_at)
        filter_, last_ok, last_any = ALL, -1, -1
        previous, first = -1, True  # the position a session is at; its first delivery yet to come?
        saved: set[str] = set()
        for op in ops:
            if op.f == SUBSCRIBE:
                value = as_dict(op.value)
                filter_ = str(value.get("filter") or ALL)
                start = -1 if value.get("from") is None else int(value["from"])
                if not last_ok <= start <= max(last_any, last_ok):
                    result.anomalies.append(Anomaly("checkpoint-mismatch", subscriber, f"resumed from {start}, but "
                                                    f"the last saved delivery was at {last_ok}", [op]))
                previous, first = start, True
                continue
            if not op.output:
                continue
            r = row(op.output)
            delivered += 1
            where = ref.position_of.get(r.id)
            if where is not None and where != r.position:
                result.anomalies.append(Anomaly("position-moved", subscriber, f"delivered {short(r.id)} at "
                                                f"{r.position}; the log has it at {where}", [op]))
            if r.id in saved:
                result.anomalies.append(Anomaly("duplicate-delivery", subscriber, f"{short(r.id)} delivered again "
                                                "after its checkpoint was saved", [op]))
            if r.position <= previous:
                kind = "resumed-before-checkpoint" if first else "delivery-out-of-order"
                result.anomalies.append(Anomaly(kind, subscriber, f"delivered position {r.position} after "
                                                f"{previous}", [op]))
            else:
                skipped = ref.between(previous, r.position, filter_)
                if skipped:
                    result.anomalies.append(Anomaly(
                        "resumed-past-checkpoint" if first else "delivery-gap", subscriber,
                        f"skipped {len(skipped)} event(s) after {previous}, first {short(skipped[0].id)} at "
                        f"position {skipped[0].position}", [op]))
            previous, first = max(previous, r.position), False
            if op.type == OK:
                saved.add(r.id)
                last_ok = max(last_ok, r.position)
            last_any = max(last_any, r.position)
    result.stats = {"subscribers": len(per), "deliveries": delivered}
    return finish(result)


# ============================================================================ projections


def check_projections(facts: Facts) -> CheckResult:
    result = CheckResult("es_projections")
    ref = reference_log(facts)
    whole = _known_whole(facts)
    checked = unchecked = 0
    for op in facts.other.get(PROJECT, []):
        out = as_dict(op.output)
        checkpoint = int(out.get("checkpoint", -1))
        if checkpoint > whole:
            # No reader saw the log whole up to the checkpoint (the final $all read may have
            # failed): the reference has holes there, and a fold of it proves nothing.
            unchecked += 1
            continue
        filter_ = str(as_dict(op.value).get("filter") or ALL)
        fold = Counter(r.stream for r in ref.between(-1, checkpoint + 1, filter_))
        state = {str(k): int(v) for k, v in as_dict(out.get("state")).items()}
        checked += 1
        if state != dict(fold):
            diff = sorted(s for s in set(state) | set(fold) if state.get(s, 0) != fold.get(s, 0))
            shown = ", ".join(f"{s}: {state.get(s, 0)} saved, {fold.get(s, 0)} in the log" for s in diff[:3])
            result.anomalies.append(Anomaly("projection-state", op.key, f"at checkpoint {checkpoint}: {shown}", [op]))
    result.stats = {"saved_states": checked, "past_what_readers_saw": unchecked}
    return finish(result)


def _known_whole(facts: Facts) -> int:
    """The position up to which some `$all` reads, chained from the start of the log, saw
    every event (-1 if none did). A read from position p returns every event from p on, so
    reads that start where the known prefix ends extend it."""
    spans = []
    for op in facts.log_reads:
        if op.f != READ_ALL:
            continue
        rows = facts.rows(op)
        if rows:
            spans.append((int(as_dict(op.value).get("from") or 0), rows[-1].position))
    known = -1
    for start, end in sorted(spans):
        if start > known + 1:
            break
        known = max(known, end)
    return known


# ============================================================================ process managers


def check_process_managers(facts: Facts) -> CheckResult:
    result = CheckResult("es_process_managers")
    issued: dict[tuple[object, str], list[Op]] = defaultdict(list)
    for op in facts.other.get(COMMAND, []):
        if op.type == FAIL:
            continue
        value = as_dict(op.value)
        cause = str(value.get("cause"))
        issued[(op.key, cause)].append(op)
        if not facts.effective(cause):
            result.anomalies.append(Anomaly("command-without-cause", op.key, f"command for {short(cause)}, "
                                            "which no append carried", [op]))
    for (manager, cause), ops in issued.items():
        ok = [o for o in ops if o.type == OK]
        commands = {str(as_dict(o.value).get("command")) for o in ok}
        if len(commands) > 1:
            result.anomalies.append(Anomaly("command-twice", manager, f"{len(ok)} commands issued for "
                                            f"{short(cause)}", ok))
    result.stats = {"causes": len(issued)}
    return finish(result)


__all__ = ["ReferenceLog", "check_log", "check_process_managers", "check_projections",
           "check_subscriptions", "reference_log"]
