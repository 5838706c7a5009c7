"""Restructure events (corrections) against the stream's read rules: `max_count`, `max_age`,
`truncate_before`, soft and hard deletes. A correction takes a version (the next one, as any
record of the stream) but is no event for the rules: `max_count` counts events only, an event's
age is its own, and a correction never brings back an event the rules hide."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.mock import MockNetwork
from eventstore.api import (
    END,
    EventData,
    EventStore,
    InvalidEvent,
    StreamDeleted,
    StreamMetadata,
    StreamNotFound,
)
from node.keys import Keypair


def texts(events) -> list[tuple[int, str]]:
    return [(e.version, e.data["t"]) for e in events]


async def test_max_count_one_and_a_restructure_reads_the_corrected_event(db, autojump_clock):
    # The reported bug: the correction took the only slot of the window and the read was empty.
    await db.append("doc@1", [EventData("Wrote", {"t": "helo"})])
    await db.set_stream_metadata("doc@1", StreamMetadata(max_count=1))
    await db.restructure("doc@1", 0, {"t": "hello"})
    assert texts(await db.read_stream("doc@1")) == [(0, "hello")]
    assert texts(await db.read_stream("doc@1", END, backward=True, count=1)) == [(0, "hello")]
    assert await db.stream_version("doc@1") == 1  # the correction's version: what an append expects
    raw = await db.read_stream("doc@1", resolve_corrections=False)
    assert [(e.version, e.type) for e in raw] == [(0, "Wrote"), (1, "$correction")]
    await db.append("doc@1", [EventData("Wrote", {"t": "next"})], expected_version=1)
    assert texts(await db.read_stream("doc@1")) == [(2, "next")]


async def test_max_count_counts_events_only(db, autojump_clock):
    await db.append("doc@1", [EventData("Wrote", {"t": str(i)}) for i in range(5)])
    await db.restructure("doc@1", 4, {"t": "4'"})  # version 5
    await db.restructure("doc@1", 1, {"t": "1'"})  # version 6: corrects an event max_count hides
    await db.restructure("doc@1", 3, {"t": "3'"})  # version 7
    await db.set_stream_metadata("doc@1", StreamMetadata(max_count=2))
    assert texts(await db.read_stream("doc@1")) == [(3, "3'"), (4, "4'")]
    assert texts(await db.read_stream("doc@1", END, backward=True)) == [(4, "4'"), (3, "3'")]
    assert texts([e async for e in db.iter_stream("doc@1", page_size=1)]) == [(3, "3'"), (4, "4'")]
    raw = await db.read_stream("doc@1", resolve_corrections=False)
    assert [e.version for e in raw] == [3, 4, 5, 6, 7]  # the window starts at the 2nd-last event
    await db.set_stream_metadata("doc@1", StreamMetadata(max_count=4))
    assert texts(await db.read_stream("doc@1")) == [(1, "1'"), (2, "2"), (3, "3'"), (4, "4'")]


async def test_max_age_goes_by_the_events_own_time(db, store, autojump_clock):
    now = [1_000_000.0]
    store.clock = lambda: now[0]
    await db.append("doc@1", [EventData("Wrote", {"t": "old"})])
    now[0] += 100
    await db.append("doc@1", [EventData("Wrote", {"t": "young"})])
    await db.restructure("doc@1", 0, {"t": "old'"})  # a young correction of an old event
    await db.restructure("doc@1", 1, {"t": "young'"})
    await db.set_stream_metadata("doc@1", StreamMetadata(max_age=50))
    assert texts(await db.read_stream("doc@1")) == [(1, "young'")]
    raw = await db.read_stream("doc@1", resolve_corrections=False)
    assert [e.version for e in raw] == [1, 2, 3]  # corrections are as young as they are
    await db.set_stream_metadata("doc@1", StreamMetadata(max_age=50, max_count=1))
    assert texts(await db.read_stream("doc@1")) == [(1, "young'")]


async def test_truncate_before_hides_corrected_events_and_refuses_to_correct_them(db, autojump_clock):
    await db.append("doc@1", [EventData("Wrote", {"t": str(i)}) for i in range(4)])
    await db.restructure("doc@1", 1, {"t": "1'"})  # version 4
    await db.set_stream_metadata("doc@1", StreamMetadata(truncate_before=2))
    assert texts(await db.read_stream("doc@1")) == [(2, "2"), (3, "3")]
    with pytest.raises(InvalidEvent, match="truncated"):
        await db.restructure("doc@1", 0, {"t": "0'"})
    await db.restructure("doc@1", 2, {"t": "2'"})
    await db.set_stream_metadata("doc@1", StreamMetadata(truncate_before=2, max_count=1))
    assert texts(await db.read_stream("doc@1")) == [(3, "3")]
    # A truncate_before that falls between an event and its correction: the correction alone
    # is no event, and the read says what it holds: nothing.
    await db.set_stream_metadata("doc@1", StreamMetadata(truncate_before=4))
    assert await db.read_stream("doc@1") == []


async def test_deletes_and_corrections(db, autojump_clock):
    await db.append("doc@1", [EventData("Wrote", {"t": "a"}), EventData("Wrote", {"t": "b"})])
    await db.restructure("doc@1", 0, {"t": "a'"})
    await db.delete_stream("doc@1")  # soft: the corrections go with the events
    with pytest.raises(StreamNotFound):
        await db.read_stream("doc@1")
    with pytest.raises(StreamNotFound):
        await db.restructure("doc@1", 1, {"t": "b'"})
    await db.append("doc@1", [EventData("Wrote", {"t": "c"})])  # version 3
    await db.restructure("doc@1", 3, {"t": "c'"})
    await db.set_stream_metadata("doc@1", StreamMetadata(truncate_before=3, max_count=1))
    assert texts(await db.read_stream("doc@1")) == [(3, "c'")]
    await db.delete_stream("doc@1", hard=True)
    with pytest.raises(StreamDeleted):
        await db.read_stream("doc@1")
    with pytest.raises(StreamDeleted):
        await db.restructure("doc@1", 3, {"t": "c''"})


# --------------------------------------------------------------------------- against a model

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("restructure"), st.integers(0, 30)),
        st.tuples(st.just("max_count"), st.integers(0, 4)),
        st.tuples(st.just("max_age"), st.integers(0, 3)),
        st.tuples(st.just("truncate"), st.integers(0, 8)),
        st.tuples(st.just("soft_delete"), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 3)),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
async def test_corrections_and_read_rules_against_a_model(autojump_clock, steps):
    now = [1_000_000.0]
    store = EventStore(MockNetwork().client(Keypair(b"\x0b" * 32)), clock=lambda: now[0], pending_grace=0.1)
    db = await store.create_database("m", stream_segment_size=4)
    records: list[tuple[str, int | None, str, float]] = []  # (kind, target, text, time)
    rules: dict[str, int | None] = {"max_count": None, "max_age": None, "truncate": None}

    def visible() -> list[tuple[int, str]] | None:
        tb = rules["truncate"] or 0
        if tb > len(records) - 1:
            return None  # StreamNotFound
        events = [v for v, r in enumerate(records) if r[0] == "event" and v >= tb]
        low = tb
        if rules["max_count"] and len(events) >= rules["max_count"]:
            low = events[-rules["max_count"]]
        out = []
        for v in events:
            if v < low or (rules["max_age"] and records[v][3] < now[0] - rules["max_age"] * 10):
                continue
            fixes = [r[2] for r in records if r[0] == "fix" and r[1] == v]
            out.append((v, fixes[-1] if fixes else records[v][2]))
        return out

    async def set_rules() -> None:
        await db.set_stream_metadata("s@1", StreamMetadata(
            max_count=rules["max_count"], max_age=None if rules["max_age"] is None else rules["max_age"] * 10,
            truncate_before=rules["truncate"]))

    for n, (kind, arg) in enumerate(steps):
        if kind == "append":
            await db.append("s@1", [EventData("E", {"t": f"{n}.{i}"}) for i in range(arg)])
            records.extend(("event", None, f"{n}.{i}", now[0]) for i in range(arg))
        elif kind == "restructure":
            events = [v for v, r in enumerate(records) if r[0] == "event"]
            if not events:
                continue
            target = events[arg % len(events)]
            tb = rules["truncate"] or 0
            if target < tb:
                with pytest.raises(StreamNotFound if tb > len(records) - 1 else InvalidEvent):
                    await db.restructure("s@1", target, {"t": f"fix{n}"})
                continue
            await db.restructure("s@1", target, {"t": f"fix{n}"})
            records.append(("fix", target, f"fix{n}", now[0]))
        elif kind == "soft_delete":
            if not records:
                continue
            await db.delete_stream("s@1")
            rules["truncate"] = len(records)
        elif kind == "wait":
            now[0] += arg * 10
            continue
        else:
            rules[kind] = arg or None
            await set_rules()
        expected = visible() if records else None
        if expected is None:
            with pytest.raises(StreamNotFound):
                await db.read_stream("s@1")
        else:
            assert texts(await db.read_stream("s@1")) == expected, steps
            assert texts(await db.read_stream("s@1", END, backward=True)) == expected[::-1]
        assert await db.stream_version("s@1") == len(records) - 1
