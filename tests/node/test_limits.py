"""The transport's resource limits and its check of who is a node, under a virtual clock.

Hostile peers are hand-driven streams saying exactly the bytes an attacker would. Tests run
on `MemoryNetwork` under the autojump clock (a 30-second timeout costs nothing), except the
per-source cap, which needs real source addresses (TCP on 127.0.0.1).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from node.errors import ProtocolError
from node.keys import Keypair
from node.securelink import Ephemeral, secure_stream
from node.transport import (
    Endpoint,
    Incoming,
    MemoryNetwork,
    auth_payload,
    open_rpc_client,
    parse_address,
)
from node.wire import FrameDecoder, encode_frame, new_message, reply_to

GUARD = 100.0
KIB = 1024


@asynccontextmanager
async def serving(*endpoints: Endpoint) -> AsyncIterator[trio.Nursery]:
    """Run endpoints; the first answers every ping with a pong."""
    async with trio.open_nursery() as nursery:
        for endpoint in endpoints:
            await nursery.start(endpoint.run)
        nursery.start_soon(_echo, endpoints[0])
        yield nursery
        nursery.cancel_scope.cancel()


async def _echo(endpoint: Endpoint) -> None:
    async for incoming in endpoint.inbox:
        if incoming.msg["k"] == "ping":
            endpoint.send_nowait(incoming.peer.name, None, reply_to(incoming.msg, "pong"))


class Raw:
    """A hand-driven connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.ready: list[dict] = []
        self.keys = Keypair()

    async def read(self) -> dict | None:
        """The next message, or None once the other end has closed the connection."""
        while not self.ready:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self.ready.extend(self.decoder.feed(data))
        return self.ready.pop(0)

    async def closed(self) -> list[dict]:
        msgs = []
        with trio.fail_after(GUARD):
            while (msg := await self.read()) is not None:
                msgs.append(msg)
        return msgs

    async def handshake(self, role: str = "client", addr: str | None = None) -> None:
        nonce = os.urandom(32)
        keys = self.keys
        eph = Ephemeral()
        hello = new_message(
            "hello", role=role, pk=bytes(keys.public), name=bytes(keys.name), nonce=nonce,
            eph=eph.public, addr=addr,
        )
        await self.stream.send_all(encode_frame(hello))
        theirs = await self.read()
        assert theirs is not None and theirs["k"] == "hello"
        payload = auth_payload(theirs["nonce"], keys.public, theirs["pk"], role, addr, eph.public, theirs["eph"])
        await self.stream.send_all(encode_frame(new_message("auth", sig=keys.sign(payload))))
        auth = await self.read()
        assert auth is not None and auth["k"] == "auth"
        # From here the link is sealed (node/securelink.py).
        self.stream = secure_stream(self.stream, eph, (nonce, bytes(keys.public), eph.public),
                                    (theirs["nonce"], theirs["pk"], theirs["eph"]), dialled=True)


@pytest.fixture
async def raws() -> AsyncIterator[list[Raw]]:
    opened: list[Raw] = []
    yield opened
    for raw in opened:
        await trio.aclose_forcefully(raw.stream)


async def dial(net: MemoryNetwork, endpoint: Endpoint, opened: list[Raw]) -> Raw:
    raw = Raw(await net.dial(endpoint.address))
    opened.append(raw)
    return raw


def closed_with_protocol_error(msgs: list[dict], words: str = "") -> bool:
    return bool(msgs) and msgs[-1]["k"] == "error" and (
        msgs[-1]["err"]["code"] == ProtocolError.code and words in msgs[-1]["err"]["msg"]
    )


async def ping(net: MemoryNetwork, server: Endpoint) -> None:
    """A well-behaved client is served."""
    async with open_rpc_client(network=net) as rpc:
        reply = await rpc.request(None, server.address, new_message("ping"), GUARD)
        assert reply["k"] == "pong"


# ------------------------------------------------------------------------- frame sizes


async def test_a_big_frame_before_the_handshake_is_refused_at_its_prefix(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net)
    async with serving(server):
        raw = await dial(net, server, raws)
        # The first 4 bytes of a 3 MiB frame: refused before any body byte is kept.
        await raw.stream.send_all((3 * 1024 * KIB - 5).to_bytes(4, "big") + b"x" * 100)
        msgs = await raw.closed()
        assert closed_with_protocol_error(msgs, "exceeds the limit of 65536")
        assert trio.current_time() < 1.0
        assert server.stats()["handshake_failures"] == 1 and server.stats()["buffered"] == 0
        await ping(net, server)


async def test_after_the_handshake_the_normal_frame_limit_applies(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net)
    async with serving(server):
        raw = await dial(net, server, raws)
        await raw.handshake()
        await raw.stream.send_all(encode_frame(new_message("ping", pad=b"p" * 512 * KIB)))
        reply = await raw.read()
        assert reply is not None and reply["k"] == "pong"


# --------------------------------------------------------------------- receive budget


async def test_unfinished_frames_share_one_budget_and_small_requests_still_pass(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, max_buffered=1024 * KIB)
    async with serving(server):
        stalled = []
        for _ in range(6):
            raw = await dial(net, server, raws)
            await raw.handshake()
            frame = encode_frame(new_message("ping", pad=b"p" * 300 * KIB))
            await raw.stream.send_all(frame[: 200 * KIB])  # and then nothing more
            stalled.append(raw)
        await trio.sleep(1.0)
        # Three 300 KiB frames fit in the budget and are reserved whole; the others wait.
        stats = server.stats()
        assert 900 * KIB < stats["buffered"] <= 1024 * KIB
        await ping(net, server)  # a frame that arrives whole needs no reservation
        # At the frame deadline the stalled ones go, and so do the ones still waiting.
        with trio.fail_after(GUARD):
            for raw in stalled:
                assert closed_with_protocol_error(await raw.closed())
        assert trio.current_time() == pytest.approx(10.0, abs=1.0)
        stats = server.stats()
        assert stats["refused_buffer_full"] == 3 and stats["buffered"] == 0
        assert stats["buffered_peak"] <= 1024 * KIB + 6 * 4 * KIB


async def test_honest_big_frames_wait_for_room_in_the_budget_instead_of_failing(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, max_buffered=1024 * KIB)
    async with serving(server) as nursery:
        senders = []
        for _ in range(4):
            raw = await dial(net, server, raws)
            await raw.handshake()
            senders.append(raw)
        frame = encode_frame(new_message("ping", pad=b"p" * 700 * KIB))

        async def send_slowly(raw: Raw) -> None:
            # Four 700 KiB frames at once need 2.8 MiB: more than the budget, so some wait.
            for start in range(0, len(frame), 100 * KIB):
                await raw.stream.send_all(frame[start : start + 100 * KIB])
                await trio.sleep(0.05)

        for raw in senders:
            nursery.start_soon(send_slowly, raw)
        for raw in senders:
            reply = await raw.read()
            assert reply is not None and reply["k"] == "pong"
        assert server.stats()["refused_buffer_full"] == 0
        assert server.stats()["buffered_peak"] <= 1024 * KIB


async def test_a_sender_dripping_a_frame_is_dropped_at_the_frame_deadline(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, frame_timeout=7.0)
    async with serving(server) as nursery:
        raw = await dial(net, server, raws)
        await raw.handshake()
        frame = encode_frame(new_message("ping", pad=b"p" * 1000))

        async def drip() -> None:
            for i in range(len(frame) - 1):
                await raw.stream.send_all(frame[i : i + 1])
                await trio.sleep(1.0)

        nursery.start_soon(drip)
        start = trio.current_time()
        assert closed_with_protocol_error(await raw.closed(), "stalled")
        assert trio.current_time() - start == pytest.approx(7.0, abs=1.0)


# -------------------------------------------------------------------------- admission


async def test_handshakes_in_progress_are_capped_and_the_oldest_makes_room(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, max_handshaking=4, handshake_timeout=30.0)
    async with serving(server):
        silent = []
        for _ in range(6):
            silent.append(await dial(net, server, raws))
            await trio.sleep(0.1)
        for raw in silent[:2]:  # evicted at once, long before the handshake deadline
            assert [m["k"] for m in await raw.closed()] == ["hello"]
        assert trio.current_time() < 1.0
        assert server.stats()["evicted_handshakes"] == 2
        await ping(net, server)  # a newcomer still gets in (evicting another silent one)
        assert server.stats()["evicted_handshakes"] == 3


async def test_at_the_connection_cap_the_longest_silent_connection_makes_room(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, max_connections=3)
    async with serving(server):
        idle = []
        for _ in range(3):
            raw = await dial(net, server, raws)
            await raw.handshake()
            idle.append(raw)
            await trio.sleep(1.0)
        await idle[0].stream.send_all(encode_frame(new_message("ping")))  # now the freshest
        assert (await idle[0].read())["k"] == "pong"
        await ping(net, server)
        assert await idle[1].closed() == []  # the longest silent went
        assert server.stats()["evicted_connections"] == 1


async def test_connections_from_one_source_are_capped_but_verified_nodes_stay() -> None:
    # Real TCP: the cap is per source address, which in-memory streams do not have.
    server = Endpoint(Keypair(), max_connections_per_source=3)
    node = Endpoint(Keypair())
    opened: list[trio.SocketStream] = []
    try:
        async with serving(server, node):
            node.send_nowait(server.name, server.address, new_message("hi"))
            with trio.fail_after(GUARD):
                while not any(p.verified_node for p in server.connected_peers()):
                    await trio.sleep(0.01)
            host, port = parse_address(server.address)
            for _ in range(4):
                stream = await trio.open_tcp_stream(host, port)
                opened.append(stream)
                await Raw(stream).handshake()
            stats = server.stats()
            assert stats["evicted_per_source"] == 2  # the node's link counted, but stayed
            assert stats["connections_all"] == 3
            assert [p.name for p in server.connected_peers() if p.verified_node] == [node.name]
    finally:
        for stream in opened:
            await trio.aclose_forcefully(stream)


async def test_a_thousand_idle_connections_close_at_the_idle_timeout_and_node_links_stay(
    autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, idle_timeout=30.0, max_connections=2000)
    node = Endpoint(Keypair(), network=net, idle_timeout=30.0)
    async with serving(server, node) as nursery:

        async def keep_pinging() -> None:
            while True:
                node.send_nowait(server.name, server.address, new_message("ping"))
                await trio.sleep(10.0)

        async def discard_pongs() -> None:
            async for _ in node.inbox:
                pass

        nursery.start_soon(keep_pinging)
        nursery.start_soon(discard_pongs)
        for _ in range(1000):
            raw = await dial(net, server, raws)
            await raw.handshake()
        start = trio.current_time()
        assert server.stats()["connections_all"] == 1001
        with trio.fail_after(GUARD):
            for raw in raws:
                assert await raw.closed() == []
        assert trio.current_time() - start <= 30.0 + 1.0
        await trio.sleep(60.0)
        assert server.stats()["connections_all"] == 1  # the pinging node's link
        assert server.stats()["closed_idle"] == 1000


# ----------------------------------------------------------------------- who is a node


async def received(endpoint: Endpoint) -> Incoming:
    with trio.fail_after(GUARD):
        return await endpoint.inbox.receive()


@pytest.mark.parametrize("claim", ["nothing-there", "another-node"])
async def test_a_peer_claiming_to_be_a_node_is_a_client_until_its_address_answers_with_its_key(
    claim: str, autojump_clock: trio.abc.Clock, raws: list[Raw]
) -> None:
    net = MemoryNetwork()
    server, other = Endpoint(Keypair(), network=net), Endpoint(Keypair(), network=net)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(other.run)
        raw = await dial(net, server, raws)
        address = "mem:999" if claim == "nothing-there" else other.address
        await raw.handshake(role="node", addr=address)
        await raw.stream.send_all(encode_frame(new_message("accept", ballot=[2**63, b""])))
        got = await received(server)
        assert got.msg["k"] == "accept" and got.peer.name == raw.keys.name
        assert got.peer.role == "client" and not got.peer.verified_node
        assert got.peer.address is None and got.peer.claimed_address == address
        assert got.peer.claimed_role == "node"
        assert server.stats()["unverified_nodes"] == 1
        nursery.cancel_scope.cancel()


async def test_a_real_node_is_verified_by_dialling_back_and_the_probe_is_not_a_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    a, b = Endpoint(Keypair(), network=net), Endpoint(Keypair(), network=net)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        a.send_nowait(b.name, b.address, new_message("hi"))
        got = await received(b)
        assert got.peer.verified_node and got.peer.role == "node" and got.peer.address == a.address
        assert b.stats()["probes_sent"] == 1 and a.stats()["probes_answered"] == 1
        assert a.stats()["connections_opened"] == b.stats()["connections_opened"] == 1
        # Its own dial proved b's address to a: no probe the other way.
        b.send_nowait(a.name, None, new_message("back"))
        got = await received(a)
        assert got.peer.verified_node and a.stats()["probes_sent"] == 0
        nursery.cancel_scope.cancel()


async def test_a_restarted_node_at_a_new_address_is_probed_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    net, keys = MemoryNetwork(), Keypair()
    old, b, new = (Endpoint(k, network=net) for k in (keys, Keypair(), keys))
    async with trio.open_nursery() as nursery:
        for endpoint in (old, b, new):
            await nursery.start(endpoint.run)
        old.send_nowait(b.name, b.address, new_message("before"))
        assert (await received(b)).peer.address == old.address
        new.send_nowait(b.name, b.address, new_message("after"))
        got = await received(b)
        assert got.peer.verified_node and got.peer.address == new.address
        assert b.stats()["probes_sent"] == 2
        nursery.cancel_scope.cancel()
