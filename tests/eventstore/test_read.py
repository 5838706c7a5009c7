"""Reading streams: both directions, pages, segments, torn appends, metadata, deletion and
restructure events."""

from __future__ import annotations

import pytest
import trio
from es_testing import check_consistent, ev

from eventstore.api import (
    END,
    EventData,
    InvalidEvent,
    StreamMetadata,
    StreamNotFound,
)
from node.requests import MutateEntries


async def test_a_long_stream_over_several_segments_reads_back_exactly(db, autojump_clock):
    for batch in range(50):
        await db.append("big@1", [ev(n=batch * 100 + i) for i in range(100)], expected_version=batch * 100 - 1)
    assert await db.stream_version("big@1") == 4999
    assert await db.streams_._last_segment("big@1") == 4  # five segments of 1000
    forward = await db.read_stream("big@1")
    assert [e.version for e in forward] == list(range(5000))
    assert [e.data["n"] for e in forward] == list(range(5000))
    backward = await db.read_stream("big@1", END, backward=True)
    assert [e.version for e in backward] == list(range(4999, -1, -1))
    assert [e.id for e in backward] == [e.id for e in reversed(forward)]
    # From any version, in pages, either way.
    assert [e.version for e in await db.read_stream("big@1", 998, count=4)] == [998, 999, 1000, 1001]
    assert [e.version for e in await db.read_stream("big@1", 1001, backward=True, count=3)] == [1001, 1000, 999]
    assert [e.version async for e in db.iter_stream("big@1", 4500, page_size=128)] == list(range(4500, 5000))
    assert [e.version async for e in db.iter_stream("big@1", 300, backward=True, page_size=64)] == list(
        range(300, -1, -1))
    assert await db.read_stream("big@1", 5000) == []


@pytest.mark.parametrize("events", [7, 10, 14])
async def test_a_fresh_reader_finds_the_end_and_lists_it_in_one_round_trip(store, net, make_store,
                                                                           autojump_clock, events):
    db = await store.create_database("small", stream_segment_size=10)
    await db.append("s@1", [ev(n=i) for i in range(events)])
    reader = make_store().database("small")
    await reader.stream_version("other@1")  # opened: only the stream's own reads are timed
    net.set_delay(0.01)  # every request takes 10 ms of virtual time
    began = trio.current_time()
    assert [e.data["n"] for e in await reader.read_stream("s@1")] == list(range(events))
    rounds = round((trio.current_time() - began) / 0.01)
    # The first segment is listed while the next one is probed (the probe dropped when the
    # listing is not full): one round trip, where probing then listing took three. A second
    # segment costs a probe more and its listing.
    assert rounds == (1 if events <= 10 else 3), rounds


async def test_missing_streams(db, autojump_clock):
    with pytest.raises(StreamNotFound):
        await db.read_stream("nope@1")


async def test_appends_straddling_segments_are_atomic_and_finished_by_readers(store, net, make_store, autojump_clock):
    db = await store.create_database("small", stream_segment_size=10)
    await db.append("s@1", [ev(n=i) for i in range(7)])
    # A 25-event append over segments 0..3; its writer dies after the first (deciding) part.
    writes = []

    def second_part(request) -> bool:
        op = request.op
        if isinstance(op, MutateEntries) and op.address in (db.layout.stream_segment("s@1", s) for s in (1, 2, 3)):
            writes.append(op.address)
            return True
        return False

    net.fail_next(count=100, error=lambda: KeyboardInterrupt(), when=second_part)
    with pytest.raises(KeyboardInterrupt):
        await db.append("s@1", [ev(n=7 + i) for i in range(25)], expected_version=6)
    net.faults.injections.clear()
    reader = make_store().database("small")
    # The reader sees the append whole: the stream's end finishes it from the log intent.
    assert await reader.stream_version("s@1") == 31
    assert [e.data["n"] for e in await reader.read_stream("s@1")] == list(range(32))
    await reader.append("s@1", [ev(n=32)], expected_version=31)
    await check_consistent(reader)


async def test_max_count_max_age_and_truncate_before(db, store, autojump_clock):
    now = [1_000_000.0]
    store.clock = lambda: now[0]
    for i in range(10):
        await db.append("s@1", [ev(n=i)])
        now[0] += 10
    await db.set_stream_metadata("s@1", StreamMetadata(max_count=3))
    assert [e.data["n"] for e in await db.read_stream("s@1")] == [7, 8, 9]
    await db.set_stream_metadata("s@1", StreamMetadata(truncate_before=4))
    assert [e.data["n"] for e in await db.read_stream("s@1")] == [4, 5, 6, 7, 8, 9]
    assert [e.data["n"] for e in await db.read_stream("s@1", END, backward=True, count=2)] == [9, 8]
    await db.set_stream_metadata("s@1", StreamMetadata(max_age=35, custom={"owner": "ops"}))
    # now = start + 100: events stamped at +70, +80, +90 are younger than 35 s.
    assert [e.data["n"] for e in await db.read_stream("s@1")] == [7, 8, 9]
    assert (await db.get_stream_metadata("s@1")).custom == {"owner": "ops"}
    assert len(await db.read_all()) == 13  # the log keeps everything (10 events, 3 metadata)


async def test_soft_delete_hides_and_numbering_continues(db, make_store, autojump_clock):
    await db.append("s@1", [ev(n=0), ev(n=1)])
    await db.delete_stream("s@1", expected_version=1)
    with pytest.raises(StreamNotFound):
        await db.read_stream("s@1")
    other = make_store().database("shop")
    with pytest.raises(StreamNotFound):
        await other.read_stream("s@1")
    assert await other.stream_version("s@1") == 1
    assert (await other.append("s@1", [ev(n=2)], expected_version=1)).next_expected_version == 2
    [event] = await db.read_stream("s@1")
    assert (event.version, event.data["n"]) == (2, 2)
    assert await db.list_streams("s") == ["s@1"]


async def test_restructure_events_correct_on_read_and_keep_the_history(db, autojump_clock):
    await db.append("doc@1", [ev(text="helo"), ev(text="wrold"), ev(text="!")])
    await db.restructure("doc@1", 1, {"text": "world"})
    await db.append("doc@1", [ev(text="again")])
    await db.restructure("doc@1", 1, {"text": "World"}, metadata={"why": "capital"})
    corrected = await db.read_stream("doc@1")
    assert [e.data["text"] for e in corrected] == ["helo", "World", "!", "again"]
    assert [e.version for e in corrected] == [0, 1, 2, 4]
    assert corrected[1].corrected_by == 5 and corrected[1].metadata == {"why": "capital"}
    assert corrected[1].type == "Happened"
    # A window that ends before the corrections still sees them.
    assert (await db.read_stream("doc@1", 1, count=1))[0].data == {"text": "World"}
    raw = await db.read_stream("doc@1", resolve_corrections=False)
    assert [e.type for e in raw] == ["Happened"] * 3 + ["$correction", "Happened", "$correction"]
    assert raw[1].data == {"text": "wrold"} and raw[3].data == {"text": "world"}
    assert raw[3].causation_id == raw[1].id
    with pytest.raises(InvalidEvent):
        await db.restructure("doc@1", 99, {})
    with pytest.raises(InvalidEvent):
        await db.restructure("doc@1", 3, {})  # a correction is not corrected


async def test_event_fields_survive(db, autojump_clock):
    import uuid

    cause, corr = uuid.uuid4(), uuid.uuid4()
    sent = EventData("Paid", {"amount": 12.5, "items": [1, 2]}, metadata={"user": "ann"},
                     causation_id=cause, correlation_id=corr)
    result = await db.append("order@1", [sent, EventData("Blob", b"\x00\x01", metadata=b"raw")])
    first, second = await db.read_stream("order@1")
    assert (first.id, first.type, first.data, first.metadata) == (sent.id, "Paid", sent.data, {"user": "ann"})
    assert (first.causation_id, first.correlation_id) == (cause, corr)
    assert (second.data, second.metadata) == (b"\x00\x01", b"raw")
    assert second.position == result.log_position and first.position == result.log_position - 1
    assert first.timestamp.tzinfo is not None
    assert first.to_json()["data"] == sent.data and second.to_json()["data"] == {"base64": "AAE="}
