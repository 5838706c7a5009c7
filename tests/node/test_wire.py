"""The wire protocol: envelopes, framing, and a decoder that only ever raises ProtocolError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import InvalidSuccessor, NoSuchData, ProtocolError, RequestTimeout
from node.wire import (
    DEFAULT_MAX_FRAME,
    MSG_ID_LEN,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameTooLarge,
    UnsupportedVersion,
    check_version,
    decode_body,
    encode_frame,
    error_message,
    new_message,
    raise_if_error,
    reply_to,
)

# ------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    # NaN is a legal value but never equal to itself, which would only confuse the round trip.
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=40),
)
map_keys = st.one_of(st.text(max_size=8), st.binary(max_size=8), st.integers(-1000, 1000))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(map_keys, inner, max_size=5),
    ),
    max_leaves=12,
)
# Envelope keys, and `kind`: new_message takes the kind as its own argument of that name.
field_names = st.text(min_size=1, max_size=10).filter(lambda k: k not in ("v", "k", "id", "re", "kind"))
messages = st.builds(
    lambda kind, fields: new_message(kind, **fields),
    st.text(min_size=1, max_size=12),
    st.dictionaries(field_names, values, max_size=6),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def frame_of(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def envelope(**overrides: object) -> dict:
    msg: dict = {"v": PROTOCOL_VERSION, "k": "ping", "id": bytes(MSG_ID_LEN)}
    msg.update(overrides)
    return msg


# ------------------------------------------------------------------------ round trips


@given(st.lists(messages, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), max_size=12))
def test_messages_round_trip_split_at_any_byte(msgs: list[dict], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m) for m in msgs)
    decoder = FrameDecoder()
    out: list[dict] = []
    for chunk in split(stream, cuts):
        out.extend(decoder.feed(chunk))
    assert out == msgs
    assert not decoder.has_partial


@settings(max_examples=50)
@given(messages)
def test_byte_at_a_time(msg: dict) -> None:
    decoder = FrameDecoder()
    frame = encode_frame(msg)
    out: list[dict] = []
    for i in range(len(frame)):
        out.extend(decoder.feed(frame[i : i + 1]))
        assert decoder.has_partial == (i < len(frame) - 1)
    assert out == [msg]


def test_feed_frames_reports_frame_sizes() -> None:
    a, b = new_message("a"), new_message("b", blob=b"x" * 300)
    data = encode_frame(a) + encode_frame(b)
    got = FrameDecoder().feed_frames(data)
    assert [m for m, _ in got] == [a, b]
    assert [n for _, n in got] == [len(encode_frame(a)), len(encode_frame(b))]


# ------------------------------------------------------------------------ hostile input


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_only_ever_raises_protocol_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame=4096)
    for chunk in chunks:
        try:
            for msg in decoder.feed(chunk):
                assert isinstance(msg, dict)
        except ProtocolError:
            return


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=200), st.lists(st.integers(0, 300), max_size=4))
def test_well_framed_garbage_bodies_only_raise_protocol_error(body: bytes, cuts: list[int]) -> None:
    # A correct length prefix gets the bytes past the framing into msgpack itself.
    decoder = FrameDecoder()
    try:
        for chunk in split(frame_of(body), cuts):
            decoder.feed(chunk)
    except ProtocolError:
        pass


@given(values)
def test_any_value_that_is_not_a_valid_envelope_is_refused(obj: object) -> None:
    body = msgpack.packb(obj, use_bin_type=True)
    try:
        msg = decode_body(body)
    except ProtocolError:
        return
    assert isinstance(msg["v"], int) and isinstance(msg["k"], str) and len(msg["id"]) == 16


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        "text",
        envelope(id=b"short"),
        envelope(id="not bytes" * 2),
        envelope(v=True),
        envelope(v="1"),
        envelope(k=7),
        envelope(k=""),
        envelope(re=b"x"),
        {k: v for k, v in envelope().items() if k != "id"},
        {**envelope(), b"bin-key": 1},
        {**envelope(), 5: 1},
    ],
    ids=lambda o: repr(o)[:40],
)
def test_bad_envelopes(obj: object) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame_of(msgpack.packb(obj, use_bin_type=True)))


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb({**envelope(), "x": msgpack.ExtType(5, b"ab")}),
        msgpack.packb({**envelope(), "t": msgpack.Timestamp(1, 0)}),  # no ext hook for these
        msgpack.packb(envelope()) + b"\xc0",  # trailing data inside the frame
        b"\xdd\xff\xff\xff\xff",  # array header claiming 4 billion elements
        b"\xdf\xff\xff\xff\xff",  # map header likewise
        b"\xc6\x7f\xff\xff\xff",  # bin header claiming 2 GiB
        b"\x91" * 5000 + b"\xc0",  # nesting deeper than msgpack's stack
        b"\x81\x90\x01",  # a map keyed by a list
        b"\x81\xa1\xff\x01",  # invalid UTF-8 in a key
        b"\xc1",  # the one never-used msgpack byte
    ],
    ids=lambda b: b[:6].hex(),
)
def test_hostile_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame_of(body))


def test_oversized_prefix_raises_before_any_body_byte() -> None:
    decoder = FrameDecoder(max_frame=1000)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\x03\xe9")  # 1001: the prefix alone is enough
    assert info.value.length == 1001 and info.value.limit == 1000
    assert decoder.buffered == 0


def test_oversized_prefix_in_a_chunk_with_body_bytes_buffers_nothing() -> None:
    decoder = FrameDecoder(max_frame=16)
    with pytest.raises(FrameTooLarge):
        decoder.feed((2**32 - 1).to_bytes(4, "big") + b"z" * 10_000)
    assert decoder.buffered == 0


def test_frame_at_the_limit_is_accepted() -> None:
    msg = new_message("blob", data=b"x" * 1000)
    body_len = len(encode_frame(msg)) - 4  # the limit counts the body, not the prefix
    assert FrameDecoder(max_frame=body_len).feed(encode_frame(msg, body_len)) == [msg]
    with pytest.raises(FrameTooLarge):
        encode_frame(msg, body_len - 1)
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=body_len - 1).feed(encode_frame(msg))


def test_empty_frame_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_good_frames_before_a_bad_one_are_kept_and_the_error_follows() -> None:
    good = new_message("ping")
    decoder = FrameDecoder(max_frame=1000)
    assert decoder.feed(encode_frame(good) + b"\xff\xff\xff\xff") == [good]
    assert isinstance(decoder.error, FrameTooLarge)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"")
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(encode_frame(good))


def test_a_failed_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(frame_of(b"\xc1"))
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(new_message("ping")))


def test_encode_frame_refuses_oversized_and_unencodable_messages() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(new_message("big", data=b"x" * 200), max_frame=100)
    with pytest.raises(ProtocolError):
        encode_frame(new_message("odd", data=object()))
    with pytest.raises(ProtocolError):
        encode_frame({"k": "no id or version"})


def test_default_frame_fits_the_largest_items() -> None:
    msg = new_message("put", idata=b"\xaa" * 1_058_816, md=b"\xbb" * (1024 * 1024))
    assert FrameDecoder().feed(encode_frame(msg)) == [msg]
    assert DEFAULT_MAX_FRAME == 3 * 1024 * 1024


# ------------------------------------------------------------------ building messages


def test_new_message_and_reply() -> None:
    msg = new_message("get", name=b"n" * 32)
    assert msg["v"] == PROTOCOL_VERSION and msg["k"] == "get" and len(msg["id"]) == MSG_ID_LEN
    assert new_message("get")["id"] != msg["id"]
    reply = reply_to(msg, "got", value=1)
    assert reply["re"] == msg["id"] and reply["id"] != msg["id"] and reply["value"] == 1


def test_new_message_takes_a_chosen_id_but_not_envelope_fields() -> None:
    assert new_message("x", id=b"i" * 16)["id"] == b"i" * 16
    with pytest.raises(ProtocolError):
        new_message("x", id=b"short")
    for field in ("v", "k"):
        with pytest.raises(ValueError):
            new_message("x", **{field: 1})
    with pytest.raises(ValueError):
        reply_to(new_message("x"), "y", re=b"r" * 16)


# ---------------------------------------------------------------- versions and errors


def test_other_version_is_decoded_then_flagged_with_its_id() -> None:
    future = {**new_message("ping"), "v": PROTOCOL_VERSION + 1, "extra": [1, 2]}
    [msg] = FrameDecoder().feed(frame_of(msgpack.packb(future, use_bin_type=True)))
    assert msg == future
    with pytest.raises(UnsupportedVersion) as info:
        check_version(msg)
    assert info.value.msg_id == future["id"] and info.value.version == PROTOCOL_VERSION + 1
    assert isinstance(info.value, ProtocolError)

    answer = error_message(msg, info.value)
    assert answer["k"] == "error" and answer["re"] == future["id"]
    [back] = FrameDecoder().feed(encode_frame(answer))
    with pytest.raises(ProtocolError, match="unsupported protocol version"):
        raise_if_error(back)
    check_version(new_message("ping"))  # the current version passes


@pytest.mark.parametrize(
    "exc", [InvalidSuccessor(7), NoSuchData(), RequestTimeout("slow"), ProtocolError("bad")]
)
def test_error_replies_round_trip_to_the_same_exception(exc: Exception) -> None:
    request = new_message("get")
    [reply] = FrameDecoder().feed(encode_frame(error_message(request, exc)))
    assert reply["re"] == request["id"]
    with pytest.raises(type(exc)) as info:
        raise_if_error(reply)
    assert str(info.value) == str(exc)
    if isinstance(exc, InvalidSuccessor):
        assert info.value.current == 7


def test_connection_level_error_has_no_re_and_other_kinds_pass() -> None:
    msg = error_message(None, ProtocolError("garbage"))
    assert "re" not in msg
    raise_if_error(new_message("ok"))
    with pytest.raises(ProtocolError):
        raise_if_error({**new_message("error"), "err": "not a map"})
