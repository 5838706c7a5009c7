"""Encrypted links: every byte after the handshake is sealed with keys only the two ends know.

The handshake (node/handshake.py) proves both long-term keys. Each hello also carries a fresh
X25519 public key (``eph``), and each side's ``auth`` signature covers both ephemeral keys
along with both nonces and both long-term keys, so a man in the middle cannot swap them
without breaking a signature. From the X25519 shared secret and the handshake transcript
(`transcript`) each side derives two keys, one per direction (`derive_keys`); after its own
``auth`` has gone out and the peer's has been checked, a connection runs inside a
`SecureStream`.

The record layer is independent of message frames: whatever the frame layer writes is cut
into records of at most `MAX_RECORD` plaintext bytes, each sent as

    4-byte big-endian length of the sealed part | ChaCha20-Poly1305 (IETF) ciphertext + tag

with the length prefix as associated data and the nonce a per-direction counter (0, 1, 2,
...) that is never sent. A record replayed, dropped, reordered, cut, altered or injected
fails to open under the counter the receiver expects, and the stream is then broken for
good: `LinkTampered` (a ProtocolError), and the connection closes. Nothing unauthenticated
ever reaches the frame layer.

This is the shape of Noise's XX pattern reduced to what the transport needs (ephemeral
Diffie-Hellman, keys bound to the transcript, identities proven by signatures over it); it
gives forward secrecy per connection. It does not hide who talks to whom: the hellos with
the long-term keys are in clear.
"""

from __future__ import annotations

import hashlib
import os

import trio
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
)
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from nacl.hash import blake2b
from nacl.public import PrivateKey

from .errors import ProtocolError

EPHEMERAL_LEN = 32
KEY_LEN = 32
TAG_LEN = 16
RECORD_PREFIX = 4
MAX_RECORD = 64 * 1024  # plaintext bytes a record carries at most
MAX_SEALED = MAX_RECORD + TAG_LEN
LINK_DOMAIN = b"safenet-link-v1"
RECV_CHUNK = 64 * 1024


# Sealing and opening records. PyNaCl's public functions check every argument and format
# their error messages in advance on every call (half their cost for a small record, twice
# per message at each end); `Sealer` and `Opener` pass libsodium exactly a 32-byte key and a
# 12-byte nonce of their own making, so they call it through PyNaCl's own cffi module when
# it is there, and through the public functions otherwise. Same records either way
# (tests/node/test_securelink_records.py).
try:
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _direct_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _direct_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
except (ImportError, AttributeError):  # pragma: no cover - another PyNaCl layout
    _ffi = None


def _aead_seal(plain: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    if _ffi is None:  # pragma: no cover
        return crypto_aead_chacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    size = len(plain) + TAG_LEN
    out = _ffi.new("unsigned char[]", size)
    if _direct_encrypt(out, _ffi.NULL, plain, len(plain), ad, len(ad), _ffi.NULL, nonce, key) != 0:
        raise CryptoError("encryption failed")  # pragma: no cover - libsodium does not fail here
    return _ffi.buffer(out, size)[:]


def _aead_open(sealed: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """The plaintext of `sealed` (at least a tag long); CryptoError if it does not open."""
    if _ffi is None:  # pragma: no cover
        return crypto_aead_chacha20poly1305_ietf_decrypt(sealed, ad, nonce, key)
    size = len(sealed) - TAG_LEN
    if size < 0:
        raise CryptoError("a sealed record is shorter than its tag")
    out = _ffi.new("unsigned char[]", max(size, 1))
    if _direct_decrypt(out, _ffi.NULL, _ffi.NULL, sealed, len(sealed), ad, len(ad), nonce, key) != 0:
        raise CryptoError("the record failed to open")
    return _ffi.buffer(out, size)[:]


class LinkTampered(ProtocolError):
    """A record failed to open: altered, replayed, reordered, injected or cut. The link is
    closed; nothing more is read from it."""


class Ephemeral:
    """One connection's X25519 key pair; the secret is used once and dropped."""

    def __init__(self) -> None:
        self._secret: PrivateKey | None = PrivateKey.generate()
        self.public = bytes(self._secret.public_key)

    def shared(self, peer_public: bytes) -> bytes:
        """The Diffie-Hellman secret with `peer_public` (once). ProtocolError for a key that
        is not one or a low-order point (an all-zero secret)."""
        if self._secret is None:
            raise RuntimeError("this ephemeral key was used already")
        if not (isinstance(peer_public, bytes) and len(peer_public) == EPHEMERAL_LEN):
            raise ProtocolError("the peer's ephemeral key is not 32 bytes")
        secret, self._secret = self._secret, None
        try:
            shared = crypto_scalarmult(bytes(secret), peer_public)
        except (CryptoError, ValueError, TypeError):
            raise ProtocolError("the peer's ephemeral key is a low-order point") from None
        if shared == bytes(EPHEMERAL_LEN):
            raise ProtocolError("the peer's ephemeral key is a low-order point")
        return shared


def transcript(dialler: tuple[bytes, bytes, bytes], listener: tuple[bytes, bytes, bytes]) -> bytes:
    """A hash of what both hellos said that the keys depend on: each side's (nonce, long-term
    public key, ephemeral key), the dialler's first."""
    h = hashlib.sha3_256(LINK_DOMAIN)
    for part in (*dialler, *listener):
        h.update(len(part).to_bytes(2, "big") + part)
    return h.digest()


def derive_keys(shared: bytes, transcript_hash: bytes, *, dialled: bool) -> tuple[bytes, bytes]:
    """(send key, receive key) for this end: BLAKE2b keyed with the shared secret over the
    transcript, split into the dialler->listener and listener->dialler keys."""
    material = blake2b(transcript_hash, key=shared, digest_size=2 * KEY_LEN,
                       person=b"safenet-link-key", encoder=RawEncoder)
    forward, backward = material[:KEY_LEN], material[KEY_LEN:]
    return (forward, backward) if dialled else (backward, forward)


def _nonce(counter: int) -> bytes:
    return bytes(4) + counter.to_bytes(8, "big")


class Sealer:
    """One direction's sending half: plaintext in, records out, counter-numbered."""

    def __init__(self, key: bytes) -> None:
        if not (isinstance(key, bytes) and len(key) == KEY_LEN):
            raise ValueError(f"a link key is {KEY_LEN} bytes")
        self.key = key
        self.counter = 0

    def seal(self, data: bytes | bytearray | memoryview) -> bytes:
        """`data` as one or more records (empty data: no record)."""
        parts = []
        view = memoryview(data)
        for start in range(0, len(view), MAX_RECORD):
            chunk = view[start:start + MAX_RECORD]
            prefix = (len(chunk) + TAG_LEN).to_bytes(RECORD_PREFIX, "big")
            parts.append(prefix)
            parts.append(_aead_seal(bytes(chunk), prefix, _nonce(self.counter), self.key))
            self.counter += 1
        return b"".join(parts)


class Opener:
    """One direction's receiving half: bytes in as they come, plaintext out, record by
    record; the first record that does not open breaks it for good."""

    def __init__(self, key: bytes) -> None:
        if not (isinstance(key, bytes) and len(key) == KEY_LEN):
            raise ValueError(f"a link key is {KEY_LEN} bytes")
        self.key = key
        self.counter = 0
        self._buf = bytearray()
        self.broken: LinkTampered | None = None

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        """Sealed bytes buffered that are not a whole record yet."""
        return len(self._buf)

    def open_all(self) -> bytes:
        """The plaintext of every whole record buffered (b"" if none is whole yet)."""
        if self.broken is not None:
            raise self.broken
        parts = []
        buf, pos = self._buf, 0
        try:
            while len(buf) - pos >= RECORD_PREFIX:
                prefix = bytes(buf[pos:pos + RECORD_PREFIX])
                length = int.from_bytes(prefix, "big")
                if not TAG_LEN < length <= MAX_SEALED:
                    self._fail(f"a record of {length} sealed bytes (limits {TAG_LEN + 1}..{MAX_SEALED})")
                end = pos + RECORD_PREFIX + length
                if len(buf) < end:
                    break
                with memoryview(buf) as view:
                    sealed = bytes(view[pos + RECORD_PREFIX:end])
                try:
                    parts.append(_aead_open(sealed, prefix, _nonce(self.counter), self.key))
                except CryptoError:
                    self._fail(f"record {self.counter} failed authentication "
                               "(altered, replayed, reordered or injected)")
                pos = end
                self.counter += 1
        finally:
            if pos and self.broken is None:
                del buf[:pos]  # once per call, not once per record
        return b"".join(parts)

    def _fail(self, why: str) -> None:
        self.broken = LinkTampered(f"link: {why}; closing it")
        self._buf = bytearray()
        raise self.broken


class SecureStream(trio.abc.HalfCloseableStream):
    """A stream whose bytes travel sealed over `inner` (see the module docstring).

    `initial` is ciphertext that arrived with the handshake's last frame and was already
    read off `inner`.

    Over a TCP socket it can also write without waiting (`send_now`): the sealed bytes go to
    the socket at once, as far as its buffer takes them, and whatever it did not take is
    kept and goes first on the next `send_all` or `send_eof`. The transport uses this to
    send a burst of frames with no task switch at all while the socket has room."""

    def __init__(self, inner: trio.abc.Stream, send_key: bytes, receive_key: bytes,
                 initial: bytes = b"") -> None:
        self.inner = inner
        self.sealer = Sealer(send_key)
        self.opener = Opener(receive_key)
        self.opener.feed(initial)
        self._plain = b""  # opened bytes not handed out yet
        # A socket's descriptor takes os.write on POSIX systems (not Windows' socket handles).
        self._socket = (inner.socket if isinstance(inner, trio.SocketStream) and os.name == "posix"
                        else None)
        self._unsent = b""  # sealed bytes `send_now` could not hand to the socket yet

    @property
    def can_send_now(self) -> bool:
        """Whether `send_now` is available: a TCP socket underneath, still open."""
        return self._socket is not None and self._socket.fileno() != -1

    @property
    def unsent(self) -> int:
        """Sealed bytes waiting for the next `send_all` (left over by `send_now`)."""
        return len(self._unsent)

    def send_now(self, data: bytes | bytearray | memoryview) -> bool:
        """Seal `data` and write it to the socket without waiting. True when all of it went;
        False when the socket's buffer was full and the rest is kept for the next
        `send_all` (which the caller must then make). Raises OSError if the socket failed.

        Only for a caller that knows no `send_all` is under way (the transport's write lock
        is free): the bytes must reach the socket in the order they were sealed."""
        if self._socket is None:
            raise RuntimeError("send_now needs a TCP socket underneath")
        sealed = self.sealer.seal(data)
        if self._unsent:
            self._unsent += sealed
            return False
        try:
            # The descriptor is looked up on every call: a closed socket says -1 (EBADF),
            # never a descriptor reused by something else. trio keeps it non-blocking.
            written = os.write(self._socket.fileno(), sealed)
        except BlockingIOError:
            written = 0
        if written < len(sealed):
            self._unsent = sealed[written:]
            return False
        return True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sealed = self.sealer.seal(data)
        if self._unsent:
            sealed, self._unsent = self._unsent + sealed, b""
        if sealed:
            await self.inner.send_all(sealed)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._unsent:
            unsent, self._unsent = self._unsent, b""
            await self.inner.send_all(unsent)
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Opened bytes (at most `max_bytes`); b"" at a clean end of stream. A stream that
        ends inside a record is tampered with (a record was cut)."""
        while not self._plain:
            opener = self.opener
            if opener.pending or opener.broken is not None:  # else nothing to open
                self._plain = opener.open_all()
                if self._plain:
                    break
            data = await (self._read_socket() if self._socket is not None else self.inner.receive_some(RECV_CHUNK))
            if not data:
                if self.opener.pending:
                    self.opener.broken = LinkTampered("link: the stream ended inside a record; closing it")
                    raise self.opener.broken
                return b""
            self.opener.feed(data)
        size = len(self._plain) if max_bytes is None else max(1, max_bytes)
        out, self._plain = self._plain[:size], self._plain[size:]
        return out

    async def _read_socket(self) -> bytes:
        """What the socket has (up to RECV_CHUNK), waiting until it has something.

        Like the trio socket's `receive_some`, without its yield after a read that found the
        bytes already there (a task switch per message whenever they come faster than one
        at a time). A read that fills the whole chunk still yields, so a sender that keeps
        the socket full cannot keep the other tasks waiting; a smaller one means the
        socket is drained, and the reader's next read waits."""
        assert self._socket is not None
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            try:
                # The descriptor is looked up on every call, as in `send_now`.
                data = os.read(self._socket.fileno(), RECV_CHUNK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._socket)
                waited = True
                continue
            except OSError as exc:
                if self._socket.fileno() == -1:
                    raise trio.ClosedResourceError("the socket was closed") from exc
                raise trio.BrokenResourceError(f"socket error: {exc!r}") from exc
            if not waited and len(data) == RECV_CHUNK:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def secure_stream(stream: trio.abc.Stream, eph: Ephemeral, ours: tuple[bytes, bytes, bytes],
                  theirs: tuple[bytes, bytes, bytes], *, dialled: bool, initial: bytes = b"") -> SecureStream:
    """`stream` sealed with the keys of this handshake. `ours` and `theirs` are each end's
    (nonce, long-term public key, ephemeral public key); `dialled` says which end this is.
    The transport uses it after every handshake; so can a raw-socket tool or test that has
    done the handshake by hand."""
    shared = eph.shared(theirs[2])
    hashed = transcript(ours, theirs) if dialled else transcript(theirs, ours)
    send_key, receive_key = derive_keys(shared, hashed, dialled=dialled)
    return SecureStream(stream, send_key, receive_key, initial)
