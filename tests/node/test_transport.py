"""The transport: handshake, one reused connection per pair, deadlines, bad input, faults.

Tests that need real sockets use TCP on 127.0.0.1 port 0; tests about time run on
`MemoryNetwork` under the autojump clock, so a 30-second timeout costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import InvalidSuccessor, ProtocolError, RequestTimeout
from node.keys import Keypair
from node.securelink import Ephemeral, secure_stream
from node.transport import (
    Endpoint,
    FaultRules,
    HandshakeError,
    Incoming,
    MemoryNetwork,
    RpcClient,
    Unreachable,
    auth_payload,
    open_rpc_client,
    parse_address,
)
from node.wire import (
    PROTOCOL_VERSION,
    FrameDecoder,
    encode_frame,
    error_message,
    new_message,
    reply_to,
)
from node.xorname import XorName

# Only stops a broken test from hanging: real-socket tests finish in milliseconds, and under
# the autojump clock a wait with no deadline would otherwise block for ever.
GUARD = 100.0


# ---------------------------------------------------------------------------- helpers


@asynccontextmanager
async def running(*endpoints: Endpoint) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for endpoint in endpoints:
            await nursery.start(endpoint.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def receive(endpoint: Endpoint) -> Incoming:
    with trio.fail_after(GUARD):
        return await endpoint.inbox.receive()


async def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll a condition (only under the autojump clock, where waiting costs no real time)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def serve(endpoint: Endpoint, handler: Callable[[Incoming], dict | None]) -> None:
    """A toy node core: answer each message with whatever `handler` returns."""
    async for incoming in endpoint.inbox:
        answer = handler(incoming)
        if answer is not None:
            endpoint.send_nowait(incoming.peer.name, None, answer)


def echo(incoming: Incoming) -> dict | None:
    msg = incoming.msg
    if msg["k"] == "ping":
        return reply_to(msg, "pong", n=msg.get("n"))
    if msg["k"] == "fail":
        return error_message(msg, InvalidSuccessor(3))
    return None


class RawPeer:
    """A hand-driven connection, to say exactly the bytes a test wants."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.ready: list[dict] = []

    async def send(self, msg: dict) -> None:
        await self.stream.send_all(encode_frame(msg))

    async def read(self) -> dict | None:
        """The next message, or None once the endpoint has closed the connection."""
        while not self.ready:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self.ready.extend(self.decoder.feed(data))
        return self.ready.pop(0)

    async def read_until_closed(self) -> list[dict]:
        msgs = []
        while (msg := await self.read()) is not None:
            msgs.append(msg)
        return msgs

    async def hello(self, keys: Keypair, **overrides: Any) -> tuple[bytes, dict]:
        nonce = os.urandom(32)
        self.eph = Ephemeral()
        fields = dict(
            role="client", pk=bytes(keys.public), name=bytes(keys.name), nonce=nonce,
            eph=self.eph.public, addr=None,
        )
        fields.update(overrides)
        await self.send(new_message("hello", **fields))
        their_hello = await self.read()
        assert their_hello is not None and their_hello["k"] == "hello"
        return nonce, their_hello

    async def handshake(self, keys: Keypair, *, forge: bool = False) -> dict:
        nonce, their_hello = await self.hello(keys)
        payload = auth_payload(their_hello["nonce"], keys.public, their_hello["pk"], "client", None,
                               self.eph.public, their_hello["eph"])
        signer = Keypair() if forge else keys
        await self.send(new_message("auth", sig=signer.sign(payload)))
        their_auth = await self.read()
        assert their_auth is not None and their_auth["k"] == "auth"
        if forge:  # the endpoint refuses our auth, in clear, and never seals the link
            return their_hello
        # From here the link is sealed (node/securelink.py), as the endpoint's is.
        self.stream = secure_stream(self.stream, self.eph, (nonce, bytes(keys.public), self.eph.public),
                                    (their_hello["nonce"], their_hello["pk"], their_hello["eph"]), dialled=True)
        return their_hello


class RawPeers:
    """Opens RawPeers for one test and closes them all when it ends."""

    def __init__(self) -> None:
        self.opened: list[RawPeer] = []

    async def tcp(self, address: str) -> RawPeer:
        host, port = parse_address(address)
        return self._keep(RawPeer(await trio.open_tcp_stream(host, port)))

    async def memory(self, net: MemoryNetwork, address: str) -> RawPeer:
        return self._keep(RawPeer(await net.dial(address)))

    def _keep(self, raw: RawPeer) -> RawPeer:
        self.opened.append(raw)
        return raw


@pytest.fixture
async def raws() -> AsyncIterator[RawPeers]:
    peers = RawPeers()
    yield peers
    for raw in peers.opened:
        await trio.aclose_forcefully(raw.stream)


def frame_with_body(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def assert_closed_with_protocol_error(msgs: list[dict]) -> None:
    assert msgs, "expected a typed error before the close"
    last = msgs[-1]
    assert last["k"] == "error" and last["err"]["code"] == ProtocolError.code


# ------------------------------------------------------------------- exchange (TCP)


async def test_two_endpoints_exchange_both_ways_over_one_connection() -> None:
    a, b = Endpoint(Keypair()), Endpoint(Keypair())
    async with running(a, b):
        for n in range(3):
            assert a.send_nowait(b.name, b.address, new_message("ping", n=n))
        for n in range(3):
            got = await receive(b)
            assert got.msg["k"] == "ping" and got.msg["n"] == n
            assert got.peer.name == a.name and got.peer.role == "node"
            assert got.peer.address == a.address and got.peer.public_key == a.keys.public
            # No address given: the answer must take the connection a opened.
            assert b.send_nowait(a.name, None, reply_to(got.msg, "pong", n=n))
        for n in range(3):
            got = await receive(a)
            assert got.msg["k"] == "pong" and got.msg["n"] == n and got.peer.name == b.name

        assert [p.name for p in a.connected_peers()] == [b.name]
        assert [p.name for p in b.connected_peers()] == [a.name]
        sa, sb = a.stats(), b.stats()
        assert sa["connections_opened"] == sb["connections_opened"] == 1
        assert sa["out"]["ping"]["frames"] == 3 and sb["in"]["ping"]["frames"] == 3
        assert sa["out"]["ping"]["bytes"] == sb["in"]["ping"]["bytes"] > 0
        assert sb["out"]["pong"]["frames"] == sa["in"]["pong"]["frames"] == 3
        assert sa["out"]["hello"]["frames"] == sa["out"]["auth"]["frames"] == 1


async def test_rpc_client_request_reply_and_typed_error() -> None:
    server = Endpoint(Keypair())
    async with running(server) as nursery:
        nursery.start_soon(serve, server, echo)
        async with open_rpc_client() as rpc:
            assert rpc.endpoint.role == "client" and rpc.endpoint.address is None
            # Name unknown: the handshake tells it.
            reply = await rpc.request(None, server.address, new_message("ping", n=1), timeout=GUARD)
            assert reply["k"] == "pong" and reply["n"] == 1
            assert [p.name for p in rpc.endpoint.connected_peers()] == [server.name]
            # Name known: the same connection is reused.
            reply = await rpc.request(server.name, server.address, new_message("ping", n=2), GUARD)
            assert reply["n"] == 2
            with pytest.raises(InvalidSuccessor) as info:
                await rpc.request(server.name, server.address, new_message("fail"), GUARD)
            assert info.value.current == 3
            assert rpc.endpoint.stats()["connections_opened"] == 1

            [client] = server.connected_peers()
            assert client.role == "client" and client.address is None
            assert client.name == rpc.endpoint.name
            # A node reaches a client only over the client's own connection...
            assert server.send_nowait(client.name, None, new_message("notice"))
            with trio.fail_after(GUARD):
                pushed = await rpc.unsolicited.receive()
            assert pushed.msg["k"] == "notice" and pushed.peer.name == server.name
        # ...and not at all without one.
        assert not server.send_nowait(Keypair().name, None, new_message("notice"))
        assert server.stats()["dropped_no_route"] == 1


async def test_a_peer_that_pauses_reading_gets_every_frame_in_order_when_it_resumes(
    raws: RawPeers,
) -> None:
    # Frames go straight to the socket while it has room; once the kernel's buffers are
    # full a writer task waits for room. Neither may lose, split or reorder a frame.
    server = Endpoint(Keypair())
    async with running(server):
        raw, keys = await raws.tcp(server.address), Keypair()
        await raw.handshake(keys)
        await raw.send(new_message("ping"))
        assert (await receive(server)).msg["k"] == "ping"
        blob = os.urandom(60_000)
        for n in range(200):  # 12 MB: more than loopback's socket buffers hold
            assert server.send_nowait(keys.name, None, new_message("bulk", n=n, blob=blob))
        await trio.sleep(0.2)  # nobody reads: the sockets fill up
        assert server.stats()["socket_full"] >= 1
        got = []
        with trio.fail_after(GUARD):
            for _ in range(200):
                msg = await raw.read()
                assert msg is not None and msg["blob"] == blob
                got.append(msg["n"])
        assert got == list(range(200))
        stats = server.stats()
        assert stats["out"]["bulk"]["frames"] == 200 and stats["dropped_write_failed"] == 0
        # And the link is writable at once again.
        assert server.send_nowait(keys.name, None, new_message("after"))
        msg = await raw.read()
        assert msg is not None and msg["k"] == "after"


async def test_a_peer_that_never_reads_is_dropped_at_the_write_timeout(raws: RawPeers) -> None:
    server = Endpoint(Keypair(), write_timeout=0.3)
    async with running(server):
        raw, keys = await raws.tcp(server.address), Keypair()
        await raw.handshake(keys)
        await raw.send(new_message("ping"))
        await receive(server)
        blob = os.urandom(60_000)
        for n in range(200):
            server.send_nowait(keys.name, None, new_message("bulk", n=n, blob=blob))
        with trio.fail_after(10):  # 0.3 s of write timeout, with room for a loaded machine
            while server.is_connected(keys.name):
                await trio.sleep(0.05)
        stats = server.stats()
        assert stats["socket_full"] >= 1 and stats["dropped_write_failed"] >= 1


# -------------------------------------------------------------------- handshake


async def test_handshake_rejects_a_wrong_expected_name_and_keeps_serving() -> None:
    server = Endpoint(Keypair())
    async with running(server) as nursery:
        nursery.start_soon(serve, server, echo)
        async with open_rpc_client() as rpc:
            with pytest.raises(HandshakeError, match="expected peer"):
                await rpc.request(Keypair().name, server.address, new_message("ping"), GUARD)
            assert rpc.endpoint.connected_peers() == []
            reply = await rpc.request(server.name, server.address, new_message("ping"), GUARD)
            assert reply["k"] == "pong"
        assert server.stats()["handshake_failures"] == 1


async def test_raw_handshake_control_then_a_message_arrives(raws: RawPeers) -> None:
    # Proves the RawPeer handshake is right, so the failures below fail for their reason.
    server = Endpoint(Keypair())
    async with running(server):
        raw, keys = await raws.tcp(server.address), Keypair()
        their_hello = await raw.handshake(keys)
        assert their_hello["addr"] == server.address and their_hello["name"] == server.name
        await raw.send(new_message("ping", n=9))
        got = await receive(server)
        assert got.peer.name == keys.name and got.msg["n"] == 9 and got.peer.role == "client"


async def test_handshake_rejects_a_bad_signature(raws: RawPeers) -> None:
    server = Endpoint(Keypair())
    async with running(server):
        raw = await raws.tcp(server.address)
        with trio.fail_after(GUARD):
            await raw.handshake(Keypair(), forge=True)
            assert_closed_with_protocol_error(await raw.read_until_closed())
        assert server.stats()["handshake_failures"] == 1
        assert server.connected_peers() == []


async def test_handshake_rejects_a_name_that_is_not_the_hash_of_the_key(raws: RawPeers) -> None:
    server = Endpoint(Keypair())
    async with running(server):
        raw, keys = await raws.tcp(server.address), Keypair()
        with trio.fail_after(GUARD):
            await raw.hello(keys, name=bytes(Keypair().name))
            msgs = await raw.read_until_closed()
        # The server's own auth may go out before it has judged our hello; the error ends it.
        assert_closed_with_protocol_error(msgs)
        assert "hash of the public key" in msgs[-1]["err"]["msg"]
        assert server.connected_peers() == []


@pytest.mark.parametrize(
    "hello",
    [
        {"role": "admin"},
        {"pk": b"short"},
        {"nonce": b"n"},
        {"addr": "127.0.0.1:1"},  # a client claiming a listen address
        {"pk": 2**40},  # an int where bytes belong must not become bytes(2**40)
    ],
    ids=str,
)
async def test_handshake_rejects_malformed_hellos(hello: dict, raws: RawPeers) -> None:
    server = Endpoint(Keypair())
    async with running(server):
        raw = await raws.tcp(server.address)
        with trio.fail_after(GUARD):
            await raw.hello(Keypair(), **hello)
            assert_closed_with_protocol_error(await raw.read_until_closed())
        assert server.stats()["handshake_failures"] == 1


async def test_handshake_in_another_version_gets_a_typed_error(raws: RawPeers) -> None:
    server = Endpoint(Keypair())
    async with running(server):
        raw, keys = await raws.tcp(server.address), Keypair()
        hello = new_message(
            "hello", role="client", pk=bytes(keys.public), name=bytes(keys.name), nonce=bytes(32)
        )
        hello["v"] = PROTOCOL_VERSION + 1
        with trio.fail_after(GUARD):
            await raw.send(hello)
            msgs = await raw.read_until_closed()
        assert_closed_with_protocol_error(msgs)
        assert msgs[-1]["re"] == hello["id"] and "version" in msgs[-1]["err"]["msg"]


async def test_endpoint_refuses_a_peer_impersonating_it(raws: RawPeers) -> None:
    # An echo of our own hello (a reflection) claims our name: refused.
    server = Endpoint(Keypair())
    async with running(server):
        raw = await raws.tcp(server.address)
        with trio.fail_after(GUARD):
            await raw.hello(server.keys, role="node", addr="127.0.0.1:9")
            msgs = await raw.read_until_closed()
        assert "itself" in msgs[-1]["err"]["msg"]


# ------------------------------------------------------------------------ bad input


def _truncated() -> bytes:
    return encode_frame(new_message("ping", pad=b"x" * 100))[:50]


@pytest.mark.parametrize("after_handshake", [False, True], ids=["pre-auth", "post-auth"])
@pytest.mark.parametrize(
    "junk, half_close",
    [
        (b"\x00\x00\x00\x05hello", False),  # a body that is not msgpack
        (b"\xff\xff\xff\xff", False),  # 4 GiB prefix: refused before any body is sent
        (_truncated(), True),  # the stream ends mid-frame
    ],
    ids=["garbage", "oversized-prefix", "truncated"],
)
async def test_bad_frames_close_that_connection_only(
    junk: bytes, half_close: bool, after_handshake: bool, raws: RawPeers
) -> None:
    server, good = Endpoint(Keypair()), Endpoint(Keypair())
    async with running(server, good) as nursery:
        nursery.start_soon(serve, server, echo)
        async with open_rpc_client() as rpc:
            # A good peer connected before the trouble...
            good.send_nowait(server.name, server.address, new_message("ping", n=1))
            assert (await receive(good)).msg["n"] == 1

            raw = await raws.tcp(server.address)
            with trio.fail_after(GUARD):
                if after_handshake:
                    await raw.handshake(Keypair())
                await raw.stream.send_all(junk)
                if half_close:
                    await raw.stream.send_eof()
                assert_closed_with_protocol_error(await raw.read_until_closed())

            # ...and one after it, are both still served.
            reply = await rpc.request(None, server.address, new_message("ping", n=5), GUARD)
            assert reply["n"] == 5
        good.send_nowait(server.name, server.address, new_message("ping", n=2))
        assert (await receive(good)).msg["n"] == 2
        assert good.stats()["connections_opened"] == 1
        failures = server.stats()["protocol_errors" if after_handshake else "handshake_failures"]
        assert failures == 1


@settings(max_examples=40, deadline=None)
@given(
    authenticate=st.booleans(),
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.builds(frame_with_body, st.binary(max_size=40)),  # gets past the framing
            st.just(encode_frame(new_message("ping", n=0))),  # good frames among the junk
        ),
        max_size=6,
    ),
)
def test_fuzzed_input_never_hurts_the_endpoint(authenticate: bool, chunks: list[bytes]) -> None:
    async def main() -> None:
        net = MemoryNetwork()
        server = Endpoint(Keypair(), network=net)
        async with running(server) as nursery:
            nursery.start_soon(serve, server, echo)
            raw = RawPeer(await net.dial(server.address))
            try:
                if authenticate:
                    await raw.handshake(Keypair())
                for chunk in chunks:
                    await raw.stream.send_all(chunk)
            except trio.BrokenResourceError:
                pass  # the endpoint has already hung up on us
            finally:
                await raw.stream.aclose()
            async with open_rpc_client(network=net) as rpc:
                reply = await rpc.request(None, server.address, new_message("ping", n=1), GUARD)
                assert reply["n"] == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_other_protocol_version_gets_a_typed_error_and_the_connection_stays(
    raws: RawPeers,
) -> None:
    server = Endpoint(Keypair())
    async with running(server):
        raw = await raws.tcp(server.address)
        with trio.fail_after(GUARD):
            await raw.handshake(Keypair())
            future = {**new_message("ping"), "v": PROTOCOL_VERSION + 1}
            await raw.send(future)
            answer = await raw.read()
            assert answer is not None and answer["k"] == "error" and answer["re"] == future["id"]
            assert "version" in answer["err"]["msg"]
            await raw.send(new_message("ping", n=1))
            assert (await receive(server)).msg["n"] == 1
        assert server.stats()["rejected_in"] == 1


async def test_handshake_messages_after_the_handshake_are_refused(raws: RawPeers) -> None:
    server = Endpoint(Keypair())
    async with running(server):
        raw = await raws.tcp(server.address)
        with trio.fail_after(GUARD):
            await raw.handshake(Keypair())
            again = new_message("auth", sig=b"s" * 64)
            await raw.send(again)
            answer = await raw.read()
            assert answer is not None and answer["k"] == "error" and answer["re"] == again["id"]


async def test_an_unknown_address_is_unreachable() -> None:
    closed = Endpoint(Keypair())
    async with running(closed):
        address = closed.address
    client = Endpoint(Keypair(), role="client")
    async with running(client):
        with pytest.raises(Unreachable):
            await client.connect(address)


# ----------------------------------------------------------- time (memory network)


async def test_request_timeout(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    silent = Endpoint(Keypair(), network=net)  # receives, never answers
    async with running(silent), open_rpc_client(network=net) as rpc:
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await rpc.request(silent.name, silent.address, new_message("ping"), timeout=30.0)
        assert trio.current_time() - start == pytest.approx(30.0)
        assert (await receive(silent)).msg["k"] == "ping"


async def test_a_request_fails_at_once_when_its_peer_goes_away(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    doomed = Endpoint(Keypair(), network=net)
    async with open_rpc_client(network=net) as rpc:
        async with trio.open_nursery() as nursery:
            await nursery.start(doomed.run)

            async def close_on_arrival() -> None:
                await receive(doomed)  # the request arrived; the peer dies without answering
                await doomed.aclose()

            nursery.start_soon(close_on_arrival)
            start = trio.current_time()
            with pytest.raises(Unreachable):
                await rpc.request(doomed.name, doomed.address, new_message("ping"), timeout=30.0)
            assert trio.current_time() - start < 1.0


async def test_unreachable_addresses_fail_fast(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    stopped = Endpoint(Keypair(), network=net)
    bound = net.bind(stopped)  # bound but not running
    async with open_rpc_client(network=net) as rpc:
        for address in (bound, "mem:99"):
            with pytest.raises(Unreachable):
                await rpc.request(None, address, new_message("ping"), timeout=30.0)
        assert trio.current_time() == 0


async def test_a_dial_into_an_endpoint_whose_nursery_is_closing_is_refused(autojump_clock: trio.abc.Clock) -> None:
    # A crashed node's endpoint stays bound until its nursery has finished closing; a dial
    # in that window used to escape as "Nursery is closed to new arrivals" (a CI failure).
    net = MemoryNetwork()
    ending = Endpoint(Keypair(), network=net)
    address = net.bind(ending)
    async with trio.open_nursery() as closed:
        pass
    ending._nursery = closed
    with pytest.raises(ConnectionRefusedError):
        await net.dial(address)
    async with open_rpc_client(network=net) as rpc:
        with pytest.raises(Unreachable):
            await rpc.request(None, address, new_message("ping"), timeout=30.0)


async def test_a_silent_connection_is_dropped_at_the_handshake_deadline(
    autojump_clock: trio.abc.Clock, raws: RawPeers
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, handshake_timeout=5.0)
    async with running(server):
        raw = await raws.memory(net, server.address)
        start = trio.current_time()
        msgs = await raw.read_until_closed()  # its hello, then silence from us, then the close
        assert [m["k"] for m in msgs] == ["hello"]
        assert trio.current_time() - start == pytest.approx(5.0)
        assert server.stats()["handshake_failures"] == 1


async def test_a_frame_stalled_midway_is_dropped(
    autojump_clock: trio.abc.Clock, raws: RawPeers
) -> None:
    net = MemoryNetwork()
    server = Endpoint(Keypair(), network=net, frame_timeout=7.0)
    async with running(server):
        raw = await raws.memory(net, server.address)
        await raw.handshake(Keypair())
        await raw.stream.send_all(_truncated())
        start = trio.current_time()
        assert_closed_with_protocol_error(await raw.read_until_closed())
        assert trio.current_time() - start == pytest.approx(7.0)
        assert server.stats()["protocol_errors"] == 1


async def test_idle_connections_close_and_redial(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    a = Endpoint(Keypair(), network=net, idle_timeout=30.0)
    b = Endpoint(Keypair(), network=net, idle_timeout=30.0)
    async with running(a, b):
        a.send_nowait(b.name, b.address, new_message("one"))
        assert (await receive(b)).msg["k"] == "one"
        start = trio.current_time()
        await wait_until(lambda: not a.connected_peers() and not b.connected_peers())
        assert trio.current_time() - start >= 30.0
        a.send_nowait(b.name, b.address, new_message("two"))
        assert (await receive(b)).msg["k"] == "two"
        assert a.stats()["connections_opened"] == 2


async def test_simultaneous_dials_settle_on_one_connection(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    a, b = Endpoint(Keypair(), network=net), Endpoint(Keypair(), network=net)
    async with running(a, b):
        # Both queue before either has a connection: each dials the other.
        for n in range(20):
            a.send_nowait(b.name, b.address, new_message("m", n=n))
            b.send_nowait(a.name, a.address, new_message("m", n=n))
            await trio.sleep(0)
        got_a = {(await receive(a)).msg["n"] for _ in range(20)}
        got_b = {(await receive(b)).msg["n"] for _ in range(20)}
        assert got_a == got_b == set(range(20))  # nothing lost while one connection retired
        assert a.stats()["connections_opened"] == 2 and b.stats()["connections_opened"] == 2
        await wait_until(lambda: a.stats()["connections"] == b.stats()["connections"] == 1)
        assert len(a.connected_peers()) == len(b.connected_peers()) == 1
        a.send_nowait(b.name, None, new_message("after"))
        b.send_nowait(a.name, None, new_message("after"))
        assert (await receive(a)).msg["k"] == (await receive(b)).msg["k"] == "after"


async def test_a_restarted_peer_replaces_its_old_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    net, keys = MemoryNetwork(), Keypair()
    old, b = Endpoint(keys, network=net), Endpoint(Keypair(), network=net)
    new = Endpoint(keys, network=net)  # the same node after a restart
    async with running(old, b, new):
        old.send_nowait(b.name, b.address, new_message("before"))
        assert (await receive(b)).msg["k"] == "before"
        new.send_nowait(b.name, b.address, new_message("after"))
        assert (await receive(b)).msg["k"] == "after"
        # b's answer to that name goes to the newest connection, and the stale one is closed.
        b.send_nowait(keys.name, None, new_message("answer"))
        assert (await receive(new)).msg["k"] == "answer"
        await wait_until(lambda: old.connected_peers() == [])
        assert b.stats()["connections"] == 1 and b.stats()["connections_retired"] == 1


async def test_unreachable_peer_drops_its_backlog_then_recovers(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    a, b = Endpoint(Keypair(), network=net), Endpoint(Keypair(), network=net)
    async with running(a):
        gone = Keypair().name
        for n in range(3):
            assert a.send_nowait(gone, "mem:404", new_message("m", n=n))
        await wait_until(lambda: a.stats()["dropped_unreachable"] == 3)
        assert a.connected_peers() == [] and a.stats()["connections"] == 0
        async with running(b):
            await trio.sleep(1.0)  # past the redial backoff (virtual time)
            a.send_nowait(b.name, b.address, new_message("m", n=9))
            assert (await receive(b)).msg["n"] == 9


async def test_send_nowait_reports_a_full_queue() -> None:
    net = MemoryNetwork()
    a, b = Endpoint(Keypair(), network=net, queue_size=3), Endpoint(Keypair(), network=net)
    async with running(a, b):
        # No checkpoint between the calls, so the writer has taken nothing yet.
        sent = [a.send_nowait(b.name, b.address, new_message("m", n=n)) for n in range(5)]
        assert sent == [True, True, True, False, False]
        assert a.stats()["dropped_queue_full"] == 2
        assert [(await receive(b)).msg["n"] for _ in range(3)] == [0, 1, 2]


async def test_send_by_address_only(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    a, b = Endpoint(Keypair(), network=net), Endpoint(Keypair(), network=net)
    async with running(a, b):
        assert a.send_nowait(None, b.address, new_message("bootstrap"))
        got = await receive(b)
        assert got.msg["k"] == "bootstrap" and got.peer.name == a.name
        assert a.send_nowait(None, "mem:404", new_message("lost"))
        await wait_until(lambda: a.stats()["dropped_unreachable"] == 1)


# ---------------------------------------------------------------------------- faults


class Scripted:
    """A fault hook with fixed per-peer delays (None drops)."""

    def __init__(self, delays: dict[XorName, float | None]) -> None:
        self.delays = delays

    def outbound(self, to_name: XorName, msg: dict) -> float | None:
        return self.delays.get(to_name, 0.0)

    def inbound(self, from_name: XorName, msg: dict) -> bool:
        return True


async def test_fault_delay_holds_back_one_peer_only(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    b, c = Endpoint(Keypair(), network=net), Endpoint(Keypair(), network=net)
    a = Endpoint(Keypair(), network=net, fault=Scripted({b.name: 10.0}))
    async with running(a, b, c):
        start = trio.current_time()
        a.send_nowait(b.name, b.address, new_message("slow"))
        a.send_nowait(c.name, c.address, new_message("fast"))
        assert (await receive(c)).msg["k"] == "fast"
        assert trio.current_time() - start < 1.0
        assert (await receive(b)).msg["k"] == "slow"
        assert trio.current_time() - start == pytest.approx(10.0)
        assert a.stats()["delayed_out"] == 1


async def test_fault_delays_reorder(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    b = Endpoint(Keypair(), network=net)
    hook = Scripted({b.name: 5.0})
    a = Endpoint(Keypair(), network=net, fault=hook)
    async with running(a, b):
        a.send_nowait(b.name, b.address, new_message("first"))
        hook.delays[b.name] = 0.0
        a.send_nowait(b.name, b.address, new_message("second"))
        assert [(await receive(b)).msg["k"] for _ in range(2)] == ["second", "first"]


async def test_fault_rules_partition_both_ways_and_heal(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    rules = FaultRules(seed=1)
    a, b = Endpoint(Keypair(), network=net, fault=rules), Endpoint(Keypair(), network=net)
    async with running(a, b):
        a.send_nowait(b.name, b.address, new_message("greet"))  # connect first
        assert (await receive(b)).msg["k"] == "greet"

        rules.block(b.name, inbound=False)  # a can't reach b; b still reaches a
        assert a.send_nowait(b.name, b.address, new_message("dropped"))
        b.send_nowait(a.name, None, new_message("through"))
        assert (await receive(a)).msg["k"] == "through"

        rules.heal()
        rules.block(b.name, outbound=False)  # the other way round
        b.send_nowait(a.name, None, new_message("dropped"))
        a.send_nowait(b.name, None, new_message("through"))
        assert (await receive(b)).msg["k"] == "through"

        rules.heal()
        b.send_nowait(a.name, None, new_message("healed"))
        a.send_nowait(b.name, None, new_message("healed"))
        # Had a dropped message got through, it would be first in line.
        assert (await receive(a)).msg["k"] == "healed"
        assert (await receive(b)).msg["k"] == "healed"
        assert a.stats()["dropped_fault_out"] == 1 and a.stats()["dropped_fault_in"] == 1


def test_fault_rules_loss_and_delay_are_seeded() -> None:
    name, msg = Keypair(bytes(32)).name, new_message("m")

    def draws(seed: int) -> list[float | None]:
        rules = FaultRules(seed=seed, loss=0.3, delay=(0.5, 2.0))
        return [rules.outbound(name, msg) for _ in range(200)]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    lost = first.count(None)
    assert 30 < lost < 90
    assert all(0.5 <= d <= 2.0 for d in first if d is not None)
    assert all(FaultRules(loss=1.0).outbound(name, msg) is None for _ in range(20))
    assert FaultRules().outbound(name, msg) == 0.0


def test_fault_rules_configure_like_an_admin_message() -> None:
    a, b = Keypair().name, Keypair().name
    rules = FaultRules()
    rules.configure({"loss": 0.5, "delay": [0.1, 0.2], "block_out": [a.hex()], "block_in": [b]})
    assert rules.config() == {
        "loss": 0.5,
        "delay": [0.1, 0.2],
        "block_out": [a.hex()],
        "block_in": [b.hex()],
    }
    assert rules.outbound(a, new_message("m")) is None and not rules.inbound(b, new_message("m"))
    before = rules.config()
    for bad in (
        {"loss": 2},
        {"delay": [3, 1]},
        {"block_out": [2**40]},  # must not allocate a terabyte
        {"block_in": "ab"},
        {"seed": "x"},
        {"partition": True},
        {"loss": 0.1, "block_out": ["zz"]},  # nothing applies when one setting is bad
    ):
        with pytest.raises(ValueError):
            rules.configure(bad)
        assert rules.config() == before


def test_fault_rules_slow_links_wait_for_that_peer_only() -> None:
    a, b = Keypair().name, Keypair().name
    rules = FaultRules(seed=1)
    rules.configure({"slow": {a.hex(): 2.5}, "delay": [0.1, 0.2]})
    assert 2.6 <= rules.outbound(a, new_message("m")) <= 2.7
    assert 0.1 <= rules.outbound(b, new_message("m")) <= 0.2
    assert rules.config()["slow"] == {a.hex(): 2.5}
    before = rules.config()
    for bad in ({"slow": {a.hex(): -1}}, {"slow": {a.hex(): float("inf")}}, {"slow": [a.hex()]},
                {"slow": {"zz": 1}}, {"slow": {a.hex(): True}}):
        with pytest.raises(ValueError):
            rules.configure(bad)
        assert rules.config() == before
    rules.heal()
    assert "slow" not in rules.config() and rules.outbound(a, new_message("m")) <= 0.2


# ------------------------------------------------------------------------ misc API


async def test_misuse_is_refused() -> None:
    endpoint = Endpoint(Keypair())
    with pytest.raises(RuntimeError):
        endpoint.send_nowait(Keypair().name, "127.0.0.1:1", new_message("m"))
    with pytest.raises(ValueError):
        Endpoint(Keypair(), role="admin")
    async with running(endpoint):
        with pytest.raises(ValueError):
            endpoint.send_nowait(endpoint.name, endpoint.address, new_message("m"))
        with pytest.raises(ProtocolError):
            endpoint.send_nowait(Keypair().name, "127.0.0.1:1", {"k": "no envelope"})
        with pytest.raises(ValueError):
            await endpoint.connect(endpoint.address, endpoint.name)
    await endpoint.aclose()


async def test_aclose_ends_the_endpoint_and_its_inbox() -> None:
    a, b = Endpoint(Keypair()), Endpoint(Keypair())
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        rpc = RpcClient(a)
        await nursery.start(rpc.run)
        a.send_nowait(b.name, b.address, new_message("x"))
        await receive(b)
        await a.aclose()
        with pytest.raises(trio.EndOfChannel):
            await rpc.unsolicited.receive()
        await b.aclose()
    with pytest.raises(trio.EndOfChannel):
        await receive(b)
