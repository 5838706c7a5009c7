"""A TCP client opens its links at once (`NetworkClient.warm_links`), and the get path's
small changes keep their meaning: `Endpoint.holding` as a plain object, `_ordered` unsorted
when nobody is marked.

Real node cores and hosts in this process on 127.0.0.1 (port 0), real sockets: the warm-up
exists only over TCP. A few hundred milliseconds each.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from client.network import NetworkClient
from node.config import NodeConfig
from node.core import NodeCore
from node.host import NodeHost
from node.keys import Keypair
from node.routing import Contact
from node.store import MemoryStore
from node.transport import Endpoint
from node.wire import new_message

GUARD = 20.0
NODES = 4


@asynccontextmanager
async def tcp_nodes(n: int) -> AsyncIterator[list[tuple[Endpoint, NodeCore, trio.CancelScope]]]:
    """`n` nodes over loopback TCP, each bootstrapped from the first, all joined."""
    config = NodeConfig(replication=3)
    nodes: list[tuple[Endpoint, NodeCore, trio.CancelScope]] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            keys = Keypair()
            endpoint = Endpoint(keys, role="node")
            scope = trio.CancelScope()

            async def run(endpoint: Endpoint = endpoint, keys: Keypair = keys, scope: trio.CancelScope = scope,
                          i: int = i, task_status: trio.TaskStatus[NodeCore] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    async with trio.open_nursery() as inner:
                        address = await inner.start(endpoint.run)
                        core = NodeCore(keys, MemoryStore(), config, rng=random.Random(i), address=address)
                        bootstrap = [nodes[0][0].address] if nodes else []
                        await inner.start(NodeHost(core, endpoint, strict=True).run, bootstrap)
                        task_status.started(core)

            core = await nursery.start(run)
            nodes.append((endpoint, core, scope))
        with trio.fail_after(GUARD):
            while not all(core.ready for _, core, _ in nodes):
                await trio.sleep(0.02)
        yield nodes
        nursery.cancel_scope.cancel()


def opened(client: NetworkClient) -> int:
    assert isinstance(client.endpoint, Endpoint)
    return int(client.endpoint.stats()["connections_opened"])


async def test_a_fresh_client_is_linked_to_the_nodes_it_learned_before_its_first_request() -> None:
    async with tcp_nodes(NODES) as nodes:
        first = nodes[0][0].address
        assert first is not None
        with trio.fail_after(GUARD):
            async with NetworkClient.open([first], Keypair(), replication=3) as client:
                assert len(client.nodes) == NODES
                linked = {bytes(p.name) for p in client.endpoint.connected_peers()}  # type: ignore[attr-defined]
                assert linked == {bytes(name) for name in client.nodes}
                before = opened(client)
                name = await client.put_idata(b"warm")
                assert await client.get_idata(name) == b"warm"
                assert opened(client) == before  # no handshake in the requests' path
            # Not over TCP's own default: a client can opt out and dials on first use again.
            async with NetworkClient.open([first], Keypair(), replication=3, warm_links=0) as cold:
                assert len(cold.endpoint.connected_peers()) == 1  # type: ignore[attr-defined]
                assert await cold.get_idata(name) == b"warm"
                assert opened(cold) > 1


async def test_a_node_that_is_gone_does_not_hold_up_or_fail_the_open() -> None:
    async with tcp_nodes(NODES) as nodes:
        gone_endpoint, gone_core, gone_scope = nodes[-1]
        gone_scope.cancel()  # its address still sits in the others' routing tables
        await trio.sleep(0.05)
        first = nodes[0][0].address
        assert first is not None
        with trio.fail_after(GUARD):
            async with NetworkClient.open([first], Keypair(), replication=3, try_timeout=2.0) as client:
                assert gone_core.name in client.nodes  # learned from the others, dialled, skipped
                linked = {bytes(p.name) for p in client.endpoint.connected_peers()}  # type: ignore[attr-defined]
                assert bytes(gone_core.name) not in linked
                assert {bytes(core.name) for _, core, _ in nodes[:-1]} <= linked
                assert client.stats["retries"] == 0  # skipped, not marked or retried


async def test_holding_still_writes_when_its_block_raises() -> None:
    a, b = Endpoint(Keypair()), Endpoint(Keypair())
    async with trio.open_nursery() as nursery:
        for endpoint in (a, b):
            await nursery.start(endpoint.run)
        assert a.send_nowait(b.name, b.address, new_message("hi"))
        with trio.fail_after(GUARD):
            assert (await b.inbox.receive()).msg["k"] == "hi"
        with pytest.raises(RuntimeError), a.holding():
            with a.holding():
                assert a.send_nowait(b.name, None, new_message("m", n=1))
            assert a.stats()["out"].get("m") is None  # the inner block's end writes nothing
            raise RuntimeError("the batch failed half way")
        assert a.stats()["out"]["m"]["frames"] == 1
        with trio.fail_after(GUARD):
            assert (await b.inbox.receive()).msg["n"] == 1
        nursery.cancel_scope.cancel()


async def test_marked_members_go_last_and_the_order_stands_without_marks() -> None:
    client = NetworkClient(["127.0.0.1:1"], Keypair(), replication=3)
    group = [Contact(Keypair().name, f"127.0.0.1:{port}") for port in (2, 3, 4)]
    assert client._ordered(group) == group
    client._mark_bad(group[0])
    assert client._ordered(group) == [group[1], group[2], group[0]]
    await trio.sleep(0)
