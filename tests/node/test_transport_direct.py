"""The transport's paths without a task switch: `Endpoint.holding`, `Endpoint.send` writing at
once, and replies handed from the reader straight to the waiting request (`on_arrival`).

Real sockets on 127.0.0.1 port 0 (the direct writes exist only over TCP); each test takes
milliseconds.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from node.config import NodeConfig
from node.core import NodeCore
from node.handshake import Peer
from node.host import NodeHost
from node.keys import Keypair
from node.store import MemoryStore
from node.transport import Endpoint, Incoming, MemoryNetwork, RpcClient, open_rpc_client
from node.wire import new_message, reply_to

GUARD = 10.0


@asynccontextmanager
async def running(*endpoints: Endpoint) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for endpoint in endpoints:
            await nursery.start(endpoint.run)
        yield nursery
        nursery.cancel_scope.cancel()


def frames_out(endpoint: Endpoint, kind: str) -> int:
    return endpoint.stats()["out"].get(kind, {}).get("frames", 0)


async def connect_both(a: Endpoint, b: Endpoint) -> None:
    """A connection between them, both ends registered."""
    assert a.send_nowait(b.name, b.address, new_message("hi"))
    with trio.fail_after(GUARD):
        assert (await b.inbox.receive()).msg["k"] == "hi"


async def test_holding_writes_at_the_end_of_the_block_in_order_without_yielding() -> None:
    a, b, c = Endpoint(Keypair()), Endpoint(Keypair()), Endpoint(Keypair())
    async with running(a, b, c):
        await connect_both(a, b)
        await connect_both(a, c)
        with a.holding():
            for n in range(5):
                assert a.send_nowait(b.name, None, new_message("m", n=n))
                assert a.send_nowait(c.name, None, new_message("m", n=n))
            with a.holding():  # nested: only the outermost block writes
                assert a.send_nowait(b.name, None, new_message("m", n=5))
            assert frames_out(a, "m") == 0  # nothing written inside the block
        # Written by this task as the block ended: no other task has run meanwhile.
        assert frames_out(a, "m") == 11
        for peer, last in ((b, 5), (c, 4)):
            with trio.fail_after(GUARD):
                got = [(await peer.inbox.receive()).msg["n"] for _ in range(last + 1)]
            assert got == list(range(last + 1))


async def test_send_writes_at_once_when_the_socket_has_room() -> None:
    a, b = Endpoint(Keypair()), Endpoint(Keypair())
    async with running(a, b):
        await connect_both(a, b)
        for n in range(3):
            await a.send(b.name, None, new_message("m", n=n))
            assert frames_out(a, "m") == n + 1  # on the socket before `send` returned
        with trio.fail_after(GUARD):
            assert [(await b.inbox.receive()).msg["n"] for _ in range(3)] == [0, 1, 2]


async def test_replies_skip_the_inbox_and_everything_else_still_reaches_it() -> None:
    server = Endpoint(Keypair())
    async with running(server) as nursery:
        async def answer() -> None:
            async for incoming in server.inbox:
                if incoming.msg["k"] == "ping":
                    server.send_nowait(incoming.peer.name, None, new_message("notice"))
                    server.send_nowait(incoming.peer.name, None, reply_to(incoming.msg, "pong"))

        nursery.start_soon(answer)
        async with open_rpc_client() as rpc:
            assert isinstance(rpc.endpoint, Endpoint)
            assert rpc.endpoint.on_arrival is not None
            reply = await rpc.request(None, server.address, new_message("ping"), GUARD)
            assert reply["k"] == "pong"
            with trio.fail_after(GUARD):
                notice = await rpc.unsolicited.receive()
            assert notice.msg["k"] == "notice"


def test_a_reply_is_taken_only_from_the_peer_that_was_asked() -> None:
    endpoint = Endpoint(Keypair(), role="client")
    rpc = RpcClient(endpoint)
    assert endpoint.on_arrival == rpc._take_reply
    asked, other = Keypair(), Keypair()
    request = new_message("ping")

    async def scenario() -> None:
        from node.rpc import _Pending

        pending = rpc._pending[request["id"]] = _Pending(asked.name)
        reply = reply_to(request, "pong")
        forged = Incoming(Peer(other.name, "node", None, other.public), reply)
        assert not rpc._take_reply(forged)  # an echo of the id from anyone else is not it
        assert pending.reply is None and not pending.event.is_set()
        assert not rpc._take_reply(Incoming(Peer(asked.name, "node", None, asked.public),
                                            new_message("notice")))
        assert rpc._take_reply(Incoming(Peer(asked.name, "node", None, asked.public), reply))
        assert pending.reply == reply and pending.event.is_set()
        # A second copy of the reply is not taken again (it goes on to `unsolicited`).
        assert not rpc._take_reply(Incoming(Peer(asked.name, "node", None, asked.public), reply))

    trio.run(scenario)


# ------------------------------------------------- a node host handling a message in the reader


@asynccontextmanager
async def one_node(*, strict: bool = True) -> AsyncIterator[tuple[NodeHost, Endpoint, list[bool]]]:
    """A node (core + host) on the in-memory network; the list records what the host's
    `on_arrival` answered for each message (True: handled at once in the reader)."""
    network = MemoryNetwork()
    keys = Keypair()
    endpoint = Endpoint(keys, network=network)
    taken: list[bool] = []
    async with trio.open_nursery() as nursery:
        address = await nursery.start(endpoint.run)
        core = NodeCore(keys, MemoryStore(), NodeConfig(), rng=random.Random(1), address=address)
        host = NodeHost(core, endpoint, strict=strict)
        await nursery.start(host.run, [])
        inner = endpoint.on_arrival
        assert inner is not None  # the host took the hook

        def spy(incoming: Incoming) -> bool:
            taken.append(inner(incoming))
            return taken[-1]

        endpoint.on_arrival = spy
        with trio.fail_after(GUARD):
            while not core.ready:  # a lone node declares itself joined once its bootstrap ends
                await trio.sleep(0.05)
        yield host, endpoint, taken
        nursery.cancel_scope.cancel()


async def test_an_idle_host_answers_in_the_readers_task_and_keeps_its_timers(
        autojump_clock: trio.abc.Clock) -> None:
    async with one_node() as (host, endpoint, taken), open_rpc_client(network=endpoint._network) as rpc:
        fired: list[float] = []
        handle = host.core.handle

        def handle_and_set_a_timer(now: float, peer: Peer, msg: dict) -> list:
            if msg.get("k") == "find_node":
                host.core.at(now + 0.01, lambda: fired.append(trio.current_time()))
            return handle(now, peer, msg)

        host.core.handle = handle_and_set_a_timer  # type: ignore[method-assign]
        while host.core.next_deadline() - trio.current_time() < 0.1:
            await trio.sleep(0.05)  # until the loop's wait ends well after the new timer
        sent = trio.current_time()
        reply = await rpc.request(None, endpoint.address, new_message("find_node", target=bytes(32)), GUARD)
        assert reply["k"] == "nodes" and taken == [True]
        # The loop's wait was shortened to the new timer, not left at its earlier deadline.
        with trio.fail_after(1):
            while not fired:
                await trio.sleep(0.001)
        assert fired[0] - sent < 0.02


async def test_a_strict_hosts_error_in_the_readers_task_ends_its_run(autojump_clock: trio.abc.Clock) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(BaseException) as info:
        async with one_node() as (host, endpoint, taken), open_rpc_client(network=endpoint._network) as rpc:

            def explode(now: float, peer: Peer, msg: dict) -> list:
                raise Boom

            host.core.handle = explode  # type: ignore[method-assign]
            rpc.endpoint.send_nowait(endpoint.name, endpoint.address, new_message("find_node", target=bytes(32)))
            await trio.sleep(GUARD)
    assert info.group_contains(Boom) if isinstance(info.value, BaseExceptionGroup) else info.type is Boom


async def test_a_message_arriving_while_the_loop_has_one_in_hand_queues_behind_it(
        autojump_clock: trio.abc.Clock) -> None:
    async with one_node() as (host, endpoint, taken), open_rpc_client(network=endpoint._network) as rpc:
        await rpc.request(None, endpoint.address, new_message("status"), GUARD)
        [peer] = endpoint.connected_peers()
        first = Incoming(peer, new_message("status"))
        second = Incoming(peer, new_message("status"))
        # The loop is handed `first` (runnable, not yet run): `second` must not overtake it.
        endpoint._inbox_send.send_nowait(first)
        assert endpoint.on_arrival is not None and endpoint.on_arrival(second) is False
        endpoint._inbox_send.send_nowait(second)
        with trio.fail_after(GUARD):
            replies = [await rpc.unsolicited.receive() for _ in range(2)]
        assert [r.msg["re"] for r in replies] == [first.msg["id"], second.msg["id"]]
        # Idle again: the next one is handled at once.
        taken.clear()
        await rpc.request(None, endpoint.address, new_message("status"), GUARD)
        assert taken == [True]


async def test_a_nodes_message_always_goes_through_the_inbox(autojump_clock: trio.abc.Clock) -> None:
    async with one_node() as (host, endpoint, taken):
        assert isinstance(endpoint._network, MemoryNetwork)
        other = Endpoint(Keypair(), network=endpoint._network)
        async with running(other):
            taken.clear()
            assert other.send_nowait(endpoint.name, endpoint.address, new_message("find_node", target=bytes(32)))
            with trio.fail_after(GUARD):
                reply = await other.inbox.receive()
            assert reply.msg["k"] == "nodes" and reply.peer.name == endpoint.name
            # Handled by the loop (a batch of node messages shares one commit), not in the reader.
            assert taken == [False]


@pytest.mark.parametrize(("role", "msg", "at_once"), [
    ("client", new_message("request", req={"op": ["get_idata", [bytes(32)]]}), True),
    ("client", new_message("read", req={"op": ["get_value", []]}), True),
    ("client", new_message("find_node", target=bytes(32)), True),
    ("client", new_message("status"), True),
    ("client", new_message("request", req={"op": ["put_idata", [b"x"]]}), False),  # a mutation
    ("client", new_message("request", req={"op": ["mutate_entries", []]}), False),
    ("client", new_message("request", req=["get_idata"]), False),  # shapes it does not know
    ("client", new_message("request", req={"op": "get_idata"}), False),
    ("client", new_message("request"), False),
    ("client", reply_to(new_message("x"), "nodes"), False),  # an answer, not a request
    ("client", new_message("admin", op="shutdown"), False),
    ("node", new_message("find_node", target=bytes(32)), False),  # nodes' messages: the inbox
    ("node", new_message("request", req={"op": ["get_idata", [bytes(32)]]}), False),
])
def test_only_clients_reads_are_handled_in_the_readers_task(role: str, msg: dict, at_once: bool) -> None:
    from node.host import _read_only

    peer = Peer(Keypair().name, role, None)
    assert _read_only(Incoming(peer, msg)) is at_once
