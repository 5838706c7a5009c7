"""The event store's public API in one import (the modules are named after the concepts:
store, database, events, subscriptions, errors; the SAFE mapping is `safe`, `log`, `stream`,
`records`, `privacy`).

    from eventstore.api import EventStore, EventData, NO_STREAM
"""


from .database import Database, DatabaseInfo, RepairReport
from .errors import (
    CorruptData,
    DatabaseExists,
    DatabaseNotFound,
    EventStoreError,
    InvalidEvent,
    ReservedName,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from .events import (
    ANY,
    END,
    MAX_APPEND_EVENTS,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventData,
    RecordedEvent,
    StreamMetadata,
    category_of,
    split_position,
)
from .log import Fate
from .store import EventStore
from .subscriptions import Subscription

__all__ = [
    "ANY",
    "END",
    "MAX_APPEND_EVENTS",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "CorruptData",
    "Database",
    "DatabaseExists",
    "DatabaseInfo",
    "DatabaseNotFound",
    "EventData",
    "EventStore",
    "EventStoreError",
    "Fate",
    "InvalidEvent",
    "RecordedEvent",
    "RepairReport",
    "ReservedName",
    "StreamDeleted",
    "StreamMetadata",
    "StreamNotFound",
    "Subscription",
    "WrongExpectedVersion",
    "category_of",
    "split_position",
]
