"""Self-encryption: turning a blob into content-addressed chunks plus a data map, and back.

This is self_encryption 0.12 as docs/data-model.md §2.2 describes it, and safe_core's storage of
the data map as one ImmutableData (§2.3). A blob is split into chunks; each chunk is brotli-
compressed, sealed with XSalsa20-Poly1305 and XOR-ed with a pad, where the key, nonce and pad
come from the plaintext hashes (`pre_hash`) of the chunk and its two predecessors. Equal
plaintext therefore gives equal chunks, and the network deduplicates them for free.

This module never does I/O (`chunk_sizes`, `Encryptor`, `encrypt_bytes`, `decrypt_chunk`,
`decrypt_bytes`): it runs in a thread, a test or the simulator alike. Storing the data map
and streaming blobs through a chunk store is client/blobs.py.

The chunk bytes match SE12's algorithm; the data-map and wrapper encodings are msgpack (SAFE
used bincode), so data-map names are this testbed's own.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, BinaryIO

import brotli
import msgpack
import nacl.exceptions
import nacl.secret

from node.errors import SafeError
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
        return cls.from_obj(unpack_msgpack(raw, "a data map"))

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


def unpack_msgpack(raw: bytes, what: str) -> Any:
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
