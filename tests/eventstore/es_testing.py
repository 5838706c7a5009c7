"""Helpers of the event-store tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

from collections import defaultdict

from eventstore.api import Database, EventData, RecordedEvent
from eventstore.events import is_system, position


def ev(kind: str = "Happened", **data: object) -> EventData:
    return EventData(kind, dict(data))


async def check_consistent(db: Database) -> list[RecordedEvent]:
    """Resolve the whole log, then check that the log and the streams agree:
    - every event of the log is in its stream, at its version, with its id and position;
    - every event of every stream named in the log (or listed in a category) is in the log,
      exactly once; stream versions run 0..n-1 without a hole;
    - every stream with events is listed in its category.
    Returns the log as read."""
    await db.repair()
    log = await db.read_all()
    positions = [e.position for e in log]
    assert positions == sorted(set(positions)), "the log repeats or reorders positions"
    ids = [e.id for e in log]
    assert len(ids) == len(set(ids)), "an event appears twice in the log"
    by_stream: dict[str, list[RecordedEvent]] = defaultdict(list)
    for e in log:
        by_stream[e.stream].append(e)
    listed = set()
    for category in await db.categories():
        listed.update(await db.list_streams(category))
    for stream in set(by_stream) | listed:
        tail = await db.streams_.tail(stream)
        found = await db.streams_.range(stream, 0, tail.version)
        assert [v for v, _ in found] == list(range(tail.version + 1)), f"{stream}: a hole"
        stored = [(v, db.streams_.body(e).id, position(e.slot, e.index)) for v, e in found]
        logged = [(e.version, e.id, e.position) for e in by_stream.get(stream, [])]
        assert stored == logged, f"{stream}: the stream and the log disagree"
        if found and not is_system(stream):
            assert stream in listed, f"{stream} has events but is not listed"
    return log
