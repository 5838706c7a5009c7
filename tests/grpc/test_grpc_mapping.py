"""The gateway's conversions between KurrentDB's messages and the store's, as properties:
whatever a client appends reads back byte for byte, ids survive both of the protocol's
forms, and positions never put an event at the protocol's "start"."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.events import RecordedEvent, decode_payload, encode_payload
from eventstore.grpc import mapping as M
from eventstore.grpc.protocol import shared_pb2

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def through_the_store(event_bytes: bytes, content_type: str, custom: bytes, event_id: uuid.UUID) -> RecordedEvent:
    """Append as the gateway does, store as the store does (its payload encoding), read back."""
    data = M.event_data(shared_pb2.UUID(string=str(event_id)), {"type": "T", "content-type": content_type},
                        custom, event_bytes)
    stored = [encode_payload(value) if value is not None else None for value in (data.data, data.metadata)]
    back = [decode_payload(*pair) if pair is not None else None for pair in stored]
    return RecordedEvent("s", 0, data.id, data.type, back[0], back[1], None, None, datetime.now(UTC), 0)


@settings(deadline=None)  # timing under a loaded CI machine is not what is tested
@given(st.binary(max_size=200), st.sampled_from(["application/json", "application/octet-stream", "text/x"]),
       st.binary(max_size=50), st.uuids())
def test_any_bytes_read_back_as_written(payload, content_type, custom, event_id):
    read = M.recorded_event(through_the_store(payload, content_type, custom, event_id), structured_ids=False)
    assert (read.event.data, read.event.custom_metadata) == (payload, custom)
    assert read.event.id.string == str(event_id)


@settings(max_examples=40, deadline=None)
@given(json_values, st.booleans())
def test_compact_json_keeps_its_content_type_and_other_json_its_bytes(value, ascii_escapes):
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_escapes).encode()
    read = M.recorded_event(through_the_store(raw, "application/json", b"", uuid.uuid4()), structured_ids=False)
    assert read.event.data == raw
    as_written_by_the_store = raw == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if as_written_by_the_store and value is not None:
        assert read.event.metadata["content-type"] == "application/json"


@settings(deadline=None)  # timing under a loaded CI machine is not what is tested
@given(st.uuids())
def test_structured_ids_round_trip(value):
    assert M.uuid_from_proto(M.uuid_to_proto(value, structured=True)) == value
    assert M.uuid_from_proto(M.uuid_to_proto(value, structured=False)) == value


@settings(deadline=None)  # timing under a loaded CI machine is not what is tested
@given(st.integers(min_value=0, max_value=2**53))
def test_no_event_sits_at_the_start_position(store_position):
    assert M.to_commit(store_position) >= 1
    assert M.from_commit(M.to_commit(store_position)) == store_position
