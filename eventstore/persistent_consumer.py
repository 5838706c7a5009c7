"""A consumer of a persistent subscription group: the ledger it folds, the claims it makes,
its acks and nacks (docs in `persistent`)."""
from __future__ import annotations

import contextlib
import random
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from node.xorname import sha3_256

from .errors import (
    CorruptData,
    MaximumSubscribersReached,
    PersistentSubscriptionDropped,
    PersistentSubscriptionNotFound,
    StreamNotFound,
    WrongExpectedVersion,
)
from .events import (
    ANY,
    EventData,
    RecordedEvent,
    category_of,
    is_system,
    position,
)
from .persistent_model import (
    ALL,
    CATEGORY_PREFIX,
    CLAIM_ATTEMPTS,
    PIN_BUCKETS,
    SNAPSHOT_EVERY,
    NackAction,
    PersistentEvent,
    Ref,
    _Group,
    _Held,
    _State,
    ledger_stream,
    parked_stream,
)

if TYPE_CHECKING:
    from .database import Database
    from .persistent import PersistentSubscriptions
    from .subscriptions import Cursor

def _snapshots(stream: str, group: str) -> str:
    return ledger_stream(stream, group) + "-checkpoint"


def bucket_of(stream: str) -> int:
    """The Pinned strategy's bucket of a stream (the same in every process)."""
    return int.from_bytes(sha3_256(stream.encode())[:4], "big") % PIN_BUCKETS


def _deliverable(event: RecordedEvent) -> bool:
    return not is_system(event.stream) and not is_system(event.type)


def _source_cursor(db: Database, stream: str, checkpoint: int | None) -> Cursor:
    from .subscriptions import LogCursor, StreamCursor

    start = 0 if checkpoint is None else checkpoint + 1
    if stream == ALL:
        return LogCursor(db, start)
    if stream.startswith(CATEGORY_PREFIX):
        category = stream[len(CATEGORY_PREFIX):]
        return LogCursor(db, start, lambda s: category_of(s) == category)
    return StreamCursor(db, stream, start)


async def _fetch(db: Database, refs: Iterable[Ref]) -> list[RecordedEvent]:
    """Source events by reference, as recorded."""
    rows = []
    for stream, version, _pos in refs:
        entry = await db.streams_.entry(stream, version)
        if entry is None:
            raise CorruptData(f"a persistent subscription holds {stream}#{version}, which is not there")
        rows.append((stream, version, position(entry.slot, entry.index), db.streams_.body(entry)))
    return await db.load_events(None, rows) if rows else []


class _Ledger:
    """One process's view of a group's ledger: the folded state, kept up to date."""

    def __init__(self, db: Database, group: _Group) -> None:
        self.db = db
        self.group = group
        self.name = ledger_stream(group.stream, group.group)
        self.state = _State(cursor=group.start)
        self._loaded = False

    async def refresh(self) -> _State:
        if not self._loaded:
            await self._load_snapshot()
            self._loaded = True
        try:
            events = await self.db.read_stream(self.name, self.state.version + 1, resolve_corrections=False)
        except StreamNotFound:
            # Nothing, or only an earlier group's actions (soft-deleted): start past them.
            self.state.version = max(self.state.version, await self.db.stream_version(self.name))
            return self.state
        for event in events:
            self.state.apply(event.version, event.type, event.data if isinstance(event.data, dict) else {},
                             self.group.generation)
        return self.state

    async def _load_snapshot(self) -> None:
        try:
            last = await self.db.read_stream(_snapshots(self.group.stream, self.group.group), -1,
                                             backward=True, count=1)
        except StreamNotFound:
            return
        if last and isinstance(last[0].data, dict) and last[0].data.get("g") == self.group.generation:
            self.state = _State.from_json(last[0].data["state"])

    async def append(self, actions: list[tuple[str, dict[str, Any]]], expected: int) -> int:
        events = [EventData(kind, {**data, "g": self.group.generation}) for kind, data in actions]
        result = await self.db.append_as_store(self.name, events, expected)
        before = self.state.version
        if before // SNAPSHOT_EVERY != result.next_expected_version // SNAPSHOT_EVERY:
            await self.refresh()
            snapshot = {"g": self.group.generation, "state": self.state.to_json()}
            await self.db.append_as_store(_snapshots(self.group.stream, self.group.group),
                                  [EventData("$psCheckpoint", snapshot)], ANY)
        return result.next_expected_version


class PersistentSubscription:
    """A consumer's membership of a group: iterate for events, ack or nack each."""

    def __init__(self, subs: PersistentSubscriptions, stream: str, group: str, name: str, buffer_size: int) -> None:
        self.subs = subs
        self.db = subs.db
        self.stream = stream
        self.group_name = group
        self.name = name
        self.buffer_size = buffer_size
        self._ledger: _Ledger | None = None
        self._ready: deque[PersistentEvent] = deque()
        self._mine: dict[uuid.UUID, int] = {}  # event id -> position, of what we hold
        self._scan: int | None = None  # our own cursor past system events nobody claims
        self._cursor: tuple[int | None, Cursor] | None = None  # (from where, the source cursor)
        self._checked = 0.0
        self._said = float("-inf")  # store clock of our last ledger action (Pinned heartbeats)

    async def __aenter__(self) -> PersistentSubscription:
        await self._join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Leaving gives back what we hold and have not acked (a retry for someone else)."""
        if self._mine and self._ledger is not None:
            # Best effort: if this fails, the message timeout hands them on anyway.
            with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(Exception):
                await self._nack(NackAction.RETRY, "consumer left", list(self._mine.values()))
        if self._ledger is not None and self._ledger.group.settings.consumer_strategy == "Pinned":
            with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(Exception):
                await self._ledger.append([("$psLeave", {"c": self.name})], ANY)

    async def _join(self) -> _Ledger:
        if self._ledger is None:
            await self.db.open()
            group = await self.subs.load_group(self.stream, self.group_name)
            self._ledger = _Ledger(self.db, group)
            state = await self._ledger.refresh()
            limit = group.settings.max_subscriber_count
            now = self.db.store.clock()
            if limit and sum(1 for t in state.seen.values() if now - t < group.settings.message_timeout) >= limit:
                raise MaximumSubscribersReached(self.stream, self.group_name)
            self._checked = now
        return self._ledger

    def __aiter__(self) -> PersistentSubscription:
        return self

    async def __anext__(self) -> PersistentEvent:
        ledger = await self._join()
        while not self._ready:
            await self._check_group(ledger)
            await self._heartbeat(ledger)
            for _attempt in range(CLAIM_ATTEMPTS):
                try:
                    await self._claim(ledger)
                    break
                except WrongExpectedVersion:
                    await trio.sleep(random.random() * 0.01)
            if not self._ready:
                await trio.sleep(self.db.store.poll_interval)
        return self._ready.popleft()

    async def _check_group(self, ledger: _Ledger) -> None:
        """Now and then, see whether the group was deleted or changed: then we are dropped."""
        now = self.db.store.clock()
        if now - self._checked < min(ledger.group.settings.message_timeout, 5.0):
            return
        self._checked = now
        try:
            group = await self.subs.load_group(self.stream, self.group_name)
        except PersistentSubscriptionNotFound:
            raise PersistentSubscriptionDropped(f"group {self.group_name!r} on {self.stream!r} was deleted") from None
        if group != ledger.group:
            raise PersistentSubscriptionDropped(f"group {self.group_name!r} on {self.stream!r} changed")

    async def _claim(self, ledger: _Ledger) -> None:
        """Decide what to take on the current state, and take it with one ledger append at
        the ledger's version (a clash means someone else decided first: fold and retry)."""
        state = await ledger.refresh()
        settings = ledger.group.settings
        now = self.db.store.clock()
        if settings.consumer_strategy == "Pinned":
            await self._claim_pinned(ledger, state, now)
            return
        mine = sum(1 for h in state.held.values() if h.consumer == self.name and h.deadline > now)
        room = min(self.buffer_size, settings.history_buffer_size) - mine
        if room <= 0:
            return
        retry: list[_Held] = []
        park: list[_Held] = []
        for held in sorted(state.held.values(), key=lambda h: h.ref[2]):
            if held.deadline <= now and len(retry) < room:
                (park if held.retries >= settings.max_retry_count else retry).append(held)
        replay = state.replay[: room - len(retry)]
        new: list[RecordedEvent] = []
        to = None
        want = room - len(retry) - len(replay)
        if want > 0:
            got, cursor = await self._source(ledger, state)
            if got:
                self._cursor = None
            for event in got:
                if len(new) >= want:
                    break
                to = cursor.checkpoint_of(event)
                if _deliverable(event):
                    new.append(event)
            if got and not new:
                self._scan = to  # only system events: skip them without writing anything
                to = None
            elif new:
                to = cursor.checkpoint_of(new[-1])
        if not (retry or park or replay or new):
            return
        deadline = now + settings.message_timeout
        actions: list[tuple[str, dict[str, Any]]] = []
        if park:
            actions.append(("$psPark", {"c": self.name, "t": now, "k": [h.ref[2] for h in park],
                                        "why": f"retried {settings.max_retry_count} times"}))
        if retry or replay or new:
            actions.append(("$psClaim", {
                "c": self.name, "t": now, "d": deadline, "r": [h.ref[2] for h in retry],
                "p": [list(r) for r in replay], "n": [[e.stream, e.version, e.position] for e in new], "to": to,
            }))
        await ledger.append(actions, state.version)
        self._said = now
        if park:
            await self._record_parked([(h.ref, f"retried {settings.max_retry_count} times", h.retries) for h in park])
        fetched = await _fetch(self.db, [h.ref for h in retry] + list(replay))
        counts = [h.retries + 1 for h in retry] + [0] * len(replay)
        for event, count in [*zip(fetched, counts, strict=True), *((e, 0) for e in new)]:
            self._mine[event.id] = event.position
            self._ready.append(PersistentEvent(event, count))

    # ------------------------------------------------------------------ the Pinned strategy

    async def _claim_pinned(self, ledger: _Ledger, state: _State, now: float) -> None:
        """Pinned (KurrentDB's strategy, without its server): a stream's events go to the
        consumer its bucket is pinned to, while that consumer lives — has said something
        within the message timeout (it sends a heartbeat when idle) and has not left. A
        claim may therefore hand events to another consumer: it records them as held by
        that one, who takes them up at its next look (`adopt`). A bucket without a live
        consumer is pinned, in the claim, to the live consumer with the fewest buckets."""
        settings = ledger.group.settings
        me = self.name
        if await self._adopt(state, now):
            return
        live = {c for c, t in state.seen.items() if now - t < settings.message_timeout} | {me}
        pins = {b: c for b, c in state.pins.items() if c in live}
        loads = Counter(pins.values())
        pinned: dict[int, str] = {}

        def owner(stream: str) -> str:
            bucket = bucket_of(stream)
            found = pins.get(bucket)
            if found is None:
                found = min(live, key=lambda c: (loads[c], c != me, c))
                pins[bucket] = pinned[bucket] = found
                loads[found] += 1
            return found

        cap = settings.history_buffer_size
        holding = Counter(h.consumer for h in state.held.values() if h.deadline > now)
        room = min(self.buffer_size, cap) - holding[me]
        if room <= 0:
            return

        def fits(to: str) -> bool:
            return holding[to] < (min(self.buffer_size, cap) if to == me else cap)

        retry: list[tuple[_Held, str]] = []
        park: list[_Held] = []
        for held in sorted(state.held.values(), key=lambda h: h.ref[2]):
            if held.deadline > now:
                continue
            if held.retries >= settings.max_retry_count:
                park.append(held)
                continue
            to = owner(held.ref[0])
            if fits(to):
                retry.append((held, to))
                holding[to] += 1
        replay: list[tuple[Ref, str]] = []
        for ref in state.replay:
            to = owner(ref[0])
            if fits(to):
                replay.append((ref, to))
                holding[to] += 1
        new: list[tuple[RecordedEvent, str]] = []
        cursor_to = None
        got, cursor = await self._source(ledger, state)
        for event in got:
            if _deliverable(event):
                to = owner(event.stream)
                if not fits(to):
                    break  # the source is taken in order: stop at the first that must wait
                new.append((event, to))
                holding[to] += 1
            cursor_to = cursor.checkpoint_of(event)
        if got and not new and cursor_to is not None:
            self._scan = cursor_to  # only system events: skip them without writing anything
            cursor_to = None
        if got:
            self._cursor = None  # the group's cursor moves (or we stopped short): start afresh
        if not (retry or park or replay or new):
            return
        used = {bucket_of(r[0]) for r in [*(h.ref for h, _ in retry), *(r for r, _ in replay)]}
        used |= {bucket_of(e.stream) for e, _ in new}
        deadline = now + settings.message_timeout
        actions: list[tuple[str, dict[str, Any]]] = []
        if park:
            actions.append(("$psPark", {"c": me, "t": now, "k": [h.ref[2] for h in park],
                                        "why": f"retried {settings.max_retry_count} times"}))
        if retry or replay or new:
            actions.append(("$psClaim", {
                "c": me, "t": now, "d": deadline, "r": [[h.ref[2], to] for h, to in retry],
                "p": [[*r, to] for r, to in replay], "n": [[e.stream, e.version, e.position, to] for e, to in new],
                "to": cursor_to, "pin": [[b, c] for b, c in pinned.items() if b in used],
            }))
        await ledger.append(actions, state.version)
        self._said = now
        if park:
            await self._record_parked([(h.ref, f"retried {settings.max_retry_count} times", h.retries) for h in park])
        mine_retry = [h for h, to in retry if to == me]
        fetched = await _fetch(self.db, [h.ref for h in mine_retry] + [r for r, to in replay if to == me])
        counts = [h.retries + 1 for h in mine_retry] + [0] * (len(fetched) - len(mine_retry))
        for event, count in [*zip(fetched, counts, strict=True), *((e, 0) for e, to in new if to == me)]:
            self._mine[event.id] = event.position
            self._ready.append(PersistentEvent(event, count))

    async def _adopt(self, state: _State, now: float) -> bool:
        """Take up the events other consumers' claims handed to us (Pinned)."""
        have = set(self._mine.values())
        handed = [h for h in sorted(state.held.values(), key=lambda h: h.ref[2])
                  if h.consumer == self.name and h.deadline > now and h.ref[2] not in have]
        handed = handed[: max(0, self.buffer_size - len(self._mine))]
        if not handed:
            return False
        for held, event in zip(handed, await _fetch(self.db, [h.ref for h in handed]), strict=True):
            self._mine[event.id] = event.position
            self._ready.append(PersistentEvent(event, held.retries))
        return True

    async def _source(self, ledger: _Ledger, state: _State) -> tuple[list[RecordedEvent], Cursor]:
        """The next source events after the group's cursor (or past what we skipped)."""
        scan = state.cursor
        if self._scan is not None and (scan is None or self._scan > scan):
            scan = self._scan
        if self._cursor is None or self._cursor[0] != scan:
            # A fresh cursor, unless the last one stopped here: that one remembers since when
            # an append in its way is pending, and finishes it after the grace period.
            self._cursor = (scan, _source_cursor(self.db, ledger.group.stream, scan))
        cursor = self._cursor[1]
        return await cursor.read(ledger.group.settings.read_batch_size), cursor

    async def _heartbeat(self, ledger: _Ledger) -> None:
        """Under Pinned a consumer that has said nothing for a third of the timeout says it
        is alive, so its buckets stay pinned to it while it waits for events."""
        settings = ledger.group.settings
        now = self.db.store.clock()
        if settings.consumer_strategy == "Pinned" and now - self._said >= settings.message_timeout / 3:
            await ledger.append([("$psAlive", {"c": self.name, "t": now})], ANY)
            self._said = now

    async def _record_parked(self, items: list[tuple[Ref, str, int]]) -> None:
        events = [EventData("$parked", {"stream": r[0], "version": r[1], "position": r[2], "why": why,
                                        "retries": n}) for r, why, n in items]
        await self.db.append_as_store(parked_stream(self.stream, self.group_name), events, ANY)

    def _keys(self, messages: Iterable[PersistentEvent | uuid.UUID | str]) -> list[int]:
        keys = []
        for message in messages:
            event_id = message.id if isinstance(message, PersistentEvent) else uuid.UUID(str(message))
            key = self._mine.pop(event_id, None)
            if key is not None:
                keys.append(key)
        return keys

    async def ack(self, *messages: PersistentEvent | uuid.UUID | str) -> None:
        """Done with these events (PersistentEvents or their event ids)."""
        keys = self._keys(messages)
        if keys:
            ledger = await self._join()
            self._said = self.db.store.clock()
            await ledger.append([("$psAck", {"c": self.name, "t": self._said, "k": keys})], ANY)

    async def nack(self, action: NackAction, reason: str, *messages: PersistentEvent | uuid.UUID | str) -> None:
        """Not done: PARK (to the parked events), RETRY (to a consumer again), SKIP (drop)."""
        keys = self._keys(messages)
        if keys:
            await self._nack(action, reason, keys)

    async def _nack(self, action: NackAction, reason: str, keys: list[int]) -> None:
        ledger = await self._join()
        value = NackAction.RETRY.value if action in (NackAction.UNKNOWN, NackAction.STOP) else action.value
        parked = [ledger.state.held[k] for k in keys if k in ledger.state.held] if action is NackAction.PARK else []
        self._said = self.db.store.clock()
        await ledger.append([("$psNack", {"c": self.name, "t": self._said, "k": keys, "a": value,
                                          "why": reason})], ANY)
        if parked:
            await self._record_parked([(h.ref, reason, h.retries) for h in parked])
        self._mine = {i: k for i, k in self._mine.items() if k not in keys}
