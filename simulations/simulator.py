"""N real nodes in one trio run: the deterministic simulator's cluster.

Each node is the real `node.core.NodeCore` under the real `node.host.NodeHost`, attached to
the `SimNetwork` by a `SimEndpoint`, with a `MemoryStore` for its disk. Everything random is
drawn from the run's seed: node keys, each core's generator, the links, and (through
`simulations.determinism`) trio's task order. Time is trio's `MockClock`, so a minute of
network life costs only the CPU the nodes spend.

What a test or a nemesis can do to a node, and what it means:

- `crash(slot)`: kill -9. Writes not yet synced are lost (`lose_unsynced=False` keeps them).
- `restart(slot)`: the same key, the same (durable) disk, the same address.
- `wipe(slot)` then `restart(slot)`: the disk is gone; the key lived on it, so the node comes
  back as a new node (new name) at the same address.
- `pause(slot)` / `resume(slot)`: SIGSTOP / SIGCONT. Its inbox fills but it reads nothing and
  fires no timers; on resume it finds its timers overdue, as a stopped process does.

A node whose host raises is recorded in `errors` (a node must never crash on input) and
counts as crashed; the run goes on.
"""

from __future__ import annotations

import contextlib
import errno
import random
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from client.network import NetworkClient
from node.core import NodeConfig, NodeCore
from node.host import NodeHost
from node.keys import Keypair
from node.store import MemoryStore
from node.xorname import XorName, distance

from .determinism import sub_rng
from .network import LinkModel, SimEndpoint, SimNetwork
from .stepped import SteppedHost
from .trace import Trace

# Wraps a node's endpoint, e.g. to make it lie (`simulations.byzantine`).
EndpointWrapper = Callable[["SimNode", SimEndpoint], Any]


# The simulated time of day: a fixed epoch plus virtual time, the same on every run, so that
# request expiries (signed into every request) replay exactly from the seed.
SIM_EPOCH = 1_750_000_000.0
# Breaks that make nodes lie to their clients: an early "ok" (ack_before_quorum), a write
# rewritten before it is applied (skip_version_check), or the client's own check switched off
# (trust_the_ack, against the `member` attacker's dropped writes).
CLIENTS_TRUST_ACKS = frozenset({"ack_before_quorum", "skip_version_check", "trust_the_ack"})


def sim_wall_clock() -> float:
    return SIM_EPOCH + trio.current_time()


class SimStore(MemoryStore):
    """A node's simulated disk; it can also fill up (the `disk-full` fault).

    While `full`, every write of new data fails as a write to a full disk does (OSError
    ENOSPC); reads and deletes still work. The node core has no full-disk handling of its
    own, so what it does with the error is what the fault finds out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def _refuse(self) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def put_chunk(self, name: bytes, value: bytes) -> None:
        self._refuse()
        super().put_chunk(name, value)

    def put_record(self, ns: str, key: bytes, value: bytes) -> None:
        self._refuse()
        super().put_record(ns, key, value)

    def wipe(self) -> None:
        self.full = False  # a new disk
        super().wipe()


@dataclass
class SimNode:
    """One node slot: a disk, and the current incarnation running on it (if any)."""

    slot: int
    keys: Keypair
    store: SimStore
    address: str
    incarnation: int = 0
    state: str = "new"  # "up", "paused", "down"
    core: NodeCore | None = None
    endpoint: SimEndpoint | None = None
    scope: trio.CancelScope | None = None
    wrapper: EndpointWrapper | None = None
    started_at: float = 0.0
    config: NodeConfig | None = None  # this node's own (a Byzantine one's lying modes); else the run's

    @property
    def name(self) -> XorName:
        return self.keys.name

    @property
    def up(self) -> bool:
        return self.state in ("up", "paused")

    @property
    def label(self) -> str:
        return f"n{self.slot}" if self.incarnation <= 1 else f"n{self.slot}.{self.incarnation}"


@dataclass
class NodeError:
    time: float
    label: str
    error: str
    traceback: str


@dataclass
class Simulator:
    """The nodes, the network and the clients of one simulated run."""

    nursery: trio.Nursery
    seed: int | str
    config: NodeConfig
    trace: Trace
    network: SimNetwork
    nodes: list[SimNode] = field(default_factory=list)
    errors: list[NodeError] = field(default_factory=list)
    logs: Counter[str] = field(default_factory=Counter)
    bootstrap_count: int = 3
    driver: str = "host"  # "host": each node under its own NodeHost task; "stepped": see simulations.stepped

    def __post_init__(self) -> None:
        self._keys_rng = sub_rng(self.seed, "keys")
        self._node_rngs = sub_rng(self.seed, "node-rngs")
        self._client_rng = sub_rng(self.seed, "clients")
        self._clients = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        seed: int | str,
        *,
        config: NodeConfig | None = None,
        link: LinkModel | None = None,
        trace: Trace | None = None,
        tick: float = 0.005,
        driver: str = "host",
    ) -> AsyncIterator[Simulator]:
        """A simulator with its network running; everything stops when the block exits."""
        trace = trace or Trace()
        async with trio.open_nursery() as nursery:
            network = SimNetwork(sub_rng(seed, "links"), trace, link, tick=tick)
            await nursery.start(network.run)
            if driver not in ("host", "stepped"):
                raise ValueError(f"driver is 'host' or 'stepped', got {driver!r}")
            sim = cls(nursery, seed, config or NodeConfig(), trace, network, driver=driver)
            try:
                yield sim
            finally:
                nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ views

    @property
    def now(self) -> float:
        return trio.current_time()

    def live(self) -> list[SimNode]:
        """Nodes running now (paused ones included: they are alive, just stopped)."""
        return [n for n in self.nodes if n.up]

    def ready(self) -> list[SimNode]:
        return [n for n in self.nodes if n.state == "up" and n.core is not None and n.core.ready]

    def contacts(self, count: int = 3) -> list[str]:
        return [n.address for n in self.nodes if n.state == "up"][:count]

    def close_group(self, name: bytes, count: int | None = None) -> list[SimNode]:
        """The `count` (default R) live nodes closest to `name`, by brute force."""
        count = count or self.config.replication
        return sorted(self.live(), key=lambda n: distance(n.name, name))[:count]

    # ------------------------------------------------------------------ node life cycle

    async def add_node(self, wrapper: EndpointWrapper | None = None) -> SimNode:
        slot = len(self.nodes)
        node = SimNode(slot, Keypair.generate(self._keys_rng), SimStore(), f"sim:{slot}", wrapper=wrapper)
        self.nodes.append(node)
        await self.start(node)
        return node

    async def add_nodes(self, count: int, settle: float = 5.0) -> None:
        for _ in range(count):
            await self.add_node()
        await trio.sleep(settle)

    async def start(self, node: SimNode) -> None:
        """Boot the node's current key and disk as a new incarnation."""
        if node.up:
            raise RuntimeError(f"{node.label} is running")
        bootstrap = [n.address for n in self.nodes if n.state == "up" and n is not node][: self.bootstrap_count]
        node.incarnation += 1
        endpoint = SimEndpoint(self.network, node.name, "node", node.address, node.slot, node.label)
        rng = random.Random(self._node_rngs.getrandbits(64))
        core = NodeCore(node.keys, node.store, node.config or self.config, rng=rng, address=node.address,
                        log=self._logger(node), wall_offset=SIM_EPOCH)
        outward = node.wrapper(node, endpoint) if node.wrapper is not None else endpoint
        node.core, node.endpoint = core, endpoint
        node.state, node.started_at = "up", self.now
        self.trace.event(self.now, "note", "node-start", node=node.label, name=node.name.short())
        if self.driver == "stepped":
            stepper = SteppedHost(core, outward, self.network, endpoint.uid, lambda exc: self._failed(node, exc),
                                  getattr(outward, "saw", None))
            endpoint.stepper, node.scope = stepper, None
            self.network.attach(endpoint)
            stepper.start(self.now, bootstrap)
            await trio.lowlevel.checkpoint()
            return
        # strict: a bug in the core must show, not be logged
        host = NodeHost(core, outward, strict=True, wall_clock=sim_wall_clock)
        scope = node.scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            started = False
            with scope:
                try:
                    async with trio.open_nursery() as inner:
                        await inner.start(endpoint.run)
                        await inner.start(host.run, bootstrap)
                        started = True
                        task_status.started()
                except* Exception as group:  # a node must never crash; record it, run on
                    self._failed(node, group)
            if not started:
                task_status.started()

        await self.nursery.start(run)

    def _failed(self, node: SimNode, exc: BaseException) -> None:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        self.errors.append(
            NodeError(self.now, node.label, repr(exc)[:300], "".join(traceback.format_exception(exc))[-4000:])
        )
        self.trace.event(self.now, "note", "node-error", node=node.label, error=type(exc).__name__)
        if node.endpoint is not None:
            node.endpoint.close()
        node.state = "down"

    def _logger(self, node: SimNode) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.logs[event] += 1

        return log

    def crash(self, node: SimNode, *, lose_unsynced: bool = True) -> None:
        """kill -9: the process is gone now; with `lose_unsynced`, so are unsynced writes."""
        if not node.up:
            return
        assert node.endpoint is not None
        if node.endpoint.stepper is not None:
            node.endpoint.stepper.dead = True
        node.endpoint.close()
        if node.scope is not None:
            node.scope.cancel()
        node.store.crash(lose_unsynced=lose_unsynced)
        node.state = "down"
        node.core = None

    def wipe(self, node: SimNode) -> None:
        """The disk is lost. The key lived on it, so the next start is a new node."""
        if node.up:
            raise RuntimeError(f"crash {node.label} before wiping its disk")
        node.store.wipe()
        node.keys = Keypair.generate(self._keys_rng)
        node.incarnation = 0  # a new identity: its label restarts too

    async def restart(self, node: SimNode) -> None:
        await self.start(node)

    def pause(self, node: SimNode) -> None:
        if node.state == "up" and node.endpoint is not None:
            node.endpoint.pause()
            if node.endpoint.stepper is not None:
                node.endpoint.stepper.paused = True
            node.state = "paused"

    def resume(self, node: SimNode) -> None:
        if node.state == "paused" and node.endpoint is not None:
            node.endpoint.resume()
            stepper = node.endpoint.stepper
            if stepper is not None:
                stepper.paused = False
                self.network.wake(stepper)  # overdue timers and the messages that waited
            node.state = "up"

    # ------------------------------------------------------------------ clients

    def new_client_endpoint(self, keys: Keypair) -> SimEndpoint:
        self._clients += 1
        return SimEndpoint(self.network, keys.name, "client", None, -self._clients, f"c{self._clients}")

    @contextlib.asynccontextmanager
    async def client(self, keys: Keypair | None = None, *, contacts: list[str] | None = None,
                     **kwargs: Any) -> AsyncIterator[NetworkClient]:
        """A real `NetworkClient` on its own endpoint of this network (a fresh key unless given),
        bootstrapping from `contacts` (default: the first nodes up)."""
        keys = keys or Keypair.generate(self._client_rng)
        endpoint = self.new_client_endpoint(keys)
        kwargs.setdefault("replication", self.config.replication)
        kwargs.setdefault("rng", random.Random(self._client_rng.getrandbits(64)))
        kwargs.setdefault("clock", sim_wall_clock)
        async with NetworkClient.open(contacts or self.contacts(), keys, endpoint=endpoint, **kwargs) as client:
            # Breaks whose harm is a node lying to its client switch the client's check off too
            # (it would catch the lie, and the checkers would have nothing to find).
            client.check_acks = not (self.config.breaks & CLIENTS_TRUST_ACKS)
            yield client

    # ------------------------------------------------------------------ inspection

    def holders(self, name: bytes) -> list[SimNode]:
        """Live nodes holding any item called `name` (MD or chunk)."""
        out = []
        for node in self.live():
            core = node.core
            if core is not None and (core.chunks.holds(name) or core.replicator.holds(name)):
                out.append(node)
        return out
