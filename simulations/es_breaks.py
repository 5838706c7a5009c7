"""Test-only breaks of the event store, to show the event-store checker catches them.

Each break swaps one method of the store's classes for a wrong one for the length of a run
(`applied`), in the simulator's process only; nothing in `eventstore/` knows about them.
They are chosen with `--break` like the node's breaks:

- ``es_ack_before_stream_write``: an append is acknowledged once its intent has a log
  slot, before its stream entry is written (a reader may finish the intent later, or a
  rival may take the version first);
- ``es_log_skips_pending``: a log reader treats a pending intent as void and passes it,
  though its writer is about to commit it;
- ``es_subscription_one_past`` / ``es_subscription_one_before``: a subscription resumed
  from a checkpoint skips the first event after it / delivers the checkpoint's event again;
- ``es_log_slot_reused``: every third claim of a writer reuses the slot of its previous
  claim, so two intents name one slot.

The store is imported only when a break is applied: runs without the event store need
nothing of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

ES_BREAKS = ("es_ack_before_stream_write", "es_log_skips_pending", "es_log_slot_reused",
             "es_subscription_one_past", "es_subscription_one_before")


@contextlib.contextmanager
def applied(breaks: Iterable[str]) -> Iterator[None]:
    """Apply the event-store breaks among ``breaks`` until the block ends."""
    wanted = [b for b in breaks if b in ES_BREAKS]
    if not wanted:
        yield
        return
    from eventstore.database import Database
    from eventstore.events import AppendResult, position
    from eventstore.log import Fate, Log
    from eventstore.records import Intent
    from eventstore.subscriptions import LogCursor

    saved: list[tuple[Any, str, Any]] = []

    def swap(cls: Any, name: str, new: Any) -> None:
        saved.append((cls, name, getattr(cls, name)))
        setattr(cls, name, new)

    if "es_ack_before_stream_write" in wanted:
        original_write = Database._write

        async def early_ack(self: Any, stream: str, events: list[Any], expected: int, version: int,
                            corrects: int | None) -> Any:
            if version == 0 or corrects is not None:  # let streams come into being normally
                return await original_write(self, stream, events, expected, version, corrects)
            bodies = await self._bodies(events, corrects)
            intent = Intent(events[0].id.bytes, stream, version, len(bodies), bodies, None, self._now_us())
            slot = await self.log.claim(await self.log.encode(intent))
            self._tails.pop(stream, None)
            return AppendResult(version + len(bodies) - 1, position(slot, len(bodies) - 1))

        swap(Database, "_write", early_ack)

    if "es_log_skips_pending" in wanted:
        async def skip(self: Any, slot: int, intent: Any) -> Any:
            return Fate.VOID

        swap(LogCursor, "_settle", skip)

    if "es_log_slot_reused" in wanted:
        original_claim = Log.claim
        claims: dict[int, list[int]] = {}  # id(log) -> [claims made, last slot claimed]

        async def reuse(self: Any, value: bytes) -> int:
            mine = claims.setdefault(id(self), [0, -1])
            mine[0] += 1
            if mine[0] % 3 == 0 and mine[1] >= 0:
                return mine[1]  # every third claim: the slot of the one before, not a new one
            mine[1] = await original_claim(self, value)
            return mine[1]

        swap(Log, "claim", reuse)
    sub_breaks = [b for b in wanted if b.startswith("es_subscription_")]
    if sub_breaks:
        from eventstore.subscriptions import Subscription

        mode = sub_breaks[0].removeprefix("es_subscription_")  # "one_past" or "one_before"
        orig_all, orig_category = Database.subscribe_to_all, Database.subscribe_to_category
        original_next = Subscription.__anext__
        last: dict[int, Any] = {}  # id(database) -> the last event its subscriptions delivered

        def mark(sub: Any, from_checkpoint: int | None) -> Any:
            sub.break_resumed = from_checkpoint is not None
            return sub

        def on_all(self: Any, from_checkpoint: int | None = None) -> Any:
            return mark(orig_all(self, from_checkpoint), from_checkpoint)

        def on_category(self: Any, category: str, from_checkpoint: int | None = None) -> Any:
            return mark(orig_category(self, category, from_checkpoint), from_checkpoint)

        async def wrong_resume(self: Any) -> Any:
            if getattr(self, "break_resumed", False):
                self.break_resumed = False
                if mode == "one_before" and id(self.db) in last:
                    return last[id(self.db)]  # the checkpoint's own event, again
                if mode == "one_past":
                    await original_next(self)  # the first event after the checkpoint, lost
            event = await original_next(self)
            last[id(self.db)] = event
            return event

        swap(Database, "subscribe_to_all", on_all)
        swap(Database, "subscribe_to_category", on_category)
        swap(Subscription, "__anext__", wrong_resume)
    try:
        yield
    finally:
        for cls, name, old in reversed(saved):
            setattr(cls, name, old)
