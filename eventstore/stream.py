"""Streams in append-only MDs: events keyed by version, in segments of a fixed size.

Version v lives in segment v // segment_size, at the address derived from the stream's name
and that number, so finding an event needs no pointer and appending needs no Update. An
append of n events is one `mutate_entries` with n Ins: atomic, and a rival that took any of
those versions first makes the whole append fail with EntryExists, which is how a stale
expected version surfaces.

An append that straddles a segment boundary is two mutations. The first (the part in the
lower segment) is the append's decision: once it is in, the rest is fixed — its records are
in the log intent named by the entries — and any reader or writer that finds the append
incomplete ("torn": the last entry's index is not the last of its append) finishes it from
the intent before going on. Entries past a torn append are never written by anyone else,
because every writer computes the stream's version through `tail`, which finishes it first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from .errors import CorruptData
from .events import NO_STREAM, TOMBSTONE
from .privacy import Sealer
from .records import Body, Intent, StreamEntry, key_of, number_of
from .safe import ByteLRU, Clash, Layout, SafeData, entry_limit, gather, raise_one

IntentAt = Callable[[int], Awaitable[tuple[Intent, tuple[bytes, ...]] | None]]


@dataclass(frozen=True)
class Tail:
    """Where a stream ends: its version, whether it ends in a tombstone, and the first
    version of its last append (to recognise a retried append)."""

    version: int
    deleted: bool = False
    batch_start: int = NO_STREAM

    @property
    def exists(self) -> bool:
        return self.version != NO_STREAM


class Streams:
    def __init__(
        self,
        data: SafeData,
        layout: Layout,
        sealer: Sealer,
        segment_size: int,
        intent_at: IntentAt,
        *,
        cache_bytes: int = 32 << 20,
    ) -> None:
        self.data = data
        self.layout = layout
        self.sealer = sealer
        self.segment_size = segment_size
        self.body_limit = entry_limit(segment_size) - 24  # room for the entry's own framing
        self.intent_at = intent_at
        # Full segments never change: kept, least recently used out, within a byte budget.
        self._full: ByteLRU[tuple[str, int], dict[int, StreamEntry]] = ByteLRU(cache_bytes)
        # The last listing of segments not yet full, raw: still true for what they held.
        self._partial: ByteLRU[tuple[str, int], dict[bytes, bytes]] = ByteLRU(cache_bytes // 2)
        self._known_segment: OrderedDict[str, int] = OrderedDict()

    def segment_of(self, version: int) -> int:
        return version // self.segment_size

    def body(self, entry: StreamEntry) -> Body:
        return Body.decode(self.sealer.unseal(entry.body))

    # ------------------------------------------------------------------ reading

    async def segment(self, stream: str, segment: int) -> dict[int, StreamEntry]:
        """A segment's entries by version ({} if it does not exist). Full ones are cached:
        a full segment never changes."""
        key = (stream, segment)
        cached = self._full.get(key)
        if cached is not None:
            return cached
        found = await self.data.entries(self.layout.stream_segment(stream, segment))
        if found is None:
            return {}
        entries = {number_of(k): StreamEntry.decode(v) for k, v in found.items()}
        if len(entries) == self.segment_size:
            self._full.put(key, entries, sum(len(e.body) + 64 for e in entries.values()))
            self._note_segment(stream, segment)
        return entries

    async def lookup(self, stream: str, segment: int, versions: list[int]) -> dict[int, StreamEntry | None]:
        """The entries at `versions` (all in `segment`; None where there is none yet).

        Entries never change once written, so an earlier listing of a segment that is not
        yet full still answers for every version it held; only a version it lacked needs a
        fresh listing (or, for a lone version, a one-entry read). A log reader resolving a
        page of intents thus lists each stream segment about once, not once per intent.
        """
        key = (stream, segment)
        full = self._full.get(key)
        if full is not None:
            return {v: full.get(v) for v in versions}
        seen = self._partial.get(key)
        if seen is None or any(key_of(v) not in seen for v in versions):
            if seen is None and len(versions) == 1:
                return {versions[0]: await self.entry(stream, versions[0])}
            found = await self.data.entries(self.layout.stream_segment(stream, segment)) or {}
            if len(found) == self.segment_size:
                entries = {number_of(k): StreamEntry.decode(v) for k, v in found.items()}
                self._full.put(key, entries, sum(len(e.body) + 64 for e in entries.values()))
                self._note_segment(stream, segment)
                return {v: entries.get(v) for v in versions}
            seen = found
            self._partial.put(key, seen, sum(len(v) + 48 for v in seen.values()))
        out: dict[int, StreamEntry | None] = {}
        for v in versions:
            raw = seen.get(key_of(v))
            out[v] = None if raw is None else StreamEntry.decode(raw)
        return out

    async def segments(
        self, stream: str, first: int, last: int, have: dict[int, dict[int, StreamEntry]] | None = None
    ) -> dict[int, dict[int, StreamEntry]]:
        """Segments first..last by number, listed in parallel (full ones come from the cache,
        those in `have` from there)."""
        have = have or {}
        numbers = [n for n in range(first, last + 1) if n not in have]
        found = await gather([partial(self.segment, stream, s) for s in numbers], limit=8) if numbers else []
        return {**{n: have[n] for n in range(first, last + 1) if n in have}, **dict(zip(numbers, found, strict=True))}

    async def entry(self, stream: str, version: int) -> StreamEntry | None:
        cached = self._full.get((stream, self.segment_of(version)))
        if cached is not None:
            return cached.get(version)
        raw = await self.data.value(self.layout.stream_segment(stream, self.segment_of(version)), key_of(version))
        return None if raw is None else StreamEntry.decode(raw)

    async def range(self, stream: str, first: int, last: int) -> list[tuple[int, StreamEntry]]:
        """Entries first..last (inclusive) in order, stopping at the first missing one."""
        out: list[tuple[int, StreamEntry]] = []
        version = first
        while version <= last:
            entries = await self.segment(stream, self.segment_of(version))
            end = min(last, (self.segment_of(version) + 1) * self.segment_size - 1)
            while version <= end:
                found = entries.get(version)
                if found is None:
                    return out
                out.append((version, found))
                version += 1
        return out

    async def tail(self, stream: str, *, keep: dict[int, dict[int, StreamEntry]] | None = None) -> Tail:
        """The stream's end, after finishing a torn append if there is one.

        With `keep` (a reader about to walk the stream), the last segment is listed whole
        instead of by keys and one entry (see `_last_listed`), and left in `keep` by number
        for the reader (unless a torn append had to be finished, which changes it)."""
        if keep is not None:
            found = await self._last_listed(stream)
            if found is None:
                return Tail(NO_STREAM)
            segment, listed = found
            last = max(listed)
            entry: StreamEntry | None = listed[last]
        else:
            found_segment = await self._last_segment(stream)
            if found_segment is None:
                return Tail(NO_STREAM)
            segment = found_segment
            keys = await self.data.keys(self.layout.stream_segment(stream, segment))
            if not keys:
                raise CorruptData(f"segment {segment} of stream {stream!r} exists but holds nothing")
            last = max(number_of(k) for k in keys)
            entry = await self.entry(stream, last)
        if entry is None:
            raise CorruptData(f"stream {stream!r}: entry {last} listed but not readable")
        start = last - entry.index
        if entry.last_of_batch:
            body = self.body(entry)
            if keep is not None:
                keep[segment] = listed
        else:
            bodies = await self.finish(stream, start, entry.slot)
            last = start + len(bodies) - 1
            body = Body.decode(self.sealer.unseal(bodies[-1]))
        return Tail(last, body.type == TOMBSTONE, start)

    async def finish(self, stream: str, start: int, slot: int) -> tuple[bytes, ...]:
        """Complete the torn append that begins at `start`, from its log intent."""
        found = await self.intent_at(slot)
        if found is None:
            raise CorruptData(f"stream {stream!r}: the log has no intent at slot {slot}")
        intent, bodies = found
        if intent.stream != stream or intent.version != start:
            raise CorruptData(f"stream {stream!r}: log slot {slot} describes another append")
        await self.write(stream, start, slot, bodies)
        return bodies

    async def _last_listed(self, stream: str) -> tuple[int, dict[int, StreamEntry]] | None:
        """The last segment and its listing, for a reader about to walk them.

        The segment expected to be last (the last one known, else the first) is listed while
        the one after it is probed, in parallel: a listing that is not full, or a next
        segment that does not exist, settles the end in one round trip instead of three
        (probe, probe, list). Segments only ever grow and are created in order, so either
        fact, seen during this call, bounds the stream's end at that moment."""
        guess = max(self._known_segment.get(stream, 0), 0)
        probed: list[bool] = []

        async def probe() -> None:
            probed.append(await self.data.exists(self.layout.stream_segment(stream, guess + 1)))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe)
                listed = await self.segment(stream, guess)
                if listed and len(listed) < self.segment_size:
                    nursery.cancel_scope.cancel()  # not full: nothing can follow it yet
        except BaseExceptionGroup as group:
            raise_one(group)
        after = bool(probed and probed[0])
        if listed and (len(listed) < self.segment_size or not after):
            self._note_segment(stream, guess)
            return guess, listed
        if not listed and guess == 0 and not after:
            return None
        if after:
            self._note_segment(stream, guess + 1)  # the gallop starts past what we saw
        segment = await self._last_segment(stream)
        if segment is None:
            return None
        listed = await self.segment(stream, segment)
        if not listed:
            raise CorruptData(f"segment {segment} of stream {stream!r} exists but holds nothing")
        return segment, listed

    async def _last_segment(self, stream: str) -> int | None:
        """The highest existing segment. A segment is created only after the one below is
        full, so the existing ones are a prefix: gallop from the last known, then bisect."""
        lo = self._known_segment.get(stream, -1)
        if lo < 0:
            if not await self.data.exists(self.layout.stream_segment(stream, 0)):
                return None
            lo = 0
        step = 1
        while await self.data.exists(self.layout.stream_segment(stream, lo + step)):
            lo += step
            step *= 2
        hi = lo + step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.data.exists(self.layout.stream_segment(stream, mid)):
                lo = mid
            else:
                hi = mid
        self._note_segment(stream, lo)
        return lo

    def _note_segment(self, stream: str, segment: int) -> None:
        if self._known_segment.get(stream, -1) < segment:
            self._known_segment[stream] = segment
        self._known_segment.move_to_end(stream)
        if len(self._known_segment) > 65536:
            self._known_segment.popitem(last=False)

    # ------------------------------------------------------------------ writing

    async def write(self, stream: str, version: int, slot: int, bodies: tuple[bytes, ...]) -> StreamEntry | None:
        """Write an append's events at `version`... as the intent at `slot` describes them.

        Returns None when the events are there (written now, or earlier by us or by whoever
        finished our intent), else the rival entry that holds `version`.
        """
        count = len(bodies)
        groups: OrderedDict[int, dict[bytes, bytes]] = OrderedDict()
        for i, body in enumerate(bodies):
            v = version + i
            groups.setdefault(self.segment_of(v), {})[key_of(v)] = StreamEntry(slot, i, count, body).encode()
        first = True
        for segment, group in groups.items():
            try:
                await self.data.insert(self.layout.stream_segment(stream, segment), group)
            except Clash:
                start = number_of(min(group))
                existing = await self.entry(stream, start)
                if existing is None:
                    raise CorruptData(f"stream {stream!r}: a clash at {start} with nothing there") from None
                if existing.slot != slot:
                    if first:
                        return existing
                    raise CorruptData(f"stream {stream!r}: another append holds the tail of slot {slot}") from None
            first = False
            self._note_segment(stream, segment)
        return None
