"""Who is at the other end of a connection: the handshake's messages, checks and result.

On every new connection both sides send ``hello`` {role, pk, name, nonce (32 random bytes),
addr (listen address, nodes only), probe (optional)}; then each sends ``auth`` {sig} signing
`auth_payload` (domain tag, the *peer's* nonce, own pk, peer pk, own role and address). Each
side checks name == SHA3-256(pk), the signature, and, when it dialled a known name, that it
reached that name. Any failure closes the connection.

The handshake proves the key, not the claims: anyone can say ``role = node`` and name any
address. So a `Peer` carries what was claimed apart from what this end believes. A peer that
claims to be a node becomes one (`Peer.role == "node"`, `Peer.verified_node`) only once this
end has reached the claimed address itself and found the same key answering there (see
`Endpoint` for the dial-back, a *probe*: a handshake with ``probe = True`` that the answering
side closes without treating it as a connection). Until then it is a client in every respect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import ProtocolError
from .keys import PUBLIC_KEY_LEN, PublicKey
from .peer import Peer
from .wire import Message
from .xorname import XOR_NAME_LEN, XorName

ROLES = ("node", "client")
HANDSHAKE_DOMAIN = b"safenet-handshake-v1"
NONCE_LEN = 32
MAX_ADDRESS_LEN = 256
HANDSHAKE_KINDS = frozenset({"hello", "auth"})


class HandshakeError(ProtocolError):
    """A connection's handshake failed: wrong peer, bad key or signature, bad or late hello."""


@dataclass(frozen=True)
class Incoming:
    """One message that arrived from an authenticated peer."""

    peer: Peer
    msg: Message


@dataclass(frozen=True)
class Hello:
    """A checked ``hello``: the peer (unverified as yet), its nonce, and whether it probes."""

    peer: Peer
    nonce: bytes
    probe: bool


def auth_payload(
    verifier_nonce: bytes,
    signer_pk: bytes,
    verifier_pk: bytes,
    signer_role: str,
    signer_address: str | None,
) -> bytes:
    """What a handshake ``auth`` signs: fresh for this connection (the verifier's nonce),
    bound to both keys, and covering the signer's claimed role and listen address."""
    claims = msgpack.packb([signer_role, signer_address], use_bin_type=True)
    return HANDSHAKE_DOMAIN + verifier_nonce + signer_pk + verifier_pk + claims


def hello_fields(
    role: str, public: PublicKey, nonce: bytes, address: str | None, *, probe: bool = False
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "role": role,
        "pk": bytes(public),
        "name": bytes(public.name),
        "nonce": nonce,
        "addr": address,
    }
    if probe:
        fields["probe"] = True
    return fields


def check_hello(msg: Message, own_name: XorName, expected: XorName | None) -> Hello:
    """Validate a peer's hello; raise HandshakeError saying what is wrong with it."""
    role, pk, name = msg.get("role"), msg.get("pk"), msg.get("name")
    nonce, addr, probe = msg.get("nonce"), msg.get("addr"), msg.get("probe", False)
    if role not in ROLES:
        raise HandshakeError(f"hello: unknown role {role!r:.40}")
    if not (isinstance(pk, bytes) and len(pk) == PUBLIC_KEY_LEN):
        raise HandshakeError("hello: 'pk' is not a public key")
    if not (isinstance(name, bytes) and len(name) == XOR_NAME_LEN):
        raise HandshakeError("hello: 'name' is not a name")
    if not (isinstance(nonce, bytes) and len(nonce) == NONCE_LEN):
        raise HandshakeError(f"hello: 'nonce' is not {NONCE_LEN} bytes")
    if addr is not None and not (isinstance(addr, str) and len(addr) <= MAX_ADDRESS_LEN):
        raise HandshakeError("hello: 'addr' is not an address")
    if role == "client" and addr is not None:
        raise HandshakeError("hello: clients do not listen, yet one sent an address")
    if not isinstance(probe, bool):
        raise HandshakeError("hello: 'probe' is not a bool")
    public = PublicKey(pk)
    if public.name != name:
        raise HandshakeError("hello: the name is not the hash of the public key")
    peer_name = XorName(name)
    if peer_name == own_name:
        raise HandshakeError("connected to itself")
    if expected is not None and peer_name != expected:
        raise HandshakeError(f"expected peer {expected.short()}, reached {peer_name.short()}")
    peer = Peer(peer_name, "client", None, public, claimed_role=role, claimed_address=addr)
    return Hello(peer, nonce, probe)


def peer_key(peer: Peer) -> PublicKey:
    """The key a checked hello proved (a `Peer` made elsewhere has none)."""
    if peer.public_key is None:
        raise HandshakeError(f"no key is known for {peer.name.short()}")
    return peer.public_key


def check_auth(msg: Message, peer: Peer, our_nonce: bytes, own_public: PublicKey) -> None:
    """Check the peer's ``auth`` signs our nonce, both keys and what its hello claimed."""
    sig = msg.get("sig")
    key = peer_key(peer)
    payload = auth_payload(our_nonce, key, own_public, peer.claimed_role, peer.claimed_address)
    if not isinstance(sig, bytes) or not key.verify(payload, sig):
        raise HandshakeError(f"bad handshake signature from {peer.name.short()}")
