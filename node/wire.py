"""The wire protocol: message envelopes and their framing, with no I/O (sans-IO, like h11).

A frame is a 4-byte big-endian body length followed by one MessagePack map (the body). The
length counts the body only and is checked against the frame limit before a single body byte
is buffered, so a hostile length prefix costs nothing.

Every message is a map with at least:

- ``"v"``  protocol version (int),
- ``"k"``  kind (str),
- ``"id"`` 16 random bytes; a reply echoes its request's id in ``"re"``.

Values are plain MessagePack: None, bool, int, float, str, bytes, lists and maps (nested maps
may have scalar keys, the envelope map has str keys). Extension types are refused.

Versions: `FrameDecoder` decodes a well-formed envelope of *any* version, because the receiver
needs the message id to answer with a typed error. Call `check_version(msg)` on every decoded
message; it raises `UnsupportedVersion` (a ProtocolError carrying the id) for a version this
code does not speak, and `error_message(msg, exc)` turns that into the reply.

Everything the decoder rejects raises `ProtocolError` (or a subclass) and nothing else.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack

from .errors import ProtocolError, SafeError, error_from_wire

PROTOCOL_VERSION = 1
# An MD's state may be 1 MiB and an IData chunk 1,058,816 bytes; 3 MiB leaves room for the
# envelope and a reply carrying a couple of items.
DEFAULT_MAX_FRAME = 3 * 1024 * 1024
LENGTH_PREFIX = 4
MSG_ID_LEN = 16

Message = dict[str, Any]

_ENVELOPE_KEYS = ("v", "k", "id")


class FrameTooLarge(ProtocolError):
    """A frame's declared or actual body length is over the limit."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit}")


class UnsupportedVersion(ProtocolError):
    """A well-formed message of a protocol version this code does not speak.

    `msg_id` is the offending message's id, so the receiver can answer it. On the wire this
    travels as a plain ProtocolError (same code).
    """

    def __init__(self, msg_id: bytes, version: int) -> None:
        self.msg_id = msg_id
        self.version = version
        super().__init__(
            f"unsupported protocol version {version} (this end speaks {PROTOCOL_VERSION})"
        )


# ------------------------------------------------------------------------ building messages


def new_message_id() -> bytes:
    return os.urandom(MSG_ID_LEN)


def new_message(kind: str, **fields: Any) -> Message:
    """A fresh message of `kind` with a random id.

    Pass ``id=...`` to choose the id (the simulator draws ids from its seeded RNG); the
    envelope's ``v`` and ``k`` cannot be overridden.
    """
    if "v" in fields or "k" in fields:
        _refuse_envelope_fields(fields, ("v", "k"))
    msg_id = fields.pop("id", None)
    if msg_id is None:
        msg_id = new_message_id()
    elif not isinstance(msg_id, bytes) or len(msg_id) != MSG_ID_LEN:
        _check_id(msg_id, "id")
    return {"v": PROTOCOL_VERSION, "k": kind, "id": bytes(msg_id), **fields}


def reply_to(msg: Message, kind: str, **fields: Any) -> Message:
    """A reply to `msg`: a new message whose ``re`` is `msg`'s id."""
    if "v" in fields or "k" in fields or "re" in fields:
        _refuse_envelope_fields(fields, ("v", "k", "re"))
    reply = new_message(kind, **fields)
    reply["re"] = msg["id"]
    return reply


def error_message(re_msg: Message | None, exc: SafeError) -> Message:
    """The typed error reply to `re_msg`; with None, a connection-level error (no ``re``)."""
    if re_msg is None:
        return new_message("error", err=exc.to_wire())
    return reply_to(re_msg, "error", err=exc.to_wire())


def raise_if_error(msg: Message) -> None:
    """Raise the exception an ``error`` reply carries; do nothing for any other kind."""
    if msg.get("k") == "error":
        raise error_from_wire(msg.get("err"))


def check_version(msg: Message) -> None:
    """Raise UnsupportedVersion unless `msg` is of this code's protocol version."""
    if msg["v"] != PROTOCOL_VERSION:
        raise UnsupportedVersion(msg["id"], msg["v"])


def _refuse_envelope_fields(fields: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in fields:
            raise ValueError(f"{name!r} is part of the envelope and set by the protocol")


def _check_id(value: Any, field: str) -> None:
    if not isinstance(value, bytes) or len(value) != MSG_ID_LEN:
        raise ProtocolError(f"{field!r} must be {MSG_ID_LEN} bytes, got {value!r:.40}")


# ------------------------------------------------------------------------------- encoding


def encode_body(msg: Message) -> bytes:
    """The MessagePack body of `msg` (no length prefix)."""
    _check_envelope(msg)
    try:
        return msgpack.packb(msg, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _not_encodable(msg, exc) from None


class BodyEncoder:
    """`encode_body` that keeps one MessagePack packer for all its calls.

    Building the packer is most of what `msgpack.packb` spends on a small message; a kept one
    encodes the same bytes several times faster. The packer owns a buffer, so an encoder is
    for one thread (the simulator's network loop keeps one).
    """

    __slots__ = ("_pack",)

    def __init__(self) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def __call__(self, msg: Message) -> bytes:
        if "v" not in msg or "k" not in msg or "id" not in msg:
            _check_envelope(msg)
        try:
            body: bytes = self._pack(msg)  # a failed pack leaves the packer empty again
        except (TypeError, ValueError, OverflowError) as exc:
            raise _not_encodable(msg, exc) from None
        return body


def _check_envelope(msg: Message) -> None:
    for key in _ENVELOPE_KEYS:
        if key not in msg:
            raise ProtocolError(f"message has no {key!r}: {sorted(msg)!r:.80}")


def _not_encodable(msg: Message, exc: Exception) -> ProtocolError:
    return ProtocolError(f"message of kind {msg.get('k')!r} is not encodable: {exc}")


def encode_frame(msg: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Length prefix + body; raises FrameTooLarge (a ProtocolError) over `max_frame`."""
    body = encode_body(msg)
    if len(body) > max_frame:
        raise FrameTooLarge(len(body), max_frame)
    return len(body).to_bytes(LENGTH_PREFIX, "big") + body


# ------------------------------------------------------------------------------- decoding


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"MessagePack extension type {code} is not allowed")


_SCALARS = (type(None), bool, int, float, str, bytes)


def _check_plain(obj: Any) -> None:
    """Refuse anything but plain values (msgpack decodes timestamps without the ext hook)."""
    # Iterative, so depth costs no Python stack; msgpack already bounds nesting.
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _SCALARS):
            continue
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            raise ProtocolError(f"value of type {type(item).__name__} is not allowed")


def decode_body(body: bytes | bytearray) -> Message:
    """Decode and validate one frame body into a message (any protocol version)."""
    n = len(body)
    try:
        # Every container or string needs at least one body byte per element, so capping
        # each length at the body size stops a 5-byte body from reserving gigabytes.
        obj = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=n,
        )
    except ProtocolError:
        raise
    except Exception as exc:
        # The decoder is the trust boundary: whatever msgpack raises on hostile bytes
        # (ValueError, TypeError for unhashable keys, StackError, ...) is a protocol error.
        raise ProtocolError(f"undecodable frame body: {type(exc).__name__}: {exc}") from None
    return validate_message(obj)


def validate_message(obj: Any) -> Message:
    """Check the envelope and value types of a decoded object; return it as a message."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message is a map, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise ProtocolError(f"message keys are strings, got {key!r:.40}")
    for key in _ENVELOPE_KEYS:
        if key not in obj:
            raise ProtocolError(f"message has no {key!r}")
    version = obj["v"]
    # bool is an int subclass in Python but not a version.
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(f"'v' must be an int, got {version!r:.40}")
    if not isinstance(obj["k"], str) or not obj["k"]:
        raise ProtocolError(f"'k' must be a non-empty str, got {obj['k']!r:.40}")
    _check_id(obj["id"], "id")
    if "re" in obj:
        _check_id(obj["re"], "re")
    _check_plain(obj)
    return obj


class FrameDecoder:
    """Bytes in, validated messages out. Feed it whatever the socket returned.

    Once it has found an error the stream is out of sync for good, so every later `feed`
    raises too; the owner should close the connection. Messages completed before the bad
    frame are still returned: the error then waits for the next call (`error` shows it).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._body_len: int | None = None  # None while reading a length prefix
        self._error: ProtocolError | None = None
        self._error_raised = False

    @property
    def has_partial(self) -> bool:
        """True while part of a frame (prefix or body) is buffered."""
        return self._body_len is not None or bool(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def error(self) -> ProtocolError | None:
        """The error that ended this stream, if any (raised or still to be raised)."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Consume `data`; return the messages it completed, in order.

        Raises ProtocolError for an oversized prefix (as soon as the 4 prefix bytes are in),
        an empty frame, or a body that is not a valid message. If messages were completed
        before the bad frame, they are returned and the error is raised by the next call
        (``feed(b"")`` will do).
        """
        return [msg for msg, _ in self.feed_frames(data)]

    def feed_frames(self, data: bytes | bytearray | memoryview) -> list[tuple[Message, int]]:
        """Like `feed`, with each message's frame size (prefix included) for byte counters."""
        if self._error is not None:
            if self._error_raised:
                raise ProtocolError(f"stream already failed: {self._error}")
            self._error_raised = True
            raise self._error
        out: list[tuple[Message, int]] = []
        try:
            self._feed(memoryview(data).cast("B"), out)
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            self._body_len = None
            if not out:
                self._error_raised = True
                raise
        return out

    def _feed(self, view: memoryview, out: list[tuple[Message, int]]) -> None:
        while view:
            if self._body_len is None:
                view = self._take(view, LENGTH_PREFIX)
                if len(self._buf) < LENGTH_PREFIX:
                    break
                self._body_len = self._start_body()
            view = self._take(view, self._body_len)
            if len(self._buf) == self._body_len:
                out.append((decode_body(self._buf), LENGTH_PREFIX + self._body_len))
                self._buf = bytearray()
                self._body_len = None

    def _take(self, view: memoryview, target: int) -> memoryview:
        """Move bytes from `view` into the buffer until it holds `target`; return the rest."""
        need = target - len(self._buf)
        self._buf += view[:need]
        return view[need:]

    def _start_body(self) -> int:
        length = int.from_bytes(self._buf, "big")
        self._buf = bytearray()
        if length > self.max_frame:
            raise FrameTooLarge(length, self.max_frame)
        if length == 0:
            raise ProtocolError("empty frame")
        return length
