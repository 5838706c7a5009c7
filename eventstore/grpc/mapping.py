"""Between KurrentDB's protocol and the event store: ids, positions, versions, events, errors.

Positions. The store numbers its log from 0 (`slot * 1000 + index`); KurrentDB clients treat
position 0 as "the start, before any event" (a subscription from 0 skips what is at 0). So
the gateway shows every store position plus one: the first event is at commit position 1,
and the prepare position always equals the commit position.

Payloads. A KurrentDB event is bytes with a content type. JSON (`application/json`) whose
bytes are exactly what the store would write back (compact, as `json.dumps` with `(",",
":")` separators and no ASCII escaping) is stored as JSON, so the store's own readers, the
UI and the CLI see the value; anything else is stored as the bytes given and reads back as
`application/octet-stream`. Custom metadata follows the same rule.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from node import errors as E

from ..errors import InvalidEvent, StreamDeleted, StreamNotFound, WrongExpectedVersion
from ..events import (
    ANY,
    METADATA_EVENT,
    METADATA_STREAM_PREFIX,
    NO_STREAM,
    STREAM_EXISTS,
    EventData,
    RecordedEvent,
    StreamMetadata,
)
from .protocol import shared_pb2, status_pb2, streams_pb2

JSON_TYPE = "application/json"
BYTES_TYPE = "application/octet-stream"
_MASK = (1 << 64) - 1


# ----------------------------------------------------------------------------- ids, positions


def uuid_from_proto(value: shared_pb2.UUID) -> uuid.UUID:
    kind = value.WhichOneof("value")
    if kind == "string":
        return uuid.UUID(value.string)
    if kind == "structured":
        high = value.structured.most_significant_bits & _MASK
        low = value.structured.least_significant_bits & _MASK
        return uuid.UUID(int=(high << 64) | low)
    raise InvalidEvent("an event without an id")


def uuid_to_proto(value: uuid.UUID, structured: bool) -> shared_pb2.UUID:
    if not structured:
        return shared_pb2.UUID(string=str(value))

    def signed(n: int) -> int:
        return n - (1 << 64) if n >= 1 << 63 else n

    return shared_pb2.UUID(structured=shared_pb2.UUID.Structured(
        most_significant_bits=signed(value.int >> 64), least_significant_bits=signed(value.int & _MASK)))


def to_commit(store_position: int) -> int:
    return store_position + 1


def from_commit(commit_position: int) -> int:
    """The store position of the event a client names by its commit position."""
    return commit_position - 1


def stream_name(identifier: shared_pb2.StreamIdentifier) -> str:
    try:
        return identifier.stream_name.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("a stream name is UTF-8") from None


# ----------------------------------------------------------------------------- expected versions


def expected_version(message: Any, field: str, revision_field: str) -> int:
    """The store's expected version from a request's `expected_stream_revision`-style oneof."""
    kind = message.WhichOneof(field)
    if kind == revision_field:
        return int(getattr(message, revision_field))
    return {"no_stream": NO_STREAM, "any": ANY, "stream_exists": STREAM_EXISTS, None: ANY}[kind]


def wrong_version_message(error: WrongExpectedVersion) -> shared_pb2.WrongExpectedVersion:
    out = shared_pb2.WrongExpectedVersion()
    if error.actual < 0:
        out.current_no_stream.SetInParent()
    else:
        out.current_stream_revision = error.actual
    if error.expected >= 0:
        out.expected_stream_position = error.expected
    elif error.expected == ANY:
        out.expected_any.SetInParent()
    elif error.expected == STREAM_EXISTS:
        out.expected_stream_exists.SetInParent()
    else:
        out.expected_no_stream.SetInParent()
    return out


def append_wrong_version(error: WrongExpectedVersion) -> streams_pb2.AppendResp:
    """Append's own answer for a wrong expected version, in both field sets the protocol has
    carried (clients of 20.6 read the first)."""
    wev = streams_pb2.AppendResp.WrongExpectedVersion()
    if error.actual < 0:
        wev.current_no_stream.SetInParent()
        wev.no_stream_20_6_0.SetInParent()
    else:
        wev.current_revision = error.actual
        wev.current_revision_20_6_0 = error.actual
    if error.expected >= 0:
        wev.expected_revision = error.expected
        wev.expected_revision_20_6_0 = error.expected
    elif error.expected == ANY:
        wev.expected_any.SetInParent()
        wev.any_20_6_0.SetInParent()
    elif error.expected == STREAM_EXISTS:
        wev.expected_stream_exists.SetInParent()
        wev.stream_exists_20_6_0.SetInParent()
    else:
        wev.expected_no_stream.SetInParent()
    return streams_pb2.AppendResp(wrong_expected_version=wev)


# ----------------------------------------------------------------------------- events


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _as_stored(raw: bytes, is_json: bool) -> Any:
    """JSON when it reads back byte for byte, else the bytes themselves."""
    if is_json and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        if value is not None and _compact(value) == raw:
            return value
    return raw


def event_data(event_id: shared_pb2.UUID, metadata: Any, custom_metadata: bytes, data: bytes) -> EventData:
    """A proposed message of Append or BatchAppend, as the store's EventData."""
    event_type = metadata.get("type", "")
    if not event_type:
        raise InvalidEvent("a proposed event has no type")
    is_json = metadata.get("content-type", BYTES_TYPE) == JSON_TYPE
    return EventData(
        event_type,
        _as_stored(bytes(data), is_json),
        _as_stored(bytes(custom_metadata), True) if custom_metadata else None,
        uuid_from_proto(event_id),
    )


# KurrentDB's stream metadata keys and the store's StreamMetadata fields.
_METADATA_KEYS = {"$maxCount": "max_count", "$maxAge": "max_age", "$tb": "truncate_before"}


def is_metadata_write(stream: str, events: list[EventData]) -> bool:
    return stream.startswith(METADATA_STREAM_PREFIX) and bool(events) and all(
        e.type == METADATA_EVENT for e in events)


def metadata_from_protocol(data: Any) -> StreamMetadata:
    """A `$metadata` event's JSON as KurrentDB writes it (`$maxCount`, `$maxAge`, `$tb`,
    anything else the application's own) as the store's StreamMetadata."""
    if isinstance(data, bytes):  # JSON not in the compact form (see the module's docstring)
        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidEvent("stream metadata is a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidEvent("stream metadata is a JSON object")
    known = {field: data[key] for key, field in _METADATA_KEYS.items() if data.get(key) is not None}
    custom = {k: v for k, v in data.items() if k not in _METADATA_KEYS}
    return StreamMetadata(**known, custom=custom or None)


def metadata_to_protocol(data: Any) -> Any:
    """The store's `$metadata` payload in KurrentDB's form (the inverse of the above)."""
    if not isinstance(data, dict):
        return data
    meta = StreamMetadata.from_json(data)
    out = {key: getattr(meta, field) for key, field in _METADATA_KEYS.items() if getattr(meta, field) is not None}
    return {**out, **(meta.custom or {})}


def _payload_bytes(value: Any) -> tuple[bytes, str]:
    if isinstance(value, bytes):
        return value, BYTES_TYPE
    return _compact(value), JSON_TYPE


def recorded_event(event: RecordedEvent, structured_ids: bool) -> streams_pb2.ReadResp.ReadEvent:
    value = event.data
    if event.type == METADATA_EVENT and event.stream.startswith(METADATA_STREAM_PREFIX):
        value = metadata_to_protocol(value)
    data, content_type = _payload_bytes(value)
    custom = b"" if event.metadata is None else _payload_bytes(event.metadata)[0]
    ticks = int(event.timestamp.timestamp() * 1_000_000) * 10  # 100 ns since the Unix epoch
    commit = to_commit(event.position)
    recorded = streams_pb2.ReadResp.ReadEvent.RecordedEvent(
        id=uuid_to_proto(event.id, structured_ids),
        stream_identifier=shared_pb2.StreamIdentifier(stream_name=event.stream.encode()),
        stream_revision=event.version,
        prepare_position=commit,
        commit_position=commit,
        metadata={"type": event.type, "content-type": content_type, "created": str(ticks)},
        custom_metadata=custom,
        data=data,
    )
    return streams_pb2.ReadResp.ReadEvent(event=recorded, commit_position=commit)


# ----------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filter:
    """A read or subscription filter on stream names or event types: a regex or prefixes."""

    on_stream: bool
    regex: re.Pattern[str] | None
    prefixes: tuple[str, ...]

    def __call__(self, event: RecordedEvent) -> bool:
        subject = event.stream if self.on_stream else event.type
        if self.regex is not None and not self.regex.search(subject):
            return False
        return not self.prefixes or subject.startswith(self.prefixes)


def read_filter(options: streams_pb2.ReadReq.Options) -> tuple[Callable[[RecordedEvent], bool] | None, int]:
    """The filter of a read (None without one) and its checkpoint window (events scanned)."""
    if options.WhichOneof("filter_option") != "filter":
        return None, 0
    spec = options.filter
    kind = spec.WhichOneof("filter")
    if kind is None:
        return None, 0
    expression = getattr(spec, kind)
    try:
        regex = re.compile(expression.regex) if expression.regex else None
    except re.error as exc:
        raise InvalidEvent(f"filter regex {expression.regex!r}: {exc}") from None
    window = spec.max if spec.WhichOneof("window") == "max" else 32
    return Filter(kind == "stream_identifier", regex, tuple(expression.prefix)), window * max(
        1, spec.checkpointIntervalMultiplier)


# ----------------------------------------------------------------------------- errors


@dataclass
class Failure(Exception):
    """A call's end as the protocol says it: status code, text and the trailers that
    KurrentDB's .NET and Node clients read the error's kind and facts from."""

    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str], ...] = ()

    def abort(self, context: grpc.ServicerContext) -> None:
        if self.trailers:
            context.set_trailing_metadata(self.trailers)
        context.abort(self.code, self.details)


def wrong_version_failure(error: WrongExpectedVersion) -> Failure:
    """Delete's and Tombstone's form: FAILED_PRECONDITION, with the versions in the text (as
    the Python client parses them) and in trailers (as the .NET and Node clients do)."""
    return Failure(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Operation failed due to WrongExpectedVersion. Stream: {error.stream}, "
        f"Expected version: {error.expected}, Actual version: {error.actual}",
        (("exception", "wrong-expected-version"), ("stream-name", error.stream),
         ("expected-version", str(error.expected)), ("actual-version", str(error.actual))),
    )


def failure(exc: BaseException) -> Failure:
    """The protocol's form of an error the store (or the network under it) raised."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, WrongExpectedVersion):
        return wrong_version_failure(exc)
    if isinstance(exc, StreamDeleted):
        return Failure(grpc.StatusCode.FAILED_PRECONDITION, f"Event stream '{exc.stream}' is deleted.",
                       (("exception", "stream-deleted"), ("stream-name", exc.stream)))
    if isinstance(exc, StreamNotFound):
        return Failure(grpc.StatusCode.NOT_FOUND, f"Event stream '{exc.stream}' is not found.",
                       (("exception", "stream-not-found"), ("stream-name", exc.stream)))
    if isinstance(exc, E.AccessDenied):
        return Failure(grpc.StatusCode.PERMISSION_DENIED, "Access denied: the gateway's key may not write here.",
                       (("exception", "access-denied"),))
    if isinstance(exc, InvalidEvent | ValueError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, E.NetworkError):
        return Failure(grpc.StatusCode.UNAVAILABLE, f"the network did not answer: {exc}")
    if type(exc).__name__ == "TooSlowError":
        return Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    return Failure(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")


def batch_error(exc: BaseException) -> status_pb2.Status:
    """BatchAppend's per-request error: a google.rpc.Status whose details name the kind."""
    status = status_pb2.Status()
    if isinstance(exc, WrongExpectedVersion):
        status.code, detail = grpc.StatusCode.FAILED_PRECONDITION.value[0], wrong_version_message(exc)
        status.message = str(exc)
    elif isinstance(exc, StreamDeleted):
        status.code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
        detail = shared_pb2.StreamDeleted(stream_identifier=shared_pb2.StreamIdentifier(
            stream_name=exc.stream.encode()))
        status.message = str(exc)
    elif isinstance(exc, E.AccessDenied):
        status.code, detail, status.message = grpc.StatusCode.PERMISSION_DENIED.value[0], shared_pb2.AccessDenied(), \
            "access denied"
    elif isinstance(exc, InvalidEvent | ValueError):
        status.code, detail = grpc.StatusCode.INVALID_ARGUMENT.value[0], shared_pb2.BadRequest(message=str(exc))
        status.message = str(exc)
    elif type(exc).__name__ == "TooSlowError":
        status.code, detail, status.message = grpc.StatusCode.DEADLINE_EXCEEDED.value[0], shared_pb2.Timeout(), \
            "deadline exceeded"
    else:
        status.code, detail = grpc.StatusCode.UNAVAILABLE.value[0], shared_pb2.Unknown()
        status.message = f"{type(exc).__name__}: {exc}"
    status.details.Pack(detail)
    return status


def now_ticks() -> int:
    return int(time.time() * 10_000_000)
