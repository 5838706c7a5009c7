"""Where payloads live: inline in the record, in one pack chunk per append, or in a blob of
their own; records of the first format still read; reads fetch each chunk once; names and
types starting with `$` are the store's."""

from __future__ import annotations

import os
import uuid

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore import database
from eventstore.api import EventData, EventStore, InvalidEvent, ReservedName, StreamNotFound
from eventstore.database import BLOB_MIN, INLINE_MAX
from eventstore.records import BLOB, INLINE, PACKED, Body, Intent, make_packs, unpack_payload
from node import errors as E
from node.data import ImmutableData
from node.requests import PutIData, Request

uuids = st.builds(uuid.UUID, st.uuids().map(str))
names = st.binary(min_size=32, max_size=32)
common = (
    uuids, st.text(min_size=1, max_size=40), st.integers(0, 2**62), st.none() | uuids, st.none() | uuids,
)
tail = (
    st.booleans(), st.none() | st.binary(max_size=50), st.none() | names, st.booleans(),
    st.none() | st.integers(0, 2**40),
)
placed = st.one_of(
    st.tuples(st.binary(max_size=INLINE_MAX), st.just(INLINE), st.just(0), st.just(0)),
    st.tuples(names, st.just(PACKED), st.integers(0, 2**20), st.integers(0, 2**20)),
    st.tuples(names, st.just(BLOB), st.just(0), st.just(0)),
)


@given(*common, placed, *tail)
def test_every_placement_round_trips(eid, etype, ts, cause, corr, place, is_json, meta, meta_ref, meta_json, corrects):
    payload, where, offset, length = place
    body = Body(eid, etype, ts, cause, corr, payload, is_json, meta, meta_ref, meta_json, corrects,
                where, offset, length)
    assert Body.decode(body.encode()) == body


@given(*common, names, *tail)
def test_a_first_format_record_decodes_as_a_blob(eid, etype, ts, cause, corr, name, is_json, meta, meta_ref,
                                                 meta_json, corrects):
    """The record as the first format wrote it, field by field, reads as a BLOB body."""
    old = msgpack.packb([
        eid.bytes, etype, ts, cause and cause.bytes, corr and corr.bytes, name,
        (1 if is_json else 0) | (2 if meta_json else 0), meta, meta_ref, corrects,
    ], use_bin_type=True)
    body = Body.decode(old)
    assert (body.where, body.payload, body.id, body.data_is_json, body.metadata) == (BLOB, name, eid, is_json, meta)
    assert body.encode() == old  # and a blob record is still written that way


def test_first_format_intent_names_a_blob():
    old = msgpack.packb([b"i" * 16, "s@1", 3, 2, b"r" * 32, 7], use_bin_type=True)
    intent = Intent.decode(old)
    assert (intent.ref, intent.ref_is_chunk, intent.bodies) == (b"r" * 32, False, None)
    assert intent.encode() == old
    chunked = intent.held_in(b"c" * 32, chunk=True)
    assert Intent.decode(chunked.encode()) == chunked


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=40), st.integers(300, 2000))
def test_packs_hold_every_payload_once_in_order(payloads, limit):
    packs, places = make_packs(payloads, limit)
    assert all(len(p) <= limit for p in packs)
    assert [unpack_payload(packs[p], o, n) for p, o, n in places] == payloads
    assert sum(len(p) for p in packs) == sum(len(p) for p in payloads)


def where_of(db, stream: str, version: int = 0) -> int:
    async def get() -> int:
        entry = await db.streams_.entry(stream, version)
        return db.streams_.body(entry).where

    return get()


@pytest.mark.parametrize(("size", "where", "chunks"), [
    (INLINE_MAX, INLINE, 0),          # at the limit: in the record, no chunk at all
    (INLINE_MAX + 1, PACKED, 1),      # one byte more: the append's pack
    (BLOB_MIN - 1, PACKED, 1),
    (BLOB_MIN, BLOB, None),           # a blob of its own (self-encrypted: several chunks)
])
async def test_placement_at_the_size_boundaries(db, net, make_store, autojump_clock, size, where, chunks):
    payload = os.urandom(size)
    before = len(net.chunks)
    await db.append("p@1", [EventData("Sized", payload)])
    assert await where_of(db, "p@1") == where
    if chunks is not None:
        assert len(net.chunks) - before == chunks
    else:
        assert len(net.chunks) - before >= 2
    fresh = make_store().database("shop")
    assert (await fresh.read_stream("p@1"))[0].data == payload
    assert (await fresh.read_all())[0].data == payload


async def test_a_record_that_would_not_fit_moves_its_payload_to_the_pack(db, autojump_clock):
    big_meta = {"m": "x" * 700}  # inline payload + this metadata exceed an entry
    await db.append("p@1", [EventData("T", b"y" * INLINE_MAX, big_meta)])
    assert await where_of(db, "p@1") == PACKED
    event = (await db.read_stream("p@1"))[0]
    assert (event.data, event.metadata) == (b"y" * INLINE_MAX, big_meta)


async def test_a_batch_shares_one_pack_and_reads_back_exactly(db, net, make_store, autojump_clock):
    events = [EventData("Mixed", os.urandom(n)) for n in [10, 600, 3000, 20_000, 700, 0, 1500] * 10]
    before = len(net.chunks)
    await db.append("b@1", events)
    # one pack for every payload over INLINE_MAX, one chunk for the intent's 70 records
    assert len(net.chunks) - before == 2
    packs = set()
    for v in range(len(events)):
        entry = await db.streams_.entry("b@1", v)
        body = db.streams_.body(entry)
        if body.where == PACKED:
            packs.add(body.payload)
    assert len(packs) == 1
    fresh = make_store().database("shop")
    assert [e.data for e in await fresh.read_stream("b@1")] == [e.data for e in events]
    assert [e.id for e in await fresh.read_all()] == [e.id for e in events]


async def test_a_big_append_splits_into_packs_of_a_chunk_each(db, net, monkeypatch, autojump_clock):
    monkeypatch.setattr(database, "PACK_LIMIT", 5000)
    events = [EventData("T", os.urandom(2000)) for _ in range(7)]
    before = len(net.chunks)
    await db.append("b@1", events)
    assert len(net.chunks) - before == 4  # ceil(7 / 2) packs (the 7 records fit the log entry)
    assert [e.data for e in await db.read_stream("b@1")] == [e.data for e in events]


async def test_reads_fetch_each_chunk_once(db, net, make_store, autojump_clock):
    """Ten appends of ten packed payloads each: a cold stream read fetches the ten packs, no
    more; so does a cold log read (ten records of an append fit its log entry)."""
    written = []
    for b in range(10):
        batch = [EventData("T", {"b": b, "i": i, "pad": "z" * 800}) for i in range(10)]
        await db.append("r@1", batch)
        written.extend(batch)
    reader = make_store().database("shop")
    gets = net.requests["get_idata"]
    events = await reader.read_stream("r@1")
    assert [e.data for e in events] == [e.data for e in written]
    assert net.requests["get_idata"] - gets == 10 == reader.data.stats["chunk_gets"]

    log_reader = make_store().database("shop")
    gets = net.requests["get_idata"]
    assert [e.id for e in await log_reader.read_all()] == [e.id for e in written]
    assert net.requests["get_idata"] - gets == 10 == log_reader.data.stats["chunk_gets"]
    again = net.requests["get_idata"]
    await log_reader.read_all()  # chunks never change: the second read is served from the cache
    assert net.requests["get_idata"] == again


async def test_a_log_read_lists_each_stream_segment_about_once(db, net, make_store, autojump_clock):
    for i in range(30):
        for s in range(3):
            await db.append(f"s@{s}", [EventData("T", {"i": i})])
    reader = make_store().database("shop")
    lists, gets = net.requests["list_entries"], net.requests["get_value"]
    assert len(await reader.read_all()) == 90
    # the log segment (once more to see its end), three stream segments: not a read per intent
    assert net.requests["list_entries"] - lists <= 5
    assert net.requests["get_value"] - gets <= 3


async def test_packed_payloads_of_a_private_database_are_sealed(store, net, autojump_clock):
    db = await store.create_database("private", private=True)
    marker = b"PACKED-MARKER-" * 100
    await db.append("s@1", [EventData("T", marker), EventData("T", marker + b"2")])
    assert await where_of(db, "s@1") == PACKED
    assert not any(b"PACKED-MARKER" in chunk for chunk in net.chunks.values())
    assert [e.data for e in await db.read_stream("s@1")] == [marker, marker + b"2"]


# ------------------------------------------------------------------ what belongs to the store


@pytest.mark.parametrize("kind", ["$streamDeleted", "$metadata", "$correction", "$anything"])
async def test_a_user_may_not_append_a_system_event_type(db, autojump_clock, kind):
    await db.append("order@1", [EventData("Placed", {})])
    with pytest.raises(ReservedName, match="belong to the store") as info:
        await db.append("order@1", [EventData("Fine", {}), EventData(kind, {})])
    assert isinstance(info.value, InvalidEvent)  # bad input, like any invalid event
    assert [e.type for e in await db.read_stream("order@1")] == ["Placed"]  # nothing written
    assert await db.stream_version("order@1") == 0


async def test_a_user_may_not_append_to_a_system_stream(db, autojump_clock):
    for stream in ("$all", "$$order@1", "$ce-order"):
        with pytest.raises(ReservedName, match="belong to the store"):
            await db.append(stream, [EventData("T", {})])
    with pytest.raises(StreamNotFound):
        await db.read_stream("$$order@1")


async def test_the_store_still_writes_its_own_system_events(db, autojump_clock):
    await db.append("order@1", [EventData("Placed", {})])
    await db.delete_stream("order@1", hard=True)
    assert [e.type for e in await db.read_all()] == ["Placed", "$streamDeleted"]


# ------------------------------------------------------------------ the mock's signature memo


async def test_the_mock_still_refuses_an_altered_or_foreign_signature(net, autojump_clock):
    client = net.client()
    signed = Request.signed(PutIData(ImmutableData(b"mine")), client.keys)
    net._note_signed(signed)
    altered = Request(PutIData(ImmutableData(b"not mine")), signed.requester, signed.request_id,
                      signed.owner, signed.signature)
    with pytest.raises(E.InvalidSignature):
        await net.handle(altered.to_obj())
    other = net.client()
    forged = Request(signed.op, other.keys.public, signed.request_id, None, signed.signature)
    with pytest.raises(E.InvalidSignature):
        await net.handle(forged.to_obj())
    await net.handle(signed.to_obj())  # the genuine one passes
    assert bytes(ImmutableData(b"mine").name) in net.chunks


async def test_every_event_store_figure_holds_without_the_memo(autojump_clock):
    """The memo changes cost only: with every signature verified in full, the same appends
    and reads give the same results."""
    from client.mock import MockNetwork

    net = MockNetwork(seed=3)
    net._note_signed = lambda _request: None  # nothing remembered: verify everything
    db = await EventStore(net.client()).create_database("d")
    await db.append("s@1", [EventData("T", {"i": i}) for i in range(5)])
    assert [e.data["i"] for e in await db.read_stream("s@1")] == list(range(5))


def test_the_byte_cache_keeps_its_budget_and_the_newest_value():
    from eventstore.safe import ByteLRU

    cache: ByteLRU[str, str] = ByteLRU(800)
    for i in range(20):
        cache.put(f"k{i}", f"v{i}", 90)
    assert cache.used <= 800 and len(cache) == 8
    assert cache.get("k0") is None and cache.get("k19") == "v19"
    cache.put("k19", "newer", 50)
    assert cache.get("k19") == "newer" and cache.used == 7 * 90 + 50
    cache.put("huge", "x", 101)  # over an eighth of the budget: not kept
    assert cache.get("huge") is None


async def test_a_first_format_intent_reads_its_records_from_a_blob(db, autojump_clock):
    from eventstore.records import encode_bodies

    bodies = (b"one", b"two", b"three")
    ref = bytes(await db.data.put_blob(encode_bodies(bodies)))
    old = Intent.decode(msgpack.packb([b"i" * 16, "s@1", 0, 3, ref, 7], use_bin_type=True))
    assert await db.log.bodies(old) == bodies


def test_a_read_wants_its_chunks_in_the_records_order_whatever_the_hash_seed():
    """The fetches of a read start in this order; a set's order would follow PYTHONHASHSEED
    and make a simulated run replay only in a process with the same hash seed."""
    from eventstore.reads import chunks_wanted

    names = [bytes([i]) * 32 for i in range(40)]
    for _ in range(len(names)):  # eight names that this process's hash seed does not keep in order
        if list(set(names[:5])) != names[:5]:
            break
        names = names[1:] + names[:1]
    chosen = names[:8]
    assert list(set(chosen[:5])) != chosen[:5]

    def body(payload: bytes, where: int, meta_ref: bytes | None = None) -> Body:
        return Body(uuid.uuid4(), "T", 0, None, None, payload, True, None, meta_ref, False, None, where, 0, 1)

    bodies = [body(n, PACKED) for n in chosen[:5]] + [body(chosen[0], PACKED)]
    bodies += [body(n, BLOB, meta_ref=chosen[7]) for n in chosen[5:7]] + [body(b"x", INLINE)]
    assert chunks_wanted(bodies) == (chosen[:5], [chosen[5], chosen[7], chosen[6]])


def test_kept_addresses_are_the_derived_ones():
    """Layout keeps the addresses it derives; what it hands out is what deriving gives,
    public or private, before and after its store is emptied for room."""
    from eventstore.privacy import Sealer, new_key
    from eventstore.safe import TAG, Layout, derive_name
    from node.data import MDataAddress

    for sealer in (Sealer(), Sealer(new_key())):
        layout = Layout(b"ns", sealer)
        for _round in range(2):
            for i in range(5000):
                stream, segment = f"s@{i % 2500}", i // 2500
                assert layout.stream_segment(stream, segment) == MDataAddress(
                    derive_name("stream", b"ns", sealer.name(stream), segment), TAG)
                assert layout.log_segment(i) == MDataAddress(derive_name("log", b"ns", i), TAG)
            assert len(layout._addresses) <= 8192
        assert Layout(b"other", sealer).log_segment(0) != layout.log_segment(0)
