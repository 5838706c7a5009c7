"""How events are written into MD entries: the three record formats, msgpack, no I/O.

- `Body`: one event as stored — id, type, timestamp, causation and correlation ids, where
  its payload is, its user metadata (inline when small, else the data-map name of a blob),
  and for a restructure event the version it corrects. Sealed as a whole in a private
  database. The payload is in one of three places (`where`):
  INLINE — in the record itself (small payloads, most events: no chunk to write or read);
  PACKED — bytes offset..offset+length of a *pack*, one raw ImmutableData chunk holding the
  payloads of one append that do not fit inline (one network write for all of them);
  BLOB — a self-encrypted blob of its own, named by its data map (large payloads, which
  keep deduplication; and every payload written before packs existed).
  Records of the first format (a 32-byte blob name and no location flag) decode as BLOB.
- `StreamEntry`: a stream MD entry, keyed by the event's version: the log slot of the append
  that wrote it, the event's index in that append and the append's size, and the body.
  The slot is how a log reader decides an intent's fate; index and size are how a reader
  sees that an append straddling two segments is not yet complete.
- `Intent`: a log entry, keyed by its slot: which stream and version an append targets and
  the bodies it will write there (or the data-map name of a blob holding them, when they do
  not fit an entry). With it anyone can finish an append whose writer died.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgpack

from .errors import CorruptData

_JSON_DATA = 1
_JSON_META = 2
_INLINE = 4  # the payload field holds the payload itself
_PACKED = 8  # the payload field is [pack chunk name, offset, length]

# Where a payload is (Body.where).
BLOB = 0
INLINE = 1
PACKED = 2

KEY_LEN = 8  # entry keys: a version or a log slot, 8 bytes big-endian, so keys sort as numbers


def key_of(number: int) -> bytes:
    return number.to_bytes(KEY_LEN, "big")


def number_of(key: bytes) -> int:
    if len(key) != KEY_LEN:
        raise CorruptData(f"an entry key of {len(key)} bytes where a number was expected")
    return int.from_bytes(key, "big")


def _unpack(raw: bytes, what: str) -> list:
    try:
        obj = msgpack.unpackb(raw, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise CorruptData(f"{what} does not decode: {exc}") from None
    if not isinstance(obj, list):
        raise CorruptData(f"{what} is not a list")
    return obj


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@dataclass(frozen=True, slots=True)
class Body:
    id: uuid.UUID
    type: str
    timestamp_us: int
    causation_id: uuid.UUID | None
    correlation_id: uuid.UUID | None
    payload: bytes  # BLOB: the blob's data-map name; INLINE: the payload; PACKED: the pack's name
    data_is_json: bool
    metadata: bytes | None  # inline user metadata (sealed in a private database)
    metadata_ref: bytes | None  # or the data-map name of a blob holding it
    metadata_is_json: bool
    corrects: int | None = None  # a restructure event: the version whose payload it replaces
    where: int = BLOB  # BLOB, INLINE or PACKED
    offset: int = 0  # PACKED: where the (sealed) payload sits in the pack
    length: int = 0

    def encode(self) -> bytes:
        flags = (_JSON_DATA if self.data_is_json else 0) | (_JSON_META if self.metadata_is_json else 0)
        held: bytes | list[object] = self.payload
        if self.where == INLINE:
            flags |= _INLINE
        elif self.where == PACKED:
            flags |= _PACKED
            held = [self.payload, self.offset, self.length]
        return _pack([
            self.id.bytes,
            self.type,
            self.timestamp_us,
            None if self.causation_id is None else self.causation_id.bytes,
            None if self.correlation_id is None else self.correlation_id.bytes,
            held,
            flags,
            self.metadata,
            self.metadata_ref,
            self.corrects,
        ])

    @classmethod
    def decode(cls, raw: bytes) -> Body:
        obj = _unpack(raw, "an event record")
        try:
            eid, etype, ts, cause, corr, held, flags, meta, meta_ref, corrects = obj
            flags = _int(flags)
            if flags & ~(_JSON_DATA | _JSON_META | _INLINE | _PACKED) or flags & _INLINE and flags & _PACKED:
                raise ValueError(f"unknown record flags {flags}")
            offset = length = 0
            if flags & _INLINE:
                where, payload = INLINE, _bytes(held)
            elif flags & _PACKED:
                if not isinstance(held, list) or len(held) != 3:
                    raise ValueError("a packed payload's place is [pack, offset, length]")
                where, payload, offset, length = PACKED, _bytes(held[0], 32), _int(held[1]), _int(held[2])
                if offset < 0 or length < 0:
                    raise ValueError("a packed payload's place is negative")
            else:
                where, payload = BLOB, _bytes(held, 32)
            return cls(
                uuid.UUID(bytes=eid),
                _str(etype),
                _int(ts),
                None if cause is None else uuid.UUID(bytes=cause),
                None if corr is None else uuid.UUID(bytes=corr),
                payload,
                bool(flags & _JSON_DATA),
                None if meta is None else _bytes(meta),
                None if meta_ref is None else _bytes(meta_ref, 32),
                bool(flags & _JSON_META),
                None if corrects is None else _int(corrects),
                where,
                offset,
                length,
            )
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"malformed event record: {exc}") from None


@dataclass(frozen=True, slots=True)
class StreamEntry:
    slot: int  # the log slot of the append that wrote this event
    index: int  # the event's place in that append
    count: int  # how many events that append wrote
    body: bytes  # Body.encode(), sealed in a private database

    @property
    def last_of_batch(self) -> bool:
        return self.index == self.count - 1

    def encode(self) -> bytes:
        return _pack([self.slot, self.index, self.count, self.body])

    @classmethod
    def decode(cls, raw: bytes) -> StreamEntry:
        obj = _unpack(raw, "a stream entry")
        try:
            slot, index, count, body = obj
            entry = cls(_int(slot), _int(index), _int(count), _bytes(body))
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"malformed stream entry: {exc}") from None
        if not 0 <= entry.index < entry.count:
            raise CorruptData("a stream entry's index lies outside its append")
        return entry


@dataclass(frozen=True, slots=True)
class Intent:
    """An append announced in the log: `stream` gets `bodies` at versions `version`..."""

    id: bytes  # 16 random bytes: lets a writer recognise its own entry after a lost reply
    stream: str
    version: int  # the version of the first event
    count: int
    bodies: tuple[bytes, ...] | None  # sealed bodies, or None when held in `ref`
    ref: bytes | None  # a raw chunk's name (`ref_is_chunk`), else a blob's data-map name
    timestamp_us: int
    ref_is_chunk: bool = False  # first-format intents always named a blob

    @property
    def last_version(self) -> int:
        return self.version + self.count - 1

    def encode(self) -> bytes:
        fields = [
            self.id,
            self.stream,
            self.version,
            self.count,
            list(self.bodies) if self.bodies is not None else self.ref,
            self.timestamp_us,
        ]
        if self.bodies is None and self.ref_is_chunk:
            fields.append(1)  # a 7th field: the ref names a raw chunk
        return _pack(fields)

    @classmethod
    def decode(cls, raw: bytes) -> Intent:
        obj = _unpack(raw, "a log intent")
        try:
            ref_is_chunk = False
            if len(obj) == 7:
                if obj.pop() != 1:
                    raise ValueError("unknown intent flags")
                ref_is_chunk = True
            iid, stream, version, count, held, ts = obj
            bodies: tuple[bytes, ...] | None
            if isinstance(held, list):
                bodies, ref = tuple(_bytes(b) for b in held), None
                if len(held) != count:
                    raise ValueError("body count differs from the intent's count")
            else:
                bodies, ref = None, _bytes(held, 32)
            if ref_is_chunk and bodies is not None:
                raise ValueError("an intent holding its bodies names no chunk")
            intent = cls(_bytes(iid, 16), _str(stream), _int(version), _int(count), bodies, ref, _int(ts),
                         ref_is_chunk)
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"malformed log intent: {exc}") from None
        if intent.version < 0 or intent.count < 1:
            raise CorruptData("a log intent names no events")
        return intent

    def held_in(self, ref: bytes, *, chunk: bool) -> Intent:
        return Intent(self.id, self.stream, self.version, self.count, None, ref, self.timestamp_us, chunk)


def encode_bodies(bodies: tuple[bytes, ...]) -> bytes:
    """The blob an intent points at when its bodies do not fit in a log entry."""
    return _pack(list(bodies))


def make_packs(payloads: list[bytes], limit: int) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    """Concatenate `payloads` into packs of at most `limit` bytes (a payload never spans two
    packs; each is at most `limit`). Returns the packs and, per payload, (pack index, offset,
    length), in the payloads' order."""
    packs: list[bytearray] = []
    places: list[tuple[int, int, int]] = []
    for payload in payloads:
        if len(payload) > limit:
            raise ValueError(f"a payload of {len(payload)} bytes does not fit a pack of {limit}")
        if not packs or len(packs[-1]) + len(payload) > limit:
            packs.append(bytearray())
        places.append((len(packs) - 1, len(packs[-1]), len(payload)))
        packs[-1] += payload
    return [bytes(p) for p in packs], places


def unpack_payload(pack: bytes, offset: int, length: int) -> bytes:
    if offset + length > len(pack):
        raise CorruptData(f"a packed payload at {offset}+{length} lies past its pack's {len(pack)} bytes")
    return pack[offset:offset + length]


def decode_bodies(raw: bytes, count: int) -> tuple[bytes, ...]:
    obj = _unpack(raw, "an intent's bodies")
    if len(obj) != count or not all(isinstance(b, bytes) for b in obj):
        raise CorruptData("an intent's body blob does not hold its events")
    return tuple(obj)


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _bytes(value: object, length: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(f"expected {length} bytes, got {len(value)}")
    return value
