"""One node's durable vault store: IData chunks and the node core's opaque records.

The node core is sans-IO, so it is handed a `Store`. Two implementations keep one contract:

* `SqliteStore` — the real one: one SQLite file per node (WAL mode, standard library only).
* `MemoryStore` — for the deterministic simulator and fast tests, with hooks to crash,
  corrupt and wipe it.

The contract:

* **Group commit.** Writes (puts and deletes) are visible to this store's own reads at once
  but become durable only when `sync()` returns. A node writes a batch, calls `sync()` once,
  then sends its acknowledgements (docs/architecture.md principle 5). A crash may lose any write
  made after the last `sync()`, and nothing before it. `close()` syncs.
* **Checksums.** Every chunk and record is stored with a 16-byte blake2b over its
  namespace, key and value, so a flipped bit *and* a value moved to another key are both
  caught. Every read checks it. A corrupt item is moved to a quarantine (never served again,
  listed by `quarantined()`) and the read raises `CorruptRecord`; the next read returns None.
  A later put of the same key stores the new value cleanly and takes it off the quarantine
  list, so `quarantined()` is the node's list of items to fetch again from its close group.
* **Namespaces.** Records live under a short `ns` string ("md", "meta", ...). Chunks are the
  namespace "chunk", which is therefore reserved: `put_record("chunk", ...)` is refused.
* Keys and names come back sorted as bytes, so both implementations list in the same order.

Neither class is safe for concurrent use; one thread at a time may call a store (a trio node
may hand `sync` to `trio.to_thread.run_sync`, which keeps to that rule).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from .errors import CorruptRecord
from .xorname import XOR_NAME_LEN, sha3_256

CHUNK_NS = "chunk"
MAX_NS_LEN = 64
CHECKSUM_LEN = 16
STORE_FILENAME = "store.sqlite3"
SCHEMA_VERSION = 1

Durability = Literal["process", "power"]

# Distinguishes our checksums from any other blake2b use of the same bytes, and lets a
# future layout change its framing without old sums passing by accident.
_PERSON = b"safenet-store-v1"


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a store holds now (unsynced writes included, quarantined items not)."""

    chunks: int
    records: int
    bytes: int  # payload bytes: the sum of chunk and record value lengths


class StoreClosedError(RuntimeError):
    """The store was used after `close()`."""


@runtime_checkable
class Store(Protocol):
    """The storage a node core is handed. See the module docstring for the contract."""

    def put_chunk(self, name: bytes, value: bytes) -> None: ...
    def get_chunk(self, name: bytes) -> bytes | None: ...
    def get_chunk_addressed(self, name: bytes) -> bytes | None: ...
    def has_chunk(self, name: bytes) -> bool: ...
    def contains_chunk(self, name: bytes) -> bool: ...
    def delete_chunk(self, name: bytes) -> None: ...
    def chunk_names(self) -> list[bytes]: ...
    def put_record(self, ns: str, key: bytes, value: bytes) -> None: ...
    def get_record(self, ns: str, key: bytes) -> bytes | None: ...
    def delete_record(self, ns: str, key: bytes) -> None: ...
    def record_keys(self, ns: str) -> list[bytes]: ...
    def quarantined(self) -> list[tuple[str, bytes]]: ...
    def sync(self) -> None: ...
    def stats(self) -> StoreStats: ...
    def close(self) -> None: ...


# ------------------------------------------------------------------ shared by both stores


def checksum(ns: str, key: bytes, value: bytes) -> bytes:
    """The 16-byte sum stored beside a value; it binds the value to its namespace and key."""
    h = blake2b(digest_size=CHECKSUM_LEN, person=_PERSON)
    raw_ns = ns.encode()
    # Lengths are framed so that ("ab", b"c") and ("a", b"bc") can never share a sum.
    h.update(len(raw_ns).to_bytes(1, "big"))
    h.update(raw_ns)
    h.update(len(key).to_bytes(4, "big"))
    h.update(key)
    h.update(value)
    return h.digest()


def _record_ns(ns: str) -> str:
    if not isinstance(ns, str):
        raise TypeError(f"a namespace is a str, got {type(ns).__name__}")
    if not 0 < len(ns.encode()) <= MAX_NS_LEN:
        raise ValueError(f"a namespace is 1 to {MAX_NS_LEN} bytes of UTF-8, got {ns!r:.80}")
    if ns == CHUNK_NS:
        raise ValueError(f"the namespace {CHUNK_NS!r} is reserved for chunks")
    return ns


def _as_bytes(value: bytes, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)  # plain bytes: subclasses such as XorName must not leak back out


def _chunk_name(name: bytes) -> bytes:
    raw = _as_bytes(name, "a chunk name")
    if len(raw) != XOR_NAME_LEN:
        raise ValueError(f"a chunk name is {XOR_NAME_LEN} bytes, got {len(raw)}")
    return raw


def _describe(ns: str, key: bytes) -> str:
    return f"chunk {key.hex()}" if ns == CHUNK_NS else f"record {ns}/{key.hex()}"


def _corrupt_error(ns: str, key: bytes) -> CorruptRecord:
    return CorruptRecord(f"corrupt {_describe(ns, key)}: checksum mismatch; quarantined")


def _misaddressed_error(key: bytes) -> CorruptRecord:
    return CorruptRecord(f"corrupt chunk {key.hex()}: its bytes do not hash to its name; quarantined")


# --------------------------------------------------------------------------- SQLite

# A rowid table, not WITHOUT ROWID: chunks run to 1 MiB and SQLite's advice is to keep
# WITHOUT ROWID for rows well under a page.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    ns    TEXT NOT NULL,
    key   BLOB NOT NULL,
    value BLOB NOT NULL,
    sum   BLOB NOT NULL,
    UNIQUE (ns, key)
);
CREATE TABLE IF NOT EXISTS quarantine (
    ns    TEXT NOT NULL,
    key   BLOB NOT NULL,
    value BLOB,
    sum   BLOB,
    UNIQUE (ns, key)
);
"""

_UPSERT = (
    "INSERT INTO items (ns, key, value, sum) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, sum = excluded.sum"
)
_SELECT = "SELECT value, sum FROM items WHERE ns = ? AND key = ?"
_DELETE = "DELETE FROM items WHERE ns = ? AND key = ?"
_UNQUARANTINE = "DELETE FROM quarantine WHERE ns = ? AND key = ?"
_QUARANTINE = (
    "INSERT OR REPLACE INTO quarantine (ns, key, value, sum) "
    "SELECT ns, key, value, sum FROM items WHERE ns = ? AND key = ?"
)
_KEYS = "SELECT key FROM items WHERE ns = ? ORDER BY key"
_EXISTS = "SELECT 1 FROM items WHERE ns = ? AND key = ?"
_LIST_QUARANTINE = "SELECT ns, key FROM quarantine ORDER BY ns, key"
# length() of a BLOB is read from the record header, without loading the value itself.
_STATS = (
    "SELECT count(*) FILTER (WHERE ns = ?), count(*) FILTER (WHERE ns <> ?), "
    "coalesce(sum(length(value)), 0) FROM items"
)


class SqliteStore:
    """The real store: one SQLite database file in WAL mode, one open write transaction.

    `durability` says what a returned `sync()` survives:

    * ``"process"`` (default) — `synchronous=NORMAL`. A commit appends to the write-ahead
      log through the OS without an fsync: it survives the node process dying (kill -9,
      a crash) but not the machine losing power or the kernel crashing, which may drop the
      last commits (never corrupting the file). Fast: no fsync per sync.
    * ``"power"`` — `synchronous=FULL`. Every commit fsyncs the log, so it also survives a
      power loss, at the price of one fsync per `sync()`.

    Pages torn below SQLite's own level surface as `sqlite3.DatabaseError`; the checksums here
    catch what SQLite cannot see: a value whose bytes changed but whose page is well formed.
    """

    def __init__(self, path: str | os.PathLike[str], durability: Durability = "process") -> None:
        if durability not in ("process", "power"):
            raise ValueError(f"durability is 'process' or 'power', got {durability!r}")
        self.path = Path(path)
        self.durability: Durability = durability
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open and commit the transaction ourselves (group commit).
        # check_same_thread=False lets a trio node run sync() in a worker thread.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._configure(db)
        except BaseException:
            db.close()
            raise
        self._db: sqlite3.Connection | None = db

    @classmethod
    def in_dir(
        cls, directory: str | os.PathLike[str], durability: Durability = "process"
    ) -> SqliteStore:
        """The store of the node whose data dir is `directory` (`DIR/store.sqlite3`)."""
        return cls(Path(directory) / STORE_FILENAME, durability)

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout = 5000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot use WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'power' else 'NORMAL'}")
        # Bounds the log file after checkpoints; without it a burst leaves a large WAL behind.
        db.execute("PRAGMA journal_size_limit = 67108864")
        db.execute("PRAGMA cache_size = -16384")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: store schema {version} is newer than this code's {SCHEMA_VERSION}"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- plumbing

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosedError(f"{self.path}: store is closed")
        return self._db

    def _writer(self) -> sqlite3.Connection:
        db = self._conn()
        if not db.in_transaction:
            db.execute("BEGIN")
        return db

    def _put(self, ns: str, key: bytes, value: bytes) -> None:
        db = self._writer()
        db.execute(_UPSERT, (ns, key, value, checksum(ns, key, value)))
        db.execute(_UNQUARANTINE, (ns, key))

    def _delete(self, ns: str, key: bytes) -> None:
        db = self._writer()
        db.execute(_DELETE, (ns, key))
        db.execute(_UNQUARANTINE, (ns, key))

    def _get(self, ns: str, key: bytes) -> bytes | None:
        row = self._conn().execute(_SELECT, (ns, key)).fetchone()
        if row is None:
            return None
        value, stored_sum = row
        if isinstance(value, bytes) and stored_sum == checksum(ns, key, value):
            return value
        self._quarantine(ns, key)
        raise _corrupt_error(ns, key)

    def _quarantine(self, ns: str, key: bytes) -> None:
        # Part of the open transaction like any write: if the node dies before the next
        # sync the move is undone, and the next read finds and quarantines the item again.
        db = self._writer()
        db.execute(_QUARANTINE, (ns, key))
        db.execute(_DELETE, (ns, key))

    # -- chunks

    def put_chunk(self, name: bytes, value: bytes) -> None:
        self._put(CHUNK_NS, _chunk_name(name), _as_bytes(value, "a chunk"))

    def get_chunk(self, name: bytes) -> bytes | None:
        return self._get(CHUNK_NS, _chunk_name(name))

    def get_chunk_addressed(self, name: bytes) -> bytes | None:
        """The chunk `name` if its bytes hash to `name` (SHA3-256, its address), else None
        when absent; any other value is quarantined and raises `CorruptRecord`.

        For a reader that checks the content address anyway (a node serving a chunk): bytes
        that hash to their name are the bytes the name was made of, which is more than the
        stored checksum can say, so it is not computed as well: one hash per read, not two.
        """
        key = _chunk_name(name)
        row = self._conn().execute(_SELECT, (CHUNK_NS, key)).fetchone()
        if row is None:
            return None
        value = row[0]
        if isinstance(value, bytes) and sha3_256(value) == key:
            return value
        self._quarantine(CHUNK_NS, key)
        raise _misaddressed_error(key)

    def has_chunk(self, name: bytes) -> bool:
        """True only for a chunk that passes its checksum; a corrupt one is quarantined.

        Checking the value, not just the key, is what lets a node that is asked to store a
        chunk it holds a corrupt copy of store it again instead of skipping it as a duplicate.
        """
        try:
            return self.get_chunk(name) is not None
        except CorruptRecord:
            return False

    def contains_chunk(self, name: bytes) -> bool:
        """Is a chunk stored under `name`? A key lookup: the value is neither read nor checked
        (anti-entropy asks this of thousands of chunks; reads check every value)."""
        return self._conn().execute(_EXISTS, (CHUNK_NS, _chunk_name(name))).fetchone() is not None

    def delete_chunk(self, name: bytes) -> None:
        self._delete(CHUNK_NS, _chunk_name(name))

    def chunk_names(self) -> list[bytes]:
        return [k for (k,) in self._conn().execute(_KEYS, (CHUNK_NS,))]

    # -- records

    def put_record(self, ns: str, key: bytes, value: bytes) -> None:
        self._put(_record_ns(ns), _as_bytes(key, "a record key"), _as_bytes(value, "a record"))

    def get_record(self, ns: str, key: bytes) -> bytes | None:
        return self._get(_record_ns(ns), _as_bytes(key, "a record key"))

    def delete_record(self, ns: str, key: bytes) -> None:
        self._delete(_record_ns(ns), _as_bytes(key, "a record key"))

    def record_keys(self, ns: str) -> list[bytes]:
        return [k for (k,) in self._conn().execute(_KEYS, (_record_ns(ns),))]

    # -- the rest

    def quarantined(self) -> list[tuple[str, bytes]]:
        return [(ns, key) for ns, key in self._conn().execute(_LIST_QUARANTINE)]

    def sync(self) -> None:
        db = self._conn()
        if db.in_transaction:
            db.commit()

    def stats(self) -> StoreStats:
        chunks, records, size = self._conn().execute(_STATS, (CHUNK_NS, CHUNK_NS)).fetchone()
        return StoreStats(chunks=chunks, records=records, bytes=size)

    def close(self) -> None:
        """Sync and close; closing twice is harmless."""
        if self._db is None:
            return
        try:
            self.sync()
        finally:
            self._db.close()
            self._db = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else self.durability
        return f"SqliteStore({str(self.path)!r}, {state})"


# --------------------------------------------------------------------------- memory

_Entry = tuple[bytes, bytes]  # (value, checksum)


class _Journaled:
    """A map of namespaces to {key: entry} that remembers how to undo changes since `commit`.

    Reads go straight to the live map; the first change of a key since the last commit
    saves its durable state, so a crash costs only the keys touched since then.
    """

    def __init__(self) -> None:
        self.live: dict[str, dict[bytes, _Entry]] = {}
        # None marks a key that did not exist before the first change since the commit.
        self._undo: dict[tuple[str, bytes], _Entry | None] = {}

    def get(self, ns: str, key: bytes) -> _Entry | None:
        space = self.live.get(ns)
        return None if space is None else space.get(key)

    def _remember(self, ns: str, key: bytes) -> None:
        if (ns, key) not in self._undo:
            self._undo[(ns, key)] = self.get(ns, key)

    def set(self, ns: str, key: bytes, entry: _Entry) -> None:
        self._remember(ns, key)
        self.live.setdefault(ns, {})[key] = entry

    def delete(self, ns: str, key: bytes) -> None:
        space = self.live.get(ns)
        if space is None or key not in space:
            return
        self._remember(ns, key)
        del space[key]

    def replace_live(self, ns: str, key: bytes, entry: _Entry) -> None:
        """Change a stored entry below the journal, as a disk fault does.

        A saved undo state is left alone: damage to a write that was never committed goes
        with it on a crash, as it does in SQLite's log.
        """
        self.live[ns][key] = entry

    def commit(self) -> None:
        self._undo.clear()

    def rollback(self) -> None:
        for (ns, key), old in self._undo.items():
            if old is None:
                self.live.get(ns, {}).pop(key, None)
            else:
                self.live.setdefault(ns, {})[key] = old
        self._undo.clear()

    def keys(self, ns: str) -> list[bytes]:
        return sorted(self.live.get(ns, ()))

    def clear(self) -> None:
        self.live.clear()
        self._undo.clear()


class MemoryStore:
    """A store in memory with the same contract as `SqliteStore`, for the simulator.

    The durable state is what the last `sync()` left; writes since then form a volatile
    overlay. The simulator's faults:

    * `crash(lose_unsynced=True)` — the node died: the overlay is lost (with
      `lose_unsynced=False`, it happened to reach the disk and is kept).
    * `corrupt(ns, key)` — flip a byte of a stored value (ns "chunk" for chunks), so the
      checksum and quarantine paths run in simulation too.
    * `wipe()` — the disk is lost: everything goes.

    After any of them, and after `reopen()`, the store serves a restarted node again.
    """

    def __init__(self) -> None:
        self._items = _Journaled()
        self._quarantine = _Journaled()
        self._closed = False

    # -- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("memory store is closed")

    def _put(self, ns: str, key: bytes, value: bytes) -> None:
        self._check_open()
        self._items.set(ns, key, (value, checksum(ns, key, value)))
        self._quarantine.delete(ns, key)

    def _delete(self, ns: str, key: bytes) -> None:
        self._check_open()
        self._items.delete(ns, key)
        self._quarantine.delete(ns, key)

    def _get(self, ns: str, key: bytes) -> bytes | None:
        self._check_open()
        entry = self._items.get(ns, key)
        if entry is None:
            return None
        value, stored_sum = entry
        if stored_sum == checksum(ns, key, value):
            return value
        self._quarantine.set(ns, key, entry)
        self._items.delete(ns, key)
        raise _corrupt_error(ns, key)

    # -- chunks

    def put_chunk(self, name: bytes, value: bytes) -> None:
        self._put(CHUNK_NS, _chunk_name(name), _as_bytes(value, "a chunk"))

    def get_chunk(self, name: bytes) -> bytes | None:
        return self._get(CHUNK_NS, _chunk_name(name))

    def get_chunk_addressed(self, name: bytes) -> bytes | None:
        """As `SqliteStore.get_chunk_addressed`: checked by its address, not its checksum."""
        self._check_open()
        key = _chunk_name(name)
        entry = self._items.get(CHUNK_NS, key)
        if entry is None:
            return None
        if sha3_256(entry[0]) == key:
            return entry[0]
        self._quarantine.set(CHUNK_NS, key, entry)
        self._items.delete(CHUNK_NS, key)
        raise _misaddressed_error(key)

    def has_chunk(self, name: bytes) -> bool:
        """True only for a chunk that passes its checksum; a corrupt one is quarantined."""
        try:
            return self.get_chunk(name) is not None
        except CorruptRecord:
            return False

    def contains_chunk(self, name: bytes) -> bool:
        self._check_open()
        return self._items.get(CHUNK_NS, _chunk_name(name)) is not None

    def delete_chunk(self, name: bytes) -> None:
        self._delete(CHUNK_NS, _chunk_name(name))

    def chunk_names(self) -> list[bytes]:
        self._check_open()
        return self._items.keys(CHUNK_NS)

    # -- records

    def put_record(self, ns: str, key: bytes, value: bytes) -> None:
        self._put(_record_ns(ns), _as_bytes(key, "a record key"), _as_bytes(value, "a record"))

    def get_record(self, ns: str, key: bytes) -> bytes | None:
        return self._get(_record_ns(ns), _as_bytes(key, "a record key"))

    def delete_record(self, ns: str, key: bytes) -> None:
        self._delete(_record_ns(ns), _as_bytes(key, "a record key"))

    def record_keys(self, ns: str) -> list[bytes]:
        ns = _record_ns(ns)
        self._check_open()
        return self._items.keys(ns)

    # -- the rest

    def quarantined(self) -> list[tuple[str, bytes]]:
        self._check_open()
        return sorted((ns, key) for ns, space in self._quarantine.live.items() for key in space)

    def sync(self) -> None:
        self._check_open()
        self._items.commit()
        self._quarantine.commit()

    def stats(self) -> StoreStats:
        self._check_open()
        chunks = records = size = 0
        for ns, space in self._items.live.items():
            if ns == CHUNK_NS:
                chunks += len(space)
            else:
                records += len(space)
            size += sum(len(value) for value, _ in space.values())
        return StoreStats(chunks=chunks, records=records, bytes=size)

    def close(self) -> None:
        """Sync and close; closing twice is harmless."""
        if not self._closed:
            self.sync()
            self._closed = True

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the simulator's faults

    def crash(self, lose_unsynced: bool = True) -> None:
        """The node died; unless `lose_unsynced` is False, writes since `sync()` are gone."""
        if lose_unsynced:
            self._items.rollback()
            self._quarantine.rollback()
        else:
            self._items.commit()
            self._quarantine.commit()
        self._closed = False

    def corrupt(self, ns: str, key: bytes) -> None:
        """Flip one byte of a stored value (the checksum when the value is empty).

        Raises KeyError when nothing is stored under (ns, key).
        """
        key = _as_bytes(key, "a key")
        entry = self._items.get(ns, key)
        if entry is None:
            raise KeyError(f"nothing stored as {_describe(ns, key)}")
        value, stored_sum = entry
        if value:
            at = len(value) // 2
            value = value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]
        else:
            stored_sum = bytes([stored_sum[0] ^ 0x01]) + stored_sum[1:]
        self._items.replace_live(ns, key, (value, stored_sum))

    def wipe(self) -> None:
        """The disk is lost: every chunk, record and quarantined item, synced or not."""
        self._items.clear()
        self._quarantine.clear()
        self._closed = False

    def reopen(self) -> MemoryStore:
        """Serve again after `close()`, as a restarted node finds its disk."""
        self._closed = False
        return self

    def __repr__(self) -> str:
        if self._closed:
            return "MemoryStore(closed)"
        s = self.stats()
        return f"MemoryStore({s.chunks} chunks, {s.records} records)"
