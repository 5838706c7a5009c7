"""What projections and process managers share: following the database log from a
checkpoint, and a stream where the follower saves its state *with* that checkpoint.

Exactly-once rests on the second part. Each save is one event holding the state and the
position of the last event folded into it, appended expecting the stream's version as the
follower last saw it. So the saved state and its checkpoint change together or not at all;
a follower killed at any point restarts from a pair that agrees, and folds each later
event into it once. Two followers of the same stream cannot both save on top of one state:
the slower one gets WrongExpectedVersion, reloads the winner's state and goes on from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from eventstore.database import Database
from eventstore.errors import StreamNotFound
from eventstore.events import END, NO_STREAM, EventData, RecordedEvent, category_of
from eventstore.subscriptions import Subscription
from node import errors as E

from .streams import is_internal

FEED_BUFFER = 256  # events read ahead of the consumer


@dataclass(frozen=True)
class Saved:
    """One saved state as read back: its payload and its place in the stream."""

    version: int  # the event's version in the saved-state stream
    data: dict[str, Any]
    event: RecordedEvent


class SavedStream:
    """A stream of saved states; the last event is the current one."""

    def __init__(self, db: Database, stream: str, event_type: str) -> None:
        self.db = db
        self.stream = stream
        self.event_type = event_type
        self.version = NO_STREAM  # as last loaded or saved by us

    async def load(self) -> Saved | None:
        """The current saved state (None if nothing was saved yet); remember its version."""
        try:
            found = await self.db.read_stream(self.stream, END, backward=True, count=1)
        except StreamNotFound:
            self.version = NO_STREAM
            return None
        if not found:
            self.version = NO_STREAM
            return None
        last = found[0]
        self.version = last.version
        return Saved(last.version, last.data if isinstance(last.data, dict) else {}, last)

    async def save(self, data: dict[str, Any], event_type: str | None = None) -> int:
        """Append `data` as the new current state, expecting the version last seen
        (WrongExpectedVersion if another agent saved in between). Returns the new version."""
        event = EventData(event_type or self.event_type, data)
        result = await self.db.append(self.stream, [event], expected_version=self.version)
        self.version = result.next_expected_version
        return self.version

    async def history(self) -> list[Saved]:
        try:
            events = [e async for e in self.db.iter_stream(self.stream)]
        except StreamNotFound:
            return []
        return [Saved(e.version, e.data if isinstance(e.data, dict) else {}, e) for e in events]


class Feed:
    """Domain events after a checkpoint, from a catch-up subscription, handed over
    through a channel so the consumer can stop waiting (to save when idle) without ever
    losing an event: cancelling a channel receive is safe, cancelling a read is not."""

    def __init__(self, subscription: Subscription, receive: trio.MemoryReceiveChannel[RecordedEvent]) -> None:
        self._subscription = subscription
        self._receive = receive

    async def next(self, timeout: float) -> RecordedEvent | None:
        """The next event, or None if none came within `timeout` seconds."""
        with trio.move_on_after(timeout):
            return await self._receive.receive()
        return None

    @property
    def caught_up(self) -> bool:
        """True once every event that was in the log when the feed began has been handed
        out: the subscription found the end once (its flag never resets), and nothing it
        read before that is still waiting in the channel."""
        return self._subscription.caught_up and self._receive.statistics().current_buffer_used == 0


@contextlib.asynccontextmanager
async def open_feed(db: Database, categories: Sequence[str] | None, checkpoint: int | None) -> AsyncIterator[Feed]:
    """Follow `db`'s log after `checkpoint`, keeping the events of `categories` (all
    domain events if None) and never the store's or this library's own streams."""
    wanted = None if categories is None else frozenset(categories)
    if wanted is not None and len(wanted) == 1:
        subscription = db.subscribe_to_category(next(iter(wanted)), checkpoint)
    else:
        subscription = db.subscribe_to_all(checkpoint)
    send, receive = trio.open_memory_channel[RecordedEvent](FEED_BUFFER)

    async def pump() -> None:
        async with send:
            async for event in subscription:
                if is_internal(event.stream) or event.is_system:
                    continue
                if wanted is not None and category_of(event.stream) not in wanted:
                    continue
                await send.send(event)

    # A lone error (the consumer's WrongExpectedVersion, say) comes out as itself, not
    # wrapped in the nursery's exception group, so callers can catch it by type.
    with E.single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            try:
                yield Feed(subscription, receive)
            finally:
                nursery.cancel_scope.cancel()
