"""The event store: an app's databases, listed in the app's own container.

    store = EventStore(client)                 # any DataClient: mock network or real cluster
    db = await store.create_database("shop")   # or store.database("shop") for an existing one
    print(await store.databases())

The app container is an MD at sha3("app-container", app key), tag 15000, owned by the
account and open to the app's key, like the `apps/<app id>` container SAFE's authenticator
made. Its entries are sealed with a key derived from the app's secret key (reads on SAFE are
open to all): the entry key is the database name, sealed deterministically so it can be
looked up; the value is the database's record — its random id, its settings and, for a
private database, its encryption key. When the accounts and authenticator issue lands, the
container's address and key come from the access container instead; nothing else changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from client.api import DataClient
from client.private import DecryptionError, MDataInfo
from node.data import Action, PermissionSet
from node.keys import PublicKey
from node.rules import MAX_MDATA_ENTRIES
from node.xorname import sha3_256

from .database import Database, DatabaseInfo
from .errors import CorruptData, DatabaseExists, DatabaseNotFound, InvalidEvent
from .privacy import new_key
from .safe import CONTAINER_TAG, Clash, SafeData, derive_name

DEFAULT_PARTITIONS = 8  # stream-index partitions per category (each an unbounded chain)
DEFAULT_STREAM_SEGMENT = 1000  # events per stream MD (SAFE's entry limit)
DEFAULT_LOG_SEGMENT = 1000  # intents per log MD
MAX_DATABASE_NAME = 100

CONTAINER_PERMISSIONS = PermissionSet.allowing(Action.INSERT, Action.UPDATE, Action.DELETE, Action.MANAGE_PERMISSIONS)


def app_container(client: DataClient) -> MDataInfo:
    """The app's container, derived from its key pair (address from the public key, the
    sealing key from the secret one)."""
    seed = client.keys.seed
    return MDataInfo(
        derive_name("app-container", bytes(client.public_key)),
        CONTAINER_TAG,
        sha3_256(b"safenet-es/container-key\0" + seed),
        sha3_256(b"safenet-es/container-nonce\0" + seed)[:24],
    )


def check_database_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_DATABASE_NAME:
        raise InvalidEvent(f"a database name is 1 to {MAX_DATABASE_NAME} characters")
    if any(ord(c) < 32 for c in name) or "@" in name:
        raise InvalidEvent("a database name has no control characters and no '@'")
    return name


class EventStore:
    """An app's event store on SAFE data.

    `clock` gives event timestamps (seconds since the epoch). `pending_grace` is how long a
    reader waits for a writer between its log intent and its stream write before finishing
    the append itself; `poll_interval` is how often subscriptions look for new events. Both
    are in trio time, so tests under MockClock run them instantly.
    """

    def __init__(
        self,
        client: DataClient,
        *,
        clock: Callable[[], float] = time.time,
        pending_grace: float = 2.0,
        poll_interval: float = 0.2,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.data = SafeData(client, cache_bytes=cache_bytes)
        self.clock = clock
        self.pending_grace = pending_grace
        self.poll_interval = poll_interval
        self.container = app_container(client)
        self._databases: dict[str, Database] = {}

    async def create_database(
        self,
        name: str,
        *,
        private: bool = False,
        partitions: int = DEFAULT_PARTITIONS,
        stream_segment_size: int = DEFAULT_STREAM_SEGMENT,
        log_segment_size: int = DEFAULT_LOG_SEGMENT,
        writers: Iterable[bytes] = (),
    ) -> Database:
        """Create a database (DatabaseExists if the app has one of that name).

        A private database encrypts its event records, payloads and names with a key of its
        own. `writers` are app keys besides this one that may append (each MD of the
        database grants them Insert; they open it with `add_database(db.info)`).
        """
        check_database_name(name)
        grants = tuple(dict.fromkeys([bytes(self.client.public_key), *(bytes(PublicKey(w)) for w in writers)]))
        if not 1 <= partitions <= 4096:
            raise ValueError("partitions is 1 to 4096")
        for size in (stream_segment_size, log_segment_size):
            if not 1 <= size <= MAX_MDATA_ENTRIES:
                raise ValueError(f"a segment holds 1 to {MAX_MDATA_ENTRIES} entries")
        info = DatabaseInfo(
            name, os.urandom(32), new_key() if private else None, partitions,
            stream_segment_size, log_segment_size, int(self.clock() * 1_000_000), grants,
        )
        # The writer set first: every MD made afterwards is granted to it (eventstore.writers).
        first = Database(self, name)
        first.setup(info)
        await first.writers.create()
        return await self.add_database(info)

    async def add_database(self, info: DatabaseInfo) -> Database:
        """Record a database in this app's container — a new one, or one another app made
        and shares with this one (its `Database.info`, this app's key among its writers)."""
        key = self.container.encrypt_key(info.name.encode())
        try:
            await self.data.insert(
                self.container.address, {key: self.container.encrypt_value(info.encode())}, CONTAINER_PERMISSIONS
            )
        except Clash:
            # Taken — unless by our own insert whose reply was lost.
            if (await self.load_info(info.name)).id != info.id:
                raise DatabaseExists(info.name) from None
        db = self.database(info.name)
        if db.info is None:
            db.setup(info)
        return db

    def database(self, name: str) -> Database:
        """The database `name` (opened on first use; DatabaseNotFound if it does not exist)."""
        check_database_name(name)
        db = self._databases.get(name)
        if db is None:
            db = self._databases[name] = Database(self, name)
        return db

    async def databases(self) -> list[str]:
        found = await self.data.entries(self.container.address) or {}
        names = []
        for sealed in found:
            try:
                names.append(self.container.decrypt_key(sealed).decode())
            except (DecryptionError, UnicodeDecodeError):
                continue  # an entry another app version wrote: not ours to list
        return sorted(names)

    async def load_info(self, name: str) -> DatabaseInfo:
        raw = await self.data.value(self.container.address, self.container.encrypt_key(name.encode()))
        if raw is None:
            raise DatabaseNotFound(name)
        try:
            return DatabaseInfo.decode(self.container.decrypt_value(raw))
        except DecryptionError:
            raise CorruptData(f"the record of database {name!r} does not open with this app's key") from None
