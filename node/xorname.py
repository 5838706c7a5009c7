"""Names in the 256-bit XOR address space shared by nodes, clients, data and message ids.

Distance between two names is their XOR read as a big-endian unsigned integer
(docs/data-model.md §4.1). Everything that orders names by closeness goes through this module.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

XOR_NAME_LEN = 32
XOR_NAME_BITS = XOR_NAME_LEN * 8


def sha3_256(data: bytes) -> bytes:
    """FIPS-202 SHA3-256, the one hash of the network."""
    return hashlib.sha3_256(data).digest()


class XorName(bytes):
    """A 32-byte name. Immutable, hashable, and usable wherever bytes are."""

    __slots__ = ()

    def __new__(cls, value: bytes | bytearray | memoryview) -> XorName:
        if isinstance(value, XorName):
            return value
        if not isinstance(value, bytes | bytearray | memoryview):
            # bytes(n) of an int n would allocate n zero bytes; bytes(str) is a TypeError
            raise ValueError(f"an XorName is made from bytes, not {type(value).__name__}")
        raw = bytes(value)
        if len(raw) != XOR_NAME_LEN:
            raise ValueError(f"an XorName is {XOR_NAME_LEN} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_hex(cls, text: str) -> XorName:
        text = text.strip().lower()
        if len(text) != 2 * XOR_NAME_LEN:
            raise ValueError(f"a name is {2 * XOR_NAME_LEN} hex digits, got {len(text)}")
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise ValueError(f"not a hex name: {text!r}") from None

    @classmethod
    def from_int(cls, value: int) -> XorName:
        return cls(value.to_bytes(XOR_NAME_LEN, "big"))

    @classmethod
    def hash_of(cls, data: bytes) -> XorName:
        return cls(sha3_256(data))

    @classmethod
    def random(cls, rng: object | None = None) -> XorName:
        """A random name; pass a `random.Random` to make it reproducible."""
        if rng is None:
            return cls(os.urandom(XOR_NAME_LEN))
        return cls(rng.getrandbits(XOR_NAME_BITS).to_bytes(XOR_NAME_LEN, "big"))  # type: ignore[attr-defined]

    def __int__(self) -> int:
        return int.from_bytes(self, "big")

    def distance(self, other: bytes) -> int:
        return int.from_bytes(self, "big") ^ int.from_bytes(other, "big")

    def common_prefix_bits(self, other: bytes) -> int:
        """How many leading bits the two names share (256 when equal)."""
        return XOR_NAME_BITS - self.distance(other).bit_length()

    def short(self) -> str:
        return self.hex()[:8]

    def __repr__(self) -> str:
        return f"XorName({self.hex()[:12]}..)"


def distance(a: bytes, b: bytes) -> int:
    """The XOR distance between two names, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def closest(target: bytes, names: Iterable[bytes], count: int) -> list[XorName]:
    """The `count` names closest to `target`, closest first (exact, by full sort). The one
    close-group rule: every place that orders nodes by nearness to a name uses this (or
    `distance` to order things that carry a name)."""
    t = int.from_bytes(target, "big")
    return sorted((XorName(n) for n in names), key=lambda n: int.from_bytes(n, "big") ^ t)[:count]


def is_closer(target: bytes, a: bytes, b: bytes) -> bool:
    """True when `a` is strictly closer to `target` than `b`."""
    t = int.from_bytes(target, "big")
    return (int.from_bytes(a, "big") ^ t) < (int.from_bytes(b, "big") ^ t)
