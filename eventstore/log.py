"""The database log (`$all`): one ordered record of every append, in segments of Ins-only
entries keyed by slot number.

An append first claims the next free slot with an *intent* (which stream, which versions,
the event records), then writes its events to the stream; the stream write decides the
intent's fate (see `Database.resolve`). This module only keeps slots:

- No holes. A writer inserts at slot s only after seeing slot s-1 filled (or s = 0), so the
  filled slots are always a prefix 0..n-1. A reader that finds slot s empty is at the end
  of the log, and whatever is written later lands at s or after: a reader never skips past
  an entry that appears behind it.
- Group commit. Appends from one process that wait for the log at the same time share one
  mutation (one Ins per intent, all-or-nothing), so one hot log MD does not serialise them
  one round trip each. The first waiter leads: it takes the queue, writes it, and wakes the
  rest; whoever is still unserved leads the next round. No background task is needed.
- A full segment never changes again, so readers cache it for good.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from client.selfenc import MAX_CHUNK_SIZE
from node import errors as E
from node.data import MDataAddress

from .errors import CorruptData
from .privacy import Sealer
from .records import Intent, decode_bodies, encode_bodies, key_of, number_of
from .safe import ByteLRU, Clash, Layout, SafeData, entry_limit, gather


class Fate(enum.Enum):
    """What became of an intent; the stream entry at its first version decides, for good."""

    COMMITTED = "committed"  # the stream holds its events, naming its slot
    VOID = "void"  # another append took those versions
    PENDING = "pending"  # nothing there yet: its writer is at work, or died


@dataclass(eq=False)  # a claim is one waiter: found and removed by identity, never by value
class _Claim:
    value: bytes
    slot: int | None = None
    error: BaseException | None = None


class Log:
    def __init__(
        self, data: SafeData, layout: Layout, sealer: Sealer, segment_size: int, *, cache_bytes: int = 32 << 20
    ) -> None:
        self.data = data
        self.layout = layout
        self.sealer = sealer
        self.segment_size = segment_size
        self.entry_limit = entry_limit(segment_size)
        self._tip: int | None = None  # a free slot whose predecessor is known to be filled
        self._known_segment = -1  # the highest segment known to exist
        self._queue: list[_Claim] = []
        self._flushing = False
        self._flushed = trio.Event()
        # Full segments never change: kept, least recently used out, within a byte budget.
        self._full: ByteLRU[int, dict[int, bytes]] = ByteLRU(cache_bytes)
        self._recent: tuple[int, dict[int, bytes]] | None = None  # last listing of a partial one
        self._clashes = 0  # consecutive clashes of this process's flushes
        self._interrupted = False  # a round's write was cancelled since the last one that landed
        self.stats = {"flushes": 0, "claimed": 0, "clashes": 0}

    def segment_of(self, slot: int) -> int:
        return slot // self.segment_size

    # ------------------------------------------------------------------ intents

    async def encode(self, intent: Intent) -> bytes:
        """The sealed log entry for `intent`; bodies too big for an entry go to one raw chunk
        (a self-encrypted blob only past a chunk's size). The bodies are sealed already."""
        value = self.sealer.seal(intent.encode())
        if len(value) <= self.entry_limit:
            return value
        assert intent.bodies is not None
        packed = encode_bodies(intent.bodies)
        if len(packed) <= MAX_CHUNK_SIZE:
            held = intent.held_in(await self.data.put_chunk(packed), chunk=True)
        else:
            held = intent.held_in(bytes(await self.data.put_blob(packed)), chunk=False)
        value = self.sealer.seal(held.encode())
        if len(value) > self.entry_limit:
            raise CorruptData("a log intent does not fit in a log entry (stream name too long?)")
        return value

    def decode(self, raw: bytes) -> Intent:
        return Intent.decode(self.sealer.unseal(raw))

    async def bodies(self, intent: Intent) -> tuple[bytes, ...]:
        if intent.bodies is not None:
            return intent.bodies
        assert intent.ref is not None
        if intent.ref_is_chunk:
            return decode_bodies(await self.data.get_chunk(intent.ref), intent.count)
        return decode_bodies(await self.data.get_blob(intent.ref), intent.count)

    # ------------------------------------------------------------------ claiming slots

    async def claim(self, value: bytes) -> int:
        """Write `value` (an encoded intent) at the next free slot and return the slot."""
        me = _Claim(value)
        self._queue.append(me)
        try:
            while me.slot is None and me.error is None:
                if self._flushing:
                    await self._flushed.wait()
                    continue
                self._flushing = True
                try:
                    await self._flush()
                finally:
                    self._flushing = False
                    done, self._flushed = self._flushed, trio.Event()
                    done.set()
        except BaseException:
            # Cancelled (or failed) before our intent was taken: never write it later.
            if me in self._queue:
                self._queue.remove(me)
            raise
        if me.error is not None:
            raise me.error
        assert me.slot is not None
        return me.slot

    async def _flush(self) -> None:
        slot = await self.tip()
        room = self.segment_size - slot % self.segment_size
        batch = self._queue[:room]
        address = self.layout.log_segment(self.segment_of(slot))
        self.stats["flushes"] += 1
        try:
            await self.data.insert(address, {key_of(slot + j): c.value for j, c in enumerate(batch)})
        except Clash:
            # A rival took the slot, or an earlier write of ours did: this insert applied with
            # its reply lost, or the write of a round whose leader was cancelled. That round
            # may have held other claims than this one (its leader left the queue since), so
            # the first value being ours proves nothing about the rest: a claim is served
            # only where the segment holds its own value.
            # Both questions at once (one round trip, not two): whose value is at the slot,
            # and where the segment ends now.
            reads: list[Callable[[], Awaitable[Any]]] = [partial(self.data.value, address, key_of(slot)),
                                                         partial(self._end_of, address, slot + 1)]
            first, end = await gather(reads)
            ours = self._interrupted or any(c.value == first for c in batch)
            if ours and self._found(batch, slot, await self.data.entries(address) or {}):
                return
            self.stats["clashes"] += 1
            self._clashes += 1
            self._tip = end
            if self._clashes > 1:
                # Rivals in other processes keep winning: step aside a little, at random,
                # so that the next round is not the same race again.
                await trio.sleep(random.random() * 0.002 * min(self._clashes, 8))
            return
        except E.SafeError as exc:
            # The outcome is unknown (or refused): the intents may be in the log, where
            # readers resolve them like any other. The appends fail with this error.
            for c in batch:
                c.error = exc
            self._dequeue(batch)
            self._tip = None
            return
        except BaseException:
            # The leader was cancelled mid-write: the write may still land, and the claims
            # of this round that wait on may find their values in the log later.
            self._interrupted = True
            raise
        self._clashes = 0
        self._interrupted = False
        for j, c in enumerate(batch):
            c.slot = slot + j
        self._dequeue(batch)
        self.stats["claimed"] += len(batch)
        self._tip = slot + len(batch)
        self._known_segment = max(self._known_segment, self.segment_of(slot))

    def _found(self, batch: list[_Claim], slot: int, entries: dict[bytes, bytes]) -> bool:
        """Serve the claims of `batch` whose values `entries` (a listing of the segment of
        `slot`) holds, at the slots where they are; False if it holds none of them. Every
        intent is unique (it has a random id), so its value at a slot means that slot is its."""
        where = {value: number_of(key) for key, value in entries.items()}
        served = [c for c in batch if c.value in where]
        if not served:
            return False
        for c in served:
            c.slot = where[c.value]
        self._dequeue(served)
        self._clashes = 0
        self._interrupted = False
        self.stats["claimed"] += len(served)
        self._tip = max(number_of(max(entries)) + 1, slot + 1)  # fixed-width keys sort as numbers
        self._known_segment = max(self._known_segment, self.segment_of(slot))
        return True

    def _dequeue(self, batch: list[_Claim]) -> None:
        # By identity, not by count: a waiter of the batch cancelled during the write has
        # taken itself out of the queue already, and counting would drop a later claim.
        served = {id(c) for c in batch}
        self._queue = [c for c in self._queue if id(c) not in served]

    async def tip(self) -> int:
        """The first free slot (cached; rediscovered after a clash)."""
        if self._tip is not None:
            return self._tip
        segment = await self._last_segment()
        if segment is None:
            self._tip = 0
            return 0
        keys = await self.data.keys(self.layout.log_segment(segment))
        if not keys:
            raise CorruptData(f"log segment {segment} exists but holds nothing")
        self._tip = number_of(max(keys)) + 1  # fixed-width big-endian keys sort as numbers
        return self._tip

    async def _end_of(self, address: MDataAddress, slot: int) -> int:
        """After a rival's write: the first free slot from `slot` on, by one listing of the
        segment's keys. (One-entry reads, one after another, cost a round trip per slot
        the rival took, and rivals with a dozen writers each take a dozen at a time.)"""
        keys = await self.data.keys(address)
        return max(slot, number_of(max(keys)) + 1) if keys else slot

    async def _last_segment(self) -> int | None:
        """The highest existing segment. Segment s+1 exists only once s is full, so existence
        is a prefix of the segment numbers: gallop from what we know, then bisect."""
        lo = self._known_segment
        if lo < 0:
            if not await self.data.exists(self.layout.log_segment(0)):
                return None
            lo = 0
        step = 1
        while await self.data.exists(self.layout.log_segment(lo + step)):
            lo += step
            step *= 2
        hi = lo + step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.data.exists(self.layout.log_segment(mid)):
                lo = mid
            else:
                hi = mid
        self._known_segment = lo
        return lo

    # ------------------------------------------------------------------ reading slots

    async def _segment(self, segment: int, need: int) -> dict[int, bytes]:
        full = self._full.get(segment)
        if full is not None:
            return full
        if self._recent is not None and self._recent[0] == segment and need in self._recent[1]:
            return self._recent[1]
        found = await self.data.entries(self.layout.log_segment(segment)) or {}
        slots = {number_of(k): v for k, v in found.items()}
        if len(slots) == self.segment_size:
            self._full.put(segment, slots, sum(len(v) + 48 for v in slots.values()))
            self._known_segment = max(self._known_segment, segment)
        else:
            self._recent = (segment, slots)
        return slots

    async def read(self, slot: int, limit: int) -> list[tuple[int, bytes]]:
        """Filled slots from `slot` on, in order, at most `limit`; stops at the end of the log."""
        out: list[tuple[int, bytes]] = []
        entries: dict[int, bytes] | None = None
        while len(out) < limit:
            if entries is None or slot % self.segment_size == 0:
                entries = await self._segment(self.segment_of(slot), slot)  # one listing a segment
            raw = entries.get(slot)
            if raw is None:
                break
            out.append((slot, raw))
            slot += 1
        return out

    async def at(self, slot: int) -> bytes | None:
        """One slot, read directly (cheap enough to poll the end of the log with)."""
        cached = self._full.get(self.segment_of(slot))
        if cached is not None:
            return cached.get(slot)
        return await self.data.value(self.layout.log_segment(self.segment_of(slot)), key_of(slot))
