"""The event-sourcing vocabulary: events to append, events as recorded, expected versions,
log positions, stream names and stream metadata. No I/O here.

Versions number a stream's events from 0; a stream's version is that of its last event, and
NO_STREAM (-1) when it has none. A log position orders every event of a database: it is
`batch * POSITION_STRIDE + index`, where `batch` is the slot of the append in the database
log and `index` the event's place in that append, so positions compare like the log reads.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidEvent

# Expected versions (EventStoreDB's numbers, so logs and docs read the same).
NO_STREAM = -1  # the stream must have no events
ANY = -2  # no check
STREAM_EXISTS = -4  # the stream must have at least one event
END = -1  # `from_version` meaning "the last event" for backward reads

MAX_APPEND_EVENTS = 1000  # events in one append; also the stride of log positions
POSITION_STRIDE = MAX_APPEND_EVENTS
MAX_TYPE_LENGTH = 200  # characters of an event type
MAX_STREAM_NAME = 200  # characters of a stream name
CATEGORY_SEPARATOR = "@"  # stream keys read `category@id`, as in SAFE.EventStore

# System event types and streams: names starting with "$" are the store's own.
TOMBSTONE = "$streamDeleted"
METADATA_EVENT = "$metadata"
CORRECTION = "$correction"
METADATA_STREAM_PREFIX = "$$"

JSON = Any  # what json.dumps accepts


def position(batch: int, index: int) -> int:
    return batch * POSITION_STRIDE + index


def split_position(pos: int) -> tuple[int, int]:
    """(log slot of the append, index of the event in it)."""
    return divmod(pos, POSITION_STRIDE)


def category_of(stream: str) -> str:
    """`order@42` belongs to category `order`; a name without `@` is its own category."""
    return stream.split(CATEGORY_SEPARATOR, 1)[0]


def metadata_stream(stream: str) -> str:
    return METADATA_STREAM_PREFIX + stream


def is_system(name: str) -> bool:
    return name.startswith("$")


_CONTROL = re.compile("[\x00-\x1f]")


def check_stream_name(stream: str) -> str:
    if not isinstance(stream, str) or not stream:
        raise InvalidEvent("a stream name is a non-empty string")
    if len(stream) > MAX_STREAM_NAME:
        raise InvalidEvent(f"a stream name has at most {MAX_STREAM_NAME} characters")
    if _CONTROL.search(stream):
        raise InvalidEvent("a stream name has no control characters")
    if not category_of(stream):
        raise InvalidEvent(f"stream {stream!r} has an empty category")
    return stream


def check_expected_version(expected: int) -> int:
    if not isinstance(expected, int) or isinstance(expected, bool):
        raise InvalidEvent(f"an expected version is an int, got {expected!r:.40}")
    if expected < 0 and expected not in (NO_STREAM, ANY, STREAM_EXISTS):
        raise InvalidEvent(f"{expected} is not an expected version")
    return expected


# --------------------------------------------------------------------------- payloads


# json.dumps with options builds an encoder per call; one, made once, does the same.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_payload(value: JSON | bytes) -> tuple[bytes, bool]:
    """(bytes to store, is_json). Bytes are stored as given; anything else as compact JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), False
    try:
        return _JSON.encode(value).encode(), True
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event data is neither bytes nor JSON-able: {exc}") from None


def decode_payload(raw: bytes, is_json: bool) -> JSON | bytes:
    return json.loads(raw) if is_json else raw


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventData:
    """An event to append. `id` makes a retried append idempotent: keep it across retries."""

    type: str
    data: JSON | bytes
    metadata: JSON | bytes | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise InvalidEvent("an event type is a non-empty string")
        if len(self.type) > MAX_TYPE_LENGTH:
            raise InvalidEvent(f"an event type has at most {MAX_TYPE_LENGTH} characters")
        for name in ("id", "causation_id", "correlation_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, uuid.UUID):
                object.__setattr__(self, name, uuid.UUID(str(value)))


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the store holds it. `position` orders it in the database log.

    `corrected_by` is the version of the restructure event whose payload replaced the
    original one in this read (None when the event is read as first written). `link` is the
    link event (`$>`) it was reached through, in a read with `resolve_links`.
    """

    stream: str
    version: int
    id: uuid.UUID
    type: str
    data: JSON | bytes
    metadata: JSON | bytes | None
    causation_id: uuid.UUID | None
    correlation_id: uuid.UUID | None
    timestamp: datetime
    position: int
    corrected_by: int | None = None
    link: RecordedEvent | None = None  # the link event this one was read through (resolve_links)

    @property
    def category(self) -> str:
        return category_of(self.stream)

    @property
    def is_system(self) -> bool:
        return is_system(self.type)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as {"base64": ...}), as `safenet es read --json` prints."""
        return {
            "stream": self.stream,
            "version": self.version,
            "id": str(self.id),
            "type": self.type,
            "data": _jsonable(self.data),
            "metadata": _jsonable(self.metadata),
            "causation_id": None if self.causation_id is None else str(self.causation_id),
            "correlation_id": None if self.correlation_id is None else str(self.correlation_id),
            "timestamp": self.timestamp.isoformat(),
            "position": self.position,
            "corrected_by": self.corrected_by,
            **({} if self.link is None else {"link": {"stream": self.link.stream, "version": self.link.version,
                                                       "position": self.link.position}}),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return value


def timestamp_from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


@dataclass(frozen=True)
class AppendResult:
    """What an acknowledged append returns: the version to expect next, and the log position
    of its last event (subscribers resume after it with `from_checkpoint=log_position`)."""

    next_expected_version: int
    log_position: int


@dataclass(frozen=True)
class StreamMetadata:
    """Read rules of a stream, as EventStoreDB's `$maxCount`, `$maxAge`, `$tb`.

    Applied when reading the stream (not to the database log, which keeps everything):
    events older than `max_age` seconds, beyond the last `max_count`, or numbered below
    `truncate_before` are not returned. `custom` is the application's own JSON.
    """

    max_count: int | None = None
    max_age: float | None = None
    truncate_before: int | None = None
    custom: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.max_count is not None and (not isinstance(self.max_count, int) or self.max_count < 1):
            raise InvalidEvent("max_count is a positive int")
        if self.max_age is not None and not self.max_age > 0:
            raise InvalidEvent("max_age is a positive number of seconds")
        if self.truncate_before is not None and (
            not isinstance(self.truncate_before, int) or self.truncate_before < 0
        ):
            raise InvalidEvent("truncate_before is a version (an int >= 0)")

    def to_json(self) -> dict[str, Any]:
        return {
            "max_count": self.max_count,
            "max_age": self.max_age,
            "truncate_before": self.truncate_before,
            "custom": self.custom,
        }

    @classmethod
    def from_json(cls, obj: Any) -> StreamMetadata:
        if not isinstance(obj, dict):
            return cls()
        return cls(obj.get("max_count"), obj.get("max_age"), obj.get("truncate_before"), obj.get("custom"))
