"""System projections: `$by_category`, `$by_event_type` and `$streams`, as link events.

The agent follows the database log and, for every event of a user's stream, appends a link
event (type `$>`, data "version@stream", as EventStoreDB writes them) to

- `$ce-<category>` — every event of the category, in log order (`$by_category`);
- `$et-<type>` — every event of that type, in log order (`$by_event_type`);
- `$streams` — the first event of every stream (`$streams`).

A link's metadata holds the log position of the event it points at. Reading a link stream
with `resolve_links=True` returns the events the links point at (see `Database.read_stream`).

Exactly once into the network, with any number of agents killed at any point: every link
stream is appended in log order, at its exact expected version, and a link carries the
position it links. So the last link of a stream tells how far that stream got, and an agent
(re)starting from an older checkpoint skips what each link stream already holds. The agent's
own checkpoint (`$projections-$system-checkpoint`) is only where to resume reading the log;
two agents racing on one link stream clash on its version, and the loser reads it again.

    agent = SystemProjections(db)
    await agent.catch_up()     # link everything in the log so far; or `await agent.run()`
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from functools import partial
from typing import TYPE_CHECKING

import trio

from .errors import StreamNotFound, WrongExpectedVersion
from .events import END, NO_STREAM, EventData, RecordedEvent, category_of, is_system
from .safe import gather

if TYPE_CHECKING:
    from .database import Database
    from .reads import DatabaseReads

LINK = "$>"
CATEGORY_PREFIX = "$ce-"
EVENT_TYPE_PREFIX = "$et-"
STREAMS = "$streams"
CHECKPOINT = "$projections-$system-checkpoint"
PROJECTIONS = ("$by_category", "$by_event_type", "$streams")
_LINK_IDS = uuid.UUID("5f2b8a64-4f0e-4d59-9a55-0c9d8a3a1e07")
PAGE = 256


def link_targets(event: RecordedEvent) -> list[str]:
    """The link streams an event belongs in (none for the store's own events)."""
    if is_system(event.stream) or is_system(event.type):
        return []
    targets = [CATEGORY_PREFIX + category_of(event.stream), EVENT_TYPE_PREFIX + event.type]
    if event.version == 0:
        targets.append(STREAMS)
    return targets


def parse_link(data: object) -> tuple[str, int] | None:
    """(stream, version) of a link's "version@stream"; None if it is not one."""
    if not isinstance(data, str):
        return None
    version, sep, stream = data.partition("@")
    if not sep or not stream or not version.isdigit():
        return None
    return stream, int(version)


class SystemProjections:
    """The agent that keeps `$ce-`, `$et-` and `$streams` (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ends: dict[str, tuple[int, int]] = {}  # link stream -> (version, last linked position)
        self.checkpoint: int | None = None  # log position of the last event linked

    async def checkpoint_position(self) -> int | None:
        """The saved checkpoint (None: the projections never ran in this database)."""
        return await saved_checkpoint(self.db)

    async def catch_up(self) -> int:
        """Link every event of the log up to its current end; return how many links it wrote."""
        await self.db.open()
        from .subscriptions import LogCursor

        if self.checkpoint is None:
            self.checkpoint = await self.checkpoint_position()
        cursor = LogCursor(self.db, 0 if self.checkpoint is None else self.checkpoint + 1)
        linked = 0
        while True:
            page = await cursor.read(PAGE)
            if not page and cursor.blocked:  # an append in flight (or a writer that died): wait
                await trio.sleep(self.db.store.poll_interval)  # the grace period, then finish it
                continue
            if not page:
                if self.checkpoint is None:  # an empty log: say the projections run
                    await self._save(-1)
                return linked
            n = await self._link(page)
            linked += n
            if n:
                await self._save(page[-1].position)
            else:  # only the store's own events (ours among them): saving would add more
                self.checkpoint = page[-1].position

    async def run(self, poll_interval: float | None = None) -> None:
        """Keep the link streams up to date (cancel to stop)."""
        while True:
            await self.catch_up()
            await trio.sleep(self.db.store.poll_interval if poll_interval is None else poll_interval)

    async def _end(self, stream: str) -> tuple[int, int]:
        found = self._ends.get(stream)
        if found is None:
            try:
                last = await self.db.read_stream(stream, END, backward=True, count=1, resolve_corrections=False)
            except StreamNotFound:
                last = []
            if last:
                meta = last[0].metadata
                found = (last[0].version, int(meta["position"]) if isinstance(meta, dict) else -1)
            else:
                found = (await self.db.stream_version(stream), -1)
            self._ends[stream] = found
        return found

    async def _link(self, events: list[RecordedEvent]) -> int:
        wanted: dict[str, list[RecordedEvent]] = defaultdict(list)
        for event in events:
            for target in link_targets(event):
                wanted[target].append(event)
        counts = await gather([partial(self._append_links, t, evs) for t, evs in wanted.items()], limit=8) \
            if wanted else []
        return sum(counts)

    async def _append_links(self, target: str, events: list[RecordedEvent]) -> int:
        for _attempt in range(16):
            version, last = await self._end(target)
            todo = [e for e in events if e.position > last]
            if not todo:
                return 0
            links = [EventData(LINK, f"{e.version}@{e.stream}", {"position": e.position, "type": e.type},
                               id=uuid.uuid5(_LINK_IDS, f"{target}\0{e.id}")) for e in todo]
            try:
                result = await self.db.append_as_store(target, links, version)
            except WrongExpectedVersion:
                self._ends.pop(target, None)  # another agent got there: see how far
                continue
            self._ends[target] = (result.next_expected_version, todo[-1].position)
            return len(todo)
        raise WrongExpectedVersion(target, self._ends.get(target, (NO_STREAM, 0))[0], NO_STREAM)

    async def _save(self, position: int) -> None:
        await self.db.append_as_store(CHECKPOINT, [EventData("$checkpoint", {"position": position})], -2)
        self.checkpoint = position


async def saved_checkpoint(db: DatabaseReads) -> int | None:
    try:
        last = await db.read_stream(CHECKPOINT, END, backward=True, count=1)
    except StreamNotFound:
        return None
    if not last or not isinstance(last[0].data, dict):
        return None
    return int(last[0].data["position"])
