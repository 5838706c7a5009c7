"""Reading a database: the fates of the log's intents (and finishing pending ones), stream
reads with their metadata and corrections applied, the log and category reads, listings and
the catch-up subscriptions. Appends live in `database.py`; both share `dbcore.DatabaseCore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any, cast

from .dbcore import FETCH_CONCURRENCY, DatabaseCore, RepairReport, _no_metadata
from .errors import (
    CorruptData,
    StreamDeleted,
    StreamNotFound,
)
from .events import (
    CORRECTION,
    END,
    MAX_APPEND_EVENTS,
    METADATA_STREAM_PREFIX,
    RecordedEvent,
    StreamMetadata,
    category_of,
    check_stream_name,
    decode_payload,
    metadata_stream,
    position,
    timestamp_from_us,
)
from .log import Fate
from .records import BLOB, INLINE, PACKED, Body, Intent, StreamEntry, unpack_payload
from .safe import gather
from .stream import Tail
from .subscriptions import LinkCursor, LogCursor, StreamCursor, Subscription


class DatabaseReads(DatabaseCore):
    """The readers of a database (see the module docstring); use `Database`."""

    # ------------------------------------------------------------------ the log's intents

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
        return await self.load_events(None, rows)

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
        resolve_links: bool = False,
    ) -> list[RecordedEvent]:
        """Events of `stream` from `from_version` on (or back from it; END is the last).

        With `resolve_links`, a link event (`$>`, as in `$ce-<category>` and `$et-<type>`)
        reads as the event it points at, as recorded, with `link` set; a link to an event
        of a hard-deleted stream, or one below its truncate_before, is left out.

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
        metadata = None if stream.startswith(METADATA_STREAM_PREFIX) else partial(self._metadata, stream)
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
        segment_of = self.streams_.segment_of
        listings: dict[int, dict[int, StreamEntry]] = dict(kept)

        async def entry_at(version: int) -> StreamEntry:
            segment = segment_of(version)
            if segment not in listings:
                listings[segment] = await self.streams_.segment(stream, segment)
            found = listings[segment].get(version)
            if found is None:
                raise CorruptData(f"stream {stream!r} lacks version {version} below its end")
            return found

        lowest = meta.truncate_before or 0
        if meta.max_count and lowest <= tail.version:
            # `max_count` counts events, not corrections (which take versions too): walk back
            # from the end to the max_count-th event. The window starts there; a correction
            # after it corrects an event in the window or one that is hidden anyway.
            lowest = max(lowest, await self._count_back(stream, tail.version, meta.max_count, lowest, entry_at))
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
        if window[0] <= window[1]:
            listings.update(await self.streams_.segments(
                stream, segment_of(window[0]), segment_of(tail.version if resolve_corrections else window[1]),
                listings,
            ))

        versions: Iterable[int] = range(first, lowest - 1, -1) if backward else range(start, tail.version + 1)
        chosen: list[tuple[int, StreamEntry, Body]] = []
        opened: dict[int, Body] = {}  # each record unsealed and decoded once
        for version in versions:
            if count is not None and len(chosen) >= count:
                break
            entry = await entry_at(version)
            body = opened[version] = self.streams_.body(entry)
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
                body = opened.get(version) or self.streams_.body(await entry_at(version))
                if body.corrects is not None:
                    corrections[body.corrects] = (version, body)
        items = [(v, position(e.slot, e.index), b) for v, e, b in chosen]
        out = await self.load_events(stream, items, corrections)
        return await self._resolve_links(out, hide_deleted=True) if resolve_links else out

    async def resolve_links(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Link events replaced by the events they point at (with `link` set), as the log has
        them: links to events of deleted streams are kept; other events stay as they are."""
        await self._open()
        return await self._resolve_links(events, hide_deleted=False)

    async def _resolve_links(self, events: list[RecordedEvent], *, hide_deleted: bool) -> list[RecordedEvent]:
        """Link events replaced by what they point at (see `read_stream`), fetched at once."""
        from .system_projections import LINK, parse_link

        targets = {i: parse_link(e.data) for i, e in enumerate(events) if e.type == LINK}
        if not targets:
            return events
        hidden: dict[str, int] = {}  # stream -> versions below this are not shown
        if hide_deleted:
            async def rules(name: str) -> None:
                tail = await self.streams_.tail(name)
                below = (await self._metadata(name)).truncate_before or 0
                hidden[name] = tail.version + 2 if tail.deleted else below

            names = {t[0] for t in targets.values() if t is not None}
            await gather([partial(rules, n) for n in names], limit=FETCH_CONCURRENCY)
        found: dict[int, StreamEntry | None] = {}

        async def entry(i: int, name: str, version: int) -> None:
            found[i] = await self.streams_.entry(name, version)

        await gather([partial(entry, i, *t) for i, t in targets.items() if t is not None], limit=FETCH_CONCURRENCY)
        rows = []
        for i, target in targets.items():
            e = found.get(i)
            if target is None or e is None or target[1] < hidden.get(target[0], 0):
                continue
            rows.append((target[0], target[1], position(e.slot, e.index), self.streams_.body(e)))
        resolved = iter(await self.load_events(None, rows) if rows else [])
        kept = {i for i, t in targets.items() if t is not None and found.get(i) is not None
                and t[1] >= hidden.get(t[0], 0)}
        out = []
        for i, event in enumerate(events):
            if i not in targets:
                out.append(event)
            elif i in kept:
                out.append(replace(next(resolved), link=event))
        return out

    async def _count_back(
        self, stream: str, last: int, count: int, floor: int, entry_at: Callable[[int], Awaitable[StreamEntry]]
    ) -> int:
        """The version of the `count`-th event (not counting corrections) back from `last`,
        or `floor` if there are fewer above it."""
        segments = self.streams_
        seen = 0
        version = last
        while version >= floor:
            if segments.body(await entry_at(version)).type != CORRECTION:
                seen += 1
                if seen == count:
                    return version
            version -= 1
        return floor

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
        packs, blobs = chunks_wanted(bodies)
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

    async def load_events(
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
        """Every event of the category's streams, in log order.

        Once the system projections have run (`SystemProjections`), this reads the links of
        `$ce-<category>` and scans only the log after the projection's checkpoint; before,
        it scans the whole log. `last_category_read` says which it did."""
        from .system_projections import CATEGORY_PREFIX, saved_checkpoint

        await self._open()
        checkpoint = await saved_checkpoint(self)
        if checkpoint is None:
            self.last_category_read = "scanned the log (the $by_category projection has not run)"
            return await LogCursor(self, from_position, lambda s: category_of(s) == category).read_all(count)
        try:
            links = await self.read_stream(CATEGORY_PREFIX + category, resolve_corrections=False)
        except StreamNotFound:
            links = []
        last = max([checkpoint, *(int(e.metadata["position"]) for e in links[-1:] if isinstance(e.metadata, dict))])
        wanted = [e for e in links if isinstance(e.metadata, dict) and int(e.metadata["position"]) >= from_position]
        if count is not None:
            wanted = wanted[:count]
        out = await self._resolve_links(wanted, hide_deleted=False)
        rest = None if count is None else count - len(out)
        if rest is None or rest > 0:
            start = max(from_position, last + 1)
            out += await LogCursor(self, start, lambda s: category_of(s) == category).read_all(rest)
        self.last_category_read = (f"read {len(wanted)} links of {CATEGORY_PREFIX}{category}, then the log "
                                   f"after position {last}")
        return out

    def subscribe_to_all(self, from_checkpoint: int | None = None) -> Subscription:
        """Catch-up subscription to the database log: every event after `from_checkpoint`
        (a position, exclusive; None for the beginning), then new events as they come."""
        start = 0 if from_checkpoint is None else from_checkpoint + 1
        return Subscription(self, lambda: LogCursor(self, start))

    def subscribe_to_category(self, category: str, from_checkpoint: int | None = None, *,
                              through_links: bool = False) -> Subscription:
        """Catch-up subscription to a category: its events after `from_checkpoint` (a log
        position, exclusive), in log order. By default it filters the log (every event of
        the category's streams, the store's own corrections and tombstones included).
        `through_links=True` reads the links of `$ce-<category>` instead — what the
        `$by_category` projection links: the category's events, not the store's `$` events —
        and the log after the last link while the projection lags; `subscription.reading`
        says which. Checkpoints are log positions either way."""
        start = 0 if from_checkpoint is None else from_checkpoint + 1
        if through_links:
            return Subscription(self, lambda: LinkCursor(self, category, start))
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


def chunks_wanted(bodies: Iterable[Body]) -> tuple[list[bytes], list[bytes]]:
    """The pack chunks and the blobs that `bodies` need, each once, in the records' order.

    Not a set's order: that follows the hash seed of the process, and the fetches would then
    start in a different order in every process, so a simulated run would replay only under
    the PYTHONHASHSEED it ran with.
    """
    packs: dict[bytes, None] = {}
    blobs: dict[bytes, None] = {}
    for body in bodies:
        if body.where == PACKED:
            packs[body.payload] = None
        elif body.where == BLOB:
            blobs[body.payload] = None
        if body.metadata_ref is not None:
            blobs[body.metadata_ref] = None
    return list(packs), list(blobs)
