"""Helpers of the CQRS tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

from collections import Counter
from uuid import UUID

from eventstore.api import Database, StreamNotFound
from eventstore.cqrs import is_internal


async def events_of(db: Database, stream: str) -> list[str]:
    try:
        return [e.type for e in await db.read_stream(stream)]
    except StreamNotFound:
        return []


async def effects_per_command(db: Database) -> Counter[UUID]:
    """How many domain events each command caused, over the whole log."""
    return Counter(e.causation_id for e in await db.read_all()
                   if e.causation_id is not None and not is_internal(e.stream))


def kill_at_request(store, number: int, scope, *, after_reply: bool = False) -> None:
    """Cancel `scope` at the store's `number`-th network request - before it is sent, or
    (`after_reply`) once it took effect but before its reply is seen: a process killed at
    that instant, as kill -9 would."""
    import trio

    client = store.client
    send = client._send
    count = 0

    async def counting(request):
        nonlocal count
        count += 1
        mine = count  # requests run concurrently: later ones may start before this returns
        if mine == number and not after_reply:
            scope.cancel()
            await trio.lowlevel.checkpoint()
        try:
            return await send(request)
        finally:  # the reply (or the error it carries) is lost with the process
            if mine == number:
                scope.cancel()
                await trio.lowlevel.checkpoint()

    client._send = counting
