"""Tests for client.selfenc: SE12 self-encryption and the stored data map (docs/data-model.md §2.2-2.3)."""

from __future__ import annotations

import io
import random
from collections import Counter

import brotli
import msgpack
import nacl.secret
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from client import blobs, selfenc
from client.blobs import (
    fetch_blob,
    fetch_blob_to,
    fetch_data_map,
    pack_data_map,
    read_range,
    store_blob,
    unpack_data_map,
)
from client.selfenc import (
    MAX_CHUNK_SIZE,
    MAX_IN_FLIGHT,
    MIN_CHUNK_SIZE,
    ChunkInfo,
    DataMap,
    Encryptor,
    SelfEncryptionError,
    chunk_sizes,
    decrypt_bytes,
    encrypt_bytes,
)
from node.errors import NoSuchData
from node.xorname import XorName, sha3_256

KiB = 1024
MiB = 1024 * 1024


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


class Store:
    """An in-memory IData store that counts every get and put."""

    def __init__(self) -> None:
        self.chunks: dict[XorName, bytes] = {}
        self.gets: Counter[XorName] = Counter()
        self.puts = 0

    async def put(self, value: bytes) -> XorName:
        await trio.sleep(0)
        self.puts += 1
        name = XorName.hash_of(value)
        self.chunks[name] = value
        return name

    async def get(self, name: XorName) -> bytes:
        await trio.sleep(0)
        self.gets[name] += 1
        if name not in self.chunks:
            raise NoSuchData(name.hex())
        return self.chunks[name]

    def get_sync(self, name: XorName) -> bytes:
        return self.chunks[name]

    @classmethod
    def of(cls, chunks: list[tuple[XorName, bytes]]) -> Store:
        store = cls()
        store.chunks.update(chunks)
        return store


@pytest.fixture(scope="module")
def big() -> tuple[bytes, DataMap, list[tuple[XorName, bytes]]]:
    """A 12 MiB random blob, its map and chunks, encrypted once for the module."""
    data = blob(12 * MiB)
    dm, chunks = encrypt_bytes(data)
    return data, dm, chunks


# --------------------------------------------------------------------------- splitting

BOUNDARIES = {
    0: [],
    1: [],
    3071: [],
    3072: [1024, 1024, 1024],
    3073: [1024, 1024, 1025],
    3 * MiB - 1: [MiB - 1, MiB - 1, MiB + 1],
    3 * MiB: [MiB, MiB, MiB],
    3 * MiB + 1: [MiB, MiB, MiB - KiB, KiB + 1],
    3 * MiB + 1023: [MiB, MiB, MiB - KiB, KiB + 1023],
    3 * MiB + 1024: [MiB, MiB, MiB, KiB],
    5 * MiB + 17: [MiB, MiB, MiB, MiB, MiB - KiB, KiB + 17],
}


@pytest.mark.parametrize("total", list(BOUNDARIES))
def test_chunk_sizes_at_boundaries(total: int) -> None:
    assert chunk_sizes(total) == BOUNDARIES[total]


@given(st.integers(min_value=0, max_value=1 << 40))
def test_chunk_sizes_cover_the_blob_within_limits(total: int) -> None:
    sizes = chunk_sizes(total)
    if total < 3 * KiB:
        assert sizes == []
        return
    assert sum(sizes) == total
    assert all(MIN_CHUNK_SIZE <= s <= MAX_CHUNK_SIZE for s in sizes)
    expected = 3 if total < 3 * MiB else -(-total // MiB)
    assert len(sizes) == expected


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", list(BOUNDARIES))
def test_round_trip(size: int) -> None:
    data = blob(size)
    dm, chunks = encrypt_bytes(data)
    assert [c.source_size for c in dm.chunks] == chunk_sizes(size)
    assert [name for name, _ in chunks] == [c.hash for c in dm.chunks]
    assert all(sha3_256(value) == name for name, value in chunks)
    assert dm.size == size
    assert dm.kind == ("none" if size == 0 else "content" if size < 3 * KiB else "chunks")
    if dm.kind == "content":
        assert dm.content == data  # small blobs are inline, in plaintext, as in SE12
    assert DataMap.from_bytes(dm.to_bytes()) == dm
    assert decrypt_bytes(dm, Store.of(chunks).get_sync) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=8 * KiB))
def test_round_trip_small_blobs(data: bytes) -> None:
    dm, chunks = encrypt_bytes(data)
    assert len(chunks) == (3 if len(data) >= 3 * KiB else 0)
    assert decrypt_bytes(dm, Store.of(chunks).get_sync) == data


@pytest.mark.parametrize("size", [0, 1, 3071, 3072, 3 * MiB + 1, 5 * MiB + 17])
async def test_store_and_fetch(size: int) -> None:
    data = blob(size)
    store = Store()
    calls: list[tuple[int, int]] = []
    name = await store_blob(store.put, data, progress=lambda d, t: calls.append((d, t)))
    assert await fetch_blob(store.get, name) == data
    # The data chunks are the ones encrypt_bytes makes, plus the one wrapper IData.
    dm, chunks = encrypt_bytes(data)
    assert set(store.chunks) == {n for n, _ in chunks} | {name}
    assert await fetch_data_map(store.get, name) == dm
    assert calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


async def test_fetch_blob_to_streams_into_a_sink(big, tmp_path) -> None:
    data, _, _ = big
    store = Store()
    name = await store_blob(store.put, data)
    seen: list[int] = []
    path = tmp_path / "out.bin"
    with open(path, "wb") as sink:
        written = await fetch_blob_to(store.get, name, sink, progress=lambda d, t: seen.append(d))
    assert written == len(data)
    assert path.read_bytes() == data
    assert seen == [MiB * (i + 1) for i in range(12)]


# --------------------------------------------------------------------------- convergence


def test_equal_content_gives_equal_chunks() -> None:
    data = blob(5 * MiB + 17)
    dm1, chunks1 = encrypt_bytes(data)
    dm2, chunks2 = encrypt_bytes(bytes(data))
    assert dm1 == dm2
    assert chunks1 == chunks2


def test_one_changed_byte_changes_three_chunks() -> None:
    """Chunk i's pad, key and IV come from pre_hash(i), (i-1) and (i-2): a change in chunk
    2 alters chunks 2, 3 and 4 and no others."""
    data = bytearray(blob(6 * MiB))
    _, before = encrypt_bytes(bytes(data))
    data[2 * MiB + 5] ^= 1
    _, after = encrypt_bytes(bytes(data))
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a[0] != b[0]]
    assert changed == [2, 3, 4]


def test_different_content_gives_different_chunks() -> None:
    _, a = encrypt_bytes(blob(4 * KiB, seed=1))
    _, b = encrypt_bytes(blob(4 * KiB, seed=2))
    assert not {n for n, _ in a} & {n for n, _ in b}


async def test_repeated_chunks_are_put_once() -> None:
    store = Store()
    name = await store_blob(store.put, bytes(8 * MiB))
    assert len(store.chunks) == 2  # eight equal chunks collapse to one, plus the wrapper
    assert store.puts == 2
    assert await fetch_blob(store.get, name) == bytes(8 * MiB)


# --------------------------------------------------------------------------- a known vector


def test_three_kib_of_zeros_by_hand() -> None:
    """Recompute SE12 by hand for 3 KiB of zeros: three equal 1 KiB chunks, so every chunk
    uses the same hash h for pad (h || h[:8]), key (h) and IV (h[8:])."""
    dm, chunks = encrypt_bytes(bytes(3 * KiB))
    h = sha3_256(bytes(KiB))
    assert h.hex() == sha3_256(b"\0" * 1024).hex()
    assert [(c.chunk_num, c.pre_hash, c.source_size) for c in dm.chunks] == [
        (0, h, KiB),
        (1, h, KiB),
        (2, h, KiB),
    ]
    pad, key, iv = h + h[:8], h, h[8:]
    assert (len(pad), len(key), len(iv)) == (40, 32, 24)
    sealed = nacl.secret.SecretBox(key).encrypt(brotli.compress(bytes(KiB), quality=6), iv)
    expected = bytes(b ^ pad[i % 40] for i, b in enumerate(sealed.ciphertext))
    assert [value for _, value in chunks] == [expected] * 3
    assert dm.chunks[0].hash == sha3_256(expected)
    # ... and decrypting with the derived keys gives the zeros back.
    unpadded = bytes(b ^ pad[i % 40] for i, b in enumerate(chunks[1][1]))
    assert brotli.decompress(nacl.secret.SecretBox(key).decrypt(unpadded, iv)) == bytes(KiB)


# --------------------------------------------------------------------------- integrity


def test_tampered_chunk_is_detected() -> None:
    data = blob(4 * KiB)
    dm, chunks = encrypt_bytes(data)
    store = Store.of(chunks)
    name, value = chunks[1]
    store.chunks[name] = value[:10] + bytes([value[10] ^ 1]) + value[11:]
    with pytest.raises(SelfEncryptionError, match="does not hash") as err:
        decrypt_bytes(dm, store.get_sync)
    assert err.value.chunk_num == 1


async def test_tampered_chunk_is_detected_when_fetching() -> None:
    store = Store()
    name = await store_blob(store.put, blob(3 * MiB + 5))
    dm = await fetch_data_map(store.get, name)
    victim = dm.chunks[3].hash
    store.chunks[victim] = store.chunks[victim][::-1]
    with pytest.raises(SelfEncryptionError):
        await fetch_blob(store.get, name)


def test_forged_chunk_fails_the_pre_hash_check() -> None:
    """A chunk that decrypts cleanly but to other bytes than the map promises: the forger
    knows the keys (they come from the map) and re-names the chunk, but cannot match the
    pre_hash."""
    dm, chunks = encrypt_bytes(blob(4 * KiB))
    c = dm.chunks
    h = [x.pre_hash for x in c]
    pad, key, iv = h[0] + h[1][:8], h[2], h[1][8:]  # chunk 0: n1 = 2, n2 = 1
    forged = selfenc._encrypt_chunk(b"x" * c[0].source_size, pad, key, iv)
    forged_map = DataMap(
        chunks=(ChunkInfo(0, XorName.hash_of(forged), h[0], c[0].source_size), *c[1:])
    )
    store = Store.of([*chunks, (XorName.hash_of(forged), forged)])
    with pytest.raises(SelfEncryptionError, match="pre_hash"):
        decrypt_bytes(forged_map, store.get_sync)


def test_decompression_is_bounded() -> None:
    """A chunk inflating past its source_size is refused before the memory is spent."""
    h = sha3_256(b"whatever")
    bomb = selfenc._encrypt_chunk(bytes(64 * MiB), h + h[:8], h, h[8:])
    infos = tuple(ChunkInfo(i, XorName.hash_of(bomb), h, KiB) for i in range(3))
    with pytest.raises(SelfEncryptionError, match="more than"):
        selfenc.decrypt_chunk(DataMap(chunks=infos), 0, bomb)


def test_malformed_maps_are_rejected() -> None:
    dm, _ = encrypt_bytes(blob(5 * KiB))
    obj = dm.to_obj()
    obj[1][2][3] += 1  # sizes no longer split the blob the SE12 way
    with pytest.raises(SelfEncryptionError, match="SE12"):
        DataMap.from_obj(obj)
    for garbage in (
        b"",
        b"\xc1",
        msgpack.packb([7]),
        msgpack.packb([1, b""]),
        msgpack.packb([2, [[0]]]),
    ):
        with pytest.raises(SelfEncryptionError):
            DataMap.from_bytes(garbage)


async def test_store_that_misnames_a_chunk_is_caught() -> None:
    async def liar(value: bytes) -> XorName:
        return XorName(bytes(32))

    with pytest.raises(SelfEncryptionError, match="named a chunk"):
        await store_blob(liar, blob(4 * KiB))


async def test_missing_chunk_surfaces_as_its_own_error() -> None:
    store = Store()
    name = await store_blob(store.put, blob(4 * MiB))
    dm = await fetch_data_map(store.get, name)
    del store.chunks[dm.chunks[2].hash]
    with pytest.raises(NoSuchData):  # not wrapped in an ExceptionGroup
        await fetch_blob(store.get, name)


# --------------------------------------------------------------------------- range reads


@pytest.mark.parametrize(
    ("offset", "length", "covering"),
    [
        (0, 1, [0]),
        (MiB - 1, 1, [0]),
        (MiB - 1, 2, [0, 1]),
        (MiB, MiB, [1]),
        (MiB, MiB + 1, [1, 2]),
        (6 * MiB + 12345, 1, [6]),
        (12 * MiB - 1, 1, [11]),
        (12 * MiB - 1, 100, [11]),  # clipped at the end
        (5 * MiB - 3, 2 * MiB + 6, [4, 5, 6, 7]),
    ],
)
async def test_range_reads_fetch_only_covering_chunks(big, offset, length, covering) -> None:
    data, dm, chunks = big
    store = Store.of(chunks)
    got = await read_range(store.get, dm, offset, length)
    assert got == data[offset : offset + length]
    assert store.gets == Counter(dm.chunks[i].hash for i in covering)


async def test_range_read_by_name_fetches_the_map_and_one_chunk(big) -> None:
    data, dm, chunks = big
    store = Store.of(chunks)
    name = await blobs.store_data_map(store.put, dm)
    got = await read_range(store.get, name, 6 * MiB + 1, 1)
    assert got == data[6 * MiB + 1 : 6 * MiB + 2]
    assert store.gets == Counter({name: 1, dm.chunks[6].hash: 1})


async def test_range_reads_that_fetch_nothing(big) -> None:
    data, dm, chunks = big
    store = Store.of(chunks)
    assert await read_range(store.get, dm, 5, 0) == b""
    assert await read_range(store.get, dm, 12 * MiB, 10) == b""
    assert store.gets == Counter()
    small, _ = encrypt_bytes(b"hello world")
    assert await read_range(store.get, small, 6, 100) == b"world"
    with pytest.raises(ValueError):
        await read_range(store.get, dm, -1, 1)


async def test_range_reads_across_the_small_remainder_chunks() -> None:
    data = blob(3 * MiB + 100)  # chunks: 1 MiB, 1 MiB, 1 MiB - 1 KiB, 1 KiB + 100
    dm, chunks = encrypt_bytes(data)
    store = Store.of(chunks)
    edge = 3 * MiB - KiB
    assert await read_range(store.get, dm, edge, 1) == data[edge : edge + 1]
    assert store.gets == Counter({dm.chunks[3].hash: 1})
    assert await read_range(store.get, dm, edge - 1, 2) == data[edge - 1 : edge + 1]


# --------------------------------------------------------------------------- the stored map


async def test_small_maps_are_stored_serialised() -> None:
    store = Store()
    name = await store_blob(store.put, blob(4 * MiB))
    assert msgpack.unpackb(store.chunks[name])[0] == 0  # Serialised(map)


async def test_a_big_data_map_recurses(monkeypatch) -> None:
    """Force the recursion of §2.3 by shrinking the IData limit: 48 MiB gives a 48-chunk
    map (~3.7 KB), over a 3.5 KB limit, so the wrapper is self-encrypted once more."""
    monkeypatch.setattr(blobs, "MAX_IDATA_SIZE", 3500)
    data = bytes(48 * MiB - 5) + b"tail!"
    store = Store()
    name = await store_blob(store.put, data)
    root = msgpack.unpackb(store.chunks[name])
    assert root[0] == 1  # DataMap(level map), not Serialised
    level = DataMap.from_obj(root[1])
    assert level.kind == "chunks" and len(level.chunks) == 3
    assert len(store.chunks[name]) <= 3500
    assert await fetch_blob(store.get, name) == data
    dm, _ = encrypt_bytes(data)
    assert unpack_data_map(store.chunks[name], store.get_sync) == dm


def test_map_recursion_nests_and_unpacks(monkeypatch) -> None:
    """A synthetic 5000-chunk map (~380 KB) under a 4 KB limit."""
    monkeypatch.setattr(blobs, "MAX_IDATA_SIZE", 4096)
    sizes = chunk_sizes(5000 * MiB)
    fake = DataMap(
        chunks=tuple(
            ChunkInfo(i, XorName.from_int(i), sha3_256(bytes([i % 256])), s)
            for i, s in enumerate(sizes)
        )
    )
    value, extra = pack_data_map(fake)
    assert len(value) <= 4096 and extra
    assert unpack_data_map(value, Store.of(extra).get_sync) == fake


def test_a_limit_too_small_for_any_map_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(blobs, "MAX_IDATA_SIZE", 500)
    dm, _ = encrypt_bytes(bytes(12 * MiB))
    with pytest.raises(SelfEncryptionError, match="too small"):
        pack_data_map(dm)


async def test_private_data_map() -> None:
    key, other = bytes(range(32)), bytes(32)
    data = blob(3 * MiB + 9)
    store = Store()
    name = await store_blob(store.put, data, map_key=key)
    assert await fetch_blob(store.get, name, map_key=key) == data
    with pytest.raises(SelfEncryptionError, match="map_key"):
        await fetch_blob(store.get, name)
    with pytest.raises(SelfEncryptionError, match="wrong map_key"):
        await fetch_blob(store.get, name, map_key=other)
    # A random nonce: storing again gives another map name, but the same data chunks.
    again = await store_blob(store.put, data, map_key=key)
    assert again != name
    with pytest.raises(ValueError):
        await store_blob(store.put, data, map_key=b"short")


# --------------------------------------------------------------------------- streaming


def test_streaming_a_file_gives_the_same_chunks(big, tmp_path) -> None:
    data, dm, chunks = big
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    encryptor = Encryptor(path)
    with pytest.raises(RuntimeError):
        encryptor.data_map  # noqa: B018  not known before the chunks are consumed
    assert list(encryptor.chunks()) == chunks
    assert encryptor.data_map == dm
    with open(path, "rb") as f:
        from_file = selfenc.encrypt_file(f)
        assert [n for n, _ in from_file.chunks()] == [n for n, _ in chunks]


def test_a_source_changing_between_passes_is_detected() -> None:
    f = io.BytesIO(blob(4 * KiB))
    chunks = Encryptor(f).chunks()
    next(chunks)  # pass 1 has hashed everything; chunk 0 is out
    f.seek(3 * KiB)
    f.write(b"changed")
    with pytest.raises(SelfEncryptionError, match="changed"):
        list(chunks)


async def test_store_blob_bounds_chunks_in_flight(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(blob(10 * MiB))
    store, in_flight, peak = Store(), 0, 0
    piled_up = trio.Event()

    async def slow_put(value: bytes) -> XorName:
        # The first puts wait until as many are in flight as the bound allows, however slow
        # the machine is at encrypting; a bound below MAX_IN_FLIGHT shows as peak < bound.
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= MAX_IN_FLIGHT:
            piled_up.set()
        with trio.move_on_after(30):
            await piled_up.wait()
        in_flight -= 1
        return await store.put(value)

    name = await store_blob(slow_put, path, offload=True)
    assert peak == MAX_IN_FLIGHT
    assert await fetch_blob(store.get, name, offload=True) == path.read_bytes()


async def test_store_blob_can_be_cancelled(tmp_path) -> None:
    async def stuck_put(value: bytes) -> XorName:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.move_on_after(0.05) as scope:
        await store_blob(stuck_put, blob(5 * MiB))
    assert scope.cancelled_caught
