"""The nemesis: faults injected into a simulated run, far more often than life would.

Each fault in `FAULTS` starts now and is healed after a drawn duration; the nemesis picks
the next one at exponentially distributed intervals, with weights a scenario chooses.
`Churn` is separate: nodes leave for good and new ones join, with heavy-tailed (Pareto or
Weibull) session times, as measured in deployed DHTs.

Two budgets keep the faults inside the fault model the network promises to survive
(docs/architecture.md "Fault model"; an acknowledged write must survive the loss of any
*minority* of a close group):

- at most `max_down` nodes are crashed or paused at once (R // 2 by default), so a majority
  of every group can still make progress once partitions heal;
- faults that destroy a node's data (a lost disk, a corrupted record, a churn departure)
  are spaced so that no more than R // 2 of them fall within `recovery` seconds among the
  2R nodes nearest the victim, nor within the close group of any item the workload wrote
  (counted by where the losses happened, not by which slots they hit): the network gets
  time to re-replicate before it is hit again.
  Re-replication needs a connected network: nothing is destroyed while a partition is in
  force, and the recovery time restarts when one heals.

Partitions, link faults and kills with the disk kept are not budgeted beyond that: they
may stop progress but must never lose anything acknowledged.

Why one module of about 670 lines: the nemesis and its catalogue of faults (each a short
function registered with `@fault`) are read together; `Churn`, at the end, is the seam if it
grows.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from .simulator import SIM_EPOCH, SimNode, Simulator
from .workloads import Workload


@dataclass
class Active:
    """A fault in force, and how to undo it."""

    name: str
    details: dict[str, Any]
    undo: Callable[[], Awaitable[None]]
    started: float
    done: bool = False


@dataclass(frozen=True)
class NemesisConfig:
    interval: float = 4.0  # mean seconds between faults
    duration: tuple[float, float] = (2.0, 10.0)  # how long one lasts (uniform)
    max_down: int | None = None  # default R // 2
    recovery: float = 30.0  # seconds a data-destroying fault counts against the budget


FaultFn = Callable[["Nemesis"], Awaitable["Active | None"]]
FAULTS: dict[str, tuple[str, FaultFn]] = {}


def fault(name: str, summary: str) -> Callable[[FaultFn], FaultFn]:
    def register(fn: FaultFn) -> FaultFn:
        FAULTS[name] = (summary, fn)
        return fn

    return register


class Nemesis:
    """Draws faults from a weighted menu and heals each after its duration.

    The schedule (when, which fault, how long) comes from the nemesis's generator; each
    fault's own choices (which node, which halves) from a generator of its own, seeded from
    the schedule. So the faults are numbered by the schedule (`details["i"]`), and leaving
    some out (`keep`, used by `simulations.shrink`) leaves every other fault's time, kind,
    duration and draws as they were.
    """

    def __init__(self, sim: Simulator, rng: random.Random, menu: dict[str, float],
                 config: NemesisConfig | None = None, workload: Workload | None = None,
                 keep: frozenset[int] | None = None) -> None:
        unknown = set(menu) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.sim = sim
        self.schedule = rng
        self.rng = rng  # the current fault's generator while it is being injected
        self.menu = {k: v for k, v in menu.items() if v > 0}
        self.config = config or NemesisConfig()
        self.workload = workload
        self.keep = keep  # fault numbers to inject (None: all)
        self.drawn = 0
        self.injected: list[int] = []  # the numbers of the faults that took effect
        self.active: list[Active] = []
        # (time, slot, name at the time) of data-destroying faults. The name is the place in
        # the XOR space the loss happened; the slot's next node may join somewhere else.
        self.destroyed: list[tuple[float, int, bytes]] = []
        self.counts: dict[str, int] = {}
        self._exclusive: set[str] = set()  # fault groups of which one is in force at a time
        self.partition_healed = -math.inf  # when the last partition ended

    @property
    def max_down(self) -> int:
        if self.config.max_down is not None:
            return self.config.max_down
        return self.sim.config.replication // 2

    # ------------------------------------------------------------------ running

    async def run(self, until: float) -> None:
        if not self.menu:
            return
        names = sorted(self.menu)
        weights = [self.menu[n] for n in names]
        schedule = self.schedule
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(schedule.expovariate(1.0 / self.config.interval))
                if trio.current_time() >= until:
                    break
                name = schedule.choices(names, weights)[0]
                own = random.Random(schedule.getrandbits(64))
                lasts = schedule.uniform(*self.config.duration)
                number = self.drawn
                self.drawn += 1
                if self.keep is not None and number not in self.keep:
                    continue
                self.rng = own
                active = await FAULTS[name][1](self)
                if active is None:
                    continue
                self.injected.append(number)
                active.details["i"] = number
                self.counts[name] = self.counts.get(name, 0) + 1
                self.active.append(active)
                self.sim.trace.event(trio.current_time(), "fault", name, **active.details)
                nursery.start_soon(self._heal_after, active, lasts)
            nursery.cancel_scope.cancel()

    async def _heal_after(self, active: Active, delay: float) -> None:
        await trio.sleep(delay)
        await self.heal(active)

    async def heal(self, active: Active) -> None:
        if active.done:
            return
        active.done = True
        self.active.remove(active)
        await active.undo()
        self.sim.trace.event(trio.current_time(), "heal", active.name, **active.details)

    async def heal_all(self) -> None:
        """End every fault in force, then bring back every node that is down or paused."""
        for active in list(self.active):
            await self.heal(active)
        net = self.sim.network
        net.blocked.clear()
        net.unclog_all()
        net.slot_links.clear()
        for node in self.sim.nodes:
            if node.state == "paused":
                self.sim.resume(node)
            elif node.state == "down":
                await self.sim.restart(node)
        self.sim.trace.event(trio.current_time(), "heal", "all")

    # ------------------------------------------------------------------ budgets and choices

    def nodes_up(self) -> list[SimNode]:
        return [n for n in self.sim.nodes if n.state == "up"]

    def down_count(self) -> int:
        return sum(1 for n in self.sim.nodes if n.state != "up")

    def may_destroy(self, node: SimNode) -> bool:
        """Would destroying `node`'s data now stay within the minority-per-group budget?

        Re-replication needs a connected network, so while a partition is in force nothing
        more is destroyed, and the recovery time of earlier losses restarts when it heals.
        """
        now = trio.current_time()
        if "partition" in self._exclusive:
            return False
        recent = {name for t, _slot, name in self.destroyed
                  if now - max(t, self.partition_healed) < self.config.recovery}
        if not recent:
            return True
        r = self.sim.config.replication
        # Every place that held data recently lost still counts, even if its slot's next node
        # joined elsewhere: the items that were there are still being re-replicated.
        lost = {int.from_bytes(name, "big") for name in recent}
        places = {int.from_bytes(n.name, "big") for n in self.sim.nodes} | lost
        me = int.from_bytes(node.name, "big")
        if sum(1 for p in heapq.nsmallest(2 * r, places, key=lambda p: p ^ me) if p in lost) >= r // 2:
            return False
        # The node's own neighbourhood is not every group it is in: an item between two
        # clusters of nodes has a group that neither side's neighbourhood covers. So the
        # group of each item the workload wrote is checked too, where the node is in it.
        for item in self._item_names():
            t = int.from_bytes(item, "big")
            group = heapq.nsmallest(r, places, key=t.__xor__)  # distance to the item
            if me in group and sum(1 for p in group if p in lost) >= r // 2:
                return False
        return True

    def _item_names(self) -> list[bytes]:
        if self.workload is None:
            return []
        return [bytes(md.name) for md in self.workload.mds] + list(self.workload.chunk_values)

    def destroyed_now(self, node: SimNode) -> None:
        """Count a loss of `node`'s data against the budget, where the node is now."""
        self.destroyed.append((trio.current_time(), node.slot, bytes(node.name)))

    def exclusive(self, group: str) -> bool:
        """Claim `group` (one partition at a time, say); False if it is taken."""
        if group in self._exclusive:
            return False
        self._exclusive.add(group)
        return True

    def release(self, group: str) -> None:
        self._exclusive.discard(group)

    def slots(self) -> list[int]:
        return [n.slot for n in self.sim.nodes]


# ====================================================================== partitions


def _partition(nem: Nemesis, name: str, blocked: set[tuple[int, int]], details: dict[str, Any]) -> Active:
    net = nem.sim.network
    net.blocked |= blocked

    async def undo() -> None:
        net.blocked -= blocked
        nem.release("partition")
        nem.partition_healed = trio.current_time()

    return Active(name, details, undo, trio.current_time())


def _split(a: list[int], b: list[int]) -> set[tuple[int, int]]:
    return {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}


@fault("partition-halves", "split the nodes into two random halves")
async def partition_halves(nem: Nemesis) -> Active | None:
    if not nem.exclusive("partition"):
        return None
    slots = nem.slots()
    nem.rng.shuffle(slots)
    half = len(slots) // 2
    a, b = sorted(slots[:half]), sorted(slots[half:])
    return _partition(nem, "partition-halves", _split(a, b), {"side": ",".join(map(str, a))})


@fault("partition-one", "isolate one node from all others")
async def partition_one(nem: Nemesis) -> Active | None:
    if not nem.exclusive("partition"):
        return None
    slots = nem.slots()
    lone = nem.rng.choice(slots)
    return _partition(nem, "partition-one", _split([lone], [s for s in slots if s != lone]), {"node": lone})


@fault("partition-ring", "majorities ring: every node sees a majority, no two the same one")
async def partition_ring(nem: Nemesis) -> Active | None:
    if not nem.exclusive("partition"):
        return None
    ring = nem.slots()
    nem.rng.shuffle(ring)
    n = len(ring)
    reach = math.ceil((n // 2) / 2)  # neighbours seen on each side: 1 + 2*reach >= a majority
    blocked = set()
    for i, j in itertools.permutations(range(n), 2):
        if min((i - j) % n, (j - i) % n) > reach:
            blocked.add((ring[i], ring[j]))
    return _partition(nem, "partition-ring", blocked, {"ring": ",".join(map(str, ring))})


@fault("partition-asym", "one-way partition: a random minority can send but not hear")
async def partition_asym(nem: Nemesis) -> Active | None:
    if not nem.exclusive("partition"):
        return None
    slots = nem.slots()
    nem.rng.shuffle(slots)
    k = max(1, len(slots) // 3)
    deaf, rest = sorted(slots[:k]), slots[k:]
    blocked = {(x, y) for x in rest for y in deaf}
    return _partition(nem, "partition-asym", blocked, {"deaf": ",".join(map(str, deaf))})


# ====================================================================== processes


@fault("kill", "kill -9 a node (unsynced writes lost), restart it later with its disk")
async def kill(nem: Nemesis) -> Active | None:
    candidates = nem.nodes_up()
    if nem.down_count() >= nem.max_down or not candidates:
        return None
    node = nem.rng.choice(candidates)
    # Usually what was not synced is lost; sometimes it happened to reach the disk.
    lose = nem.rng.random() < 0.7
    nem.sim.crash(node, lose_unsynced=lose)

    async def undo() -> None:
        if node.state == "down":
            await nem.sim.restart(node)

    return Active("kill", {"node": node.label, "unsynced": "lost" if lose else "kept"}, undo, trio.current_time())


@fault("wipe", "kill a node and lose its disk; it comes back as a new node (new key)")
async def wipe(nem: Nemesis) -> Active | None:
    candidates = [n for n in nem.nodes_up() if nem.may_destroy(n)]
    if nem.down_count() >= nem.max_down or not candidates:
        return None
    node = nem.rng.choice(candidates)
    label = node.label
    nem.sim.crash(node)
    nem.destroyed_now(node)  # before the wipe, which gives the node a new name
    nem.sim.wipe(node)

    async def undo() -> None:
        if node.state == "down":
            await nem.sim.restart(node)

    return Active("wipe", {"node": label}, undo, trio.current_time())


@fault("pause", "SIGSTOP a node (no messages, no timers), SIGCONT it later")
async def pause(nem: Nemesis) -> Active | None:
    candidates = nem.nodes_up()
    if nem.down_count() >= nem.max_down or not candidates:
        return None
    node = nem.rng.choice(candidates)
    nem.sim.pause(node)

    async def undo() -> None:
        nem.sim.resume(node)

    return Active("pause", {"node": node.label}, undo, trio.current_time())


@fault("corrupt", "flip a byte of a stored record or chunk on one node (checksums must catch it)")
async def corrupt(nem: Nemesis) -> Active | None:
    candidates = [n for n in nem.nodes_up() if nem.may_destroy(n)]
    nem.rng.shuffle(candidates)
    for node in candidates:
        store = node.store
        items = [("md", k) for k in store.record_keys("md")] + [("chunk", k) for k in store.chunk_names()]
        if not items:
            continue
        ns, key = nem.rng.choice(items)
        store.corrupt(ns, key)
        nem.destroyed_now(node)

        async def undo() -> None:
            return None

        return Active("corrupt", {"node": node.label, "ns": ns, "key": key.hex()[:12]}, undo, trio.current_time())
    return None


@fault("client-crash", "cancel a client mid-operation (its operation's outcome is unknown)")
async def client_crash(nem: Nemesis) -> Active | None:
    if nem.workload is None:
        return None
    worker = nem.workload.crash_client(nem.rng)
    if worker is None:
        return None

    async def undo() -> None:
        return None

    return Active("client-crash", {"worker": worker}, undo, trio.current_time())


# ====================================================================== links


def _weather(nem: Nemesis, name: str, **changes: Any) -> Active | None:
    if not nem.exclusive(f"link:{name}"):
        return None
    net = nem.sim.network
    before = net.link
    net.link = before.with_(**changes)

    async def undo() -> None:
        current = net.link
        net.link = current.with_(**{k: getattr(before, k) for k in changes})
        nem.release(f"link:{name}")

    return Active(name, {k: round(v, 4) for k, v in changes.items()}, undo, trio.current_time())


@fault("loss", "drop a share of all messages")
async def loss(nem: Nemesis) -> Active | None:
    return _weather(nem, "loss", loss=nem.rng.choice([0.05, 0.1, 0.2, 0.3]))


@fault("delay", "slow every link: a higher floor and mean of the one-way delay")
async def delay(nem: Nemesis) -> Active | None:
    mean = nem.rng.choice([0.1, 0.3, 0.8])
    return _weather(nem, "delay", delay_min=mean / 4, delay_mean=mean)


@fault("duplicate", "deliver a share of messages twice")
async def duplicate(nem: Nemesis) -> Active | None:
    return _weather(nem, "duplicate", duplicate=nem.rng.choice([0.1, 0.3]))


@fault("reorder", "let messages overtake each other on a link (no FIFO)")
async def reorder(nem: Nemesis) -> Active | None:
    return _weather(nem, "reorder", reorder=nem.rng.choice([0.2, 0.5]), reorder_delay=0.1)


@fault("slow-node", "one node's links get slow and lossy")
async def slow_node(nem: Nemesis) -> Active | None:
    if not nem.exclusive("slow-node"):
        return None
    net = nem.sim.network
    node = nem.rng.choice(nem.sim.nodes)
    net.slot_links[node.slot] = net.link.with_(delay_min=0.05, delay_mean=0.5, loss=0.2)

    async def undo() -> None:
        net.slot_links.pop(node.slot, None)
        nem.release("slow-node")

    return Active("slow-node", {"node": node.slot}, undo, trio.current_time())


@fault("clog", "clog a few one-way paths: their messages are held, then released together")
async def clog(nem: Nemesis) -> Active | None:
    net = nem.sim.network
    slots = nem.slots()
    paths = set()
    for _ in range(max(1, len(slots) // 4)):
        a, b = nem.rng.sample(slots, 2)
        if (a, b) not in net.clogged:
            paths.add((a, b))
            net.clog(a, b)
    if not paths:
        return None

    async def undo() -> None:
        for path in sorted(paths):
            net.unclog(*path)

    shown = ",".join(f"{a}>{b}" for a, b in sorted(paths))
    return Active("clog", {"paths": shown}, undo, trio.current_time())


@fault("swizzle", "FoundationDB swizzle-clog: clog nodes' links one by one, unclog in random order")
async def swizzle(nem: Nemesis) -> Active | None:
    if not nem.exclusive("swizzle"):
        return None
    net = nem.sim.network
    slots = nem.slots()
    chosen = nem.rng.sample(slots, max(1, len(slots) // 3))
    order = list(chosen)
    nem.rng.shuffle(order)
    gaps = [nem.rng.uniform(0.2, 1.0) for _ in chosen] + [nem.rng.uniform(0.5, 2.0) for _ in order]
    mine: set[tuple[int, int]] = set()

    def paths_of(slot: int) -> list[tuple[int, int]]:
        return [p for other in slots if other != slot for p in ((slot, other), (other, slot))]

    async def swizzle_clog() -> None:
        for slot, gap in zip(chosen, gaps, strict=False):
            for path in paths_of(slot):
                if path not in net.clogged:
                    net.clog(*path)
                    mine.add(path)
            await trio.sleep(gap)
        for slot, gap in zip(order, gaps[len(chosen):], strict=True):
            await trio.sleep(gap)
            for path in sorted(p for p in mine if slot in p):
                mine.discard(path)
                net.unclog(*path)

    scope = trio.CancelScope()

    async def runner() -> None:
        with scope:
            await swizzle_clog()

    nem.sim.nursery.start_soon(runner)

    async def undo() -> None:
        scope.cancel()
        for path in sorted(mine):
            net.unclog(*path)
        mine.clear()
        nem.release("swizzle")

    return Active("swizzle", {"nodes": ",".join(map(str, chosen))}, undo, trio.current_time())


# ====================================================================== machines: clocks and disks
#
# These act on a node's `SteppedHost` (the default driver), which owns the node's view of
# time and its disk latency; under the NodeHost driver they find nothing to do. They are in
# no named scenario: ask for them with --faults or a scenario file.


def _stepped(nem: Nemesis) -> list[SimNode]:
    return [n for n in nem.nodes_up() if n.endpoint is not None and n.endpoint.stepper is not None]


def _machine_fault(nem: Nemesis, name: str, group: str, apply: Callable[[Any], None],
                   reset: Callable[[Any], None], details: dict[str, Any], node: SimNode) -> Active:
    assert node.endpoint is not None and node.endpoint.stepper is not None
    apply(node.endpoint.stepper)

    async def undo() -> None:
        # The node may have restarted since: the machine's fault ends for whoever runs there.
        if node.endpoint is not None and node.endpoint.stepper is not None:
            reset(node.endpoint.stepper)
        nem.release(f"{group}:{node.slot}")

    return Active(name, {"node": node.label, **details}, undo, trio.current_time())


def _pick_machine(nem: Nemesis, name: str) -> SimNode | None:
    candidates = [n for n in _stepped(nem) if f"{name}:{n.slot}" not in nem._exclusive]
    if not candidates:
        return None
    node = nem.rng.choice(candidates)
    nem.exclusive(f"{name}:{node.slot}")
    return node


@fault("clock-skew", "one node's time of day is off by up to 30 s, ahead or behind (request expiry)")
async def clock_skew(nem: Nemesis) -> Active | None:
    node = _pick_machine(nem, "clock-skew")
    if node is None:
        return None
    skew = nem.rng.choice([-1, 1]) * nem.rng.choice([0.5, 2.0, 10.0, 30.0])

    def skewed(stepper: Any) -> None:
        stepper.core.wall_offset = SIM_EPOCH + skew

    def right(stepper: Any) -> None:
        stepper.core.wall_offset = SIM_EPOCH

    return _machine_fault(nem, "clock-skew", "clock-skew", skewed, right, {"skew": skew}, node)


@fault("clock-drift", "one node's clock runs fast or slow by 1 % to 50 % (its timers and time of day)")
async def clock_drift(nem: Nemesis) -> Active | None:
    node = _pick_machine(nem, "clock-drift")
    if node is None:
        return None
    rate = 1.0 + nem.rng.choice([-1, 1]) * nem.rng.choice([0.01, 0.1, 0.5])
    return _machine_fault(nem, "clock-drift", "clock-drift", lambda s: s.set_rate(trio.current_time(), rate),
                          lambda s: s.set_rate(trio.current_time()), {"rate": rate}, node)


@fault("disk-full", "one node's disk is full: every write of new data fails (ENOSPC)")
async def disk_full(nem: Nemesis) -> Active | None:
    node = _pick_machine(nem, "disk-full")
    if node is None:
        return None

    def fill(stepper: Any) -> None:
        stepper.core.store.full = True

    def free(stepper: Any) -> None:
        stepper.core.store.full = False

    return _machine_fault(nem, "disk-full", "disk-full", fill, free, {}, node)


@fault("slow-disk", "one node's disk syncs slowly (50 ms to 1 s): its replies wait for the sync")
async def slow_disk(nem: Nemesis) -> Active | None:
    node = _pick_machine(nem, "slow-disk")
    if node is None:
        return None
    latency = nem.rng.choice([0.05, 0.2, 1.0])

    def slow(stepper: Any) -> None:
        stepper.sync_delay = latency

    def fast(stepper: Any) -> None:
        stepper.sync_delay = 0.0

    return _machine_fault(nem, "slow-disk", "slow-disk", slow, fast, {"sync": latency}, node)


# ====================================================================== churn


@dataclass(frozen=True)
class ChurnConfig:
    """Session times (how long a node stays) are heavy-tailed; dead times exponential."""

    session_mean: float = 60.0
    distribution: str = "pareto"  # or "weibull"
    shape: float = 1.5  # Pareto alpha (> 1), or Weibull k (< 1 is heavy-tailed)
    dead_mean: float = 10.0  # how long until the slot's next node joins


def session_length(config: ChurnConfig, rng: random.Random) -> float:
    if config.distribution == "pareto":
        alpha = config.shape
        scale = config.session_mean * (alpha - 1) / alpha  # so the mean is session_mean
        return scale * rng.paretovariate(alpha)
    if config.distribution == "weibull":
        k = config.shape
        scale = config.session_mean / math.gamma(1 + 1 / k)
        return rng.weibullvariate(scale, k)
    raise ValueError(f"unknown session distribution {config.distribution!r}")


@dataclass
class Churn:
    """Nodes leave (their data and identity gone) and new ones join in their place."""

    sim: Simulator
    rng: random.Random
    config: ChurnConfig
    nemesis: Nemesis
    leaves: int = 0
    joins: int = 0
    deferred: int = 0
    population: list[tuple[float, int]] = field(default_factory=list)  # (time, live nodes)

    async def run(self, until: float) -> None:
        async with trio.open_nursery() as nursery:
            for node in list(self.sim.nodes):
                nursery.start_soon(self._slot, node, until)

    async def _slot(self, node: SimNode, until: float) -> None:
        while True:
            await trio.sleep(session_length(self.config, self.rng))
            while not self.nemesis.may_destroy(node) or node.state != "up":
                if trio.current_time() >= until:
                    return
                self.deferred += 1
                await trio.sleep(5.0)
            if trio.current_time() >= until:
                return
            label = node.label
            self.sim.crash(node)
            self.nemesis.destroyed_now(node)  # before the wipe, which gives the node a new name
            self.sim.wipe(node)
            self.leaves += 1
            self.sim.trace.event(trio.current_time(), "fault", "churn-leave", node=label)
            self._count()
            await trio.sleep(self.rng.expovariate(1.0 / self.config.dead_mean))
            if trio.current_time() >= until:
                return  # the final heal brings it back
            await self.sim.restart(node)
            self.joins += 1
            self.sim.trace.event(trio.current_time(), "heal", "churn-join", node=node.label)
            self._count()

    def _count(self) -> None:
        self.population.append((trio.current_time(), len(self.sim.live())))
