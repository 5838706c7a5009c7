"""The store against a model: random appends with every kind of expected version, deletes
and restructures, checked event by event against plain Python lists."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.mock import MockNetwork
from eventstore.api import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventData,
    EventStore,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from node.keys import Keypair

STREAMS = ["a@1", "a@2", "b@1"]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 4),
                  st.sampled_from(["any", "no_stream", "exists", "exact", "stale", "ahead"])),
        st.tuples(st.just("hard_delete"), st.integers(0, 2), st.just(0), st.just("any")),
        st.tuples(st.just("soft_delete"), st.integers(0, 2), st.just(0), st.just("any")),
        st.tuples(st.just("fresh_process"), st.just(0), st.just(0), st.just("any")),
    ),
    max_size=14,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
async def test_the_store_behaves_like_lists(autojump_clock, ops):
    net = MockNetwork()
    keys = Keypair(b"\x0a" * 32)
    db = await EventStore(net.client(keys), pending_grace=0.1).create_database("m", stream_segment_size=5,
                                                                           log_segment_size=4)
    model: dict[str, list[str]] = {s: [] for s in STREAMS}
    deleted: set[str] = set()
    hidden_below: dict[str, int] = {}
    log: list[tuple[str, str]] = []
    counter = 0
    for kind, s, n, expectation in ops:
        stream = STREAMS[s]
        current = len(model[stream]) - 1
        if kind == "fresh_process":
            db = EventStore(net.client(keys), pending_grace=0.1).database("m")
            continue
        if kind == "hard_delete":
            if stream in deleted:
                continue
            await db.delete_stream(stream, hard=True)
            model[stream].append("$tombstone")
            log.append((stream, "$tombstone"))
            deleted.add(stream)
            continue
        if kind == "soft_delete":
            if stream in deleted or current < 0:
                continue
            await db.delete_stream(stream)
            hidden_below[stream] = current + 1
            log.append((f"$${stream}", "$metadata"))
            continue
        expected = {"any": ANY, "no_stream": NO_STREAM, "exists": STREAM_EXISTS, "exact": current,
                    "stale": current - 1, "ahead": current + 2}[expectation]
        if expected < 0 and expectation in ("exact", "stale", "ahead"):
            expected = NO_STREAM if expectation == "exact" else current + 3
        names = [f"e{counter + i}" for i in range(n)]
        counter += n
        should = (
            expected in (ANY, current)
            or (expected == NO_STREAM and current < 0)
            or (expected == STREAM_EXISTS and current >= 0)
        )
        try:
            result = await db.append(stream, [EventData("T", {"name": x}) for x in names], expected)
        except StreamDeleted:
            assert stream in deleted
            continue
        except WrongExpectedVersion as exc:
            assert not should and exc.actual == current
            continue
        assert should and stream not in deleted
        assert result.next_expected_version == current + n
        model[stream].extend(names)
        log.extend((stream, x) for x in names)
    for stream in STREAMS:
        if stream in deleted:
            continue
        visible = model[stream][hidden_below.get(stream, 0):]
        try:
            events = await db.read_stream(stream)
        except StreamNotFound:
            assert not visible
            continue
        assert [e.data["name"] for e in events] == visible
        assert [e.version for e in events] == list(range(len(model[stream]) - len(visible), len(model[stream])))
    everything = await db.read_all()
    assert [(e.stream, e.data["name"] if e.type == "T" else
             ("$tombstone" if e.type == "$streamDeleted" else e.type)) for e in everything] == log
