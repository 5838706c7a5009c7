"""Tests of the vault store: one behaviour suite run over `MemoryStore` and `SqliteStore`, a
state machine against a dict model, a real kill -9 of a writing process, and bit flips made
in the SQLite file behind the store's back.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from node.errors import CorruptRecord
from node.store import (
    CHUNK_NS,
    STORE_FILENAME,
    Durability,
    MemoryStore,
    SqliteStore,
    Store,
    StoreClosedError,
    StoreStats,
    checksum,
)
from node.xorname import XorName

NAME_A = bytes([0xA0]) * 32
NAME_B = bytes([0xB0]) * 32
NAME_C = bytes([0xC0]) * 32


# ------------------------------------------------------------------------ harnesses
#
# What differs between the two stores is how a test reopens, crashes or damages one; the
# harness hides that, so every behaviour test below runs unchanged over both.


class MemoryHarness:
    kind = "memory"

    def __init__(self) -> None:
        self.stores: list[Store] = []

    def open(self) -> MemoryStore:
        store = MemoryStore()
        self.stores.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, MemoryStore)
        store.close()
        return store.reopen()

    def crash(self, store: Store) -> Store:
        assert isinstance(store, MemoryStore)
        store.crash()
        return store

    def corrupt(self, store: Store, ns: str, key: bytes) -> None:
        """Damage a stored value on 'disk'; synced first, as the SQLite harness must."""
        assert isinstance(store, MemoryStore)
        store.sync()
        store.corrupt(ns, key)

    def close_all(self) -> None:
        for store in self.stores:
            store.close()


class SqliteHarness:
    kind = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stores: list[SqliteStore] = []
        self._dirs = itertools.count()

    def _open_at(self, path: Path) -> SqliteStore:
        store = SqliteStore(path)
        self.stores.append(store)
        return store

    def open(self) -> SqliteStore:
        return self._open_at(self.root / f"node{next(self._dirs)}" / STORE_FILENAME)

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        store.close()
        return self._open_at(store.path)

    def crash(self, store: Store) -> Store:
        """Open a copy of the files exactly as a kill -9 would leave them right now.

        The database and its write-ahead log are copied while the store still holds its
        open transaction; the shared-memory index is not, so opening the copy runs SQLite's
        recovery, which keeps committed frames only, just as after a real crash.
        """
        assert isinstance(store, SqliteStore)
        target = self.root / f"node{next(self._dirs)}" / STORE_FILENAME
        target.parent.mkdir(parents=True)
        for suffix in ("", "-wal"):
            src = Path(str(store.path) + suffix)
            if src.exists():
                shutil.copyfile(src, str(target) + suffix)
        store.close()  # the abandoned original; its closing commit lands in the old file
        return self._open_at(target)

    def corrupt(self, store: Store, ns: str, key: bytes) -> None:
        """Flip a byte of the stored value (of the sum if the value is empty) with plain SQL."""
        assert isinstance(store, SqliteStore)
        store.sync()  # a second connection cannot write while the store holds its transaction
        flip_in_file(store.path, ns, key)

    def close_all(self) -> None:
        for store in self.stores:
            store.close()


Harness = MemoryHarness | SqliteHarness


def flip_byte(data: bytes, at: int | None = None) -> bytes:
    at = len(data) // 2 if at is None else at
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def flip_in_file(path: Path, ns: str, key: bytes, column: str = "value") -> None:
    with closing(sqlite3.connect(path)) as db, db:
        value, stored_sum = db.execute(
            "SELECT value, sum FROM items WHERE ns = ? AND key = ?", (ns, key)
        ).fetchone()
        if column == "value" and value:
            db.execute(
                "UPDATE items SET value = ? WHERE ns = ? AND key = ?", (flip_byte(value), ns, key)
            )
        else:
            db.execute(
                "UPDATE items SET sum = ? WHERE ns = ? AND key = ?",
                (flip_byte(stored_sum), ns, key),
            )


def make_harness(kind: str, root: Path) -> Harness:
    return MemoryHarness() if kind == "memory" else SqliteHarness(root)


@pytest.fixture(params=["memory", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    h = make_harness(request.param, tmp_path)
    try:
        yield h
    finally:
        h.close_all()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.open()


# ------------------------------------------------------------ the shared behaviour suite


def test_both_classes_satisfy_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_put_get_chunk_and_record(store: Store) -> None:
    store.put_chunk(NAME_A, b"chunk bytes")
    store.put_record("md", b"k1", b"state")
    assert store.get_chunk(NAME_A) == b"chunk bytes"
    assert store.has_chunk(NAME_A)
    assert store.get_record("md", b"k1") == b"state"


def test_missing_items_read_as_none(store: Store) -> None:
    assert store.get_chunk(NAME_A) is None
    assert not store.has_chunk(NAME_A)
    assert store.get_record("md", b"nope") is None
    assert store.chunk_names() == []
    assert store.record_keys("md") == []


def test_empty_values_are_stored(store: Store) -> None:
    store.put_chunk(NAME_A, b"")
    store.put_record("md", b"", b"")
    assert store.get_chunk(NAME_A) == b""
    assert store.get_record("md", b"") == b""
    assert store.record_keys("md") == [b""]


def test_overwrite_replaces(store: Store) -> None:
    store.put_record("md", b"k", b"one")
    store.put_record("md", b"k", b"two!")
    store.put_chunk(NAME_A, b"x")
    store.put_chunk(NAME_A, b"y")
    assert store.get_record("md", b"k") == b"two!"
    assert store.get_chunk(NAME_A) == b"y"
    assert store.stats() == StoreStats(chunks=1, records=1, bytes=5)


def test_delete_and_delete_of_missing(store: Store) -> None:
    store.put_record("md", b"k", b"v")
    store.put_chunk(NAME_A, b"c")
    store.delete_record("md", b"k")
    store.delete_chunk(NAME_A)
    store.delete_record("md", b"never")
    store.delete_chunk(NAME_B)
    assert store.get_record("md", b"k") is None
    assert store.get_chunk(NAME_A) is None
    assert store.stats() == StoreStats(chunks=0, records=0, bytes=0)


def test_listing_is_sorted_and_namespaces_are_separate(store: Store) -> None:
    for key in (b"\xff", b"\x00\x01", b"\x00", b"m"):
        store.put_record("md", key, b"v")
    store.put_record("meta", b"only-meta", b"v")
    for name in (NAME_C, NAME_A, NAME_B):
        store.put_chunk(name, b"c")
    assert store.record_keys("md") == [b"\x00", b"\x00\x01", b"m", b"\xff"]
    assert store.record_keys("meta") == [b"only-meta"]
    assert store.get_record("meta", b"m") is None
    assert store.chunk_names() == [NAME_A, NAME_B, NAME_C]


def test_keys_come_back_as_plain_bytes(store: Store) -> None:
    store.put_chunk(XorName(NAME_A), b"c")
    store.put_record("md", XorName(NAME_B), b"v")
    assert [type(n) for n in store.chunk_names()] == [bytes]
    assert [type(k) for k in store.record_keys("md")] == [bytes]


def test_stats_count_payload_bytes(store: Store) -> None:
    store.put_chunk(NAME_A, b"a" * 100)
    store.put_chunk(NAME_B, b"b" * 50)
    store.put_record("md", b"k", b"r" * 7)
    store.put_record("meta", b"k", b"m" * 3)
    assert store.stats() == StoreStats(chunks=2, records=2, bytes=160)


def test_reads_see_unsynced_writes(store: Store) -> None:
    store.put_record("md", b"k", b"v")
    store.put_chunk(NAME_A, b"c")
    assert store.get_record("md", b"k") == b"v"
    assert store.record_keys("md") == [b"k"]
    store.delete_record("md", b"k")
    assert store.get_record("md", b"k") is None
    assert store.stats() == StoreStats(chunks=1, records=0, bytes=1)


def test_crash_drops_only_unsynced_writes(harness: Harness, store: Store) -> None:
    store.put_record("md", b"kept", b"old")
    store.put_record("md", b"deleted-later", b"d")
    store.put_chunk(NAME_A, b"synced chunk")
    store.sync()
    store.put_record("md", b"kept", b"new")
    store.put_record("md", b"unsynced", b"u")
    store.delete_record("md", b"deleted-later")
    store.put_chunk(NAME_B, b"unsynced chunk")
    store.delete_chunk(NAME_A)

    store = harness.crash(store)

    assert store.get_record("md", b"kept") == b"old"
    assert store.get_record("md", b"unsynced") is None
    assert store.get_record("md", b"deleted-later") == b"d"
    assert store.chunk_names() == [NAME_A]
    assert store.get_chunk(NAME_A) == b"synced chunk"


def test_crash_after_sync_loses_nothing(harness: Harness, store: Store) -> None:
    for i in range(50):
        store.put_record("md", i.to_bytes(2, "big"), bytes([i]) * i)
    store.sync()
    store = harness.crash(store)
    assert [store.get_record("md", i.to_bytes(2, "big")) for i in range(50)] == [
        bytes([i]) * i for i in range(50)
    ]


def test_close_syncs(harness: Harness, store: Store) -> None:
    store.put_record("md", b"k", b"v")
    store.put_chunk(NAME_A, b"c")
    store = harness.reopen(store)
    assert store.get_record("md", b"k") == b"v"
    assert store.get_chunk(NAME_A) == b"c"


def test_use_after_close_is_refused_and_close_is_idempotent(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreClosedError):
        store.get_record("md", b"k")
    with pytest.raises(StoreClosedError):
        store.put_chunk(NAME_A, b"c")
    with pytest.raises(StoreClosedError):
        store.sync()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.put_chunk(b"short", b"v"), ValueError),
        (lambda s: s.get_chunk(b"x" * 33), ValueError),
        (lambda s: s.put_record(CHUNK_NS, b"k", b"v"), ValueError),
        (lambda s: s.put_record("", b"k", b"v"), ValueError),
        (lambda s: s.put_record("n" * 65, b"k", b"v"), ValueError),
        (lambda s: s.put_record(b"md", b"k", b"v"), TypeError),
        (lambda s: s.put_record("md", "k", b"v"), TypeError),
        (lambda s: s.put_record("md", b"k", "v"), TypeError),
        (lambda s: s.record_keys(CHUNK_NS), ValueError),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(store: Store, call, error) -> None:
    with pytest.raises(error):
        call(store)
    assert store.stats() == StoreStats(chunks=0, records=0, bytes=0)


def test_corrupt_record_is_quarantined_then_none(harness: Harness, store: Store) -> None:
    store.put_record("md", b"\x01\x02", b"consensus state")
    store.put_record("md", b"other", b"fine")
    harness.corrupt(store, "md", b"\x01\x02")

    with pytest.raises(CorruptRecord, match="md/0102"):
        store.get_record("md", b"\x01\x02")

    assert store.quarantined() == [("md", b"\x01\x02")]
    assert store.get_record("md", b"\x01\x02") is None
    assert store.record_keys("md") == [b"other"]
    assert store.stats() == StoreStats(chunks=0, records=1, bytes=4)
    assert store.get_record("md", b"other") == b"fine"


def test_corrupt_chunk_is_not_had(harness: Harness, store: Store) -> None:
    store.put_chunk(NAME_A, b"chunk " * 100)
    harness.corrupt(store, CHUNK_NS, NAME_A)
    assert not store.has_chunk(NAME_A)
    assert store.quarantined() == [(CHUNK_NS, NAME_A)]
    assert store.get_chunk(NAME_A) is None
    assert store.chunk_names() == []


def test_corrupt_empty_value_is_caught(harness: Harness, store: Store) -> None:
    store.put_record("md", b"k", b"")
    harness.corrupt(store, "md", b"k")
    with pytest.raises(CorruptRecord):
        store.get_record("md", b"k")


def test_put_after_quarantine_replaces_cleanly(harness: Harness, store: Store) -> None:
    store.put_chunk(NAME_A, b"original")
    harness.corrupt(store, CHUNK_NS, NAME_A)
    with pytest.raises(CorruptRecord, match=NAME_A.hex()):
        store.get_chunk(NAME_A)
    store.put_chunk(NAME_A, b"original")
    assert store.get_chunk(NAME_A) == b"original"
    assert store.quarantined() == []
    store = harness.reopen(store)
    assert store.get_chunk(NAME_A) == b"original"
    assert store.quarantined() == []


def test_delete_clears_quarantine(harness: Harness, store: Store) -> None:
    store.put_record("md", b"k", b"v")
    harness.corrupt(store, "md", b"k")
    assert not _reads_ok(store, "md", b"k")
    store.delete_record("md", b"k")
    assert store.quarantined() == []


def test_quarantine_is_durable_once_synced(harness: Harness, store: Store) -> None:
    store.put_record("md", b"k", b"v")
    harness.corrupt(store, "md", b"k")
    assert not _reads_ok(store, "md", b"k")
    store = harness.reopen(store)
    assert store.quarantined() == [("md", b"k")]
    assert store.get_record("md", b"k") is None


def test_unsynced_quarantine_is_redone_after_a_crash(harness: Harness, store: Store) -> None:
    # The move to quarantine is an ordinary write: a crash may undo it, but then the next
    # read finds the damage again; the corrupt bytes are never served either way.
    store.put_record("md", b"k", b"v")
    harness.corrupt(store, "md", b"k")
    assert not _reads_ok(store, "md", b"k")
    store = harness.crash(store)
    assert store.quarantined() == []
    with pytest.raises(CorruptRecord):
        store.get_record("md", b"k")
    assert store.quarantined() == [("md", b"k")]


def _reads_ok(store: Store, ns: str, key: bytes) -> bool:
    try:
        store.get_record(ns, key)
    except CorruptRecord:
        return False
    return True


# ------------------------------------------------------------------ MemoryStore's extras


def test_memory_crash_keeping_unsynced_writes() -> None:
    store = MemoryStore()
    store.put_record("md", b"k", b"v")
    store.crash(lose_unsynced=False)
    store.crash()
    assert store.get_record("md", b"k") == b"v"


def test_memory_wipe_loses_everything() -> None:
    store = MemoryStore()
    store.put_chunk(NAME_A, b"c")
    store.put_record("md", b"bad", b"v")
    store.corrupt("md", b"bad")
    assert not _reads_ok(store, "md", b"bad")
    store.sync()
    store.put_record("md", b"unsynced", b"v")
    store.wipe()
    assert store.stats() == StoreStats(chunks=0, records=0, bytes=0)
    assert store.quarantined() == []
    store.crash()
    assert store.stats() == StoreStats(chunks=0, records=0, bytes=0)


def test_memory_corrupt_of_missing_item_raises_key_error() -> None:
    with pytest.raises(KeyError):
        MemoryStore().corrupt("md", b"absent")


def test_memory_corrupt_of_unsynced_write_goes_with_it_on_crash() -> None:
    store = MemoryStore()
    store.put_record("md", b"k", b"durable")
    store.sync()
    store.put_record("md", b"k", b"pending")
    store.corrupt("md", b"k")
    store.crash()
    assert store.get_record("md", b"k") == b"durable"


# ------------------------------------------------------------------- the checksum itself


@given(
    st.text(min_size=1, max_size=8),
    st.binary(max_size=8),
    st.binary(max_size=8),
    st.integers(min_value=0, max_value=16),
)
def test_checksum_binds_the_split_between_ns_key_and_value(
    ns: str, key: bytes, value: bytes, shift: int
) -> None:
    # Moving bytes across the ns/key or key/value boundary must change the sum.
    joined = key + value
    at = shift % (len(joined) + 1)
    if at != len(key):
        assert checksum(ns, key, value) != checksum(ns, joined[:at], joined[at:])
    raw_ns = ns.encode()
    if key:
        moved = (raw_ns + key[:1]).decode(errors="ignore")
        if moved.encode() == raw_ns + key[:1]:
            assert checksum(ns, key, value) != checksum(moved, key[1:], value)


# ------------------------------------------------------- state machine against a dict model

chunk_names = st.sampled_from([NAME_A, NAME_B, NAME_C])
namespaces = st.sampled_from(["md", "meta"])
record_keys = st.sampled_from([b"", b"k1", b"k2", b"\x00" * 32])
values = st.binary(max_size=40)

Key = tuple[str, bytes]

# The model checks logic, not the disk: on tmpfs its thousands of store files and closing
# checkpoints cost no fsyncs, which on a busy disk would make it the slowest test by far.
_RAM_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class StoreModel(RuleBasedStateMachine):
    """Drives a store and a model side by side; the model is dicts of (value, intact).

    `live` is what reads see, `durable` what survives a crash; the quarantine set is kept
    the same way, since moving an item to quarantine is itself a write.
    """

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(dir=_RAM_DIR)
        self.harness = make_harness(self.kind, Path(self._tmp.name))
        self.store: Store = self.harness.open()
        self.live: dict[Key, tuple[bytes, bool]] = {}
        self.durable: dict[Key, tuple[bytes, bool]] = {}
        self.live_q: set[Key] = set()
        self.durable_q: set[Key] = set()

    def teardown(self) -> None:
        self.harness.close_all()
        self._tmp.cleanup()

    @initialize()
    def start_empty(self) -> None:
        assert self.store.stats() == StoreStats(0, 0, 0)

    def _put(self, k: Key, value: bytes) -> None:
        self.live[k] = (value, True)
        self.live_q.discard(k)

    def _delete(self, k: Key) -> None:
        self.live.pop(k, None)
        self.live_q.discard(k)

    def _read(self, k: Key) -> bytes | None:
        if k not in self.live:
            return None
        value, intact = self.live[k]
        if intact:
            return value
        del self.live[k]
        self.live_q.add(k)
        raise CorruptRecord("expected")

    @rule(name=chunk_names, value=values)
    def put_chunk(self, name: bytes, value: bytes) -> None:
        self.store.put_chunk(name, value)
        self._put((CHUNK_NS, name), value)

    @rule(ns=namespaces, key=record_keys, value=values)
    def put_record(self, ns: str, key: bytes, value: bytes) -> None:
        self.store.put_record(ns, key, value)
        self._put((ns, key), value)

    @rule(name=chunk_names)
    def delete_chunk(self, name: bytes) -> None:
        self.store.delete_chunk(name)
        self._delete((CHUNK_NS, name))

    @rule(ns=namespaces, key=record_keys)
    def delete_record(self, ns: str, key: bytes) -> None:
        self.store.delete_record(ns, key)
        self._delete((ns, key))

    @rule(name=chunk_names)
    def get_chunk(self, name: bytes) -> None:
        self._check_read((CHUNK_NS, name), lambda: self.store.get_chunk(name))

    @rule(ns=namespaces, key=record_keys)
    def get_record(self, ns: str, key: bytes) -> None:
        self._check_read((ns, key), lambda: self.store.get_record(ns, key))

    @rule(name=chunk_names)
    def has_chunk(self, name: bytes) -> None:
        k = (CHUNK_NS, name)
        try:
            expected = self._read(k) is not None
        except CorruptRecord:
            expected = False
        assert self.store.has_chunk(name) == expected

    def _check_read(self, k: Key, read: Callable[[], bytes | None]) -> None:
        try:
            expected = self._read(k)
        except CorruptRecord:
            with pytest.raises(CorruptRecord):
                read()
            return
        assert read() == expected

    @rule()
    def sync(self) -> None:
        self.store.sync()
        self.durable = dict(self.live)
        self.durable_q = set(self.live_q)

    @rule()
    def crash(self) -> None:
        self.store = self.harness.crash(self.store)
        self.live = dict(self.durable)
        self.live_q = set(self.durable_q)

    @rule()
    def reopen(self) -> None:
        self.store = self.harness.reopen(self.store)
        self.sync()

    @precondition(lambda self: any(intact for _, intact in self.live.values()))
    @rule(data=st.data())
    def corrupt(self, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from(sorted(k for k, (_, ok) in self.live.items() if ok)))
        self.harness.corrupt(self.store, *k)
        self.sync()
        value, _ = self.live[k]
        self.live[k] = self.durable[k] = (value, False)

    @invariant()
    def listings_and_stats_match(self) -> None:
        assert self.store.chunk_names() == sorted(k for ns, k in self.live if ns == CHUNK_NS)
        for ns in ("md", "meta"):
            assert self.store.record_keys(ns) == sorted(k for n, k in self.live if n == ns)
        chunks = sum(1 for ns, _ in self.live if ns == CHUNK_NS)
        size = sum(len(v) for v, _ in self.live.values())
        assert self.store.stats() == StoreStats(chunks, len(self.live) - chunks, size)
        assert self.store.quarantined() == sorted(self.live_q)


class SqliteStoreModel(StoreModel):
    kind = "sqlite"


TestMemoryStoreModel = StoreModel.TestCase
TestMemoryStoreModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestSqliteStoreModel = SqliteStoreModel.TestCase
TestSqliteStoreModel.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- SQLite on its own


def test_sqlite_uses_wal_and_creates_its_file(tmp_path: Path) -> None:
    with SqliteStore.in_dir(tmp_path / "node") as store:
        store.put_record("md", b"k", b"v")
    path = tmp_path / "node" / STORE_FILENAME
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(("durability", "synchronous"), [("process", 1), ("power", 2)])
def test_sqlite_durability_modes(tmp_path: Path, durability: Durability, synchronous: int) -> None:
    with SqliteStore(tmp_path / "s.sqlite3", durability) as store:
        # synchronous is a per-connection setting, visible only on the store's own connection.
        assert store._conn().execute("PRAGMA synchronous").fetchone() == (synchronous,)
        store.put_record("md", b"k", b"v")
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        assert store.get_record("md", b"k") == b"v"


def test_sqlite_refuses_unknown_durability_and_newer_schema(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteStore(tmp_path / "s.sqlite3", "fast")  # type: ignore[arg-type]
    with closing(sqlite3.connect(tmp_path / "t.sqlite3")) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ValueError, match="newer"):
        SqliteStore(tmp_path / "t.sqlite3")


# ------------------------------------------------------------------------- bit flips


def _filled_store(path: Path) -> None:
    with SqliteStore(path) as store:
        store.put_record("md", b"victim", b"promised ballot 7")
        store.put_record("md", b"bystander", b"accepted ballot 3")
        store.put_chunk(NAME_A, bytes(range(256)) * 16)
        store.put_chunk(NAME_B, b"another chunk")


@pytest.mark.parametrize("column", ["value", "sum"])
def test_bit_flip_in_record_file(tmp_path: Path, column: str) -> None:
    path = tmp_path / STORE_FILENAME
    _filled_store(path)
    flip_in_file(path, "md", b"victim", column)

    with SqliteStore(path) as store:
        with pytest.raises(CorruptRecord, match="md/" + b"victim".hex()):
            store.get_record("md", b"victim")
        assert store.quarantined() == [("md", b"victim")]
        assert store.get_record("md", b"victim") is None
        assert store.get_record("md", b"bystander") == b"accepted ballot 3"
    with SqliteStore(path) as store:
        assert store.quarantined() == [("md", b"victim")]
        assert store.get_record("md", b"victim") is None


@pytest.mark.parametrize("column", ["value", "sum"])
def test_bit_flip_in_chunk_file(tmp_path: Path, column: str) -> None:
    path = tmp_path / STORE_FILENAME
    _filled_store(path)
    flip_in_file(path, CHUNK_NS, NAME_A, column)

    with SqliteStore(path) as store:
        with pytest.raises(CorruptRecord, match=NAME_A.hex()):
            store.get_chunk(NAME_A)
        assert store.quarantined() == [(CHUNK_NS, NAME_A)]
        assert store.get_chunk(NAME_A) is None
        assert not store.has_chunk(NAME_A)
        assert store.get_chunk(NAME_B) == b"another chunk"
        store.put_chunk(NAME_A, bytes(range(256)) * 16)
        assert store.get_chunk(NAME_A) == bytes(range(256)) * 16
        assert store.quarantined() == []


def _swap_in_file(path: Path, ns: str, key1: bytes, key2: bytes) -> None:
    """Exchange two stored values together with their sums, as a misdirected write might."""
    with closing(sqlite3.connect(path)) as db, db:
        rows = {
            key: (value, sum_)
            for key, value, sum_ in db.execute(
                "SELECT key, value, sum FROM items WHERE ns = ? AND key IN (?, ?)",
                (ns, key1, key2),
            )
        }
        for key, other in ((key1, key2), (key2, key1)):
            db.execute(
                "UPDATE items SET value = ?, sum = ? WHERE ns = ? AND key = ?",
                (*rows[other], ns, key),
            )


@pytest.mark.parametrize(
    ("ns", "key1", "key2"),
    [("md", b"ballot-1", b"ballot-2"), (CHUNK_NS, NAME_A, NAME_B)],
)
def test_values_swapped_between_keys_are_caught(
    tmp_path: Path, ns: str, key1: bytes, key2: bytes
) -> None:
    # Keys of equal length, so only the key's own bytes in the sum can tell them apart.
    path = tmp_path / STORE_FILENAME
    _filled_store(path)
    with SqliteStore(path) as store:
        store.put_record("md", b"ballot-1", b"promised 4")
        store.put_record("md", b"ballot-2", b"accepted 2")
    _swap_in_file(path, ns, key1, key2)

    with SqliteStore(path) as store:
        read = store.get_chunk if ns == CHUNK_NS else lambda k: store.get_record(ns, k)
        for key in (key1, key2):
            with pytest.raises(CorruptRecord):
                read(key)
            assert read(key) is None
        assert store.quarantined() == [(ns, key1), (ns, key2)]


# ---------------------------------------------------------------------------- kill -9

# Shared by the writer process and the test, so both agree on what record n holds.
_WRITER_COMMON = """
import hashlib

BATCH = 5


def record_value(n: int) -> bytes:
    return hashlib.sha3_256(n.to_bytes(8, "big")).digest() * (1 + n % 7)


def chunk_name(n: int) -> bytes:
    return hashlib.sha3_256(b"chunk" + n.to_bytes(8, "big")).digest()


def chunk_value(n: int) -> bytes:
    return record_value(n) * (64 + n % 200)
"""

_WRITER_MAIN = """
import sys

from node.store import SqliteStore

store = SqliteStore(sys.argv[1], sys.argv[2])
n = len(store.record_keys("t"))  # a restarted writer continues where the last one stopped
while True:
    # Group commit: a batch of writes, one sync, then the acknowledgement.
    for _ in range(BATCH):
        store.put_record("t", n.to_bytes(8, "big"), record_value(n))
        if n % 4 == 0:
            store.put_chunk(chunk_name(n), chunk_value(n))
        n += 1
    store.sync()
    print(f"ack {n}", flush=True)
"""

ACKS_PER_ROUND = 150
ROUNDS = 3


async def _write_until_killed(script: Path, path: Path, durability: str, log: Path) -> int:
    """Run one writer, SIGKILL it after ACKS_PER_ROUND acks; the highest n acknowledged."""
    with log.open("ab") as stderr:
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(script), str(path), durability],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        buffer = b""
        acks: list[int] = []
        with trio.fail_after(60):
            while len(acks) < ACKS_PER_ROUND:
                data = await proc.stdout.receive_some(65536)
                if not data:
                    pytest.fail(f"writer exited early:\n{log.read_text()}")
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                acks.extend(int(line.split()[1]) for line in lines)
        proc.kill()  # SIGKILL, with the writer in the middle of its next batch
        await proc.wait()
        assert proc.returncode == -9
        return acks[-1]
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_acknowledged_writes_survive_kill_9(tmp_path: Path, durability: str) -> None:
    common: dict[str, Any] = {}
    exec(_WRITER_COMMON, common)
    batch: int = common["BATCH"]
    record_value: Callable[[int], bytes] = common["record_value"]
    chunk_name: Callable[[int], bytes] = common["chunk_name"]
    chunk_value: Callable[[int], bytes] = common["chunk_value"]
    script = tmp_path / "writer.py"
    script.write_text(_WRITER_COMMON + _WRITER_MAIN)
    path = tmp_path / "node" / STORE_FILENAME

    acked = 0
    for _ in range(ROUNDS):
        acked = await _write_until_killed(script, path, durability, tmp_path / "writer.log")
        with SqliteStore(path) as store:
            keys = store.record_keys("t")
            present = len(keys)
            # Commits are atomic: what survives is exactly the first `present` records, a
            # whole number of batches, and it includes everything acknowledged.
            assert keys == [n.to_bytes(8, "big") for n in range(present)]
            assert present >= acked
            assert present % batch == 0
            for n in range(present):
                assert store.get_record("t", n.to_bytes(8, "big")) == record_value(n)
                if n % 4 == 0:
                    assert store.get_chunk(chunk_name(n)) == chunk_value(n)
            assert len(store.chunk_names()) == (present + 3) // 4
            assert store.quarantined() == []
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert acked >= ROUNDS * ACKS_PER_ROUND * batch


@pytest.mark.parametrize("make", ["sqlite", "memory"])
def test_contains_chunk_is_a_key_lookup(make, tmp_path):
    from node.store import MemoryStore, SqliteStore

    store = SqliteStore(tmp_path / "s.sqlite3") if make == "sqlite" else MemoryStore()
    name = bytes(range(32))
    assert not store.contains_chunk(name)
    store.put_chunk(name, b"value")
    assert store.contains_chunk(name)
    store.delete_chunk(name)
    assert not store.contains_chunk(name)
    store.close()
