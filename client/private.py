"""Private MDs: client-side encryption of entry keys and values (docs/data-model.md §1.7).

The network sees no difference between private and public MDs; privacy is the client's
encryption, described by an `MDataInfo`: the MD's address plus, for a private MD, a
secretbox key and a nonce. Entry keys are sealed with a deterministic nonce — the first 24
bytes of sha3(plaintext key ‖ info nonce) — so a private container's keys can still be
looked up; values are sealed with a random nonce each time. Deletes carry no value and pass
through unchanged.

    info = MDataInfo.random_private(15000)
    actions = info.encrypt_actions({b"notes.txt": Ins(b"secret")})
    await client.mutate_entries(info.address, actions)
    value = info.decrypt_value((await client.get_value(info.address, info.encrypt_key(b"notes.txt"))).content)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import msgpack
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from node import errors as E
from node.data import Del, EntryAction, Ins, MDataAddress, Update, Value
from node.xorname import XorName, sha3_256

KEY_LEN = SecretBox.KEY_SIZE  # 32
NONCE_LEN = SecretBox.NONCE_SIZE  # 24


class DecryptionError(E.SafeError):
    """An entry did not decrypt with this MDataInfo's key (wrong key, or tampered)."""


@dataclass(frozen=True, slots=True)
class MDataInfo:
    """Where an MD is and, if it is private, how its entries are encrypted."""

    name: XorName
    tag: int
    enc_key: bytes | None = None
    enc_nonce: bytes | None = None

    def __post_init__(self) -> None:
        if (self.enc_key is None) != (self.enc_nonce is None):
            raise ValueError("a private MDataInfo has both a key and a nonce")
        if self.enc_key is not None and (len(self.enc_key) != KEY_LEN or len(self.enc_nonce or b"") != NONCE_LEN):
            raise ValueError(f"the key is {KEY_LEN} bytes and the nonce {NONCE_LEN}")

    @classmethod
    def random_public(cls, tag: int) -> MDataInfo:
        return cls(XorName.random(), tag)

    @classmethod
    def random_private(cls, tag: int) -> MDataInfo:
        return cls(XorName.random(), tag, os.urandom(KEY_LEN), os.urandom(NONCE_LEN))

    @property
    def address(self) -> MDataAddress:
        return MDataAddress(self.name, self.tag)

    @property
    def private(self) -> bool:
        return self.enc_key is not None

    # ---------------------------------------------------------------- keys and values

    def encrypt_key(self, key: bytes) -> bytes:
        """Deterministic, so the same plaintext key always finds the same entry."""
        if self.enc_key is None:
            return key
        return self._seal(key, sha3_256(key + (self.enc_nonce or b""))[:NONCE_LEN])

    def decrypt_key(self, sealed: bytes) -> bytes:
        if self.enc_key is None:
            return sealed
        key = self._unseal(sealed)
        if self.encrypt_key(key) != sealed:  # the nonce must be the one the key implies
            raise DecryptionError("entry key was not sealed with this MD's nonce")
        return key

    def encrypt_value(self, value: bytes) -> bytes:
        """Random nonce each time."""
        if self.enc_key is None:
            return value
        return self._seal(value, os.urandom(NONCE_LEN))

    def decrypt_value(self, stored: bytes) -> bytes:
        if self.enc_key is None or stored == b"":  # empty content is a tombstone, never sealed
            return stored
        return self._unseal(stored)

    def _seal(self, plain: bytes, nonce: bytes) -> bytes:
        # Stored as a serialised (nonce, ciphertext) pair, as safe_core's SymmetricEnc was.
        assert self.enc_key is not None
        sealed = SecretBox(self.enc_key).encrypt(plain, nonce).ciphertext
        return msgpack.packb([nonce, bytes(sealed)], use_bin_type=True)

    def _unseal(self, stored: bytes) -> bytes:
        assert self.enc_key is not None
        try:
            nonce, sealed = msgpack.unpackb(stored, raw=False)
            return bytes(SecretBox(self.enc_key).decrypt(sealed, nonce))
        except (CryptoError, ValueError, TypeError, msgpack.ExtraData) as exc:
            raise DecryptionError(f"entry does not decrypt with this key: {exc}") from None

    # ---------------------------------------------------------------- whole maps

    def encrypt_actions(self, actions: Mapping[bytes, EntryAction]) -> dict[bytes, EntryAction]:
        out: dict[bytes, EntryAction] = {}
        for key, action in actions.items():
            sealed_key = self.encrypt_key(key)
            if isinstance(action, Ins):
                out[sealed_key] = Ins(self.encrypt_value(action.content), action.version)
            elif isinstance(action, Update):
                out[sealed_key] = Update(self.encrypt_value(action.content), action.version)
            else:
                out[sealed_key] = Del(action.version)
        return out

    def decrypt_entries(self, entries: Mapping[bytes, Value]) -> dict[bytes, Value]:
        return {
            self.decrypt_key(k): Value(self.decrypt_value(v.content), v.entry_version)
            for k, v in entries.items()
        }
