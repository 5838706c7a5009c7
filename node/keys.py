"""ed25519 identities. A node's or client's name is SHA3-256 of its public signing key, so
nobody chooses their place in the address space; they prove it by signing.
"""

from __future__ import annotations

from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .xorname import XorName, sha3_256

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


class PublicKey(bytes):
    """A 32-byte ed25519 public (verify) key."""

    __slots__ = ()

    def __new__(cls, value: bytes | bytearray | memoryview) -> PublicKey:
        if isinstance(value, PublicKey):
            return value
        if not isinstance(value, bytes | bytearray | memoryview):
            # bytes(n) of an int n would allocate n zero bytes; bytes(str) is a TypeError
            raise ValueError(f"a public key is made from bytes, not {type(value).__name__}")
        raw = bytes(value)
        if len(raw) != PUBLIC_KEY_LEN:
            raise ValueError(f"a public key is {PUBLIC_KEY_LEN} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @property
    def name(self) -> XorName:
        return XorName(sha3_256(self))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a valid detached signature by this key over exactly `message`."""
        if len(signature) != SIGNATURE_LEN:
            return False
        try:
            VerifyKey(bytes(self)).verify(message, signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True

    def __repr__(self) -> str:
        return f"PublicKey({self.hex()[:12]}..)"


# The all-zero key has no secret key. Making it an MD's owner freezes that MD's
# ownership for ever (docs/data-model.md §1.1, §1.9).
NO_OWNER_KEY = PublicKey(bytes(PUBLIC_KEY_LEN))


class Keypair:
    """A signing key with its public half; `name` is the holder's XorName."""

    __slots__ = ("_sk", "public", "name")

    def __init__(self, seed: bytes | None = None) -> None:
        self._sk = SigningKey(seed) if seed is not None else SigningKey.generate()
        self.public = PublicKey(bytes(self._sk.verify_key))
        self.name = self.public.name

    @classmethod
    def generate(cls, rng: object | None = None) -> Keypair:
        """A fresh keypair; pass a `random.Random` for a reproducible one (simulator, tests)."""
        if rng is None:
            return cls()
        return cls(rng.getrandbits(256).to_bytes(32, "big"))  # type: ignore[attr-defined]

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message).signature

    @classmethod
    def load_or_create(cls, path: Path) -> Keypair:
        """The keypair stored at `path`, made (mode 0600) on first use."""
        if path.exists():
            seed = path.read_bytes()
            if len(seed) != 32:
                raise ValueError(f"{path}: a key file holds a 32-byte seed, found {len(seed)} bytes")
            return cls(seed)
        kp = cls()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(kp.seed)
        tmp.chmod(0o600)
        tmp.replace(path)
        return kp

    def __repr__(self) -> str:
        return f"Keypair(name={self.name.short()})"
