"""The record formats and the small pure parts: round trips and refusals."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore.api import (
    CorruptData,
    EventData,
    InvalidEvent,
    StreamMetadata,
    category_of,
    split_position,
)
from eventstore.events import POSITION_STRIDE, decode_payload, encode_payload, position
from eventstore.privacy import Sealer
from eventstore.records import Body, Intent, StreamEntry, key_of, number_of
from eventstore.safe import entry_limit
from node.data import MutableData, Value
from node.rules import MAX_MDATA_SIZE
from node.xorname import XorName

uuids = st.builds(uuid.UUID, st.uuids().map(str))
opt_uuids = st.none() | uuids
names = st.binary(min_size=32, max_size=32)
bodies = st.builds(
    Body,
    uuids,
    st.text(min_size=1, max_size=40),
    st.integers(0, 2**62),
    opt_uuids,
    opt_uuids,
    names,
    st.booleans(),
    st.none() | st.binary(max_size=50),
    st.none() | names,
    st.booleans(),
    st.none() | st.integers(0, 2**40),
)


@given(bodies)
def test_body_round_trip(body):
    assert Body.decode(body.encode()) == body


@given(st.integers(0, 2**40), st.integers(1, 1000).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
       st.binary(max_size=64))
def test_stream_entry_round_trip(slot, index_count, body):
    index, count = index_count
    entry = StreamEntry(slot, index, count, body)
    assert StreamEntry.decode(entry.encode()) == entry
    assert entry.last_of_batch == (index == count - 1)


@given(st.binary(min_size=16, max_size=16), st.text(min_size=1, max_size=30), st.integers(0, 2**40),
       st.lists(st.binary(max_size=30), min_size=1, max_size=5), st.integers(0, 2**62))
def test_intent_round_trip(iid, stream, version, held, ts):
    intent = Intent(iid, stream, version, len(held), tuple(held), None, ts)
    assert Intent.decode(intent.encode()) == intent
    by_ref = Intent(iid, stream, version, len(held), None, b"r" * 32, ts)
    assert Intent.decode(by_ref.encode()) == by_ref


@given(st.binary(max_size=80))
def test_garbage_is_corrupt_data_never_a_crash(raw):
    for decode in (Body.decode, StreamEntry.decode, Intent.decode):
        with contextlib.suppress(CorruptData):
            decode(raw)


@given(st.integers(0, 2**56))
def test_keys_sort_as_numbers(n):
    assert number_of(key_of(n)) == n
    assert (key_of(n) < key_of(n + 1)) is True


@given(st.integers(0, 2**40), st.integers(0, POSITION_STRIDE - 1))
def test_positions_order_like_the_log(slot, index):
    pos = position(slot, index)
    assert split_position(pos) == (slot, index)
    assert position(slot, POSITION_STRIDE - 1) < position(slot + 1, 0)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=8))
def test_json_payloads_round_trip(value):
    raw, is_json = encode_payload(value)
    assert is_json and decode_payload(raw, True) == value


def test_bytes_payloads_stay_bytes():
    assert encode_payload(b"\x00\xff") == (b"\x00\xff", False)
    with pytest.raises(InvalidEvent):
        encode_payload({1, 2})


def test_event_data_checks_its_fields():
    with pytest.raises(InvalidEvent):
        EventData("", {})
    with pytest.raises(InvalidEvent):
        EventData("x" * 201, {})
    event = EventData("T", {}, causation_id=str(uuid.UUID(int=1)))
    assert event.causation_id == uuid.UUID(int=1)
    with pytest.raises(InvalidEvent):
        StreamMetadata(max_count=0)


def test_categories_split_at_the_first_at_sign():
    assert category_of("order@42") == "order"
    assert category_of("order@42@x") == "order"
    assert category_of("plain") == "plain"


@given(st.text(min_size=1, max_size=20))
def test_private_names_hide_and_seal_round_trips(text):
    sealer = Sealer(b"k" * 32)
    assert sealer.name(text) != text.encode() and len(sealer.name(text)) == 32
    assert sealer.unseal(sealer.seal(text.encode())) == text.encode()
    assert sealer.seal_payload(b"x") == sealer.seal_payload(b"x")  # equal payloads dedupe
    public = Sealer()
    assert public.seal(b"x") == b"x" and public.name(text) == text.encode()


def test_a_segment_of_maximal_entries_fits_one_md():
    """The entry limit is what lets a full segment of the largest records stay under 1 MiB."""
    for size in (1000, 500, 10):
        limit = entry_limit(size)
        md = MutableData(XorName(bytes(32)), 15001,
                         {key_of(i): Value(b"x" * limit, 0) for i in range(size)}, {}, 0, frozenset())
        assert md.encoded_size() <= MAX_MDATA_SIZE
