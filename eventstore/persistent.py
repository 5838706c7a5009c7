"""Persistent subscriptions: consumer groups whose state lives in the network.

A group reads one source — a stream, a category (`$ce-<category>`) or the whole database log
(`$all`) — and shares its events among the consumers that join it (competing consumers): each
event goes to one consumer at a time, who acks it (done), or nacks it (retry, park or skip).
An event not acked within the group's message timeout goes to a consumer again (its retry
count grows); after `max_retry_count` retries it is parked. Parked events can be replayed.
Delivery is at least once: a consumer that is slower than the timeout and acks anyway may
share an event with the one it was handed on to.

    subs = db.persistent
    await subs.create("order@42", "billing", PersistentSettings(start_from="start"))
    async with subs.subscribe("order@42", "billing") as sub:      # or "$ce-order", "$all"
        async for message in sub:
            handle(message.event)
            await sub.ack(message)                  # or sub.nack(NackAction.PARK, "why", message)
    await subs.replay_parked("order@42", "billing")
    info = await subs.info("order@42", "billing")   # consumers, in flight, parked, lag

There is no server: every consumer runs the group's dispatch itself, against state kept in
system streams of the database (the event store's own appends, so the same guarantees):

- `$persistentsubscriptions` — the registry: one event per create, update and delete;
- `$persistentsubscription-<stream>::<group>` — the group's *ledger*: every claim, ack, nack,
  park and replay, in order. A consumer folds it into the group's state (the source cursor,
  who holds which event until when, parked events, the replay queue). It takes events by
  appending a claim at the ledger's exact version: two consumers that decide at once on the
  same state clash (WrongExpectedVersion), one wins, the other folds the winner's claim and
  decides again. So no event is ever held by two consumers at once; an event whose holder
  missed its deadline (it died, say) is claimed by another, at the ledger's next version;
- `...-parked` — a record of every parked event (`$parked` events, readable as a stream);
- `...-checkpoint` — snapshots of the folded state, so a consumer that joins late folds the
  ledger from the last snapshot, not from the start.

Names follow EventStoreDB's, so its users find their way: a group is (stream, group name),
`$all` and `$ce-<category>` name those sources, and the settings keep EventStoreDB's names
and defaults. The gRPC gateway (eventstore/grpc) maps KurrentDB's PersistentSubscriptions
service onto `PersistentSubscriptions` method for method: Create, Update, Delete, Read
(`subscribe` + ack/nack by event id), GetInfo (`info`), ReplayParked, List.
"""

from __future__ import annotations

import builtins
import contextlib
import random
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from .errors import (
    CorruptData,
    PersistentSubscriptionExists,
    PersistentSubscriptionNotFound,
    StreamNotFound,
    WrongExpectedVersion,
)
from .events import (
    NO_STREAM,
    EventData,
)
from .persistent_consumer import PersistentSubscription, _deliverable, _fetch, _Ledger, _snapshots, _source_cursor
from .persistent_model import (
    ALL,
    CATEGORY_PREFIX,
    CLAIM_ATTEMPTS,
    REGISTRY,
    ConsumerInfo,
    GroupInfo,
    InFlight,
    NackAction,
    ParkedEvent,
    PersistentEvent,
    PersistentSettings,
    StartFrom,
    _check_names,
    _Group,
    ledger_stream,
    parked_stream,
)

if TYPE_CHECKING:
    from .database import Database

__all__ = [
    "ALL", "CATEGORY_PREFIX", "ConsumerInfo", "GroupInfo", "InFlight", "NackAction", "ParkedEvent", "PersistentEvent",
    "PersistentSettings", "PersistentSubscription", "PersistentSubscriptions", "StartFrom", "ledger_stream",
    "parked_stream",
]


class PersistentSubscriptions:
    """The persistent subscription groups of a database: `db.persistent`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ the registry

    async def _registry(self) -> tuple[int, dict[tuple[str, str], _Group]]:
        try:
            events = await self.db.read_stream(REGISTRY, resolve_corrections=False)
        except StreamNotFound:
            return NO_STREAM, {}
        groups: dict[tuple[str, str], _Group] = {}
        for event in events:
            data = event.data
            if not isinstance(data, dict):
                raise CorruptData("a persistent subscription registry event is not an object")
            key = (str(data["stream"]), str(data["group"]))
            if event.type == "$psDeleted":
                groups.pop(key, None)
            elif event.type == "$psCreated":
                groups[key] = _Group(*key, PersistentSettings.from_json(data["settings"]), event.version,
                                     data.get("start"))
            elif event.type == "$psUpdated" and key in groups:
                groups[key] = replace(groups[key], settings=PersistentSettings.from_json(data["settings"]))
        return (events[-1].version if events else NO_STREAM), groups

    async def load_group(self, stream: str, group: str) -> _Group:
        _version, groups = await self._registry()
        found = groups.get((stream, group))
        if found is None:
            raise PersistentSubscriptionNotFound(stream, group)
        return found

    async def _source_end(self, stream: str) -> int | None:
        if stream == ALL or stream.startswith(CATEGORY_PREFIX):
            end = await self.db.log_end()
            return None if end < 0 else end
        version = await self.db.stream_version(stream)
        return None if version < 0 else version

    async def create(self, stream: str, group: str, settings: PersistentSettings | None = None) -> None:
        """Create the group `group` on `stream` (a stream name, `$ce-<category>` or `$all`).
        PersistentSubscriptionExists if there is one."""
        _check_names(stream, group)
        settings = settings or PersistentSettings()
        await self.db.open()
        if settings.start_from == "start":
            start = None
        elif settings.start_from == "end":
            start = await self._source_end(stream)
        else:
            start = int(settings.start_from) - 1 if settings.start_from else None
        await self._change("$psCreated", stream, group, settings, start)

    async def update(self, stream: str, group: str, settings: PersistentSettings) -> None:
        """Change a group's settings (its cursor and state stay). Consumers connected to it
        are dropped (PersistentSubscriptionDropped) and subscribe again, as in EventStoreDB."""
        _check_names(stream, group)
        await self.db.open()
        await self._change("$psUpdated", stream, group, settings, None)

    async def delete(self, stream: str, group: str) -> None:
        """Delete a group: its ledger, parked and checkpoint streams are soft-deleted, so a
        group made again under the name starts afresh."""
        _check_names(stream, group)
        await self.db.open()
        await self._change("$psDeleted", stream, group, None, None)
        for name in (ledger_stream(stream, group), parked_stream(stream, group), _snapshots(stream, group)):
            with contextlib.suppress(StreamNotFound):
                await self.db.delete_stream(name)

    async def _change(
        self, kind: str, stream: str, group: str, settings: PersistentSettings | None, start: int | None
    ) -> None:
        for _attempt in range(CLAIM_ATTEMPTS * 4):
            version, groups = await self._registry()
            exists = (stream, group) in groups
            if kind == "$psCreated" and exists:
                raise PersistentSubscriptionExists(stream, group)
            if kind != "$psCreated" and not exists:
                raise PersistentSubscriptionNotFound(stream, group)
            data = {"stream": stream, "group": group, "settings": settings.to_json() if settings else None,
                    "start": start}
            try:
                await self.db.append_as_store(REGISTRY, [EventData(kind, data)], version)
                return
            except WrongExpectedVersion:
                await trio.sleep(random.random() * self.db.store.poll_interval)
        raise CorruptData("the persistent subscription registry is too contended")

    # ------------------------------------------------------------------ reading groups

    async def list(self, stream: str | None = None) -> builtins.list[GroupInfo]:
        """Every group (of `stream` only, if given), with its state."""
        await self.db.open()
        _version, groups = await self._registry()
        return [await self._info(g) for key, g in sorted(groups.items()) if stream is None or key[0] == stream]

    async def info(self, stream: str, group: str) -> GroupInfo:
        await self.db.open()
        return await self._info(await self.load_group(stream, group))

    async def _info(self, group: _Group) -> GroupInfo:
        state = await _Ledger(self.db, group).refresh()
        now = self.db.store.clock()
        names = set(state.seen) | {h.consumer for h in state.held.values()}
        consumers = tuple(
            ConsumerInfo(
                name, sum(1 for h in state.held.values() if h.consumer == name), state.acked.get(name, 0),
                state.nacked.get(name, 0), state.seen.get(name, 0.0),
            )
            for name in sorted(names)
        )
        live = any(now - c.last_seen < 2 * group.settings.message_timeout for c in consumers)
        lag, last_known = 0, state.cursor
        cursor = _source_cursor(self.db, group.stream, state.cursor)
        while lag < 10_000:
            got = await cursor.read(256)
            if not got:
                break
            lag += sum(1 for e in got if _deliverable(e))
            last_known = cursor.checkpoint_of(got[-1])
        return GroupInfo(
            group.stream, group.group, group.settings, "live" if live else "idle", consumers, len(state.held),
            len(state.parked), len(state.replay), state.delivered, sum(state.acked.values()), state.cursor,
            last_known, lag,
        )

    async def parked(self, stream: str, group: str) -> builtins.list[ParkedEvent]:
        """The group's parked events, oldest first (not yet replayed)."""
        await self.db.open()
        state = await _Ledger(self.db, await self.load_group(stream, group)).refresh()
        events = await _fetch(self.db, [ref for ref, _w, _n in state.parked])
        return [ParkedEvent(e, why, n) for e, (_r, why, n) in zip(events, state.parked, strict=True)]

    async def in_flight(self, stream: str, group: str) -> builtins.list[InFlight]:
        """The events consumers hold now, in source order."""
        await self.db.open()
        state = await _Ledger(self.db, await self.load_group(stream, group)).refresh()
        return [InFlight(*h.ref, h.consumer, h.deadline, h.retries)
                for h in sorted(state.held.values(), key=lambda h: h.ref[2])]

    async def replay_parked(self, stream: str, group: str, stop_at: int | None = None) -> int:
        """Queue the parked events (the first `stop_at` of them, if given) for delivery
        again, before new events; returns how many were queued."""
        await self.db.open()
        ledger = _Ledger(self.db, await self.load_group(stream, group))
        for _attempt in range(CLAIM_ATTEMPTS * 4):
            state = await ledger.refresh()
            n = len(state.parked) if stop_at is None else min(stop_at, len(state.parked))
            try:
                await ledger.append([("$psReplay", {"n": n})], state.version)
                return n
            except WrongExpectedVersion:
                await trio.sleep(random.random() * self.db.store.poll_interval)
        raise CorruptData("the group's ledger is too contended")

    # ------------------------------------------------------------------ consuming

    def subscribe(self, stream: str, group: str, consumer: str = "consumer", *, buffer_size: int = 10
                  ) -> PersistentSubscription:
        """Join the group as a consumer: `async with ... as sub: async for message in sub`.
        At most `buffer_size` events are held (claimed and not yet acked) at a time."""
        _check_names(stream, group)
        if buffer_size < 1:
            raise ValueError("buffer_size is a positive int")
        return PersistentSubscription(self, stream, group, f"{consumer}-{uuid.uuid4().hex[:8]}", buffer_size)
