"""Reading the log and streams as they grow: cursors, and catch-up subscriptions on them.

A catch-up subscription is one loop: read from the checkpoint to the end, and at the end
poll for more. There is no separate "live" mode to switch to, so nothing can fall between
the catch-up and the live part, nor arrive twice. What makes that work is the log's shape:
filled slots are a prefix, and an intent's fate (committed or void) never changes once the
stream has decided it. A cursor therefore never moves past a pending intent: it waits for
its writer, and after the database's grace period finishes the append itself. Positions it
has passed are final, so a checkpoint is an exact place to resume from.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from node import errors as E

from .errors import CorruptData, StreamNotFound
from .events import TOMBSTONE, RecordedEvent, category_of, position, split_position
from .log import Fate
from .records import Intent
from .system_projections import CATEGORY_PREFIX, link_targets

if TYPE_CHECKING:
    from .reads import DatabaseReads as Database

PAGE = 256


class Cursor(Protocol):
    blocked: bool  # stopped at a pending append it may not (or may not yet) finish
    finished: bool  # nothing will ever follow (a stream that ends in a tombstone)

    async def read(self, limit: int) -> list[RecordedEvent]: ...

    def checkpoint_of(self, event: RecordedEvent) -> int: ...


class LogCursor:
    """A place in the database log, optionally keeping only some streams' events."""

    def __init__(self, db: Database, from_position: int, wanted: Callable[[str], bool] | None = None) -> None:
        self.db = db
        self.slot, self.index = split_position(max(0, from_position))
        self.wanted = wanted
        self.blocked = False
        self.finished = False
        self._pending: tuple[int, float] | None = None  # (slot, first seen pending)

    def checkpoint_of(self, event: RecordedEvent) -> int:
        return event.position

    @property
    def position(self) -> int:
        """The first log position the cursor has not passed."""
        return position(self.slot, self.index)

    async def read(self, limit: int) -> list[RecordedEvent]:
        """Up to `limit` events from the cursor on. A page of intents is handled at once:
        their fates resolved together, then the events of the committed ones fetched in
        bulk (each chunk once, in parallel). The cursor moves only once they are in hand."""
        out: list[RecordedEvent] = []
        self.blocked = False
        while len(out) < limit:
            entries = await self.db.log.read(self.slot, PAGE)
            if not entries:
                return out
            intents = [(slot, self.db.log.decode(raw)) for slot, raw in entries]
            wanted = [(s, i) for s, i in intents if self.wanted is None or self.wanted(i.stream)]
            fates = await self.db.resolve_many(wanted) if wanted else {}
            slot_at, index_at = self.slot, self.index
            take: list[tuple[int, Intent, int, int]] = []
            room = limit - len(out)
            stop = False
            for slot, intent in intents:
                if self.wanted is not None and not self.wanted(intent.stream):
                    slot_at, index_at = slot + 1, 0
                    continue
                fate = fates[slot]
                if fate is Fate.PENDING:
                    fate = await self._settle(slot, intent)
                    if fate is Fate.PENDING:
                        self.blocked = stop = True
                        break
                if fate is Fate.COMMITTED:
                    n = min(intent.count - index_at, room)
                    take.append((slot, intent, index_at, n))
                    room -= n
                    if index_at + n < intent.count:
                        index_at += n
                        stop = True
                        break
                slot_at, index_at = slot + 1, 0
                if room == 0:
                    stop = True
                    break
            out.extend(await self.db.batches_events(take))
            self.slot, self.index = slot_at, index_at
            if stop:
                return out
        return out

    async def _settle(self, slot: int, intent: Intent) -> Fate:
        """A pending intent: give its writer the grace period, then finish it ourselves."""
        now = trio.current_time()
        if self._pending is None or self._pending[0] != slot:
            self._pending = (slot, now)
        if now - self._pending[1] < self.db.store.pending_grace:
            return Fate.PENDING
        try:
            return await self.db.complete(slot, intent)
        except E.AccessDenied:
            return Fate.PENDING  # a reader without the app's key can only wait

    async def read_all(self, count: int | None) -> list[RecordedEvent]:
        """Read to the end of the log (waiting out pending appends, up to the grace period
        plus one poll, then finishing them)."""
        out: list[RecordedEvent] = []
        waited = 0.0
        while count is None or len(out) < count:
            want = PAGE if count is None else min(PAGE, count - len(out))
            got = await self.read(want)
            out.extend(got)
            if self.blocked:
                if waited > self.db.store.pending_grace + self.db.store.poll_interval:
                    break  # still pending after the grace period: we may not finish it
                await trio.sleep(self.db.store.poll_interval)
                waited += self.db.store.poll_interval
                continue
            waited = 0.0
            if len(got) < want:
                break
        return out


class StreamCursor:
    """A place in one stream (the next version to deliver)."""

    def __init__(self, db: Database, stream: str, from_version: int) -> None:
        self.db = db
        self.stream = stream
        self.next = max(0, from_version)
        self.blocked = False
        self.finished = False
        self._torn_since: tuple[int, float] | None = None

    def checkpoint_of(self, event: RecordedEvent) -> int:
        return event.version

    async def read(self, limit: int) -> list[RecordedEvent]:
        streams = self.db.streams_
        self.blocked = False
        # Poll with a one-entry read; list the segment only once there is something to read.
        if await streams.entry(self.stream, self.next) is None:
            await self._check_torn()
            return []
        found = await streams.range(self.stream, self.next, self.next + limit - 1)
        items = [(v, position(e.slot, e.index), streams.body(e)) for v, e in found]
        events = await self.db.load_events(self.stream, items)
        if events:
            self.next = events[-1].version + 1
            self.finished = events[-1].type == TOMBSTONE
        return events

    async def _check_torn(self) -> None:
        """An append straddling two segments may be half written; finish it after the grace."""
        if self.next == 0:
            return
        previous = await self.db.streams_.entry(self.stream, self.next - 1)
        if previous is None or previous.last_of_batch:
            return
        self.blocked = True
        now = trio.current_time()
        if self._torn_since is None or self._torn_since[0] != self.next:
            self._torn_since = (self.next, now)
        if now - self._torn_since[1] >= self.db.store.pending_grace:
            with contextlib.suppress(E.AccessDenied):
                await self.db.streams_.tail(self.stream)


class LinkCursor:
    """A category's events as `$by_category` links them into `$ce-<category>`, in log order,
    with log positions as checkpoints (the same as a log-scanning category subscription's).

    It reads the links from where it stands and resolves them; where the links end (the
    projection lags, or never ran) it scans the log after them, keeping what the projection
    would link (the category's events, not the store's own `$` events). Both sources hold the
    category's events in log order and each once, so taking from either only what lies past
    the last position delivered or scanned merges them without a gap or a repeat: a link
    for an event the scan already passed is skipped. `reading` says which source the last
    read used.
    """

    def __init__(self, db: Database, category: str, from_position: int) -> None:
        self.db = db
        self.category = category
        self.stream = CATEGORY_PREFIX + category
        self.next_position = max(0, from_position)
        self.link_version = 0  # the first link not looked at yet
        self.linked_to: int | None = None  # the position of the last link seen
        self.blocked = False
        self.finished = False
        self.reading = ""
        self._scan: LogCursor | None = None

    def checkpoint_of(self, event: RecordedEvent) -> int:
        return event.position

    def _wanted(self, stream: str) -> bool:
        return category_of(stream) == self.category

    async def read(self, limit: int) -> list[RecordedEvent]:
        self.blocked = False
        while True:
            try:
                links = await self.db.read_stream(self.stream, self.link_version, count=limit,
                                                  resolve_corrections=False)
            except StreamNotFound:
                links = []
            if not links:
                break
            self.link_version = links[-1].version + 1
            at = [_linked_position(e) for e in links]
            self.linked_to = max([self.linked_to or -1, *at])
            fresh = [e for e, p in zip(links, at, strict=True) if p >= self.next_position]
            if fresh:
                self._scan = None
                self.next_position = max(at) + 1
                self.reading = f"links of {self.stream}"
                return await self.db.resolve_links(fresh)
            if len(links) < limit:
                break  # every link is of what was delivered or scanned already
        if self._scan is None or self._scan.position != self.next_position:
            self._scan = LogCursor(self.db, self.next_position, self._wanted)
        got = await self._scan.read(limit)
        self.blocked = self._scan.blocked
        self.next_position = max(self.next_position, self._scan.position)
        after = "no links yet" if self.linked_to is None else f"links end at position {self.linked_to}"
        self.reading = f"the log from position {self._scan.position} on ({self.stream}: {after})"
        return [e for e in got if link_targets(e)]


def _linked_position(link: RecordedEvent) -> int:
    meta = link.metadata
    if not isinstance(meta, dict) or not isinstance(meta.get("position"), int):
        raise CorruptData(f"a link of {link.stream} lacks the position it links")
    return int(meta["position"])


class Subscription:
    """A catch-up subscription: `async for event in subscription`. It never ends on its own
    (except after a stream's tombstone); break out of the loop, or cancel, to stop.

    `checkpoint` is where the last delivered event stands — a log position, or a version
    for a stream subscription. Store it after handling an event; subscribing again from it
    delivers exactly the events that follow, none twice.
    """

    def __init__(self, db: Database, make_cursor: Callable[[], Cursor], *, page: int = PAGE) -> None:
        self.db = db
        self._make_cursor = make_cursor
        self._cursor: Cursor | None = None
        self._buffer: deque[RecordedEvent] = deque()
        self._page = page
        self.checkpoint: int | None = None
        self.caught_up = False  # True once a read found nothing new (the live part began)

    def __aiter__(self) -> Subscription:
        return self

    @property
    def reading(self) -> str:
        """Where the last events came from, for a category subscription through links
        ("links of $ce-order", or the log after them); empty otherwise."""
        return str(getattr(self._cursor, "reading", ""))

    async def __anext__(self) -> RecordedEvent:
        if self._cursor is None:
            await self.db.open()
            self._cursor = self._make_cursor()
        while not self._buffer:
            if self._cursor.finished:
                raise StopAsyncIteration
            got = await self._cursor.read(self._page)
            if got:
                self._buffer.extend(got)
                break
            if not self._cursor.blocked:
                self.caught_up = True
            await trio.sleep(self.db.store.poll_interval)
        event = self._buffer.popleft()
        self.checkpoint = self._cursor.checkpoint_of(event)
        return event
