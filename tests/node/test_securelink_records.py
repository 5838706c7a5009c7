"""The link's records sealed and opened through libsodium directly are PyNaCl's records.

`node/securelink.py` calls libsodium's ChaCha20-Poly1305 (IETF) through PyNaCl's cffi module
to skip the public functions' per-call argument checks. These tests hold it to the public
functions: byte-identical records, and every alteration refused.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from node.securelink import TAG_LEN, Opener, Sealer, _aead_open, _aead_seal

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=12, max_size=12)


@settings(max_examples=200, deadline=None)
@given(plain=st.binary(max_size=2000), ad=st.binary(max_size=8), nonce=nonces, key=keys)
def test_the_same_records_as_pynacls_public_functions(plain: bytes, ad: bytes, nonce: bytes, key: bytes) -> None:
    sealed = _aead_seal(plain, ad, nonce, key)
    assert sealed == crypto_aead_chacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    assert len(sealed) == len(plain) + TAG_LEN
    assert _aead_open(sealed, ad, nonce, key) == plain
    assert crypto_aead_chacha20poly1305_ietf_decrypt(sealed, ad, nonce, key) == plain


@settings(max_examples=200, deadline=None)
@given(plain=st.binary(min_size=1, max_size=500), ad=st.binary(min_size=1, max_size=8), nonce=nonces, key=keys,
       where=st.sampled_from(["sealed", "ad", "nonce", "key"]), at=st.integers(min_value=0), xor=st.integers(1, 255))
def test_any_altered_byte_fails_to_open(plain: bytes, ad: bytes, nonce: bytes, key: bytes, where: str,
                                        at: int, xor: int) -> None:
    parts = {"sealed": _aead_seal(plain, ad, nonce, key), "ad": ad, "nonce": nonce, "key": key}
    victim = parts[where]
    at %= len(victim)
    parts[where] = victim[:at] + bytes([victim[at] ^ xor]) + victim[at + 1:]
    with pytest.raises(CryptoError):
        _aead_open(parts["sealed"], parts["ad"], parts["nonce"], parts["key"])


@pytest.mark.parametrize("length", [0, 1, TAG_LEN - 1])
def test_a_record_shorter_than_its_tag_fails_to_open(length: int) -> None:
    with pytest.raises(CryptoError):
        _aead_open(bytes(length), b"ad", bytes(12), bytes(32))


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "k" * 32])
def test_link_keys_are_32_bytes(key: object) -> None:
    with pytest.raises(ValueError):
        Sealer(key)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Opener(key)  # type: ignore[arg-type]


def test_a_sealer_and_an_opener_still_agree_record_by_record() -> None:
    key = bytes(range(32))
    sealer, opener = Sealer(key), Opener(key)
    wire = b"".join(sealer.seal(bytes([n]) * (n * 997 % 70_000 + 1)) for n in range(20))
    for start in range(0, len(wire), 1500):  # as the bytes come, in pieces
        opener.feed(wire[start:start + 1500])
    got = b""
    while chunk := opener.open_all():
        got += chunk
    assert got == b"".join(bytes([n]) * (n * 997 % 70_000 + 1) for n in range(20))
