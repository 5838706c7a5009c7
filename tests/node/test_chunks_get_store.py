"""A node serving a chunk checks it once, by its address: `Store.get_chunk_addressed`.

The store keeps a checksum beside every value, but a chunk's name is already the SHA3-256 of
its bytes, which says more: bytes that hash to the name are the bytes the name was made of.
So the get path reads a chunk and hashes it once, and whatever does not hash to its name is
quarantined and never served, whether the checksum would have caught it (a flipped bit) or
not (a value stored under another chunk's name, with a checksum made for it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.localnet import LocalNetwork
from node.errors import CorruptRecord
from node.store import CHUNK_NS, MemoryStore, SqliteStore, Store
from node.xorname import sha3_256

VALUE = b"a chunk as a client stored it " * 8
NAME = sha3_256(VALUE)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = SqliteStore(tmp_path / "store.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield made
    made.close()


def flip_stored_byte(store: Store, name: bytes, at: int) -> None:
    """Damage the stored value as a disk would: one byte changed, the checksum left alone."""
    if isinstance(store, MemoryStore):
        value, stored_sum = store._items.get(CHUNK_NS, name)  # the test reaches into the disk
        changed = value[:at] + bytes([value[at] ^ 0x5A]) + value[at + 1:]
        store._items.set(CHUNK_NS, name, (changed, stored_sum))
        return
    assert isinstance(store, SqliteStore)
    store.sync()
    with sqlite3.connect(store.path) as db:
        (value,) = db.execute("SELECT value FROM items WHERE ns = ? AND key = ?", (CHUNK_NS, name)).fetchone()
        changed = value[:at] + bytes([value[at] ^ 0x5A]) + value[at + 1:]
        db.execute("UPDATE items SET value = ? WHERE ns = ? AND key = ?", (changed, CHUNK_NS, name))


def test_an_intact_chunk_is_read_and_an_absent_one_is_none(store: Store) -> None:
    store.put_chunk(NAME, VALUE)
    assert store.get_chunk_addressed(NAME) == VALUE
    assert store.get_chunk_addressed(sha3_256(b"never stored")) is None
    assert store.quarantined() == []


def test_a_damaged_chunk_is_quarantined_and_never_served(store: Store) -> None:
    store.put_chunk(NAME, VALUE)
    flip_stored_byte(store, NAME, len(VALUE) // 3)
    with pytest.raises(CorruptRecord, match=NAME.hex()):
        store.get_chunk_addressed(NAME)
    assert store.quarantined() == [(CHUNK_NS, NAME)]
    assert store.get_chunk_addressed(NAME) is None
    assert not store.contains_chunk(NAME)
    store.put_chunk(NAME, VALUE)  # fetched again from the group: clean once more
    assert store.get_chunk_addressed(NAME) == VALUE
    assert store.quarantined() == []


def test_a_value_under_another_chunks_name_is_refused_though_its_checksum_holds(store: Store) -> None:
    # A checksum is made for whatever is stored under a key; only the address ties the bytes
    # to the name. The plain read cannot tell, the addressed read can.
    other = b"the bytes of some other chunk"
    store.put_chunk(NAME, other)
    assert store.get_chunk(NAME) == other
    with pytest.raises(CorruptRecord, match="do not hash to its name"):
        store.get_chunk_addressed(NAME)
    assert store.quarantined() == [(CHUNK_NS, NAME)]
    assert store.get_chunk(NAME) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.binary(min_size=1, max_size=300), at=st.integers(min_value=0), xor=st.integers(1, 255))
def test_whatever_a_damaged_copy_looks_like_only_its_true_bytes_come_back(
    store: Store, value: bytes, at: int, xor: int
) -> None:
    name = sha3_256(value)
    store.put_chunk(name, value)
    at %= len(value)
    if isinstance(store, MemoryStore):
        _, stored_sum = store._items.get(CHUNK_NS, name)
        store._items.set(CHUNK_NS, name, (value[:at] + bytes([value[at] ^ xor]) + value[at + 1:], stored_sum))
    else:
        flip_stored_byte(store, name, at)
    try:
        got = store.get_chunk_addressed(name)
    except CorruptRecord:
        got = None
    assert got is None  # a changed byte never hashes to the name
    assert not store.contains_chunk(name)
    store.put_chunk(name, value)  # leave the store clean for the next example
    assert store.get_chunk_addressed(name) == value


async def test_a_member_with_a_damaged_copy_sends_the_client_on_and_drops_the_copy(autojump_clock) -> None:
    async with LocalNetwork.start(nodes=6, seed=11) as net:
        async with net.client() as writer:
            name = await writer.put_idata(VALUE)
        await net.until(lambda: sorted(net.holders(name)) == sorted(net.close_group(name)), within=30)
        first = net.nodes[net.close_group(name)[0]]  # the member a client asks first
        assert isinstance(first.store, MemoryStore)
        first.store.corrupt(CHUNK_NS, bytes(name))
        async with net.client() as reader:
            with trio.fail_after(60):
                assert await reader.get_idata(name) == VALUE
        assert (CHUNK_NS, bytes(name)) in first.store.quarantined()
        assert first.core is not None and not first.core.chunks.holds(name)
