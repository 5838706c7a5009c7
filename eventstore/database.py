"""A database: streams of events, their categories, and the database log, on SAFE data.

This module is the append path; the readers (stream, category and log reads, and the
completion of intents they share with appends) are in `reads.py`, the state both use in
`dbcore.py`. The steps depend on each other's invariants, argued together in
docs/eventstore.md.

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

import trio

from client.api import DataClient
from node import errors as E
from node.xorname import sha3_256

from .dbcore import BLOB_MIN, INLINE_MAX, MAX_ATTEMPTS, PACK_LIMIT, DatabaseInfo, RepairReport
from .errors import (
    EventStoreError,
    InvalidEvent,
    NotAWriter,
    ReservedName,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from .events import (
    ANY,
    CORRECTION,
    MAX_APPEND_EVENTS,
    METADATA_EVENT,
    NO_STREAM,
    STREAM_EXISTS,
    TOMBSTONE,
    AppendResult,
    EventData,
    StreamMetadata,
    check_expected_version,
    check_stream_name,
    encode_payload,
    is_system,
    metadata_stream,
    position,
)
from .persistent import PersistentSubscriptions
from .reads import DatabaseReads
from .records import BLOB, INLINE, PACKED, Body, Intent, make_packs
from .safe import gather
from .stream import Tail
from .writers import WriterChange, WriterSet, change_writer, hand_over

__all__ = ["BLOB_MIN", "INLINE_MAX", "Database", "DatabaseInfo", "RepairReport"]


class Database(DatabaseReads):
    """One event-store database. Get it from `EventStore.database(name)`."""

    @property
    def persistent(self) -> PersistentSubscriptions:
        """The database's persistent subscription groups (eventstore.persistent)."""
        found = self.__dict__.get("_persistent")
        if found is None:
            found = self.__dict__["_persistent"] = PersistentSubscriptions(self)
        return found

    # ------------------------------------------------------------------ writers

    async def writer_set(self) -> WriterSet:
        """Who may append now, and the database's owner (eventstore.writers)."""
        await self._open()
        return await self.writers.current(fresh=True)

    async def add_writer(self, key: bytes, *, owner: DataClient | None = None) -> WriterChange:
        """Let `key` (an app's or another account's public key) append: recorded in the
        database's writer set, and Insert granted on every MD of the database — those that
        exist and, through the set, those any writer makes later. Only the owner may: pass
        `owner`, a client acting with the owner's own key, when this store acts as an app.
        The new writer opens the database with `EventStore.add_database(db.info)`."""
        return await change_writer(self, key, True, owner or self.store.client)

    async def remove_writer(self, key: bytes, *, owner: DataClient | None = None) -> WriterChange:
        """Take `key`'s Insert away from every MD of the database (its appends are refused
        with NotAWriter); see `add_writer`, and `WriterChange.held` for what it cannot undo."""
        return await change_writer(self, key, False, owner or self.store.client)

    async def hand_over(self) -> int:
        """As a writer of another account: hand to the owner every MD of the database this
        store made and still owns (it was stopped between making one and handing it over,
        see eventstore.writers). Returns how many it handed over."""
        return await hand_over(self)

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
        return await self.append_as_store(stream, events, check_expected_version(expected_version))

    async def append_as_store(
        self, stream: str, events: list[EventData], expected: int, corrects: int | None = None
    ) -> AppendResult:
        if not 1 <= len(events) <= MAX_APPEND_EVENTS:
            raise InvalidEvent(f"an append holds 1 to {MAX_APPEND_EVENTS} events, got {len(events)}")
        ids = [e.id for e in events]
        if len(ids) > 1 and len({i.int for i in ids}) != len(ids):
            raise InvalidEvent("the events of an append need distinct ids")
        known = self._recently_appended(stream, expected, ids)
        if known is not None:
            return known
        start = await self._start(stream, expected, ids)
        if isinstance(start, AppendResult):
            return start
        try:
            result = await self._write(stream, events, expected, start, corrects)
        except E.AccessDenied as exc:
            self._tails.pop(stream, None)
            if not isinstance(exc, NotAWriter) and not await self.writers.may_write():
                raise NotAWriter(self.name, bytes(self.store.client.public_key)) from None
            raise
        except BaseException:
            # The outcome may be unknown: forget what we believed about the stream, so a
            # retry reads its end and recognises its own events if they made it. The retry
            # must not trust an end another task of this process caches meanwhile either
            # (`_start`): appended after its own events, it would store them twice.
            self._tails.pop(stream, None)
            self._unsure[ids[0].int] = stream
            if len(self._unsure) > 4096:
                self._unsure.popitem(last=False)
            raise
        self._unsure.pop(ids[0].int, None)
        self._targets.pop(ids[0].int, None)
        self._recent[ids[0].int] = (stream, tuple(ids), result)
        if len(self._recent) > 4096:
            self._recent.popitem(last=False)
        return result

    def _recently_appended(self, stream: str, expected: int, ids: list[Any]) -> AppendResult | None:
        """The result of an append of these very events that this process saw succeed."""
        known = self._recent.get(ids[0].int)
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
            targets = self._targets.setdefault(ids[0].int, [])
            if version not in targets:
                targets.append(version)
            if len(self._targets) > 4096:
                self._targets.popitem(last=False)
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
        cached = None if self._unsure.get(ids[0].int) == stream else self._tails.get(stream)
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
        if self._unsure.get(ids[0].int) == stream:
            # A retry of an append whose outcome we never learned: its intents may have landed
            # at the versions they claimed, with other appends after them, where neither the
            # expected version nor the stream's last append would show them. Look there first.
            for version in self._targets.get(ids[0].int, ()):
                if version <= tail.version:
                    done = await self._already_appended(stream, version, ids)
                    if done is not None:
                        return done
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
        if not to_pack and not to_blob:
            return tuple(sealed)  # type: ignore[arg-type]  # every record made: payloads inline

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

    async def set_stream_metadata(
        self, stream: str, metadata: StreamMetadata, expected_version: int = ANY
    ) -> AppendResult:
        """Set the stream's read rules (appended to its metadata stream `$$stream`;
        `expected_version` is that of the metadata stream)."""
        check_stream_name(stream)
        await self._open()
        event = EventData(METADATA_EVENT, metadata.to_json())
        return await self.append_as_store(metadata_stream(stream), [event], check_expected_version(expected_version))

    async def delete_stream(self, stream: str, expected_version: int = ANY, *, hard: bool = False) -> AppendResult:
        """Soft delete: hide every event so far (reads say StreamNotFound); a later append
        continues the numbering and reads show only what follows. Hard delete: append a
        tombstone; reads and appends say StreamDeleted and the name is never reused."""
        check_stream_name(stream)
        await self._open()
        expected = check_expected_version(expected_version)
        if hard:
            return await self.append_as_store(stream, [EventData(TOMBSTONE, {})], expected)
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

        The correction takes the stream's next version (it is a record of the stream: the
        version an append expects counts it), but it is not an event for the stream's read
        rules: `max_count` counts events only, and an event's age is its own. Raises
        StreamDeleted after a hard delete, StreamNotFound after a soft delete, InvalidEvent
        for an event below `truncate_before` or a system event.
        """
        check_stream_name(stream)
        await self._open()
        tail = await self.streams_.tail(stream)
        self._remember(stream, tail)
        if tail.deleted:
            raise StreamDeleted(stream)
        target = await self.streams_.entry(stream, version) if 0 <= version <= tail.version else None
        if target is None:
            raise InvalidEvent(f"stream {stream!r} has no event {version} to correct")
        truncated = (await self._metadata(stream)).truncate_before or 0
        if version < truncated:
            if truncated > tail.version:
                raise StreamNotFound(stream)  # soft-deleted: there is nothing to correct
            raise InvalidEvent(f"event {version} of {stream!r} is truncated (truncate_before {truncated})")
        original = self.streams_.body(target)
        if is_system(original.type):
            raise InvalidEvent(f"event {version} of {stream!r} is a system event ({original.type})")
        event = EventData(CORRECTION, data, metadata, causation_id=original.id,
                          correlation_id=original.correlation_id)
        return await self.append_as_store(stream, [event], check_expected_version(expected_version), corrects=version)

