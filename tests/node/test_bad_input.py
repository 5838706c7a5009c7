"""Bad input against a running node process: it answers with a typed error or drops the
connection, keeps serving, and leaves stored data exactly as it was.

Two ways in: raw TCP sockets (garbage, an oversized length prefix, truncated and stalled
frames, an unknown protocol version, before and after a correct handshake), and a proper
client connection carrying requests that are unsigned, forged, tampered with or replayed.
Every test checks afterwards that the node still answers and that the MD and IData it keeps
read back unchanged from a quorum and from every replica.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from client.network import NetworkClient
from node import errors as E
from node.cluster import LocalCluster, NodeEntry
from node.data import (
    Action,
    ImmutableData,
    Ins,
    MDataAddress,
    MutableData,
    PermissionSet,
    Update,
    Value,
)
from node.keys import Keypair
from node.requests import GetMData, MutateEntries, PutIData, Request
from node.securelink import Ephemeral, secure_stream
from node.tools import NodeTools, open_tools
from node.transport import auth_payload
from node.wire import PROTOCOL_VERSION, FrameDecoder, encode_frame, new_message
from node.xorname import XorName

pytestmark = pytest.mark.cluster

R = 5
TAG = 15_002
# How long the node may take to react; it has 5 s handshake and 10 s frame deadlines.
REACTION = 20.0


# ------------------------------------------------------------------------------ raw sockets


class RawConnection:
    """A TCP connection to a node that speaks (or mangles) the wire protocol by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.received: list[dict] = []
        self.closed = False
        self.keys = Keypair()

    @classmethod
    async def open(cls, address: str) -> RawConnection:
        host, _, port = address.rpartition(":")
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_message(self, timeout: float = REACTION) -> dict | None:
        """The next whole message, or None once the node closed the connection."""
        with trio.fail_after(timeout):
            while not self.received:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.closed = True
                    return None
                self.received.extend(self.decoder.feed(data))
        return self.received.pop(0)

    async def drain_until_closed(self, timeout: float = REACTION) -> list[dict]:
        """Every message until the node closes the connection (fails if it never does)."""
        messages = []
        with trio.fail_after(timeout):
            while (msg := await self.next_message(timeout)) is not None:
                messages.append(msg)
        return messages

    async def handshake(self) -> dict:
        """A correct client handshake; returns the node's hello."""
        hello = await self.next_message()
        assert hello is not None and hello["k"] == "hello"
        nonce = os.urandom(32)
        eph = Ephemeral()
        await self.send(encode_frame(new_message(
            "hello", role="client", pk=bytes(self.keys.public), name=bytes(self.keys.name),
            nonce=nonce, eph=eph.public, addr=None)))
        payload = auth_payload(hello["nonce"], bytes(self.keys.public), hello["pk"], "client", None,
                               eph.public, hello["eph"])
        await self.send(encode_frame(new_message("auth", sig=self.keys.sign(payload))))
        auth = await self.next_message()
        assert auth is not None and auth["k"] == "auth"
        # From here the link is sealed (node/securelink.py): what we send next is encrypted.
        self.stream = secure_stream(self.stream, eph, (nonce, bytes(self.keys.public), eph.public),
                                    (hello["nonce"], hello["pk"], hello["eph"]), dialled=True)
        return hello

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def frame_of(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def hello_of_version(version: int) -> bytes:
    keys = Keypair()
    msg = new_message("hello", role="client", pk=bytes(keys.public), name=bytes(keys.name),
                      nonce=os.urandom(32), addr=None)
    msg["v"] = version
    return encode_frame(msg)


# A frame the decoder must refuse, each on its own: (bytes to send, then half-close?)
GARBAGE = {
    "http_request": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + os.urandom(256), False),
    "random_bytes": (b"\x00\x00\x01\x00" + os.urandom(256), False),  # a valid length, junk body
    "not_a_map": (frame_of(b"\x93\x01\x02\x03"), False),  # msgpack [1, 2, 3]
    "map_without_envelope": (frame_of(b"\x81\xa1k\xa6status"), False),  # {"k": "status"}
    "oversized_length_prefix": (b"\xff\xff\xff\xff", False),
    "empty_frame": (b"\x00\x00\x00\x00", False),
    "truncated_frame": (b"\x00\x00\x03\xe8" + b"\x85" + os.urandom(20), True),  # 1000 promised
}


# ------------------------------------------------------------------------------ the data


@dataclass
class Target:
    """A node under attack and the data whose safety is checked afterwards."""

    lc: LocalCluster
    node: NodeEntry
    owner: Keypair
    md: MutableData
    chunk: XorName
    chunk_value: bytes
    addresses: list[str]
    network: bytes  # the network id signed requests are bound to

    def signed(self, op: Any, keys: Keypair) -> Request:
        """A request signed as a genuine client of this network signs it."""
        return Request.signed(op, keys, network=self.network, expires=int(time.time()) + 600)

    @property
    def address(self) -> str:
        return self.node.address


@pytest.fixture
async def target(healthy_cluster) -> Target:
    """An MD and an IData on the cluster; the node attacked is the MD's coordinator (the
    member nearest its name), the one that would apply a mutation."""
    lc = healthy_cluster.lc
    owner = Keypair()
    md = MutableData(XorName.random(), TAG, {b"k": Value(b"v0", 0)},
                     {owner.public: PermissionSet.allowing(Action.INSERT)}, 0, frozenset({owner.public}))
    value = os.urandom(4096)
    async with NetworkClient.open(healthy_cluster.addresses(), owner, replication=R) as client:
        await client.put_mdata(md)
        chunk = await client.put_idata(value)
        network = client.network_id
    where = await lc.locate(md.address.name)
    node = next(e for e in lc.load().nodes if e.id == where["close_group"][0])
    return Target(lc, node, owner, md, chunk, value, healthy_cluster.addresses(), network)


async def read_state(t: Target) -> tuple[MutableData, bytes, dict[str, bytes]]:
    """The MD by quorum read, the IData, and every close-group member's MD digest."""
    async with NetworkClient.open(t.addresses, replication=R) as client:
        md = await client.get_mdata(t.md.address)
        value = await client.get_idata(t.chunk)
    where = await t.lc.locate(t.md.address.name)
    nodes = {e.id: e for e in t.lc.load().nodes}
    wire = Request(GetMData(t.md.address), Keypair().public).to_obj()
    digests = {}
    async with open_tools() as tools:
        for member in where["close_group"]:
            entry = nodes[member]
            reply = await tools.request(entry.address, "read", expect=entry.name, req=wire)
            digests[member] = reply["digest"]
    return md, value, digests


async def assert_serving_and_unchanged(t: Target, before: tuple[MutableData, bytes, dict[str, bytes]]) -> None:
    async with open_tools() as tools:
        status = await tools.status(t.address, expect=t.node.name)
        assert status["ready"] and status["id"] == t.node.id
    assert t.lc.is_alive(t.node)
    # Through the attacked node alone, then by quorum and replica by replica.
    async with NetworkClient.open([t.address], replication=R) as client:
        assert await client.get_idata(t.chunk) == t.chunk_value
    after = await read_state(t)
    assert after[0] == before[0], "the MD changed"
    assert after[1] == before[1], "the IData changed"
    assert after[2] == before[2], "a replica's copy of the MD changed"
    assert len(set(after[2].values())) == 1, "replicas disagree"


# ------------------------------------------------------------------------------ raw bytes


@pytest.mark.parametrize("after_handshake", [False, True], ids=["before_handshake", "after_handshake"])
@pytest.mark.parametrize("case", sorted(GARBAGE))
async def test_malformed_frames_get_a_typed_error_or_a_closed_connection(
    target: Target, case: str, after_handshake: bool
) -> None:
    before = await read_state(target)
    payload, half_close = GARBAGE[case]
    conn = await RawConnection.open(target.address)
    try:
        if after_handshake:
            await conn.handshake()
        else:
            assert (await conn.next_message())["k"] == "hello"
        await conn.send(payload)
        if half_close:
            await conn.stream.send_eof()
        messages = await conn.drain_until_closed()
    finally:
        await conn.aclose()
    # The node says why (a typed ProtocolError, best effort) and hangs up.
    assert conn.closed
    assert [m["k"] for m in messages] == ["error"], messages
    assert messages[0]["err"]["code"] == E.ProtocolError.code, messages
    await assert_serving_and_unchanged(target, before)


async def test_a_stalled_frame_is_dropped_at_its_deadline(target: Target) -> None:
    before = await read_state(target)
    conn = await RawConnection.open(target.address)
    try:
        assert (await conn.next_message())["k"] == "hello"
        started = trio.current_time()
        await conn.send(b"\x00\x00\x00\x40" + b"\x80")  # 64 bytes promised, 1 sent, then silence
        await conn.drain_until_closed()
        waited = trio.current_time() - started
    finally:
        await conn.aclose()
    print(f"\n[figure] a connection stalled mid-frame before its handshake is dropped after {waited:.2f}s")
    assert conn.closed and waited < REACTION
    await assert_serving_and_unchanged(target, before)


async def test_an_unknown_protocol_version_in_the_handshake_is_refused(target: Target) -> None:
    before = await read_state(target)
    conn = await RawConnection.open(target.address)
    try:
        assert (await conn.next_message())["k"] == "hello"
        await conn.send(hello_of_version(PROTOCOL_VERSION + 98))
        messages = await conn.drain_until_closed()
    finally:
        await conn.aclose()
    assert conn.closed
    assert [m["k"] for m in messages] == ["error"]
    assert messages[0]["err"]["code"] == E.ProtocolError.code
    assert "version" in messages[0]["err"]["msg"]
    await assert_serving_and_unchanged(target, before)


async def test_an_unknown_protocol_version_after_the_handshake_is_answered(target: Target) -> None:
    before = await read_state(target)
    conn = await RawConnection.open(target.address)
    try:
        await conn.handshake()
        msg = new_message("status")
        msg["v"] = PROTOCOL_VERSION + 1
        await conn.send(encode_frame(msg))
        reply = await conn.next_message()
        assert reply is not None and reply["k"] == "error" and reply["re"] == msg["id"]
        assert reply["err"]["code"] == E.ProtocolError.code
        # The connection is still in sync and usable.
        ok = new_message("status")
        await conn.send(encode_frame(ok))
        reply = await conn.next_message()
        assert reply is not None and reply["k"] == "status" and reply["re"] == ok["id"]
    finally:
        await conn.aclose()
    await assert_serving_and_unchanged(target, before)


# ------------------------------------------------------------------------------ client messages


async def ask(tools: NodeTools, t: Target, kind: str, **fields) -> dict:
    return await tools.request(t.address, kind, expect=t.node.name, **fields)


async def test_unknown_kinds_node_only_kinds_and_malformed_requests_get_typed_errors(target: Target) -> None:
    before = await read_state(target)
    injected = os.urandom(1000)
    async with open_tools() as tools:
        with pytest.raises(E.ProtocolError):
            await ask(tools, target, "frobnicate")
        # A client may not speak node-to-node messages, e.g. store a chunk without a request.
        with pytest.raises(E.InvalidOperation):
            await ask(tools, target, "chunk_put", value=injected)
        with pytest.raises(E.InvalidOperation):
            await ask(tools, target, "accept", items=[])
        for junk in ("junk", {}, {"op": ["mutate_entries", [1, 2]], "rq": b"", "rid": b"x"},
                     {"op": ["no_such_op", []], "rq": b"", "rid": os.urandom(16)}):
            with pytest.raises(E.ProtocolError):
                await ask(tools, target, "request", req=junk)
        with pytest.raises(E.SafeError):
            await ask(tools, target, "locate", name=b"short")
        assert not (await tools.locate(target.address, XorName.hash_of(injected), expect=target.node.name)).holds
    await assert_serving_and_unchanged(target, before)


async def test_an_unsigned_mutation_is_refused(target: Target) -> None:
    before = await read_state(target)
    op = MutateEntries(target.md.address, {b"unsigned": Ins(b"x")})
    unsigned = Request(op, target.owner.public)  # names the owner, carries no signature
    anonymous = Request(PutIData(ImmutableData(b"no requester at all")))
    async with open_tools() as tools:
        with pytest.raises(E.InvalidSignature):
            await ask(tools, target, "request", req=unsigned.to_obj())
        with pytest.raises(E.InvalidSignature):
            await ask(tools, target, "request", req=anonymous.to_obj())
    await assert_serving_and_unchanged(target, before)


async def test_a_forged_mutation_is_refused(target: Target) -> None:
    before = await read_state(target)
    mallory = Keypair()
    op = MutateEntries(target.md.address, {b"k": Update(b"forged", 1)})
    # Claims to come from the owner, signed by someone else.
    claimed = Request(op, target.owner.public)
    forged = Request(op, target.owner.public, claimed.request_id, None, mallory.sign(claimed.signing_bytes()))
    # A genuine signature by the owner, moved onto a different operation.
    genuine = target.signed(MutateEntries(target.md.address, {b"harmless": Ins(b"ok")}), target.owner)
    tampered = Request(op, target.owner.public, genuine.request_id, None, genuine.signature)
    # A signature cut short.
    truncated = Request(op, target.owner.public, genuine.request_id, None, genuine.signature[:10])
    async with open_tools() as tools:
        for request in (forged, tampered, truncated):
            with pytest.raises(E.InvalidSignature):
                await ask(tools, target, "request", req=request.to_obj())
    await assert_serving_and_unchanged(target, before)


async def test_a_replayed_mutation_changes_nothing(target: Target) -> None:
    address: MDataAddress = target.md.address
    first = target.signed(MutateEntries(address, {b"k": Update(b"v1", 1)}), target.owner)
    second = target.signed(MutateEntries(address, {b"k": Update(b"v2", 2)}), target.owner)
    async with open_tools() as tools:
        for request in (first, second):  # both applied, in order, through the coordinator
            reply = await ask(tools, target, "request", req=request.to_obj())
            assert reply["k"] == "response"
    before = await read_state(target)
    assert before[0].entries[b"k"] == Value(b"v2", 2)

    members = {e.id: e for e in target.lc.load().nodes}
    where = await target.lc.locate(address.name)
    outcomes = []
    async with open_tools() as tools:
        # The first request again, to the coordinator and to every other member: a replay may
        # be answered as the original was (the request id is remembered) or refused with a
        # typed error; it must never take effect a second time.
        for member in where["close_group"]:
            entry = members[member]
            try:
                reply = await tools.request(entry.address, "request", expect=entry.name, req=first.to_obj())
                outcomes.append(reply["k"])
            except E.SafeError as exc:
                outcomes.append(type(exc).__name__)
    assert all(o in ("response", "InvalidEntryActions", "InvalidSuccessor") for o in outcomes), outcomes
    await assert_serving_and_unchanged(target, before)
