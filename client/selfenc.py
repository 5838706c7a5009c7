"""Self-encryption: turning a blob into content-addressed chunks plus a data map, and back.

This is self_encryption 0.12 as docs/data-model.md §2.2 describes it, and safe_core's storage of
the data map as one ImmutableData (§2.3). A blob is split into chunks; each chunk is brotli-
compressed, sealed with XSalsa20-Poly1305 and XOR-ed with a pad, where the key, nonce and pad
come from the plaintext hashes (`pre_hash`) of the chunk and its two predecessors. Equal
plaintext therefore gives equal chunks, and the network deduplicates them for free.

Two layers:
- a synchronous core that never does I/O (`chunk_sizes`, `Encryptor`, `encrypt_bytes`,
  `decrypt_chunk`, `decrypt_bytes`, `pack_data_map`, `unpack_data_map`), usable from a
  thread, a test or a simulator;
- async helpers over any chunk store (`store_blob`, `fetch_blob`, `fetch_blob_to`,
  `read_range`, `store_data_map`, `fetch_data_map`), which keep at most `MAX_IN_FLIGHT`
  chunks in memory so files of any size stream through.

The chunk bytes match SE12's algorithm; the data-map and wrapper encodings are msgpack (SAFE
used bincode), so data-map names are this testbed's own.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, BinaryIO

import brotli
import msgpack
import nacl.exceptions
import nacl.secret
import trio

from node.errors import SafeError
from node.rules import MAX_IDATA_SIZE
from node.xorname import XorName, sha3_256

__all__ = [
    "COMPRESSION_QUALITY",
    "MAX_CHUNK_SIZE",
    "MAX_IN_FLIGHT",
    "MIN_CHUNK_SIZE",
    "ChunkInfo",
    "DataMap",
    "Encryptor",
    "SelfEncryptionError",
    "chunk_sizes",
    "decrypt_bytes",
    "decrypt_chunk",
    "encrypt_bytes",
    "encrypt_file",
    "fetch_blob",
    "fetch_blob_to",
    "fetch_data_map",
    "pack_data_map",
    "read_range",
    "store_blob",
    "store_data_map",
    "unpack_data_map",
]

MAX_CHUNK_SIZE = 1024 * 1024  # before compression
MIN_CHUNK_SIZE = 1024
COMPRESSION_QUALITY = 6
SMALL_FILE_LIMIT = 3 * MIN_CHUNK_SIZE  # below this the bytes sit inline in the map
MEDIUM_FILE_LIMIT = 3 * MAX_CHUNK_SIZE  # below this there are exactly three chunks

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
IV_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24
HASH_SIZE = 32
PAD_SIZE = 3 * HASH_SIZE - KEY_SIZE - IV_SIZE  # 40: what is left of three hashes

MAX_IN_FLIGHT = 4  # chunks being put or fetched at once; bounds memory to a few MiB

Source = bytes | bytearray | memoryview | BinaryIO | str | os.PathLike[str]
GetChunk = Callable[[XorName], Awaitable[bytes]]
PutChunk = Callable[[bytes], Awaitable[XorName]]
Progress = Callable[[int, int], None]


class SelfEncryptionError(SafeError):
    """A chunk or data map failed a check: tampered, truncated, forged or undecryptable.

    `chunk_num` names the offending chunk when there is one.
    """

    def __init__(self, message: str, chunk_num: int | None = None) -> None:
        self.chunk_num = chunk_num
        super().__init__(message)


# --------------------------------------------------------------------------- splitting


def chunk_sizes(total: int) -> list[int]:
    """Plaintext sizes of the chunks of a `total`-byte blob (SE12 `get_chunk_size`)."""
    if total < 0:
        raise ValueError(f"a size is never negative, got {total}")
    if total < SMALL_FILE_LIMIT:
        return []
    if total < MEDIUM_FILE_LIMIT:
        third = total // 3
        return [third, third, total - 2 * third]
    full, remainder = divmod(total, MAX_CHUNK_SIZE)
    if remainder == 0:
        return [MAX_CHUNK_SIZE] * full
    if remainder >= MIN_CHUNK_SIZE:
        return [MAX_CHUNK_SIZE] * full + [remainder]
    # A tail under 1 KiB borrows 1 KiB from the penultimate chunk, so every chunk is >= MIN.
    return [MAX_CHUNK_SIZE] * (full - 1) + [
        MAX_CHUNK_SIZE - MIN_CHUNK_SIZE,
        MIN_CHUNK_SIZE + remainder,
    ]


# --------------------------------------------------------------------------- the data map


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One chunk of a map: `hash` is its IData name (post-encryption), `pre_hash` the
    SHA3-256 of its plaintext, `source_size` its plaintext length."""

    chunk_num: int
    hash: XorName
    pre_hash: bytes
    source_size: int

    def to_obj(self) -> list[Any]:
        return [self.chunk_num, bytes(self.hash), self.pre_hash, self.source_size]


@dataclass(frozen=True, slots=True)
class DataMap:
    """SE12's DataMap: `None` (no fields set: the empty blob), `Content` (the plaintext
    inline, for blobs under 3 KiB) or `Chunks` (the chunk list, in order)."""

    chunks: tuple[ChunkInfo, ...] = ()
    content: bytes | None = None

    def __post_init__(self) -> None:
        if self.chunks and self.content is not None:
            raise ValueError("a data map holds either chunks or content, not both")

    @property
    def kind(self) -> str:
        if self.chunks:
            return "chunks"
        return "none" if self.content is None else "content"

    @property
    def size(self) -> int:
        """The plaintext size of the blob."""
        if self.content is not None:
            return len(self.content)
        return sum(c.source_size for c in self.chunks)

    def chunk_offsets(self) -> list[int]:
        """Where each chunk starts in the plaintext."""
        return [0, *accumulate(c.source_size for c in self.chunks)][: len(self.chunks)]

    def covering(self, offset: int, length: int) -> list[int]:
        """Indices of the chunks holding bytes [offset, offset + length), clipped to the blob."""
        end = min(offset + length, self.size)
        if not self.chunks or offset >= end:
            return []
        starts = self.chunk_offsets()
        return [
            i
            for i, start in enumerate(starts)
            if start < end and start + self.chunks[i].source_size > offset
        ]

    # msgpack form: [0] | [1, content] | [2, [[num, hash, pre_hash, size], ...]]
    def to_obj(self) -> list[Any]:
        if self.chunks:
            return [2, [c.to_obj() for c in self.chunks]]
        if self.content is not None:
            return [1, self.content]
        return [0]

    def to_bytes(self) -> bytes:
        return msgpack.packb(self.to_obj(), use_bin_type=True)

    @classmethod
    def from_obj(cls, obj: Any) -> DataMap:
        """Rebuild a map, accepting only one SE12 could have produced (sizes included)."""
        try:
            return _checked_map(obj)
        except SelfEncryptionError:
            raise
        except (TypeError, ValueError, IndexError) as exc:
            raise SelfEncryptionError(f"not a data map: {exc}") from None

    @classmethod
    def from_bytes(cls, raw: bytes) -> DataMap:
        return cls.from_obj(_unpack_msgpack(raw, "a data map"))

    def __repr__(self) -> str:
        return f"DataMap({self.kind}, {self.size} bytes, {len(self.chunks)} chunks)"


def _checked_map(obj: Any) -> DataMap:
    if not isinstance(obj, list) or not obj:
        raise SelfEncryptionError("not a data map")
    kind = obj[0]
    if kind == 0 and len(obj) == 1:
        return DataMap()
    if kind == 1 and len(obj) == 2 and isinstance(obj[1], bytes):
        if not 0 < len(obj[1]) < SMALL_FILE_LIMIT:
            raise SelfEncryptionError(f"inline content of {len(obj[1])} bytes is out of range")
        return DataMap(content=obj[1])
    if kind == 2 and len(obj) == 2 and isinstance(obj[1], list):
        chunks = tuple(_checked_chunk(i, item) for i, item in enumerate(obj[1]))
        total = sum(c.source_size for c in chunks)
        if [c.source_size for c in chunks] != chunk_sizes(total) or not chunks:
            raise SelfEncryptionError(f"chunk sizes do not split {total} bytes the SE12 way")
        return DataMap(chunks=chunks)
    raise SelfEncryptionError("not a data map")


def _checked_chunk(index: int, item: Any) -> ChunkInfo:
    num, name, pre_hash, size = item
    if (
        not isinstance(name, bytes)
        or num != index
        or not isinstance(size, int)
        or isinstance(size, bool)
    ):
        raise SelfEncryptionError(f"chunk entry {index} is malformed")
    if not isinstance(pre_hash, bytes) or len(pre_hash) != HASH_SIZE:
        raise SelfEncryptionError(f"chunk entry {index} has a bad pre_hash")
    return ChunkInfo(num, XorName(name), pre_hash, size)


def _unpack_msgpack(raw: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on garbage; all mean "not ours"
        raise SelfEncryptionError(f"not {what} ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- one chunk


def _neighbours(i: int, count: int) -> tuple[int, int]:
    """n1 = i-1 and n2 = i-2, wrapping: chunk 0 leans on the last two chunks."""
    return (i - 1) % count, (i - 2) % count


def _pad_key_iv(this: bytes, n1: bytes, n2: bytes) -> tuple[bytes, bytes, bytes]:
    """SE12 `get_pad_key_and_iv`: the three hashes (96 bytes) become pad, key and IV."""
    return this + n2[:8], n1, n2[8:]


def _xor(data: bytes, pad: bytes) -> bytes:
    """XOR with the pad repeated; one big-integer XOR is far faster than a Python loop."""
    n = len(data)
    if n == 0:
        return b""
    stream = (pad * (n // len(pad) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def _encrypt_chunk(plain: bytes | memoryview, pad: bytes, key: bytes, iv: bytes) -> bytes:
    compressed = brotli.compress(plain, quality=COMPRESSION_QUALITY)
    sealed = nacl.secret.SecretBox(key).encrypt(compressed, iv).ciphertext
    return _xor(sealed, pad)


def _decompress(data: bytes, expected: int) -> bytes:
    """Brotli-decompress, refusing to produce more than `expected` bytes.

    A chunk's uploader chooses its keys, so a hostile map could point at a tiny chunk that
    inflates to gigabytes; bounding the output stops that before memory is spent.
    """
    decoder = brotli.Decompressor()
    parts: list[bytes] = []
    got = 0
    piece = decoder.process(data, output_buffer_limit=expected + 1)
    while True:
        parts.append(piece)
        got += len(piece)
        if got > expected:
            raise ValueError(f"decompresses to more than its {expected} bytes")
        if decoder.is_finished():
            return b"".join(parts)
        piece = decoder.process(b"", output_buffer_limit=expected + 1 - got)
        if not piece:
            raise ValueError("compressed stream is truncated")


def decrypt_chunk(dm: DataMap, index: int, encrypted: bytes) -> bytes:
    """Decrypt chunk `index` of `dm` and check it is exactly the plaintext the map names."""
    info = dm.chunks[index]
    where = f"chunk {index} ({info.hash.short()})"
    if sha3_256(encrypted) != info.hash:
        raise SelfEncryptionError(f"{where}: content does not hash to its name", index)
    n1, n2 = _neighbours(index, len(dm.chunks))
    pad, key, iv = _pad_key_iv(info.pre_hash, dm.chunks[n1].pre_hash, dm.chunks[n2].pre_hash)
    try:
        compressed = nacl.secret.SecretBox(key).decrypt(_xor(encrypted, pad), iv)
        plain = _decompress(compressed, info.source_size)
    except (nacl.exceptions.CryptoError, brotli.error, ValueError) as exc:
        raise SelfEncryptionError(f"{where}: cannot decrypt ({exc})", index) from None
    if sha3_256(plain) != info.pre_hash:
        raise SelfEncryptionError(f"{where}: decrypted content does not match its pre_hash", index)
    return plain


# --------------------------------------------------------------------------- encrypting


class _Reader:
    """Random access to the source: a buffer, a seekable binary file, or a path."""

    def __init__(self, source: Source) -> None:
        self._owned: BinaryIO | None = None
        self._buffer: memoryview | None = None
        self._file: BinaryIO | None = None
        # Only an immutable `bytes` cannot change between the two passes.
        self.stable = isinstance(source, bytes)
        if isinstance(source, bytes | bytearray | memoryview):
            self._buffer = memoryview(source).cast("B")
            self._start = 0
            self.size = self._buffer.nbytes
            return
        if isinstance(source, str | os.PathLike):
            self._owned = self._file = open(source, "rb")  # noqa: SIM115  closed by close()
        else:
            self._file = source
        self._start = self._file.tell()
        self.size = self._file.seek(0, io.SEEK_END) - self._start
        self._file.seek(self._start)  # a later reader of the same file starts here too

    def read_at(self, offset: int, size: int) -> bytes | memoryview:
        if self._buffer is not None:
            return self._buffer[offset : offset + size]
        assert self._file is not None
        self._file.seek(self._start + offset)
        parts: list[bytes] = []
        left = size
        while left:
            piece = self._file.read(left)
            if not piece:
                raise SelfEncryptionError(
                    f"the source shrank below {self._start + offset + size} bytes"
                )
            parts.append(piece)
            left -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


def _hash(data: bytes | memoryview) -> bytes:
    """SHA3-256 of a buffer slice, without copying it out first."""
    return hashlib.sha3_256(data).digest()


class Encryptor:
    """Streaming self-encryption of a re-readable source in two passes.

    Chunk i's keys need the pre-hashes of chunks i-1 and i-2, and chunk 0 needs the last
    two, so pass 1 hashes every chunk and pass 2 encrypts them one at a time. Memory stays
    at about two chunks whatever the file size. Iterate `chunks()` to the end, then read
    `data_map`. A file source is read from its current position to its end.
    """

    def __init__(self, source: Source) -> None:
        self._source = source
        self._data_map: DataMap | None = None
        reader = _Reader(source)
        self.size = reader.size
        reader.close()
        self.chunk_sizes = chunk_sizes(self.size)

    @property
    def data_map(self) -> DataMap:
        if self._data_map is None:
            raise RuntimeError("the data map is known only after chunks() has been consumed")
        return self._data_map

    def chunks(self) -> Generator[tuple[XorName, bytes], None, None]:
        """Yield (name, encrypted bytes) for each chunk, in order."""
        reader = _Reader(self._source)
        try:
            if reader.size != self.size:
                raise SelfEncryptionError(f"the source changed size ({self.size} -> {reader.size})")
            if not self.chunk_sizes:
                self._data_map = DataMap(content=bytes(reader.read_at(0, self.size)) or None)
                return
            yield from self._encrypt(reader)
        finally:
            reader.close()

    def _encrypt(self, reader: _Reader) -> Iterator[tuple[XorName, bytes]]:
        starts = [0, *accumulate(self.chunk_sizes)]
        spans = list(zip(starts, self.chunk_sizes, strict=False))
        pre_hashes = [_hash(reader.read_at(start, size)) for start, size in spans]
        infos: list[ChunkInfo] = []
        for i, (start, size) in enumerate(spans):
            plain = reader.read_at(start, size)
            if not reader.stable and _hash(plain) != pre_hashes[i]:
                raise SelfEncryptionError(f"the source changed while encrypting chunk {i}", i)
            n1, n2 = _neighbours(i, len(spans))
            encrypted = _encrypt_chunk(
                plain, *_pad_key_iv(pre_hashes[i], pre_hashes[n1], pre_hashes[n2])
            )
            name = XorName(sha3_256(encrypted))
            infos.append(ChunkInfo(i, name, pre_hashes[i], size))
            yield name, encrypted
        self._data_map = DataMap(chunks=tuple(infos))


def encrypt_file(source: Source) -> Encryptor:
    """An `Encryptor` over a path or a seekable binary file (buffers work too)."""
    return Encryptor(source)


def encrypt_bytes(data: bytes) -> tuple[DataMap, list[tuple[XorName, bytes]]]:
    """Self-encrypt a whole buffer: its data map and its chunks, in order."""
    encryptor = Encryptor(data)
    chunks = list(encryptor.chunks())
    return encryptor.data_map, chunks


def decrypt_bytes(dm: DataMap, get: Callable[[XorName], bytes]) -> bytes:
    """The whole plaintext of `dm`, fetching each chunk through `get`."""
    if not dm.chunks:
        return dm.content or b""
    return b"".join(decrypt_chunk(dm, i, get(info.hash)) for i, info in enumerate(dm.chunks))


# --------------------------------------------------------------------------- the stored map

# DataTypeEncoding (safe_core): [0, bytes] = Serialised(map, maybe sealed), [1, map] = DataMap
_SERIALISED = 0
_NESTED = 1


def _check_key(map_key: bytes | None) -> None:
    if map_key is not None and len(map_key) != KEY_SIZE:
        raise ValueError(
            f"map_key must be a {KEY_SIZE}-byte secretbox key, got {len(map_key)} bytes"
        )


def _seal_map(serialised: bytes, map_key: bytes | None) -> bytes:
    if map_key is None:
        return serialised
    # A random nonce, prepended: private maps do not deduplicate, as in safe_core.
    return bytes(nacl.secret.SecretBox(map_key).encrypt(serialised))


def _open_map(payload: bytes, map_key: bytes | None) -> DataMap:
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


def _unwrap(value: bytes) -> tuple[int, Any]:
    """A wrapper IData's value: (_SERIALISED, payload bytes) or (_NESTED, DataMap)."""
    obj = _unpack_msgpack(value, "a data-map wrapper")
    if isinstance(obj, list) and len(obj) == 2:
        if obj[0] == _SERIALISED and isinstance(obj[1], bytes):
            return _SERIALISED, obj[1]
        if obj[0] == _NESTED:
            return _NESTED, DataMap.from_obj(obj[1])
    raise SelfEncryptionError("not a data-map wrapper")


def pack_data_map(
    dm: DataMap, *, map_key: bytes | None = None
) -> tuple[bytes, list[tuple[XorName, bytes]]]:
    """safe_core `pack`: the wrapper IData value users name, plus any chunks it needs.

    The serialised map is wrapped as Serialised; while the wrapper is too big for one IData
    it is self-encrypted again and the new map wrapped as DataMap. Store every returned
    chunk and then the wrapper; the wrapper's SHA3 is the data-map name.
    """
    _check_key(map_key)
    value = msgpack.packb([_SERIALISED, _seal_map(dm.to_bytes(), map_key)], use_bin_type=True)
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
        value = msgpack.packb([_NESTED, level.to_obj()], use_bin_type=True)
    return value, extra


def unpack_data_map(
    value: bytes, get: Callable[[XorName], bytes], *, map_key: bytes | None = None
) -> DataMap:
    """safe_core `unpack`: from a wrapper IData value back to the blob's data map."""
    _check_key(map_key)
    kind, payload = _unwrap(value)
    while kind == _NESTED:
        kind, payload = _unwrap(decrypt_bytes(payload, get))
    return _open_map(payload, map_key)


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
    _check_key(map_key)
    value = await get_chunk(name)
    if sha3_256(value) != name:
        raise SelfEncryptionError(f"the data-map wrapper does not hash to {XorName(name).short()}")
    kind, payload = _unwrap(value)
    while kind == _NESTED:
        kind, payload = _unwrap(await _read_all(get_chunk, payload, offload=offload))
    return _open_map(payload, map_key)


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
    _check_key(map_key)
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
