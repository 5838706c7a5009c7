"""A persistence module for the `eventsourcing` library (9.x): its recorders on this event
store, so an existing `eventsourcing` application runs on the network unchanged.

    PERSISTENCE_MODULE=eventstore.eventsourcing_module
    SAFENET_MOCK=./app.mock        # a mock network kept in a file ... or a cluster:
    SAFENET_CLUSTER=./.safenet     # (default: ./.safenet/cluster.json, as every client)
    SAFENET_DATABASE=eventsourcing # the event-store database (default shown)
    SAFENET_CLIENT_KEY=...         # default: as `safenet es` (~/.safenet/client.key)

Like every setting of the library, each may be prefixed with the application's name.

Where things go, in the database (for an application named BankAccounts):
- `events@BankAccounts`: the application sequence - every event the application records,
  in one stream. A notification id is the event's version in it plus one.
- `snapshots@BankAccounts/<originator id>`: one stream per aggregate (any purpose but the
  application's events: `<purpose>@<app>/<id>`).
- `tracking@<app>`: the positions a standalone tracking recorder has processed.

Why one stream for the application sequence, and not the database log: the library needs
(1) events of several aggregates, and a tracking record, written atomically (`save(a, b)`,
process applications) - our store makes exactly one thing atomic, an append to one stream;
(2) notification ids in commit order - versions of one stream are, since an append must
name the version it follows; and (3) gap-free ids from 1, which its own tests assert and
its notification log sections assume - log positions are `slot * 1000 + index` and include
other streams. The price: writers of one application take turns on one stream (as the
library's PostgreSQL recorder takes a table lock), and each process keeps an index of the
sequence in memory, caught up from the stream before each read.

Uniqueness of (originator id, version), the library's optimistic lock: an insert checks
its events against the index caught up to version v of the stream, then appends expecting
v. If anyone appended in between, the append fails (WrongExpectedVersion), the index
catches up, and the check runs again: so a conflicting event is never written, and the
caller gets IntegrityError.

The bridge (eventstore/trio_bridge.py): the library is synchronous and calls from many
threads; the client is trio. Library threads hand coroutines to one trio loop; the recorders'
state is touched only on that loop, and a trio lock per recorder orders its writes and index
updates.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import trio
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    NotSupportedError,
    OperationalError,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, resolve_topic

from node.xorname import sha3_256

from .errors import (
    DatabaseExists,
    DatabaseNotFound,
    StreamNotFound,
    WrongExpectedVersion,
)
from .events import MAX_TYPE_LENGTH, NO_STREAM, EventData, RecordedEvent
from .store import EventStore
from .trio_bridge import (  # noqa: F401  (settings and bridge registry are this module's interface too)
    SAFENET_BRIDGE,
    SAFENET_CLIENT_KEY,
    SAFENET_CLUSTER,
    SAFENET_DATABASE,
    SAFENET_MOCK,
    SAFENET_POLL_INTERVAL,
    TrioBridge,
    acquire_bridge,
    register_bridge,
    unregister_bridge,
)

T = TypeVar("T")

DEFAULT_DATABASE = "eventsourcing"
MAX_ATTEMPTS = 64  # inserts retried after losing the race for a stream
TRACKING_EVENT = "eventsourcing:Tracking"  # a tracking record with no events
ID_LIMIT = 120  # longer (or unprintable) originator ids are hashed into stream names

# ================================================================================ encoding


def _event_data(stored: StoredEvent, tracking: Tracking | None = None) -> EventData:
    """A stored event as one event of ours: the state as the payload (bytes, kept as
    given), the rest as metadata. The type is the topic, so the store's browser reads well."""
    meta: dict[str, Any] = {
        "originator_id": str(stored.originator_id),
        "uuid": isinstance(stored.originator_id, UUID),
        "originator_version": stored.originator_version,
        "topic": stored.topic,
    }
    if tracking is not None:
        meta["tracking"] = [tracking.application_name, tracking.notification_id]
    return EventData(stored.topic[:MAX_TYPE_LENGTH] or "eventsourcing:Event", bytes(stored.state), meta)


def _tracking_data(tracking: Tracking) -> EventData:
    return EventData(TRACKING_EVENT, b"\x00", {"tracking": [tracking.application_name, tracking.notification_id]})


def _decode(event: RecordedEvent) -> tuple[StoredEvent | None, Tracking | None]:
    meta = event.metadata
    if not isinstance(meta, dict):
        raise DataError(f"{event.stream}#{event.version} was not written by the eventsourcing module")
    tracking = None
    if meta.get("tracking") is not None:
        app, nid = meta["tracking"]
        tracking = Tracking(application_name=str(app), notification_id=int(nid))
    if event.type == TRACKING_EVENT:
        return None, tracking
    raw_id = str(meta["originator_id"])
    originator_id: UUID | str = UUID(raw_id) if meta.get("uuid") else raw_id
    state = event.data if isinstance(event.data, bytes) else bytes(str(event.data), "utf-8")
    stored = StoredEvent(originator_id=originator_id, originator_version=int(meta["originator_version"]),
                         topic=str(meta["topic"]), state=state)
    return stored, tracking


def _stream_id(originator_id: UUID | str) -> str:
    text = str(originator_id)
    if len(text) <= ID_LIMIT and text.isprintable():
        return text
    return "sha3-" + sha3_256(text.encode()).hex()


def _app_name(name: str) -> str:
    return _stream_id(name or "application")


def _duplicates(stored_events: Sequence[StoredEvent]) -> None:
    seen = set()
    for s in stored_events:
        key = (str(s.originator_id), s.originator_version)
        if key in seen:
            raise IntegrityError(f"stored events are not unique: {key}")
        seen.add(key)


# ================================================================================ sequences


@dataclass
class _Index:
    """What one stream of ours holds, as far as it has been read: its version, its events
    by originator and version, their notifications, and the tracking records."""

    version: int = NO_STREAM
    notifications: list[Notification] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # notification ids, for bisecting
    events: dict[str, dict[int, StoredEvent]] = field(default_factory=dict)
    tracking: dict[str, int] = field(default_factory=dict)

    def add(self, version: int, stored: StoredEvent | None, tracking: Tracking | None) -> None:
        self.version = version
        if tracking is not None:
            self.tracking[tracking.application_name] = max(
                tracking.notification_id, self.tracking.get(tracking.application_name, tracking.notification_id))
        if stored is None:
            return
        self.events.setdefault(str(stored.originator_id), {})[stored.originator_version] = stored
        nid = version + 1
        self.ids.append(nid)
        self.notifications.append(Notification(
            id=nid, originator_id=stored.originator_id, originator_version=stored.originator_version,
            topic=stored.topic, state=stored.state))

    def check(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> None:
        """IntegrityError if any event's (originator, version) is taken, or the tracking
        record is not past the last one of its application."""
        _duplicates(stored_events)
        for s in stored_events:
            if s.originator_version in self.events.get(str(s.originator_id), {}):
                raise IntegrityError(f"stored event already recorded: {s.originator_id} v{s.originator_version}")
        if tracking is not None:
            last = self.tracking.get(tracking.application_name)
            if last is not None and tracking.notification_id <= last:
                raise IntegrityError(f"tracking {tracking.application_name} {tracking.notification_id} "
                                     f"is not past {last}")


class _Sequence:
    """One stream and its index; every method runs on the bridge's loop."""

    def __init__(self, bridge: TrioBridge, database: str, stream: str) -> None:
        self.bridge = bridge
        self.database = database
        self.stream = stream
        self.index = _Index()
        self._lock: trio.Lock | None = None

    @property
    def lock(self) -> trio.Lock:
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    async def refresh(self) -> _Index:
        """Catch the index up with the stream (caller holds the lock)."""
        db = self.bridge.store.database(self.database)
        if await db.stream_version(self.stream) == self.index.version:
            return self.index
        try:
            async for event in db.iter_stream(self.stream, self.index.version + 1):
                self.index.add(event.version, *_decode(event))
        except StreamNotFound:
            pass
        return self.index

    async def caught_up(self) -> _Index:
        async with self.lock:
            return await self.refresh()

    async def insert(self, stored_events: list[StoredEvent], tracking: Tracking | None) -> list[int]:
        """Append the events (and tracking) atomically, if no (originator, version) of them
        is taken; their notification ids."""
        if stored_events:
            data = [_event_data(s, tracking if i == 0 else None) for i, s in enumerate(stored_events)]
        else:
            assert tracking is not None
            data = [_tracking_data(tracking)]
        db = self.bridge.store.database(self.database)
        async with self.lock:
            for _attempt in range(MAX_ATTEMPTS):
                index = await self.refresh()
                index.check(stored_events, tracking)
                try:
                    await db.append(self.stream, data, expected_version=index.version)
                except WrongExpectedVersion:
                    continue  # someone else appended: catch up and check again
                first = index.version + 1
                if stored_events:
                    for i, s in enumerate(stored_events):
                        index.add(first + i, s, tracking if i == 0 else None)
                else:
                    index.add(first, None, tracking)
                return [first + i + 1 for i in range(len(stored_events))]
        raise OperationalError(f"{self.stream}: lost the race to append {MAX_ATTEMPTS} times in a row")


def _select(
    events: dict[int, StoredEvent], gt: int | None, lte: int | None, desc: bool, limit: int | None
) -> list[StoredEvent]:
    versions = sorted(events, reverse=desc)
    chosen = [events[v] for v in versions if (gt is None or v > gt) and (lte is None or v <= lte)]
    return chosen if limit is None else chosen[:limit]


# ================================================================================ recorders


class SafeAggregateRecorder(AggregateRecorder):
    """Each originator's events in a stream of its own: `<prefix><originator id>`.

    One insert holds the events of one originator (what the library's snapshot store
    writes); several originators in one call would be several appends, not one atomic
    write, so that is refused with NotSupportedError. Use the application recorder.
    """

    def __init__(self, bridge: TrioBridge, database: str, prefix: str, *, cache: int = 1024) -> None:
        self.bridge = bridge
        self.database = database
        self.prefix = prefix
        self._sequences: OrderedDict[str, _Sequence] = OrderedDict()
        self._cache = cache

    def _sequence(self, originator_id: UUID | str) -> _Sequence:
        stream = self.prefix + _stream_id(originator_id)
        sequence = self._sequences.get(stream)
        if sequence is None:
            sequence = self._sequences[stream] = _Sequence(self.bridge, self.database, stream)
            if len(self._sequences) > self._cache:
                self._sequences.popitem(last=False)
        self._sequences.move_to_end(stream)
        return sequence

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return None
        if len({str(s.originator_id) for s in stored_events}) > 1:
            raise NotSupportedError("an aggregate recorder on the event store writes one originator's "
                                    "events per call (one atomic append); use the application recorder")
        sequence = self._sequence(stored_events[0].originator_id)
        self.bridge.run(sequence.insert, list(stored_events), None)
        return None

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        index = self.bridge.run(self._sequence(originator_id).caught_up)
        return _select(index.events.get(str(originator_id), {}), gt, lte, desc, limit)


class SafeApplicationRecorder(ApplicationRecorder):
    """The application sequence in one stream (see the module docstring)."""

    def __init__(self, bridge: TrioBridge, database: str, stream: str, *, poll_interval: float | None = None) -> None:
        self.bridge = bridge
        self.database = database
        self.stream = stream
        self.poll_interval = poll_interval if poll_interval is not None else bridge.store.poll_interval
        self._sequence = _Sequence(bridge, database, stream)
        self._listeners: set[threading.Event] = set()
        self._listeners_lock = threading.Lock()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if not stored_events and tracking is None:
            return []
        ids = self.bridge.run(self._sequence.insert, list(stored_events), tracking)
        with self._listeners_lock:
            for listener in self._listeners:
                listener.set()
        return ids

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        index = self.bridge.run(self._sequence.caught_up)
        return _select(index.events.get(str(originator_id), {}), gt, lte, desc, limit)

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True) -> Sequence[Notification]:
        index = self.bridge.run(self._sequence.caught_up)
        if start is None:
            start, inclusive_of_start = 1, True
        first = start if inclusive_of_start else start + 1
        found: list[Notification] = []
        for n in itertools.islice(index.notifications, bisect.bisect_left(index.ids, first), None):
            if len(found) >= limit or (stop is not None and n.id > stop):
                break
            if not topics or n.topic in topics:
                found.append(n)
        return found

    def max_notification_id(self) -> int | None:
        index = self.bridge.run(self._sequence.caught_up)
        return index.ids[-1] if index.ids else None

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return SafeSubscription(self, gt=gt, topics=topics)

    def _listen(self, event: threading.Event) -> None:
        with self._listeners_lock:
            self._listeners.add(event)

    def _unlisten(self, event: threading.Event) -> None:
        with self._listeners_lock:
            self._listeners.discard(event)


class SafeProcessRecorder(SafeApplicationRecorder, ProcessRecorder):
    """The application sequence with tracking records in it: a tracking record goes in the
    same append as the events it accounts for, so both are recorded or neither."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self.insert_events([], tracking=tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self.bridge.run(self._sequence.caught_up).tracking.get(application_name)


class SafeTrackingRecorder(TrackingRecorder):
    """Tracking records on their own, in the stream `tracking@<app>`. Views of the
    library's projections may subclass it (the factory passes bridge, database, stream)."""

    def __init__(self, bridge: TrioBridge, database: str, stream: str) -> None:
        self.bridge = bridge
        self.database = database
        self.stream = stream
        self._sequence = _Sequence(bridge, database, stream)

    def insert_tracking(self, tracking: Tracking) -> None:
        self.bridge.run(self._sequence.insert, [], tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self.bridge.run(self._sequence.caught_up).tracking.get(application_name)


class SafeSubscription(ListenNotifySubscription[SafeApplicationRecorder]):
    """New notifications as they are recorded: woken at once by inserts of this process,
    and every poll interval for those of other processes (the network does not push)."""

    def __init__(self, recorder: SafeApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()) -> None:
        self._stop_polling = threading.Event()
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        recorder._listen(self._has_been_notified)
        self._poller = threading.Thread(target=self._poll, name="safenet-subscription-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop_polling.wait(self._recorder.poll_interval):
            self._has_been_notified.set()

    def stop(self) -> None:
        self._stop_polling.set()
        self._recorder._unlisten(self._has_been_notified)
        super().stop()


# ================================================================================ the factory


async def _open_database(store: EventStore, name: str) -> None:
    try:
        await store.database(name).open()
    except DatabaseNotFound:
        with contextlib.suppress(DatabaseExists):  # another process made it just now
            await store.create_database(name)


class Factory(InfrastructureFactory[SafeTrackingRecorder]):
    """What `PERSISTENCE_MODULE=eventstore.eventsourcing_module` gives an application."""

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        self.bridge, self._release = acquire_bridge(self.env)
        self.database = self.env.get(SAFENET_DATABASE) or DEFAULT_DATABASE
        self.app = _app_name(self.env.name)
        self.bridge.run(_open_database, self.bridge.store, self.database)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return SafeAggregateRecorder(self.bridge, self.database, f"{purpose}@{self.app}/")

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._recorder_class(self.APPLICATION_RECORDER_TOPIC, SafeApplicationRecorder)
        return cls(self.bridge, self.database, f"events@{self.app}")

    def tracking_recorder(
        self, tracking_recorder_class: type[SafeTrackingRecorder] | None = None
    ) -> SafeTrackingRecorder:
        cls = tracking_recorder_class or self._recorder_class(self.TRACKING_RECORDER_TOPIC, SafeTrackingRecorder)
        if not issubclass(cls, SafeTrackingRecorder):
            raise InfrastructureFactoryError(f"{cls.__name__} is not a SafeTrackingRecorder")
        return cls(self.bridge, self.database, f"tracking@{self.app}")

    def process_recorder(self) -> ProcessRecorder:
        cls = self._recorder_class(self.PROCESS_RECORDER_TOPIC, SafeProcessRecorder)
        return cls(self.bridge, self.database, f"events@{self.app}")

    def _recorder_class(self, setting: str, default: type[T]) -> type[T]:
        topic = self.env.get(setting)
        return resolve_topic(topic) if topic else default

    def close(self) -> None:
        release, self._release = self._release, lambda: None
        release()


__all__ = [
    "Factory",
    "SafeAggregateRecorder",
    "SafeApplicationRecorder",
    "SafeProcessRecorder",
    "SafeSubscription",
    "SafeTrackingRecorder",
    "TrioBridge",
    "register_bridge",
    "unregister_bridge",
]
