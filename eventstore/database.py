"""A database: streams of events, their categories, and the database log, on SAFE data.

Why one module of about 860 lines: `Database` is one protocol - an append writes the
payloads, takes a log slot, writes the stream and completes the intent, and every reader
completes the intents it meets - and its steps depend on each other's invariants, argued
together in docs/eventstore.md. The seam, when it is split, is the readers (stream, category
and log reads and the intent completion they share) away from the append path.

    db = store.database("shop")
    result = await db.append("order@42", [EventData("Placed", {"sku": 7})], expected_version=NO_STREAM)
    events = await db.read_stream("order@42")
    async for event in db.subscribe_to_all(from_checkpoint=saved):
        ...

How an append is made (docs/eventstore.md has the argument for why it is correct):
1. the payloads go to ImmutableData (a blob each, deduplicated by content);
2. an *intent* — stream, first version, the event records — takes the next free slot of
   the database log;
3. a new stream is registered in its category (and the category in the database);
4. the events are inserted into the stream at their versions, each record naming the slot.
Step 4 decides: if the stream already had an event at that version, the intent is void and
the append fails (WrongExpectedVersion) or, with ANY, tries again at the new end. A reader
of the log resolves each intent by looking at the stream: the events there name this slot
(committed), or another (void), or nothing is there yet (pending) — and a pending intent
older than a grace period is finished by the reader itself, since the intent holds all an
append needs. A writer that dies between steps therefore leaves nothing that the next
reader or writer does not complete or void.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import msgpack
import trio

from client.selfenc import MAX_CHUNK_SIZE
from node.xorname import sha3_256

from .errors import (
    CorruptData,
    EventStoreError,
    InvalidEvent,
    ReservedName,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from .events import (
    ANY,
    CORRECTION,
    END,
    MAX_APPEND_EVENTS,
    METADATA_EVENT,
    NO_STREAM,
    STREAM_EXISTS,
    TOMBSTONE,
    AppendResult,
    EventData,
    RecordedEvent,
    StreamMetadata,
    category_of,
    check_expected_version,
    check_stream_name,
    decode_payload,
    encode_payload,
    is_system,
    metadata_stream,
    position,
    timestamp_from_us,
)
from .log import Fate, Log
from .privacy import Sealer
from .records import BLOB, INLINE, PACKED, Body, Intent, StreamEntry, make_packs, unpack_payload
from .safe import IndexSet, Layout, SafeData, gather
from .stream import Streams, Tail
from .subscriptions import LogCursor, StreamCursor, Subscription

if TYPE_CHECKING:
    from .store import EventStore

MAX_ATTEMPTS = 32  # tries of an ANY append against rivals before giving up
# Where payloads go (docs/eventstore.md, "Payloads"): in the record up to INLINE_MAX bytes
# (when the record still fits an entry), in the append's packs below BLOB_MIN, else a blob.
INLINE_MAX = 512
BLOB_MIN = 64 * 1024
PACK_LIMIT = MAX_CHUNK_SIZE  # bytes of one pack chunk
FETCH_CONCURRENCY = 16  # chunks a read fetches at once
CATEGORY_PARTITIONS = 1  # categories are few; their index is still an unbounded chain


@dataclass(frozen=True)
class DatabaseInfo:
    """What the app's container records about a database."""

    name: str
    id: bytes  # 32 random bytes: the root of every address of the database
    key: bytes | None  # the secret key of a private database
    partitions: int  # partitions of each category's stream index
    stream_segment_size: int
    log_segment_size: int
    created_us: int
    writers: tuple[bytes, ...] = ()  # app keys granted Insert on the database's MDs

    @property
    def private(self) -> bool:
        return self.key is not None

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "v": 1,
                "name": self.name,
                "id": self.id,
                "key": self.key,
                "partitions": self.partitions,
                "stream_segment": self.stream_segment_size,
                "log_segment": self.log_segment_size,
                "created": self.created_us,
                "writers": list(self.writers),
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, raw: bytes) -> DatabaseInfo:
        try:
            obj = msgpack.unpackb(raw, raw=False)
            return cls(
                str(obj["name"]),
                bytes(obj["id"]),
                None if obj["key"] is None else bytes(obj["key"]),
                int(obj["partitions"]),
                int(obj["stream_segment"]),
                int(obj["log_segment"]),
                int(obj["created"]),
                tuple(bytes(w) for w in obj.get("writers", [])),
            )
        except (ValueError, TypeError, KeyError, msgpack.ExtraData) as exc:
            raise CorruptData(f"a database record does not decode: {exc}") from None


async def _no_metadata() -> StreamMetadata:
    return StreamMetadata()


@dataclass(frozen=True)
class RepairReport:
    """What `Database.repair` found in the log."""

    committed: int = 0
    void: int = 0
    completed: int = 0  # pending intents it finished
    end_position: int = 0


class Database:
    """One event-store database. Get it from `EventStore.database(name)`."""

    def __init__(self, store: EventStore, name: str) -> None:
        self.store = store
        self.name = name
        self.info: DatabaseInfo | None = None
        self._opening: trio.Lock | None = None
        self._tails: OrderedDict[str, Tail] = OrderedDict()
        self._recent: OrderedDict[Any, tuple[str, tuple[Any, ...], AppendResult]] = OrderedDict()
        self._registered: set[str] = set()
        self._known_categories: set[str] = set()

    # ------------------------------------------------------------------ set-up

    async def open(self) -> Database:
        """Load the database's record (DatabaseNotFound if there is none). Every operation
        does this on first use; call it to find out early."""
        await self._open()
        return self

    async def _open(self) -> None:
        if self.info is not None:
            return
        if self._opening is None:
            self._opening = trio.Lock()
        async with self._opening:
            if self.info is None:
                self._setup(await self.store.load_info(self.name))

    def _setup(self, info: DatabaseInfo) -> None:
        self.sealer = Sealer(info.key)
        namespace = info.id if info.key is None else self.sealer.name(info.id.hex())
        self.layout = Layout(namespace, self.sealer)
        self.data: SafeData = self.store.data.for_writers(info.writers or (bytes(self.store.client.public_key),))
        self.log = Log(self.data, self.layout, self.sealer, info.log_segment_size)
        self.streams_ = Streams(self.data, self.layout, self.sealer, info.stream_segment_size, self._intent_at)
        self._categories = IndexSet(self.data, self.sealer, self.layout.categories, CATEGORY_PARTITIONS)
        self._indexes: dict[str, IndexSet] = {}
        self.info = info

    def _index(self, category: str) -> IndexSet:
        index = self._indexes.get(category)
        if index is None:
            assert self.info is not None
            index = IndexSet(
                self.data, self.sealer, partial(self.layout.stream_index, category), self.info.partitions
            )
            self._indexes[category] = index
        return index

    def _now_us(self) -> int:
        return int(self.store.clock() * 1_000_000)

    def _remember(self, stream: str, tail: Tail) -> None:
        self._tails[stream] = tail
        self._tails.move_to_end(stream)
        if len(self._tails) > 65536:
            self._tails.popitem(last=False)

    # ------------------------------------------------------------------ appending

    async def append(
        self, stream: str, events: Iterable[EventData], expected_version: int = ANY
    ) -> AppendResult:
        """Append `events` to `stream` atomically, if the stream is at `expected_version`.

        `expected_version` is ANY, NO_STREAM, STREAM_EXISTS or the exact version of the
        stream's last event. Raises WrongExpectedVersion (with the actual version) or
        StreamDeleted. Appending again events with the same ids in the same place (a retry
        after a timeout) returns the first result and stores nothing twice.
        """
        check_stream_name(stream)
        if is_system(stream):
            raise ReservedName(f"stream {stream!r}: names starting with '$' belong to the store")
        events = list(events)
        for event in events:
            if is_system(event.type):
                raise ReservedName(f"event type {event.type!r}: types starting with '$' belong to the store")
        await self._open()
        return await self._append(stream, events, check_expected_version(expected_version))

    async def _append(
        self, stream: str, events: list[EventData], expected: int, corrects: int | None = None
    ) -> AppendResult:
        if not 1 <= len(events) <= MAX_APPEND_EVENTS:
            raise InvalidEvent(f"an append holds 1 to {MAX_APPEND_EVENTS} events, got {len(events)}")
        ids = [e.id for e in events]
        if len(set(ids)) != len(ids):
            raise InvalidEvent("the events of an append need distinct ids")
        known = self._recently_appended(stream, expected, ids)
        if known is not None:
            return known
        start = await self._start(stream, expected, ids)
        if isinstance(start, AppendResult):
            return start
        try:
            result = await self._write(stream, events, expected, start, corrects)
        except BaseException:
            # The outcome may be unknown: forget what we believed about the stream, so a
            # retry reads its end and recognises its own events if they made it.
            self._tails.pop(stream, None)
            raise
        self._recent[ids[0]] = (stream, tuple(ids), result)
        if len(self._recent) > 4096:
            self._recent.popitem(last=False)
        return result

    def _recently_appended(self, stream: str, expected: int, ids: list[Any]) -> AppendResult | None:
        """The result of an append of these very events that this process saw succeed."""
        known = self._recent.get(ids[0])
        if known is None or known[0] != stream or known[1] != tuple(ids):
            return None
        result = known[2]
        first = result.next_expected_version - len(ids) + 1
        if expected >= 0 and first != expected + 1 or expected == NO_STREAM and first != 0:
            return None
        return result

    async def _write(
        self, stream: str, events: list[EventData], expected: int, version: int, corrects: int | None
    ) -> AppendResult:
        ids = [e.id for e in events]
        bodies = await self._bodies(events, corrects)
        for _attempt in range(MAX_ATTEMPTS):
            intent = Intent(os.urandom(16), stream, version, len(bodies), bodies, None, self._now_us())
            slot = await self.log.claim(await self.log.encode(intent))
            if version == 0:
                await self._register(stream)
            rival = await self.streams_.write(stream, version, slot, bodies)
            if rival is None:
                last = version + len(bodies) - 1
                self._remember(stream, Tail(last, events[-1].type == TOMBSTONE, version))
                return AppendResult(last, position(slot, len(bodies) - 1))
            # Another append holds `version`: ours again (a retry), or a rival's.
            done = await self._already_appended(stream, version, ids)
            if done is not None:
                return done
            tail = await self.streams_.tail(stream)
            self._remember(stream, tail)
            if tail.deleted:
                raise StreamDeleted(stream)
            if expected not in (ANY, STREAM_EXISTS):
                raise WrongExpectedVersion(stream, expected, tail.version)
            version = tail.version + 1
            await trio.sleep(random.random() * 0.005)  # let the rivals through
        raise EventStoreError(f"stream {stream!r}: gave up after {MAX_ATTEMPTS} contended attempts")

    async def _start(self, stream: str, expected: int, ids: list[Any]) -> int | AppendResult:
        """The version to append at, or the result of an identical earlier append.

        With a version cached from our own appends or reads, go optimistic: a stale cache
        only costs a clash. Otherwise read the stream's end (which finishes a torn append).
        Either way an append targets version v only once v-1 is known to exist, so whoever
        finishes its intent can never leave a hole in the stream.
        """
        cached = self._tails.get(stream)
        if cached is None:
            if expected == NO_STREAM:
                return 0  # a stream that exists clashes at version 0
        elif cached.deleted:
            raise StreamDeleted(stream)
        elif cached.exists:
            if expected == cached.version or expected in (ANY, STREAM_EXISTS):
                return cached.version + 1
        elif expected in (ANY, NO_STREAM):
            return 0
        tail = await self.streams_.tail(stream)
        self._remember(stream, tail)
        if tail.deleted:
            raise StreamDeleted(stream)
        if expected >= 0 or expected == NO_STREAM:
            if tail.version == expected:
                return expected + 1
            if tail.version > expected:
                done = await self._already_appended(stream, expected + 1, ids)
                if done is not None:
                    return done
            raise WrongExpectedVersion(stream, expected, tail.version)
        if expected == STREAM_EXISTS and not tail.exists:
            raise WrongExpectedVersion(stream, expected, tail.version)
        if tail.exists and tail.version - tail.batch_start + 1 == len(ids):
            # The last append may be this one, retried (EventStoreDB's "in quick succession").
            done = await self._already_appended(stream, tail.batch_start, ids)
            if done is not None:
                return done
        return tail.version + 1

    async def _already_appended(self, stream: str, version: int, ids: list[Any]) -> AppendResult | None:
        found = await self.streams_.range(stream, version, version + len(ids) - 1)
        if len(found) != len(ids):
            return None
        if [self.streams_.body(entry).id for _v, entry in found] != ids:
            return None
        last_version, last = found[-1]
        if not last.last_of_batch:
            return None
        return AppendResult(last_version, position(last.slot, last.index))

    async def _bodies(self, events: list[EventData], corrects: int | None) -> tuple[bytes, ...]:
        """Store the payloads and make the sealed event records.

        A payload of at most INLINE_MAX bytes goes in its record when the record still fits
        an entry; larger ones, up to BLOB_MIN, are concatenated into packs (one raw chunk
        per MiB: usually one write for the whole append); larger still get a self-encrypted
        blob of their own, deduplicated by content. Pack names are hashes computed here, so
        every chunk of the append is written at once, before any record names it.
        """
        stamp = self._now_us()
        limit = self.streams_.body_limit
        sealer = self.sealer
        sealed: list[bytes | None] = [None] * len(events)
        made: list[Body] = []
        to_pack: list[int] = []
        to_blob: list[int] = []
        raws: list[bytes] = []
        for i, event in enumerate(events):
            raw, is_json = encode_payload(event.data)
            raws.append(raw)
            meta, meta_json = (None, False) if event.metadata is None else encode_payload(event.metadata)
            body = Body(
                event.id, event.type, stamp, event.causation_id, event.correlation_id,
                raw, is_json, meta, None, meta_json, corrects, INLINE,
            )
            made.append(body)
            if len(raw) <= INLINE_MAX:
                record = sealer.seal(body.encode())
                if len(record) <= limit:
                    sealed[i] = record
                    continue
            (to_blob if len(raw) >= BLOB_MIN else to_pack).append(i)

        puts: list[Callable[[], Awaitable[bytes]]] = []
        if to_pack:
            packs, places = make_packs([sealer.seal_payload(raws[i]) for i in to_pack], PACK_LIMIT)
            names = [sha3_256(pack) for pack in packs]
            for i, (p, offset, length) in zip(to_pack, places, strict=True):
                made[i] = replace(made[i], payload=names[p], where=PACKED, offset=offset, length=length)
            puts.extend(partial(self.data.put_chunk, pack) for pack in packs)
        blob_names: dict[int, bytes] = {}

        async def blob(i: int) -> bytes:
            blob_names[i] = bytes(await self.data.put_blob(sealer.seal_payload(raws[i])))
            return blob_names[i]

        puts.extend(partial(blob, i) for i in to_blob)
        if puts:
            await gather(puts)

        async def finish(i: int) -> bytes:
            body = made[i]
            if i in blob_names:
                body = replace(body, payload=blob_names[i], where=BLOB)
            record = sealer.seal(body.encode())
            if len(record) > limit and body.metadata is not None:
                ref = bytes(await self.data.put_blob(sealer.seal_payload(body.metadata)))
                record = sealer.seal(replace(body, metadata=None, metadata_ref=ref).encode())
            if len(record) > limit:
                raise InvalidEvent(f"an event record of {len(record)} bytes exceeds {limit}")
            return record

        rest = [i for i, record in enumerate(sealed) if record is None]
        if rest:
            for i, record in zip(rest, await gather([partial(finish, i) for i in rest]), strict=True):
                sealed[i] = record
        return tuple(sealed)  # type: ignore[arg-type]

    async def _register(self, stream: str) -> None:
        """List a new stream in its category, and the category in the database. Done before
        the stream's first events are written, so a stream that exists is always listed."""
        if is_system(stream) or stream in self._registered:
            return
        category = category_of(stream)
        if category not in self._known_categories:
            await self._categories.add(category)
            self._known_categories.add(category)
        await self._index(category).add(stream)
        self._registered.add(stream)
        if len(self._registered) > 65536:
            self._registered.clear()

    # ------------------------------------------------------------------ the log's intents

    async def _intent_at(self, slot: int) -> tuple[Intent, tuple[bytes, ...]] | None:
        raw = await self.log.at(slot)
        if raw is None:
            return None
        intent = self.log.decode(raw)
        return intent, await self.log.bodies(intent)

    async def resolve(self, slot: int, intent: Intent) -> Fate:
        entry = await self.streams_.entry(intent.stream, intent.version)
        if entry is None:
            return Fate.PENDING
        return Fate.COMMITTED if entry.slot == slot else Fate.VOID

    async def complete(self, slot: int, intent: Intent) -> Fate:
        """Finish a pending intent as its writer would have (harmless if the writer is alive:
        it finds its own events there and succeeds)."""
        if intent.version > 0 and await self.streams_.entry(intent.stream, intent.version - 1) is None:
            # The predecessor may sit in a torn append; `tail` finishes that first.
            await self.streams_.tail(intent.stream)
            if await self.streams_.entry(intent.stream, intent.version - 1) is None:
                raise CorruptData(f"log slot {slot} targets {intent.stream!r} past its end")
        bodies = await self.log.bodies(intent)
        if intent.version == 0:
            await self._register(intent.stream)
        await self.streams_.write(intent.stream, intent.version, slot, bodies)
        return await self.resolve(slot, intent)

    async def resolve_many(self, intents: list[tuple[int, Intent]]) -> dict[int, Fate]:
        """The fates of many intents (by slot) at once: one listing for each stream segment
        that several of them look into (or that is cached), a one-entry read for the rest,
        all in parallel."""
        groups: dict[tuple[str, int], list[tuple[int, Intent]]] = {}
        for slot, intent in intents:
            groups.setdefault((intent.stream, self.streams_.segment_of(intent.version)), []).append((slot, intent))
        fates: dict[int, Fate] = {}

        async def judge(stream: str, segment: int, members: list[tuple[int, Intent]]) -> None:
            found = await self.streams_.lookup(stream, segment, [intent.version for _s, intent in members])
            for slot, intent in members:
                entry = found[intent.version]
                fates[slot] = Fate.PENDING if entry is None else Fate.COMMITTED if entry.slot == slot else Fate.VOID

        if groups:
            await gather([partial(judge, *key, members) for key, members in groups.items()], limit=FETCH_CONCURRENCY)
        return fates

    async def batch_events(self, slot: int, intent: Intent, start: int, limit: int) -> list[RecordedEvent]:
        """Events start.. of a committed intent, as recorded (no corrections applied)."""
        return await self.batches_events([(slot, intent, start, limit)])

    async def batches_events(self, batches: list[tuple[int, Intent, int, int]]) -> list[RecordedEvent]:
        """The events of committed intents — (slot, intent, first index, how many) each — as
        recorded, in that order; every chunk they need is fetched once, in parallel."""
        batches = [b for b in batches if b[2] < b[1].count and b[3] > 0]
        away = [intent for _s, intent, _f, _n in batches if intent.bodies is None]
        if away:  # the records of big appends sit in a chunk each: fetch those at once
            await gather([partial(self.log.bodies, intent) for intent in away], limit=FETCH_CONCURRENCY)
        rows: list[tuple[str, int, int, Body]] = []
        for slot, intent, first, n in batches:
            bodies = await self.log.bodies(intent)  # at hand now (inline, or a cached chunk)
            rows.extend(
                (intent.stream, intent.version + i, position(slot, i), Body.decode(self.sealer.unseal(bodies[i])))
                for i in range(first, min(intent.count, first + n))
            )
        return await self._events(None, rows)

    async def repair(self, from_position: int = 0) -> RepairReport:
        """Resolve every intent of the log from `from_position`, finishing pending ones now.

        Readers do this on their own (after a grace period); this is for operators and tests
        that want the log and the streams to agree at once.
        """
        await self._open()
        counts = {Fate.COMMITTED: 0, Fate.VOID: 0}
        completed = 0
        slot = from_position // MAX_APPEND_EVENTS
        while True:
            entries = await self.log.read(slot, 256)
            if not entries:
                break
            for s, raw in entries:
                intent = self.log.decode(raw)
                fate = await self.resolve(s, intent)
                if fate is Fate.PENDING:
                    fate = await self.complete(s, intent)
                    completed += 1
                counts[fate] += 1
            slot = entries[-1][0] + 1
        return RepairReport(counts[Fate.COMMITTED], counts[Fate.VOID], completed, position(slot, 0))

    # ------------------------------------------------------------------ reading streams

    async def stream_version(self, stream: str) -> int:
        """The version of the stream's last event; NO_STREAM if it has none."""
        check_stream_name(stream)
        await self._open()
        tail = await self.streams_.tail(stream)
        self._remember(stream, tail)
        if tail.deleted:
            raise StreamDeleted(stream)
        return tail.version

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        *,
        backward: bool = False,
        count: int | None = None,
        resolve_corrections: bool = True,
    ) -> list[RecordedEvent]:
        """Events of `stream` from `from_version` on (or back from it; END is the last).

        The stream's metadata applies (max count, max age, truncate-before). Restructure
        events are applied: an event they correct reads with the corrected payload, and the
        correction events themselves are not returned. `resolve_corrections=False` reads
        the history as written, corrections included.
        """
        check_stream_name(stream)
        if count is not None and count < 0:
            raise ValueError("count is a non-negative int")
        await self._open()
        # The stream's end and its metadata at once (two independent chains of reads); the
        # end's segment is listed whole, as the read walks it anyway.
        kept: dict[int, dict[int, StreamEntry]] = {}
        metadata = None if is_system(stream) else partial(self._metadata, stream)
        calls: list[Callable[[], Awaitable[Any]]] = [partial(self.streams_.tail, stream, keep=kept),
                                                     metadata or _no_metadata]
        tail: Tail
        meta: StreamMetadata
        tail, meta = await gather(calls)
        self._remember(stream, tail)
        if not tail.exists:
            raise StreamNotFound(stream)
        if tail.deleted:
            raise StreamDeleted(stream)
        lowest = max(meta.truncate_before or 0, tail.version - meta.max_count + 1 if meta.max_count else 0)
        if lowest > tail.version:
            raise StreamNotFound(stream)  # soft-deleted, or truncated to nothing
        oldest_us = None if meta.max_age is None else self._now_us() - int(meta.max_age * 1_000_000)

        if backward:
            first = tail.version if from_version == END or from_version > tail.version else from_version
            window = (max(lowest, first - count + 1) if count is not None else lowest, first)
        else:
            start = max(from_version, lowest)
            window = (start, min(tail.version, start + count - 1) if count is not None else tail.version)
        # List every segment the read will walk at once, in parallel: the window, and up to
        # the stream's end when corrections are resolved (a correction follows its target).
        segment_of = self.streams_.segment_of
        listings: dict[int, dict[int, StreamEntry]] = {}
        if window[0] <= window[1]:
            listings = await self.streams_.segments(
                stream, segment_of(window[0]), segment_of(tail.version if resolve_corrections else window[1]), kept
            )

        async def entry_at(version: int) -> StreamEntry:
            segment = self.streams_.segment_of(version)
            if segment not in listings:
                listings[segment] = await self.streams_.segment(stream, segment)
            found = listings[segment].get(version)
            if found is None:
                raise CorruptData(f"stream {stream!r} lacks version {version} below its end")
            return found

        versions: Iterable[int] = range(first, lowest - 1, -1) if backward else range(start, tail.version + 1)
        chosen: list[tuple[int, StreamEntry, Body]] = []
        for version in versions:
            if count is not None and len(chosen) >= count:
                break
            entry = await entry_at(version)
            body = self.streams_.body(entry)
            if resolve_corrections and body.type == CORRECTION:
                continue
            if oldest_us is not None and body.timestamp_us < oldest_us:
                continue
            chosen.append((version, entry, body))
        if not chosen:
            return []
        corrections: dict[int, tuple[int, Body]] = {}
        if resolve_corrections:
            # A correction comes after what it corrects: scan from the oldest chosen event on.
            for version in range(min(v for v, _e, _b in chosen), tail.version + 1):
                body = self.streams_.body(await entry_at(version))
                if body.corrects is not None:
                    corrections[body.corrects] = (version, body)
        items = [(v, position(e.slot, e.index), b) for v, e, b in chosen]
        return await self._events(stream, items, corrections)

    def iter_stream(
        self, stream: str, from_version: int = 0, *, backward: bool = False, page_size: int = 256,
        resolve_corrections: bool = True,
    ) -> AsyncIterator[RecordedEvent]:
        """`read_stream` one page at a time."""

        async def pages() -> AsyncIterator[RecordedEvent]:
            version = from_version
            while True:
                page = await self.read_stream(
                    stream, version, backward=backward, count=page_size,
                    resolve_corrections=resolve_corrections,
                )
                for event in page:
                    yield event
                if len(page) < page_size:
                    return
                version = page[-1].version + (-1 if backward else 1)
                if version < 0:
                    return

        return pages()

    async def _payload(self, name: bytes) -> bytes:
        return self.sealer.unseal(await self.data.get_blob(name))

    async def _payload_of(self, body: Body) -> Any:
        """One event's payload, decoded (for reads of a single event)."""
        return (await self._fetch([body]))(body)[0]

    async def _fetch(self, bodies: Iterable[Body]) -> Callable[[Body], tuple[Any, Any]]:
        """Fetch what the records' payloads and metadata need, each chunk and blob once and
        in parallel; return a function giving a record's (data, metadata), decoded."""
        packs: set[bytes] = set()
        blobs: set[bytes] = set()
        for body in bodies:
            if body.where == PACKED:
                packs.add(body.payload)
            elif body.where == BLOB:
                blobs.add(body.payload)
            if body.metadata_ref is not None:
                blobs.add(body.metadata_ref)
        got: dict[tuple[int, bytes], bytes] = {}

        async def pack(name: bytes) -> None:
            got[PACKED, name] = await self.data.get_chunk(name)

        async def blob(name: bytes) -> None:
            got[BLOB, name] = await self._payload(name)

        calls = [partial(pack, n) for n in packs] + [partial(blob, n) for n in blobs]
        if calls:
            await gather(calls, limit=FETCH_CONCURRENCY)
        unseal = self.sealer.unseal

        def decoded(body: Body) -> tuple[Any, Any]:
            if body.where == INLINE:
                raw = body.payload
            elif body.where == PACKED:
                raw = unseal(unpack_payload(got[PACKED, body.payload], body.offset, body.length))
            else:
                raw = got[BLOB, body.payload]
            try:
                data = decode_payload(raw, body.data_is_json)
            except ValueError:
                raise CorruptData("an event payload does not decode as the JSON it was written as") from None
            if body.metadata is not None:
                meta = decode_payload(body.metadata, body.metadata_is_json)
            elif body.metadata_ref is not None:
                meta = decode_payload(got[BLOB, body.metadata_ref], body.metadata_is_json)
            else:
                meta = None
            return data, meta

        return decoded

    async def _events(
        self,
        stream: str | None,
        items: list[tuple[int, int, Body]] | list[tuple[str, int, int, Body]],
        corrections: dict[int, tuple[int, Body]] | None = None,
    ) -> list[RecordedEvent]:
        """RecordedEvents for (version, position, body) of `stream` — or (stream, version,
        position, body) with `stream` None — fetching every chunk they need once."""
        rows: list[tuple[str, int, int, Body]] = (
            [(stream, *item) for item in cast(list[tuple[int, int, Body]], items)] if stream is not None
            else list(cast(list[tuple[str, int, int, Body]], items))
        )
        corrections = corrections or {}
        sources: list[tuple[Body, int | None]] = []
        for _s, version, _p, body in rows:
            corrected = corrections.get(version)
            sources.append((corrected[1], corrected[0]) if corrected is not None else (body, None))
        decoded = await self._fetch([row[3] for row in rows] + [source for source, _v in sources])
        out = []
        for (name, version, pos, body), (source, by) in zip(rows, sources, strict=True):
            data, metadata = decoded(source)
            if by is not None and source.metadata is None and source.metadata_ref is None:
                metadata = decoded(body)[1]
            out.append(RecordedEvent(
                name, version, body.id, body.type, data, metadata, body.causation_id,
                body.correlation_id, timestamp_from_us(body.timestamp_us), pos, by,
            ))
        return out

    # ------------------------------------------------------------------ listing

    async def categories(self) -> list[str]:
        await self._open()
        return await self._categories.all()

    async def streams(self, category: str) -> AsyncIterator[str]:
        """The stream keys of a category, fetched one index segment at a time."""
        await self._open()
        async for page in self._index(category).pages():
            for name in page:
                yield name

    async def list_streams(self, category: str) -> list[str]:
        await self._open()
        return await self._index(category).all()

    # ------------------------------------------------------------------ the log

    async def read_all(self, from_position: int = 0, count: int | None = None) -> list[RecordedEvent]:
        """The database log from `from_position` (inclusive), in log order, as recorded."""
        await self._open()
        return await LogCursor(self, from_position).read_all(count)

    async def read_category(
        self, category: str, from_position: int = 0, count: int | None = None
    ) -> list[RecordedEvent]:
        """Every event of the category's streams, in log order."""
        await self._open()
        return await LogCursor(self, from_position, lambda s: category_of(s) == category).read_all(count)

    def subscribe_to_all(self, from_checkpoint: int | None = None) -> Subscription:
        """Catch-up subscription to the database log: every event after `from_checkpoint`
        (a position, exclusive; None for the beginning), then new events as they come."""
        start = 0 if from_checkpoint is None else from_checkpoint + 1
        return Subscription(self, lambda: LogCursor(self, start))

    def subscribe_to_category(self, category: str, from_checkpoint: int | None = None) -> Subscription:
        start = 0 if from_checkpoint is None else from_checkpoint + 1
        return Subscription(self, lambda: LogCursor(self, start, lambda s: category_of(s) == category))

    def subscribe_to_stream(self, stream: str, from_checkpoint: int | None = None) -> Subscription:
        """Catch-up subscription to one stream: events after `from_checkpoint` (a version,
        exclusive; None for the beginning), as recorded. Ends after a tombstone."""
        check_stream_name(stream)
        start = 0 if from_checkpoint is None else from_checkpoint + 1
        return Subscription(self, lambda: StreamCursor(self, stream, start))

    async def log_end(self) -> int:
        """A checkpoint at the current end of the log: subscribe from it for new events only."""
        await self._open()
        return position(await self.log.tip(), 0) - 1

    # ------------------------------------------------------------------ metadata, deletion

    async def _metadata(self, stream: str) -> StreamMetadata:
        mstream = metadata_stream(stream)
        tail = await self.streams_.tail(mstream)
        if not tail.exists:
            return StreamMetadata()
        entry = await self.streams_.entry(mstream, tail.version)
        if entry is None:
            raise CorruptData(f"the metadata of {stream!r} is unreadable")
        body = self.streams_.body(entry)
        return StreamMetadata.from_json(await self._payload_of(body))

    async def get_stream_metadata(self, stream: str) -> StreamMetadata:
        check_stream_name(stream)
        await self._open()
        return await self._metadata(stream)

    async def set_stream_metadata(
        self, stream: str, metadata: StreamMetadata, expected_version: int = ANY
    ) -> AppendResult:
        """Set the stream's read rules (appended to its metadata stream `$$stream`;
        `expected_version` is that of the metadata stream)."""
        check_stream_name(stream)
        await self._open()
        event = EventData(METADATA_EVENT, metadata.to_json())
        return await self._append(metadata_stream(stream), [event], check_expected_version(expected_version))

    async def delete_stream(self, stream: str, expected_version: int = ANY, *, hard: bool = False) -> AppendResult:
        """Soft delete: hide every event so far (reads say StreamNotFound); a later append
        continues the numbering and reads show only what follows. Hard delete: append a
        tombstone; reads and appends say StreamDeleted and the name is never reused."""
        check_stream_name(stream)
        await self._open()
        expected = check_expected_version(expected_version)
        if hard:
            return await self._append(stream, [EventData(TOMBSTONE, {})], expected)
        tail = await self.streams_.tail(stream)
        self._remember(stream, tail)
        if tail.deleted:
            raise StreamDeleted(stream)
        if expected >= 0 and tail.version != expected:
            raise WrongExpectedVersion(stream, expected, tail.version)
        if not tail.exists:
            raise StreamNotFound(stream)
        meta = await self._metadata(stream)
        return await self.set_stream_metadata(stream, replace(meta, truncate_before=tail.version + 1))

    async def restructure(
        self,
        stream: str,
        version: int,
        data: Any,
        *,
        metadata: Any = None,
        expected_version: int = ANY,
    ) -> AppendResult:
        """Correct the payload of the event at `version` by appending a restructure event.

        The original stays in the stream: `read_stream(..., resolve_corrections=False)`
        shows it and the correction; a normal read shows it with the corrected payload.
        """
        check_stream_name(stream)
        await self._open()
        target = await self.streams_.entry(stream, version) if version >= 0 else None
        if target is None:
            raise InvalidEvent(f"stream {stream!r} has no event {version} to correct")
        original = self.streams_.body(target)
        if is_system(original.type):
            raise InvalidEvent(f"event {version} of {stream!r} is a system event ({original.type})")
        event = EventData(CORRECTION, data, metadata, causation_id=original.id,
                          correlation_id=original.correlation_id)
        return await self._append(stream, [event], check_expected_version(expected_version), corrects=version)

