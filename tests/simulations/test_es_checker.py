"""The event-store checker on small hand-written histories - one for each anomaly it names,
and valid ones that are easy to get wrong - and on histories generated from a sequential
store (valid by construction, then tampered with)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.es_checker import check_eventstore, check_streams
from simulations.history import History, Op


def append(h: History, p: Any, stream: str, expected: Any, ids: list[str], start: float, end: float | None,
           outcome: str = "ok", version: int | None = None, position: int | None = None,
           saw: int | None = None) -> Op:
    o = h.invoke(p, stream, "append", {"expected": expected, "events": ids}, start)
    if outcome == "ok":
        out: dict[str, Any] = {"version": version}
        if position is not None:
            out["position"] = position
        h.ok(o, out, end)
    elif outcome == "fail":
        h.fail(o, "WrongExpectedVersion", end, observed=None if saw is None else {"version": saw})
    elif outcome == "info":
        h.info(o, end, "timeout")
    return o


def read(h: History, p: Any, stream: str, ids: list[str], start: float, end: float) -> Op:
    o = h.invoke(p, stream, "read", None, start)
    h.ok(o, ids, end)
    return o


def read_all(h: History, p: Any, rows: list[tuple[int, str, int, str]], start: float, end: float,
             frm: int = 0) -> Op:
    o = h.invoke(p, "$all", "read_all", {"from": frm}, start)
    h.ok(o, [list(r) for r in rows], end)
    return o


def kinds(h: History) -> set[str]:
    report = check_eventstore(h)
    return {a.kind for c in report.checks.values() for a in c.anomalies}


# ------------------------------------------------------------------ valid tricky cases


def test_a_plain_history_is_valid() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0, position=0)
    append(h, 1, "s", 0, ["b", "c"], 2, 3, version=2, position=1001)
    read(h, 2, "s", ["a", "b", "c"], 4, 5)
    read_all(h, 3, [(0, "s", 0, "a"), (1000, "s", 1, "b"), (1001, "s", 2, "c")], 6, 7)
    report = check_eventstore(h)
    assert report.valid, report.summary()


def test_an_indeterminate_append_may_or_may_not_have_taken_effect() -> None:
    took = History()
    append(took, 1, "s", -1, ["a"], 0, 1, outcome="info")
    read(took, 2, "s", ["a"], 5, 6)
    assert check_eventstore(took).valid
    did_not = History()
    append(did_not, 1, "s", -1, ["a"], 0, 1, outcome="info")
    read(did_not, 2, "s", [], 5, 6)
    assert check_eventstore(did_not).valid


def test_a_retry_with_the_same_event_ids_is_one_append() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, outcome="info")
    append(h, 2, "s", -1, ["a"], 2, 3, version=0)  # the store recognised the ids
    read(h, 3, "s", ["a"], 4, 5)
    assert check_eventstore(h).valid


def test_concurrent_readers_may_see_either_side_of_an_append() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 1, "s", 0, ["b"], 2, 10, version=1)
    read(h, 2, "s", ["a", "b"], 3, 4)
    read(h, 3, "s", ["a"], 3, 5)  # concurrent with the first reader and the append
    assert check_eventstore(h).valid


def test_a_refusal_that_saw_another_version_is_valid() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 2, "s", -1, ["x"], 2, 3, outcome="fail", saw=0)
    read(h, 3, "s", ["a"], 4, 5)
    assert check_eventstore(h).valid


# ------------------------------------------------------------------ each anomaly


def test_lost_acknowledged_append() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    read(h, 2, "s", [], 2, 3)
    assert "lost-append" in kinds(h)


def test_duplicate_in_one_read() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=0)
    read(h, 2, "s", ["a", "a"], 2, 3)
    assert "duplicate" in kinds(h)


def test_an_append_seen_at_two_versions() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, outcome="info")
    append(h, 1, "s", "any", ["b"], 0, 1, outcome="info")
    read(h, 2, "s", ["a", "b"], 2, 3)
    read(h, 3, "s", ["b", "a"], 4, 5)
    assert {"append-at-two-versions", "incompatible-order"} <= kinds(h)


def test_acknowledged_at_a_version_reads_do_not_show() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=3)
    read(h, 2, "s", ["a"], 2, 3)
    assert "append-at-two-versions" in kinds(h)


def test_a_refused_append_visible_is_g1a() -> None:
    h = History()
    append(h, 1, "s", 5, ["a"], 0, 1, outcome="fail", saw=-1)
    read(h, 2, "s", ["a"], 2, 3)
    assert "G1a" in kinds(h)


def test_half_a_batch_visible_is_g1b() -> None:
    h = History()
    append(h, 1, "s", -1, ["a", "b"], 0, 1, version=1)
    read(h, 2, "s", ["a"], 2, 3)
    assert "G1b" in kinds(h)


def test_an_event_nobody_appended() -> None:
    h = History()
    read(h, 2, "s", ["ghost"], 2, 3)
    assert "phantom-event" in kinds(h)


def test_expected_version_violated() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 2, "s", -1, ["b"], 2, 3, version=1)  # expected no stream, landed at v1
    assert "expected-version-violated" in kinds(h)


def test_a_read_that_goes_back_in_time() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 1, "s", 0, ["b"], 2, 3, version=1)
    read(h, 2, "s", ["a", "b"], 4, 5)
    read(h, 2, "s", ["a"], 6, 7)
    found = kinds(h)
    assert "G-single-realtime" in found


def test_the_wrongly_refused_append() -> None:
    # The stream was at v0 for the whole call, which is what the append expected.
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 2, "s", 0, ["b"], 2, 3, outcome="fail")
    assert "wrong-refusal" in kinds(h)
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 2, "s", 0, ["b"], 2, 3, outcome="fail", saw=0)  # it even says so
    assert "wrong-refusal" in kinds(h)


def test_a_refusal_reporting_a_stale_version_is_a_cycle() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 1, "s", 0, ["b"], 2, 3, version=1)
    append(h, 2, "s", 5, ["c"], 4, 5, outcome="fail", saw=0)  # the stream was at v1 already
    assert "G-single-realtime" in kinds(h)


def test_cycles_are_named_by_their_edges() -> None:
    from simulations.es_checker import _name

    assert _name(["ww", "ww"]) == "G0"
    assert _name(["ww", "wr"]) == "G1c"
    assert _name(["wr", "rw"]) == "G-single"
    assert _name(["rw", "rw"]) == "G2"
    assert _name(["wr", "rw", "rt"]) == "G-single-realtime"


# ------------------------------------------------------------------ the log


def test_one_position_given_to_two_events() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=0)
    append(h, 2, "t", "any", ["b"], 0, 1, version=0)
    read_all(h, 3, [(0, "s", 0, "a")], 2, 3)
    read_all(h, 4, [(0, "t", 0, "b")], 2, 3)
    assert "slot-shared" in kinds(h)


def test_an_event_at_two_positions() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=0, position=0)
    read_all(h, 3, [(1000, "s", 0, "a")], 2, 3)
    assert "position-moved" in kinds(h)


def test_a_log_reader_that_passed_a_pending_event() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=0)
    append(h, 2, "t", "any", ["b"], 0, 5, version=0)
    read_all(h, 3, [(1000, "s", 0, "a")], 2, 3)  # b's slot 0 was still pending
    read_all(h, 4, [(0, "t", 0, "b"), (1000, "s", 0, "a")], 6, 7)
    assert "log-gap" in kinds(h)


def test_a_log_that_contradicts_a_stream() -> None:
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, version=0)
    append(h, 1, "s", 0, ["b"], 2, 3, version=1)
    read_all(h, 3, [(0, "s", 1, "b"), (1000, "s", 0, "a")], 4, 5)
    assert "log-contradicts-stream" in kinds(h)


def test_an_acknowledged_append_missing_from_the_log() -> None:
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=0, position=0)
    append(h, 1, "t", "any", ["b"], 2, 3, version=0, position=1000)
    read_all(h, 3, [(1000, "t", 0, "b")], 4, 5)
    assert "lost-append" in kinds(h)


def test_a_log_read_may_stop_at_a_pending_intent() -> None:
    # The log reader waited out the grace period at slot 0 and returned what it had: nothing.
    h = History()
    append(h, 1, "s", "any", ["a"], 0, 1, version=0, position=1000)
    read_all(h, 3, [], 2, 3)
    assert check_eventstore(h).valid


# ------------------------------------------------------------------ subscriptions, projections, process managers


def log_of(h: History, n: int) -> list[tuple[int, str, int, str]]:
    rows = []
    for i in range(n):
        append(h, "w", "s", i - 1, [f"e{i}"], i, i + 0.5, version=i, position=i * 1000)
        rows.append((i * 1000, "s", i, f"e{i}"))
    read_all(h, "r", rows, n + 1, n + 2)
    return rows


def deliver(h: History, sub: str, r: tuple[int, str, int, str], t: float, outcome: str = "ok") -> None:
    o = h.invoke(sub, sub, "deliver", None, t)
    if outcome == "ok":
        h.ok(o, list(r), t)
    else:
        h.info(o, t, "killed")


def subscribe(h: History, sub: str, frm: int | None, t: float) -> None:
    h.ok(h.invoke(sub, sub, "subscribe", {"from": frm, "filter": "$all"}, t), None, t)


def test_a_subscriber_restarted_from_its_checkpoint() -> None:
    h = History()
    rows = log_of(h, 4)
    subscribe(h, "sub", None, 10)
    deliver(h, "sub", rows[0], 11)
    deliver(h, "sub", rows[1], 12, outcome="info")  # killed before saving the checkpoint
    subscribe(h, "sub", 0, 13)
    for i, r in enumerate(rows[1:]):
        deliver(h, "sub", r, 14 + i)
    assert check_eventstore(h).valid, check_eventstore(h).summary()


def test_a_subscription_resumed_one_past_or_one_before_its_checkpoint() -> None:
    past = History()
    rows = log_of(past, 4)
    subscribe(past, "sub", None, 10)
    deliver(past, "sub", rows[0], 11)
    subscribe(past, "sub", 0, 13)
    deliver(past, "sub", rows[2], 14)  # rows[1] skipped
    assert "resumed-past-checkpoint" in kinds(past)
    before = History()
    rows = log_of(before, 4)
    subscribe(before, "sub", None, 10)
    deliver(before, "sub", rows[0], 11)
    deliver(before, "sub", rows[1], 12)
    subscribe(before, "sub", 1000, 13)
    deliver(before, "sub", rows[1], 14)
    assert {"resumed-before-checkpoint", "duplicate-delivery"} <= kinds(before)


def test_subscription_gaps_and_order() -> None:
    h = History()
    rows = log_of(h, 4)
    subscribe(h, "sub", None, 10)
    deliver(h, "sub", rows[0], 11)
    deliver(h, "sub", rows[2], 12)
    deliver(h, "sub", rows[1], 13)
    assert {"delivery-gap", "delivery-out-of-order"} <= kinds(h)


def test_projection_state_is_the_fold_of_the_log() -> None:
    h = History()
    log_of(h, 4)
    h.ok(h.invoke("p", "counts", "project", {"filter": "$all"}, 10), {"checkpoint": 1000, "state": {"s": 2}}, 11)
    assert check_eventstore(h).valid
    h.ok(h.invoke("p", "counts", "project", {"filter": "$all"}, 12), {"checkpoint": 2000, "state": {"s": 2}}, 13)
    assert "projection-state" in kinds(h)


def test_a_projection_is_judged_only_where_readers_saw_the_log_whole() -> None:
    # Event-store seed 15: the final $all read failed, so the reference log held only what
    # subscribers were delivered, with holes; a saved state counting events in the holes is
    # not wrong, only unproven. Once a read shows the whole log, the same state is judged.
    h = History()
    for i in range(3):
        append(h, "w", "s", i - 1, [f"e{i}"], i, i + 0.5, version=i, position=i * 1000)
    subscribe(h, "sub", None, 5)
    deliver(h, "sub", (0, "s", 0, "e0"), 6)
    deliver(h, "sub", (2000, "s", 2, "e2"), 7, outcome="info")
    h.ok(h.invoke("p", "counts", "project", {"filter": "$all"}, 10), {"checkpoint": 2000, "state": {"s": 3}}, 11)
    projections = check_eventstore(h).checks["es_projections"]
    assert projections.valid and projections.stats == {"saved_states": 0, "past_what_readers_saw": 1}
    read_all(h, "r", [(0, "s", 0, "e0"), (1000, "s", 1, "e1")], 12, 13)
    read_all(h, "r", [(2000, "s", 2, "e2")], 14, 15, frm=1001)  # chained on from where the last ended
    assert check_eventstore(h).checks["es_projections"].stats["saved_states"] == 1
    assert check_eventstore(h).valid
    h.ok(h.invoke("p", "counts", "project", {"filter": "$all"}, 16), {"checkpoint": 2000, "state": {"s": 2}}, 17)
    assert "projection-state" in kinds(h)


def test_streams_the_history_does_not_write_count_for_the_log_only() -> None:
    # A projection saves its states to a stream of its own: log readers see those rows, but
    # no append in the history wrote them. They are positions in the log, not phantoms;
    # a log reader that skips one still passed an event.
    h = History()
    append(h, 1, "order@1", "any", ["a"], 0, 1, version=0, position=0)
    append(h, 1, "order@1", 0, ["b"], 2, 3, version=1, position=2000)
    h.ok(h.invoke("p", "orders", "project", {"filter": "order"}, 4),
         {"checkpoint": 0, "state": {"order@1": 1}}, 5)
    read_all(h, 2, [(0, "order@1", 0, "a"), (1000, "projection@orders", 0, "s0"), (2000, "order@1", 1, "b")], 6, 7)
    assert check_eventstore(h).valid, check_eventstore(h).summary()
    read_all(h, 3, [(0, "order@1", 0, "a"), (2000, "order@1", 1, "b")], 8, 9)
    assert kinds(h) == {"log-gap"}


def test_process_manager_issues_each_command_once() -> None:
    h = History()
    log_of(h, 2)
    h.ok(h.invoke("pm", "pm", "command", {"cause": "e0", "command": "c0"}, 10), None, 11)
    assert check_eventstore(h).valid
    h.ok(h.invoke("pm", "pm", "command", {"cause": "e0", "command": "c1"}, 12), None, 13)
    h.ok(h.invoke("pm", "pm", "command", {"cause": "nobody", "command": "c2"}, 14), None, 15)
    assert {"command-twice", "command-without-cause"} <= kinds(h)


# ------------------------------------------------------------------ generated from a sequential store


def generated(seed: int, n_ops: int = 60) -> tuple[History, list[Op]]:
    """Clients take turns against one sequential store (a dict of lists and one log), with
    overlapping calls where one op completes while others are in flight; unknown outcomes
    retry with the same ids."""
    rng = random.Random(seed)
    streams: dict[str, list[str]] = {}
    log: list[tuple[int, str, int, str]] = []
    h, t, acked = History(), 0.0, []
    for n in range(n_ops):
        t += 1
        stream = rng.choice(["s@1", "s@2", "t@1"])
        current = len(streams.get(stream, [])) - 1
        r = rng.random()
        if r < 0.3:
            read(h, n % 4, stream, list(streams.get(stream, [])), t, t + 0.5)
        elif r < 0.4:
            read_all(h, n % 4, list(log), t, t + 0.5)
        else:
            expected = rng.choice([current, current, "any", current - 1 if current >= 0 else 3])
            ids = [f"e{n}.{i}" for i in range(rng.choice([1, 1, 2, 3]))]
            ok = expected in ("any", current)
            outcome = ("ok" if ok else "fail") if rng.random() < 0.9 else "info"
            if ok and (outcome != "info" or rng.random() < 0.5):
                base = len(streams.setdefault(stream, []))
                for i, e in enumerate(ids):
                    streams[stream].append(e)
                    log.append((len(log) * 1000, stream, base + i, e))
            o = append(h, n % 4, stream, expected, ids, t, t + 0.5, outcome=outcome,
                       version=len(streams.get(stream, [])) - 1, position=log[-1][0] if log else None,
                       saw=current if outcome == "fail" else None)
            if outcome == "ok":
                acked.append(o)
    for stream, events in sorted(streams.items()):
        read(h, "final", stream, list(events), t + 1, t + 2)
    read_all(h, "final", list(log), t + 3, t + 4)
    return h, acked


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_histories_of_a_sequential_store_are_valid(seed: int) -> None:
    h, _ = generated(seed)
    report = check_eventstore(h)
    assert report.valid, report.summary()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), pick=st.integers(0, 1000))
def test_dropping_an_acknowledged_append_from_the_reads_is_caught(seed: int, pick: int) -> None:
    h, acked = generated(seed)
    if not acked:
        return
    victim = acked[pick % len(acked)]
    lost = set(victim.value["events"])
    tampered = History()
    for ev in h.events():
        o = h.ops()[ev.op]
        if ev.type == "invoke":
            tampered.invoke(o.process, o.key, o.f, o.value, ev.time)
        elif ev.type == "ok":
            out = ev.output
            if o.f == "read":
                out = tuple(e for e in out if e not in lost)
            elif o.f == "read_all":
                out = tuple(r for r in out if r[3] not in lost)
            tampered.ok(ev.op, out, ev.time)
        elif ev.type == "fail":
            tampered.fail(ev.op, ev.error, ev.time, o.output)
        else:
            tampered.info(ev.op, ev.time, ev.error)
    assert not check_streams(tampered).valid


# ------------------------------------------------------------------ safenet chaos check


def test_chaos_check_gives_a_verdict_and_one_line_errors(tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from simulations.cli import chaos

    h = History()
    h.ok(h.invoke(1, "r", "write", 1, 0), None, 1)
    h.fail(h.invoke(2, "r", "cas", (1, 2), 2), "refused", 3)
    bad_register = tmp_path / "register.jsonl"
    h.to_jsonl(bad_register)
    runner = CliRunner()
    result = runner.invoke(chaos, ["check", "--model", "register", str(bad_register), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["status"] == "invalid"
    good, _ = generated(1)
    good_file = tmp_path / "es.jsonl"
    good.to_jsonl(good_file)
    result = runner.invoke(chaos, ["check", "--model", "eventstore", str(good_file)])
    assert result.exit_code == 0, result.output
    assert "history check: VALID" in result.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    result = runner.invoke(chaos, ["check", "--model", "eventstore", str(broken)])
    assert result.exit_code == 2
    assert result.output.startswith("safenet: error:") and "line 1" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_retry_acknowledged_after_the_first_attempt_was_read() -> None:
    # Seen in a run: the first attempt (unknown outcome) took effect and was read; the retry,
    # invoked after that read, is acknowledged with the first result. No cycle.
    h = History()
    append(h, 1, "s", -1, ["a"], 0, 1, outcome="info")
    read(h, 2, "s", ["a"], 2, 3)
    append(h, 3, "s", 5, ["x"], 4, 5, outcome="fail", saw=0)
    append(h, 4, "s", -1, ["a"], 6, 7, version=0)
    report = check_eventstore(h)
    assert report.valid, report.summary()
    from simulations.checker import check_linearizable
    from simulations.es_workload import StreamModel

    assert check_linearizable(h, StreamModel()).valid


# ------------------------------------------------------------------ the checker catches a broken store


@pytest.mark.parametrize(("brk", "seed", "kind"), [
    # An append acknowledged before its stream write shows as a lost append, or as a cycle
    # in the stream's order (a reader saw the acknowledged event missing, then present).
    ("es_ack_before_stream_write", 1, ("lost-append", "G-single-realtime", "G-single", "G2-realtime", "G1c")),
    # A reader that passes a pending intent skips it for good: a gap in a log read, or in what
    # a subscriber (which reads the log) was delivered.
    ("es_log_skips_pending", 1, ("log-gap", "delivery-gap")),
    ("es_log_slot_reused", 1, "slot-shared"),
    ("es_subscription_one_past", 1, "resumed-past-checkpoint"),
    ("es_subscription_one_before", 1, "resumed-before-checkpoint"),
])
def test_each_event_store_break_is_caught_and_replays(brk: str, seed: int, kind: str | tuple[str, ...]) -> None:
    from eventstore.database import Database
    from simulations.run import run_sim
    from simulations.scenarios import get_scenario

    original = Database._write
    base = get_scenario("eventstore")
    # One es process with two writers (and its reader and subscribers) keeps the test within
    # CI's budget: 5-12 s of CPU a run, where the scenario's 3 x 48 writers take minutes.
    scenario = base.with_(duration=20.0, quiet=10.0, workload=replace(base.workload, es_processes=1, es_writers=2))
    result = run_sim(scenario, seed, breaks=(brk,))
    found = {a.kind for name in ("es_streams", "es_log", "es_subscriptions")
             for a in result.report.checks[name].anomalies}
    kinds = (kind,) if isinstance(kind, str) else kind
    assert found & set(kinds), result.report.summary()
    assert Database._write is original  # the break ends with its run
    if brk == "es_log_slot_reused":
        assert run_sim(scenario, seed, breaks=(brk,)).digest == result.digest
