"""Private databases: what the network sees of a database, and what it must not.

Reads on SAFE are open to anyone (docs/data-model.md §1.4), so privacy is client-side encryption
with the database's secret key, kept in the app's container. A `Sealer` does three things:
- `name(text)`: how a stream or category name appears in addresses and entry keys — the
  name itself for a public database, a keyed hash for a private one (so nobody can test
  whether a database holds stream `order@42`);
- `seal` / `unseal`: entry values (event records, log intents), SecretBox with a random
  nonce;
- `seal_payload`: event payloads, with a nonce derived from the key and the plaintext, so
  equal payloads still deduplicate inside one database and nowhere else.
A public database's sealer passes everything through.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.secret
import nacl.utils

from node.xorname import sha3_256

from .errors import CorruptData

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE
NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE
OVERHEAD = NONCE_SIZE + nacl.secret.SecretBox.MACBYTES  # what sealing adds to a value


def new_key() -> bytes:
    return nacl.utils.random(KEY_SIZE)


class Sealer:
    """The encryption of one database (`key=None`: a public database, no encryption)."""

    __slots__ = ("key", "_box")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEY_SIZE:
            raise ValueError(f"a database key is {KEY_SIZE} bytes")
        self.key = key
        self._box = nacl.secret.SecretBox(key) if key is not None else None

    @property
    def private(self) -> bool:
        return self._box is not None

    def name(self, text: str) -> bytes:
        raw = text.encode()
        if self.key is None:
            return raw
        return sha3_256(b"safenet-es/name\0" + self.key + raw)

    def seal(self, plain: bytes) -> bytes:
        if self._box is None:
            return plain
        return bytes(self._box.encrypt(plain))

    def seal_payload(self, plain: bytes) -> bytes:
        if self._box is None or self.key is None:
            return plain
        nonce = sha3_256(b"safenet-es/payload\0" + self.key + plain)[:NONCE_SIZE]
        return bytes(self._box.encrypt(plain, nonce))

    def unseal(self, stored: bytes) -> bytes:
        if self._box is None:
            return stored
        try:
            return bytes(self._box.decrypt(stored))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise CorruptData("a sealed value does not open with this database's key") from None
