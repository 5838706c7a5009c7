"""Storing blobs: the data map as a chunk of its own, and the async helpers over a chunk store.

client/selfenc.py turns bytes into chunks and a data map without any I/O. This module is what
puts those on a network (or any chunk store): it wraps a data map the way safe_core stored one
(a small IData value users name, self-encrypted again while it is too big), and streams blobs
of any size through `store_blob`, `fetch_blob`, `fetch_blob_to` and `read_range`, keeping at
most `MAX_IN_FLIGHT` chunks in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

import msgpack
import nacl.exceptions
import nacl.secret
import trio

from node.rules import MAX_IDATA_SIZE
from node.xorname import XorName, sha3_256

from .selfenc import (
    KEY_SIZE,
    MAX_IN_FLIGHT,
    SMALL_FILE_LIMIT,
    DataMap,
    Encryptor,
    GetChunk,
    Progress,
    PutChunk,
    SelfEncryptionError,
    Source,
    decrypt_bytes,
    decrypt_chunk,
    encrypt_bytes,
    unpack_msgpack,
)

__all__ = [
    "fetch_blob",
    "fetch_blob_to",
    "fetch_data_map",
    "pack_data_map",
    "read_range",
    "store_blob",
    "store_data_map",
    "unpack_data_map",
]


# --------------------------------------------------------------------------- the stored map

# DataTypeEncoding (safe_core): [0, bytes] = Serialised(map, maybe sealed), [1, map] = DataMap
SERIALISED = 0
NESTED = 1


def check_map_key(map_key: bytes | None) -> None:
    if map_key is not None and len(map_key) != KEY_SIZE:
        raise ValueError(
            f"map_key must be a {KEY_SIZE}-byte secretbox key, got {len(map_key)} bytes"
        )


def seal_map(serialised: bytes, map_key: bytes | None) -> bytes:
    if map_key is None:
        return serialised
    # A random nonce, prepended: private maps do not deduplicate, as in safe_core.
    return bytes(nacl.secret.SecretBox(map_key).encrypt(serialised))


def open_map(payload: bytes, map_key: bytes | None) -> DataMap:
    if map_key is not None:
        try:
            payload = nacl.secret.SecretBox(map_key).decrypt(payload)
        except nacl.exceptions.CryptoError:
            raise SelfEncryptionError("cannot open the private data map: wrong map_key?") from None
    try:
        return DataMap.from_bytes(payload)
    except SelfEncryptionError as exc:
        hint = "" if map_key is not None else " (a private map needs its map_key)"
        raise SelfEncryptionError(f"{exc}{hint}") from None


def unwrap_map(value: bytes) -> tuple[int, Any]:
    """A wrapper IData's value: (SERIALISED, payload bytes) or (NESTED, DataMap)."""
    obj = unpack_msgpack(value, "a data-map wrapper")
    if isinstance(obj, list) and len(obj) == 2:
        if obj[0] == SERIALISED and isinstance(obj[1], bytes):
            return SERIALISED, obj[1]
        if obj[0] == NESTED:
            return NESTED, DataMap.from_obj(obj[1])
    raise SelfEncryptionError("not a data-map wrapper")


def pack_data_map(
    dm: DataMap, *, map_key: bytes | None = None
) -> tuple[bytes, list[tuple[XorName, bytes]]]:
    """safe_core `pack`: the wrapper IData value users name, plus any chunks it needs.

    The serialised map is wrapped as Serialised; while the wrapper is too big for one IData
    it is self-encrypted again and the new map wrapped as DataMap. Store every returned
    chunk and then the wrapper; the wrapper's SHA3 is the data-map name.
    """
    check_map_key(map_key)
    value = msgpack.packb([SERIALISED, seal_map(dm.to_bytes(), map_key)], use_bin_type=True)
    extra: list[tuple[XorName, bytes]] = []
    # Read the limit at call time so tests can shrink it to force recursion.
    while len(value) > MAX_IDATA_SIZE:
        if len(value) < SMALL_FILE_LIMIT:
            # SE would inline it as Content and the wrapper would only grow.
            raise SelfEncryptionError(
                f"an IData limit of {MAX_IDATA_SIZE} bytes is too small to hold any data map"
            )
        level, chunks = encrypt_bytes(value)
        extra.extend(chunks)
        value = msgpack.packb([NESTED, level.to_obj()], use_bin_type=True)
    return value, extra


def unpack_data_map(
    value: bytes, get: Callable[[XorName], bytes], *, map_key: bytes | None = None
) -> DataMap:
    """safe_core `unpack`: from a wrapper IData value back to the blob's data map."""
    check_map_key(map_key)
    kind, payload = unwrap_map(value)
    while kind == NESTED:
        kind, payload = unwrap_map(decrypt_bytes(payload, get))
    return open_map(payload, map_key)


# --------------------------------------------------------------------------- async helpers


@contextmanager
def _sole_error() -> Iterator[None]:
    """Re-raise a nursery's lone failure as itself, so callers can `except NoSuchData:`.

    The first failure cancels the sibling tasks, so a group usually holds one error; a
    group with several is passed on whole rather than hiding any.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


async def _run(offload: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """Run CPU work inline (deterministic under a virtual clock) or in a worker thread
    (brotli, hashlib and libsodium release the GIL, so the event loop stays responsive)."""
    if offload:
        return await trio.to_thread.run_sync(fn, *args)
    await trio.lowlevel.checkpoint()
    return fn(*args)


async def _put_checked(put_chunk: PutChunk, value: bytes) -> XorName:
    name = XorName(await put_chunk(value))
    expected = sha3_256(value)
    if name != expected:
        raise SelfEncryptionError(
            f"the store named a chunk {name.short()}, its hash is {expected.hex()[:8]}"
        )
    return name


async def _put_all(
    put_chunk: PutChunk,
    chunks: Iterator[tuple[XorName, bytes]],
    *,
    on_stored: Callable[[int], None] | None = None,
    offload: bool = False,
) -> None:
    """Put every chunk, at most MAX_IN_FLIGHT at once, each put once even if repeated.

    A slot is taken *before* the next chunk is produced, so no more than MAX_IN_FLIGHT
    encrypted chunks ever exist at a time, however slow the store is.
    """
    slots = trio.Semaphore(MAX_IN_FLIGHT)
    seen: set[XorName] = set()
    index = 0

    async def put(value: bytes, index: int) -> None:
        try:
            await _put_checked(put_chunk, value)
        finally:
            slots.release()
        if on_stored is not None:
            on_stored(index)

    with _sole_error():
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()
                item = await _run(offload, next, chunks, None)
                if item is None:
                    slots.release()
                    break
                name, value = item
                if name in seen:  # SAFE charges a mutation per PUT; a repeat buys nothing
                    slots.release()
                    if on_stored is not None:
                        on_stored(index)
                else:
                    seen.add(name)
                    nursery.start_soon(put, value, index)
                index += 1


async def _fetch_in_order(
    get_chunk: GetChunk,
    dm: DataMap,
    indices: Sequence[int],
    consume: Callable[[int, bytes], None],
    *,
    offload: bool = False,
) -> None:
    """Fetch chunks `indices` of `dm` (up to MAX_IN_FLIGHT at once), decrypt them and hand
    each plaintext to `consume` in order. A fetched chunk holds its slot until consumed,
    so memory stays bounded even when later chunks arrive first."""
    slots = trio.Semaphore(MAX_IN_FLIGHT)
    arrived = {i: trio.Event() for i in indices}
    fetched: dict[int, bytes] = {}

    async def fetch(i: int) -> None:
        fetched[i] = await get_chunk(dm.chunks[i].hash)
        arrived[i].set()

    async def launch(nursery: trio.Nursery) -> None:
        for i in indices:
            await slots.acquire()
            nursery.start_soon(fetch, i)

    with _sole_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(launch, nursery)
            for i in indices:
                await arrived[i].wait()
                plain = await _run(offload, decrypt_chunk, dm, i, fetched.pop(i))
                consume(i, plain)
                slots.release()


async def store_data_map(
    put_chunk: PutChunk, dm: DataMap, *, map_key: bytes | None = None, offload: bool = False
) -> XorName:
    """Store a data map as its wrapper IData (recursing while too big); return its name."""
    value, extra = pack_data_map(dm, map_key=map_key)
    await _put_all(put_chunk, iter(extra), offload=offload)
    return await _put_checked(put_chunk, value)


async def fetch_data_map(
    get_chunk: GetChunk, name: XorName, *, map_key: bytes | None = None, offload: bool = False
) -> DataMap:
    """The blob's data map behind a data-map name, undoing the wrapper recursion."""
    check_map_key(map_key)
    value = await get_chunk(name)
    if sha3_256(value) != name:
        raise SelfEncryptionError(f"the data-map wrapper does not hash to {XorName(name).short()}")
    kind, payload = unwrap_map(value)
    while kind == NESTED:
        kind, payload = unwrap_map(await _read_all(get_chunk, payload, offload=offload))
    return open_map(payload, map_key)


async def _read_all(get_chunk: GetChunk, dm: DataMap, *, offload: bool = False) -> bytes:
    if not dm.chunks:
        return dm.content or b""
    parts: list[bytes] = []
    await _fetch_in_order(
        get_chunk, dm, range(len(dm.chunks)), lambda _i, p: parts.append(p), offload=offload
    )
    return b"".join(parts)


async def store_blob(
    put_chunk: PutChunk,
    source: Source,
    *,
    progress: Progress | None = None,
    map_key: bytes | None = None,
    offload: bool = False,
) -> XorName:
    """Self-encrypt `source` (bytes, a path or a seekable binary file), put its chunks and
    its data map, and return the data-map name.

    `put_chunk(value)` stores one IData and returns its name. `progress(done, total)` is
    called as plaintext bytes are stored. `offload=True` runs the encryption in a worker
    thread: better for a live client, but leave it off under a simulator's virtual clock.
    """
    check_map_key(map_key)
    encryptor = Encryptor(source)
    sizes, total, done = encryptor.chunk_sizes, encryptor.size, 0

    def stored(index: int) -> None:
        nonlocal done
        done += sizes[index]
        if progress is not None:
            progress(done, total)

    chunks = encryptor.chunks()
    try:
        await _put_all(put_chunk, chunks, on_stored=stored, offload=offload)
    finally:
        chunks.close()  # on failure, close the source file now rather than at GC
    name = await store_data_map(put_chunk, encryptor.data_map, map_key=map_key, offload=offload)
    if progress is not None and not sizes:
        progress(total, total)
    return name


async def fetch_blob(
    get_chunk: GetChunk, name: XorName, *, map_key: bytes | None = None, offload: bool = False
) -> bytes:
    """The whole blob behind a data-map name. `get_chunk(name)` returns one IData's value."""
    dm = await fetch_data_map(get_chunk, name, map_key=map_key, offload=offload)
    return await _read_all(get_chunk, dm, offload=offload)


async def fetch_blob_to(
    get_chunk: GetChunk,
    name: XorName,
    sink: BinaryIO,
    *,
    progress: Progress | None = None,
    map_key: bytes | None = None,
    offload: bool = False,
) -> int:
    """Write the blob to `sink` chunk by chunk (a few chunks in memory); return its size."""
    dm = await fetch_data_map(get_chunk, name, map_key=map_key, offload=offload)
    total, done = dm.size, 0
    if not dm.chunks:
        sink.write(dm.content or b"")
        if progress is not None:
            progress(total, total)
        return total

    def write(_index: int, plain: bytes) -> None:
        nonlocal done
        sink.write(plain)
        done += len(plain)
        if progress is not None:
            progress(done, total)

    await _fetch_in_order(get_chunk, dm, range(len(dm.chunks)), write, offload=offload)
    return total


async def read_range(
    get_chunk: GetChunk,
    name_or_map: XorName | DataMap,
    offset: int,
    length: int,
    *,
    map_key: bytes | None = None,
    offload: bool = False,
) -> bytes:
    """Bytes [offset, offset + length) of a blob, clipped to its end like a file read.

    Fetches only the chunks covering the range (plus the map, when given a name).
    """
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must be non-negative, got {offset} and {length}")
    if isinstance(name_or_map, DataMap):
        dm = name_or_map
    else:
        dm = await fetch_data_map(get_chunk, XorName(name_or_map), map_key=map_key, offload=offload)
    if not dm.chunks:
        return (dm.content or b"")[offset : offset + length]
    indices = dm.covering(offset, length)
    if not indices:
        return b""
    parts: list[bytes] = []
    await _fetch_in_order(get_chunk, dm, indices, lambda _i, p: parts.append(p), offload=offload)
    first = dm.chunk_offsets()[indices[0]]
    joined = b"".join(parts)
    return joined[offset - first : offset - first + length]
