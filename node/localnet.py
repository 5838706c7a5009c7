"""A network of real node cores inside one trio run, for tests and experiments.

This is the node side: it runs the hosts. Clients of it come from `client.localnet`, whose
`LocalNetwork` adds `client()` (the node layer does not import the client layer).

Each node is the real `NodeCore` under the real `NodeHost`, talking through transport
endpoints over an in-memory `MemoryNetwork` (frames, handshakes and all), with a
`MemoryStore` for a disk. Run it under `trio.testing.MockClock(autojump_threshold=0)` and
minutes of network life pass in milliseconds:

    async with LocalNetwork.start(nodes=8, seed=1) as net:
        async with net.client() as client:        # client.localnet: a NetworkClient of it
            await client.put_idata(b"x")
        await net.crash(3)                         # the node's unsynced writes are lost
        await net.restart(3)                       # same key, same (durable) disk
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import trio

from . import errors as E
from .core import NodeConfig, NodeCore
from .host import NodeHost
from .keys import Keypair
from .store import MemoryStore
from .transport import Endpoint, MemoryNetwork
from .xorname import distance


@dataclass
class LocalNode:
    index: int
    keys: Keypair
    store: MemoryStore
    core: NodeCore | None = None
    endpoint: Endpoint | None = None
    scope: trio.CancelScope | None = None
    address: str | None = None

    @property
    def alive(self) -> bool:
        return self.scope is not None


class LocalNetwork:
    """N nodes in this process. Use `LocalNetwork.start(...)` as an async context manager."""

    def __init__(self, nursery: trio.Nursery, *, seed: int, config: NodeConfig) -> None:
        self.nursery = nursery
        self.rng = random.Random(seed)
        self.config = config
        self.memory = MemoryNetwork()
        self.nodes: list[LocalNode] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, nodes: int = 8, *, seed: int = 0, config: NodeConfig | None = None,
                    settle: float = 5.0) -> AsyncIterator[LocalNetwork]:
        with E.single_errors():
            async with trio.open_nursery() as nursery:
                net = cls(nursery, seed=seed, config=config or NodeConfig())
                for _ in range(nodes):
                    await net.add()
                await trio.sleep(settle)
                try:
                    yield net
                finally:
                    nursery.cancel_scope.cancel()

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes if n.alive and n.address]

    def live(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.alive]

    async def add(self) -> LocalNode:
        node = LocalNode(len(self.nodes), Keypair.generate(self.rng), MemoryStore())
        self.nodes.append(node)
        await self._boot(node)
        return node

    async def _boot(self, node: LocalNode) -> None:
        bootstrap = [n.address for n in self.nodes if n.alive and n.address][:3]
        endpoint = Endpoint(node.keys, network=self.memory)
        scope = trio.CancelScope()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    address = await inner.start(endpoint.run)
                    core = NodeCore(node.keys, node.store, self.config,
                                    rng=random.Random(self.rng.getrandbits(64)), address=address)
                    node.core, node.endpoint, node.address = core, endpoint, address
                    await inner.start(NodeHost(core, endpoint, strict=True).run, bootstrap)
                    task_status.started()

        node.scope = scope
        await self.nursery.start(run)

    async def crash(self, index: int, *, lose_unsynced: bool = True) -> None:
        """Kill a node at once (kill -9): what it had not synced is lost."""
        node = self.nodes[index]
        if node.scope is not None:
            node.scope.cancel()
            node.scope = None
        node.store.crash(lose_unsynced=lose_unsynced)
        await trio.lowlevel.checkpoint()

    async def restart(self, index: int) -> None:
        """Start a crashed node again with its key and its durable disk."""
        node = self.nodes[index]
        if node.alive:
            raise RuntimeError(f"node {index} is running")
        await self._boot(node)

    async def until(self, condition: Callable[[], bool], within: float, step: float = 0.25) -> None:
        """Wait until `condition()` holds, looking every `step` seconds; TooSlowError after
        `within`. Under the autojump clock the waiting costs no real time, and a test waits
        for what it expects rather than for a guess at how long it takes."""
        with trio.fail_after(within):
            while not condition():
                await trio.sleep(step)

    def holders(self, name: bytes) -> list[int]:
        """Indexes of live nodes that hold any item named `name` right now."""
        return [n.index for n in self.live() if n.core and (n.core.chunks.holds(name) or n.core.replicator.holds(name))]

    def close_group(self, name: bytes) -> list[int]:
        """Indexes of the R live nodes closest to `name` (brute force over all live ids)."""
        live = sorted(self.live(), key=lambda n: distance(n.keys.name, name))
        return [n.index for n in live[: self.config.replication]]
