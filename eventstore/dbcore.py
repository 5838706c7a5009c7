"""The state every part of a database shares: its record, the SAFE layout derived from it,
and the caches of stream ends; the registration of new streams (which both an append and a
reader finishing an append do). `reads.DatabaseReads` builds the readers on it and
`database.Database` the append path (the seam docs/eventstore.md argues across: readers
complete the intents that appends leave)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Self

import msgpack
import trio

from client.selfenc import MAX_CHUNK_SIZE

from .errors import (
    CorruptData,
)
from .events import (
    AppendResult,
    StreamMetadata,
    category_of,
    is_system,
)
from .log import Log
from .privacy import Sealer
from .records import Intent
from .safe import IndexSet, Layout, SafeData
from .stream import Streams, Tail
from .writers import Writers

if TYPE_CHECKING:
    from .store import EventStore

MAX_ATTEMPTS = 32  # tries of an ANY append against rivals before giving up
# Where payloads go (docs/eventstore.md, "Payloads"): in the record up to INLINE_MAX bytes
# (when the record still fits an entry), in the append's packs below BLOB_MIN, else a blob.
INLINE_MAX = 512
BLOB_MIN = 64 * 1024
PACK_LIMIT = MAX_CHUNK_SIZE  # bytes of one pack chunk
FETCH_CONCURRENCY = 16  # chunks a read fetches at once
CATEGORY_PARTITIONS = 1  # categories are few; their index is still an unbounded chain


@dataclass(frozen=True)
class DatabaseInfo:
    """What the app's container records about a database."""

    name: str
    id: bytes  # 32 random bytes: the root of every address of the database
    key: bytes | None  # the secret key of a private database
    partitions: int  # partitions of each category's stream index
    stream_segment_size: int
    log_segment_size: int
    created_us: int
    writers: tuple[bytes, ...] = ()  # app keys granted Insert on the database's MDs

    @property
    def private(self) -> bool:
        return self.key is not None

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "v": 1,
                "name": self.name,
                "id": self.id,
                "key": self.key,
                "partitions": self.partitions,
                "stream_segment": self.stream_segment_size,
                "log_segment": self.log_segment_size,
                "created": self.created_us,
                "writers": list(self.writers),
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, raw: bytes) -> DatabaseInfo:
        try:
            obj = msgpack.unpackb(raw, raw=False)
            return cls(
                str(obj["name"]),
                bytes(obj["id"]),
                None if obj["key"] is None else bytes(obj["key"]),
                int(obj["partitions"]),
                int(obj["stream_segment"]),
                int(obj["log_segment"]),
                int(obj["created"]),
                tuple(bytes(w) for w in obj.get("writers", [])),
            )
        except (ValueError, TypeError, KeyError, msgpack.ExtraData) as exc:
            raise CorruptData(f"a database record does not decode: {exc}") from None


async def _no_metadata() -> StreamMetadata:
    return StreamMetadata()


@dataclass(frozen=True)
class RepairReport:
    """What `Database.repair` found in the log."""

    committed: int = 0
    void: int = 0
    completed: int = 0  # pending intents it finished
    end_position: int = 0


class DatabaseCore:
    """The shared state of a database (see the module docstring); use `Database`."""

    def __init__(self, store: EventStore, name: str) -> None:
        self.store = store
        self.name = name
        self.info: DatabaseInfo | None = None
        self._opening: trio.Lock | None = None
        self._tails: OrderedDict[str, Tail] = OrderedDict()
        # These three are keyed by an append's first event id as an int (`UUID.int`): a UUID
        # hashes in Python, an int in C, and an append looks them up several times.
        self._recent: OrderedDict[int, tuple[str, tuple[Any, ...], AppendResult]] = OrderedDict()
        self._unsure: OrderedDict[int, str] = OrderedDict()  # first event id -> stream, of appends that failed
        # First event id -> the versions its append's intents claimed, while the append is at
        # work or its outcome unknown: where a retry looks for its own events first.
        self._targets: OrderedDict[int, list[int]] = OrderedDict()
        self._registered: set[str] = set()
        self._known_categories: set[str] = set()
        self.last_category_read = ""  # how the last read_category read: links of $ce-, or the log

    # ------------------------------------------------------------------ set-up

    async def open(self) -> Self:
        """Load the database's record (DatabaseNotFound if there is none). Every operation
        does this on first use; call it to find out early."""
        await self._open()
        return self

    async def _open(self) -> None:
        if self.info is not None:
            return
        if self._opening is None:
            self._opening = trio.Lock()
        async with self._opening:
            if self.info is None:
                self.setup(await self.store.load_info(self.name))

    def setup(self, info: DatabaseInfo) -> None:
        self.sealer = Sealer(info.key)
        namespace = info.id if info.key is None else self.sealer.name(info.id.hex())
        self.layout = Layout(namespace, self.sealer)
        self.writers = Writers(self.store.data, self.layout.writers(), info.name,
                               info.writers or (bytes(self.store.client.public_key),), self.now_us)
        self.data: SafeData = self.store.data.for_database(self.writers)
        self.log = Log(self.data, self.layout, self.sealer, info.log_segment_size)
        self.streams_ = Streams(self.data, self.layout, self.sealer, info.stream_segment_size, self._intent_at)
        self._categories = IndexSet(self.data, self.sealer, self.layout.categories, CATEGORY_PARTITIONS)
        self._indexes: dict[str, IndexSet] = {}
        self.info = info

    def _index(self, category: str) -> IndexSet:
        index = self._indexes.get(category)
        if index is None:
            assert self.info is not None
            index = IndexSet(
                self.data, self.sealer, partial(self.layout.stream_index, category), self.info.partitions
            )
            self._indexes[category] = index
        return index

    def _now_us(self) -> int:
        return int(self.store.clock() * 1_000_000)

    def now_us(self) -> int:
        """The store's clock, in microseconds (event timestamps)."""
        return self._now_us()

    def _remember(self, stream: str, tail: Tail) -> None:
        self._tails[stream] = tail
        self._tails.move_to_end(stream)
        if len(self._tails) > 65536:
            self._tails.popitem(last=False)

    async def _register(self, stream: str) -> None:
        """List a new stream in its category, and the category in the database. Done before
        the stream's first events are written, so a stream that exists is always listed."""
        if is_system(stream) or stream in self._registered:
            return
        category = category_of(stream)
        if category not in self._known_categories:
            await self._categories.add(category)
            self._known_categories.add(category)
        await self._index(category).add(stream)
        self._registered.add(stream)
        if len(self._registered) > 65536:
            self._registered.clear()

    async def _intent_at(self, slot: int) -> tuple[Intent, tuple[bytes, ...]] | None:
        raw = await self.log.at(slot)
        if raw is None:
            return None
        intent = self.log.decode(raw)
        return intent, await self.log.bodies(intent)
