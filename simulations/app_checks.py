"""The checks of an app run (docs/app-chaos.md, "What each check means").

- `exactly_once`: every command a client sent took effect at most once, and every
  acknowledged one that changed something took effect exactly once. A command's effect is
  the set of events whose causation id is the command's id; the library derives their ids
  from it, so a command applied twice shows as the same event id stored twice.
- `projections`: every state a projection agent saved equals the fold of its input - the
  domain events of its categories, in log order - up to the checkpoint saved with it.
- `process_managers`: a process manager recorded each command in one Step only, reacted
  to each event once, and each command it recorded took effect at most once (exactly once
  when its Dispatched says it was applied).
- `invariant:NAME`: the user's invariant over the final state. When it fails, the runner
  evaluates it on prefixes of the log and shows the events of the conversation (the
  correlation id) of the first event after which it fails: the shortest slice that breaks it.
"""

from __future__ import annotations

import copy
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventstore.events import RecordedEvent, category_of

from .app_spec import FinalState, describe, violations
from .checker import Anomaly, CheckResult, Report
from .history import History, Op

INVALID = "invalid"
SLICE_LIMIT = 12  # events shown in a slice


def _result(name: str, anomalies: list[Anomaly], stats: dict[str, Any]) -> CheckResult:
    result = CheckResult(name, anomalies=anomalies, stats=stats)
    if anomalies:
        result.status = INVALID
    return result


def show_event(event: RecordedEvent) -> str:
    data = json.dumps(event.data, default=str, sort_keys=True) if not isinstance(event.data, bytes) \
        else f"<{len(event.data)} bytes>"
    cause = f" cause={str(event.causation_id)[:8]}" if event.causation_id else ""
    return f"@{event.position} {event.stream} v{event.version} {event.type} {data[:120]}{cause} id={str(event.id)[:8]}"


def applications(events: Iterable[RecordedEvent]) -> dict[UUID, int]:
    """How many times each command took effect: the most times any one of its (derived)
    event ids is stored."""
    per: dict[UUID, Counter[UUID]] = defaultdict(Counter)
    for event in events:
        if event.causation_id is not None:
            per[event.causation_id][event.id] += 1
    return {command: max(ids.values()) for command, ids in per.items()}


def exactly_once(history: History, final: FinalState) -> CheckResult:
    applied = applications(final.events)
    anomalies: list[Anomaly] = []
    ops = [op for op in history.ops() if isinstance(op.value, dict) and "id" in op.value]
    by_command: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_command[op.value["id"]].append(op)
    acked = 0
    for command, sends in by_command.items():
        times = applied.get(UUID(command), 0)
        shown = [show_event(e) for e in final.caused_by(UUID(command))][:SLICE_LIMIT]
        outcomes = {op.outcome for op in sends}
        changed = any(op.outcome == "ok" and (op.output or {}).get("changed") for op in sends)
        stream = sends[0].key
        if "ok" in outcomes:
            acked += 1
        if times > 1:
            anomalies.append(Anomaly("applied-twice", stream, f"command {command[:8]} ({sends[0].f}) took effect "
                                     f"{times} times:\n      " + "\n      ".join(shown), sends))
        elif changed and times == 0:
            anomalies.append(Anomaly("lost-command", stream, f"command {command[:8]} ({sends[0].f}) was "
                                     "acknowledged as a change, but no event of it is in the log", sends))
        elif outcomes == {"fail"} and times:
            anomalies.append(Anomaly("rejected-but-applied", stream, f"command {command[:8]} ({sends[0].f}) was "
                                     "refused, yet its events are in the log:\n      " + "\n      ".join(shown),
                                     sends))
    return _result("exactly_once", anomalies, {"commands": len(by_command), "acknowledged": acked,
                                               "sends": len(ops)})


def _normal(value: Any) -> Any:
    """As the store gives JSON back: tuples as lists, keys as strings."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def projections(app: Any, final: FinalState, saves: dict[str, list[Any]]) -> CheckResult:
    anomalies: list[Anomaly] = []
    checked = 0
    for projection in app.projections:
        wanted = None if projection.categories is None else set(projection.categories)
        inputs = [e for e in final.events if wanted is None or category_of(e.stream) in wanted]
        history = saves.get(projection.name, [])
        state = copy.deepcopy(projection.initial)
        folded = 0  # events of `inputs` in `state`
        generation = None
        last_checkpoint = None
        for saved in history:
            if generation is not None and saved.generation != generation:
                state, folded, last_checkpoint = copy.deepcopy(projection.initial), 0, None  # a rebuild
            generation = saved.generation
            checkpoint = saved.checkpoint
            if checkpoint is not None and last_checkpoint is not None and checkpoint < last_checkpoint:
                anomalies.append(Anomaly("checkpoint-moved-back", projection.name,
                                         f"save v{saved.version} has checkpoint {checkpoint} after {last_checkpoint}"))
                break
            while folded < len(inputs) and checkpoint is not None and inputs[folded].position <= checkpoint:
                state = projection.apply(state, inputs[folded])
                folded += 1
            last_checkpoint = checkpoint
            checked += 1
            if _normal(saved.state) != _normal(state):
                recent = [show_event(e) for e in inputs[max(0, folded - 4):folded]]
                anomalies.append(Anomaly(
                    "wrong-projection-state", projection.name,
                    f"save v{saved.version} (checkpoint {checkpoint}, {saved.events} events counted) holds "
                    f"{json.dumps(_normal(saved.state))[:300]}\n    but the fold of its {folded} input events up to "
                    f"the checkpoint is {json.dumps(_normal(state))[:300]}\n    last events folded:\n      "
                    + "\n      ".join(recent)))
                break
            if saved.events != folded and saved.generation == generation:
                anomalies.append(Anomaly("wrong-event-count", projection.name,
                                         f"save v{saved.version} counts {saved.events} events, but {folded} of its "
                                         f"input are at or before its checkpoint {checkpoint}"))
                break
    return _result("projections", anomalies, {"projections": len(app.projections), "saves_checked": checked})


def process_managers(app: Any, final: FinalState, steps: dict[str, list[RecordedEvent]]) -> CheckResult:
    applied = applications(final.events)
    anomalies: list[Anomaly] = []
    issued = 0
    for manager in app.managers:
        seen_commands: dict[str, int] = {}
        seen_triggers: dict[str, int] = {}
        dispatched: dict[str, str] = {}
        for event in steps.get(manager.name, []):
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == "Step":
                trigger = str(data.get("trigger"))
                if trigger in seen_triggers:
                    anomalies.append(Anomaly("reacted-twice", manager.name,
                                             f"event {str(trigger)[:8]} has Steps v{seen_triggers[trigger]} and "
                                             f"v{event.version}"))
                seen_triggers[trigger] = event.version
                for command in data.get("commands", []):
                    ident = str(command.get("data", {}).get("id"))
                    issued += 1
                    if ident in seen_commands:
                        anomalies.append(Anomaly("issued-twice", manager.name,
                                                 f"command {ident[:8]} ({command.get('type')}) is in Steps "
                                                 f"v{seen_commands[ident]} and v{event.version}"))
                    seen_commands[ident] = event.version
            elif event.type == "Dispatched":
                for outcome in data.get("outcomes", []):
                    dispatched[str(outcome.get("command_id"))] = outcome.get("outcome", "")
        for ident in seen_commands:
            times = applied.get(UUID(ident), 0)
            if times > 1:
                shown = [show_event(e) for e in final.caused_by(UUID(ident))][:SLICE_LIMIT]
                anomalies.append(Anomaly("applied-twice", manager.name, f"command {ident[:8]} took effect {times} "
                                         "times:\n      " + "\n      ".join(shown)))
            elif dispatched.get(ident) == "applied" and times == 0:
                anomalies.append(Anomaly("lost-command", manager.name, f"command {ident[:8]} was dispatched as "
                                         "applied, but no event of it is in the log"))
    anomalies.sort(key=lambda a: a.kind != "applied-twice")  # the effect first, its causes after
    return _result("process_managers", anomalies, {"managers": len(app.managers), "commands_issued": issued})


def shortest_slice(invariant: Any, final: FinalState) -> tuple[int, list[RecordedEvent]] | None:
    """The first prefix of the log on which `invariant` fails, and the events of the
    conversation its last event belongs to (None if it holds on every prefix, or cannot
    be evaluated on one)."""
    for count in range(1, len(final.events) + 1):
        try:
            broken = violations(invariant, final.prefix(count))
        except Exception:  # noqa: BLE001 - it needs more than the log: no slice
            return None
        if broken:
            last = final.events[count - 1]
            conversation = last.correlation_id or last.causation_id
            related = [e for e in final.events[:count]
                       if conversation is not None and conversation in (e.correlation_id, e.causation_id, e.id)]
            return count, (related or [last])[-SLICE_LIMIT:]
    return None


def invariant_check(invariant: Any, final: FinalState) -> CheckResult:
    name = f"invariant:{getattr(invariant, '__name__', 'invariant')}"
    try:
        broken = violations(invariant, final)
    except Exception as exc:  # noqa: BLE001 - a crashing invariant is a failed one, said plainly
        broken = [f"the invariant raised {type(exc).__name__}: {exc}"]
    anomalies = []
    if broken:
        text = f"{describe(invariant)} does not hold: {'; '.join(broken)}"
        found = shortest_slice(invariant, final)
        if found is not None:
            count, events = found
            text += (f"\n    it first fails after log event {count} of {len(final.events)}; the slice that breaks it "
                     f"(its conversation):\n      " + "\n      ".join(show_event(e) for e in events))
        anomalies.append(Anomaly("invariant-violated", name[len("invariant:"):], text))
    return _result(name, anomalies, {"events": len(final.events)})


def judge_app(app: Any, history: History, final: FinalState, raw: dict[str, Any]) -> Report:
    checks = {"exactly_once": exactly_once(history, final)}
    if app.projections:
        checks["projections"] = projections(app, final, raw.get("projection_saves", {}))
    if app.managers:
        checks["process_managers"] = process_managers(app, final, raw.get("steps", {}))
    for invariant in app.invariants:
        result = invariant_check(invariant, final)
        checks[result.name] = result
    return Report(checks)
