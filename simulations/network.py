"""The simulator's network: whole messages between endpoints, on virtual time, from one seed.

`SimNetwork` stands where TCP stands for a real node. A node's `NodeHost` and a client's
`RpcClient` each get a `SimEndpoint`, which has the part of `node.transport.Endpoint`'s API
they use (`inbox`, `send_nowait`, `send`, `connect`, `is_connected`, `run`, `aclose`,
`stats`, `address`). Messages are encoded with the wire codec when sent and decoded when
delivered, so nothing is shared between sender and receiver and everything sent is proven
encodable; the byte-level framing and handshakes of the TCP transport are not simulated
(that transport has its own tests, and skipping it is what makes 1,000 nodes affordable).

The link model follows TigerBeetle's packet simulator: a one-way delay that is exponential
above a floor, loss, duplication, reordering, clogged paths (held, then released), and
partitions given as blocked directed pairs of node slots (so asymmetric splits are just
pairs blocked one way). Links are FIFO like a TCP connection unless reordering is on.
Delivery times are rounded up to a tick so one wake-up of a node handles many messages.

Partitions block node-to-node traffic only; clients reach every live node (as Jepsen's
clients reach the node they talk to), but loss, delay and the rest apply to them too.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import trio
import trio.testing

from node.peer import Peer
from node.transport import HandshakeError, Unreachable
from node.wire import DEFAULT_MAX_FRAME, BodyEncoder, FrameTooLarge
from node.xorname import XorName

from .trace import Trace

if TYPE_CHECKING:
    from .stepped import SteppedHost


class Delivery(NamedTuple):
    """One message handed to an endpoint's inbox (the shape of `transport.Incoming`).

    A named tuple: one is made per simulated message, and a tuple is built at a fraction
    of a frozen dataclass's cost."""

    peer: Peer
    msg: dict[str, Any]


@dataclass(frozen=True)
class LinkModel:
    """How messages travel. Times in (virtual) seconds, rates in [0, 1]."""

    delay_min: float = 0.001  # the floor of the one-way delay
    delay_mean: float = 0.004  # the mean one-way delay (floor plus the exponential part)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance a message leaves FIFO order with an extra delay
    reorder_delay: float = 0.05  # mean of that extra delay

    def with_(self, **changes: Any) -> LinkModel:
        return replace(self, **changes)


class _Inbox:
    """A receive channel that a paused endpoint holds shut.

    While the endpoint is paused, `receive` waits shielded from cancellation: the host's
    timer deadline expiring around it must not wake it either, because a stopped process
    fires no timers. Resuming (or killing) the endpoint lets it through.
    """

    def __init__(self, endpoint: SimEndpoint, channel: trio.MemoryReceiveChannel[Delivery]) -> None:
        self._endpoint = endpoint
        self._channel = channel

    async def receive(self) -> Delivery:
        if self._endpoint.paused:  # (_held returns at once otherwise: skip making its coroutine)
            await self._held()
        delivery = await self._channel.receive()
        # Paused while we waited for it: a stopped process reads nothing, so it waits too.
        if self._endpoint.paused:
            await self._held()
        return delivery

    async def _held(self) -> None:
        endpoint = self._endpoint
        while endpoint.paused:
            with trio.CancelScope(shield=True):
                await endpoint.resumed.wait()

    def receive_nowait(self) -> Delivery:
        if self._endpoint.paused:
            raise trio.WouldBlock
        return self._channel.receive_nowait()

    def __aiter__(self) -> _Inbox:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class SimEndpoint:
    """One node's or client's attachment to a `SimNetwork` (one incarnation of it)."""

    def __init__(
        self, network: SimNetwork, name: XorName, role: str, address: str | None, slot: int, label: str
    ) -> None:
        self.network = network
        self.name = name
        self.role = role
        self.address = address
        self.slot = slot  # nodes keep their slot across restarts; partitions are by slot
        self.label = label  # short name in traces: "n3", "n3.2" (3rd incarnation), "c1"
        self.peer = Peer(name, role, address)
        self.uid = network.new_uid()  # stable within a run, unlike id(): keys the FIFO table
        self._send_ch, receive_ch = trio.open_memory_channel[Delivery](math.inf)
        self.inbox = _Inbox(self, receive_ch)
        self.closed = False
        self.paused = False
        self.resumed = trio.Event()
        self._stopped = trio.Event()
        self._connected: dict[XorName, SimEndpoint] = {}
        self.counters: Counter[str] = Counter()
        self.stepper: SteppedHost | None = None  # set when the stepped driver runs this node
        # Called with a peer's name when a connection to it breaks (the peer crashed), as
        # `transport.Endpoint` does; RpcClient fails its requests to that peer at once.
        self.on_disconnect: list[Callable[[XorName], None]] = []
        self._watching: list[SimEndpoint] = []  # endpoints connected to this one

    def __repr__(self) -> str:
        return f"<SimEndpoint {self.label} {self.name.short()}>"

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED) -> None:
        self.network.attach(self)
        task_status.started(self.address)
        try:
            await self._stopped.wait()
        finally:
            self.close()

    def close(self) -> None:
        """Gone at once (a crash, or the end of a client): nothing more reaches it."""
        if self.closed:
            return
        self.closed = True
        self.network.detach(self)
        for peer in self._watching:  # their connections to us break
            if not peer.closed and peer._connected.pop(self.name, None) is self:
                for callback in list(peer.on_disconnect):
                    callback(self.name)
        self._watching.clear()
        # The inbox stays open: a host already woken with a message must not find it closed
        # mid-batch; it is cancelled with its node instead.
        self.resume()  # a paused endpoint that is killed must let its host see the cancel
        self._stopped.set()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def pause(self) -> None:
        if not self.closed and not self.paused:
            self.paused = True
            self.resumed = trio.Event()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.resumed.set()

    # ------------------------------------------------------------------ the Endpoint API

    def send_nowait(self, to_name: bytes | None, to_address: str | None, msg: dict[str, Any]) -> bool:
        return self.network.send(self, to_name, to_address, msg)

    async def send(self, to_name: bytes, to_address: str | None, msg: dict[str, Any]) -> None:
        if not self.network.send(self, to_name, to_address, msg):
            raise Unreachable(f"no route to {XorName(to_name).short()}")
        await trio.lowlevel.checkpoint()

    async def connect(self, address: str, expected_name: bytes | None = None) -> Peer:
        """What dialling and a handshake would find at `address`, one round trip later."""
        await trio.sleep(2 * self.network.link.delay_mean)
        target = self.network.at_address(address)
        if target is None or not self.network.reachable(self, target):
            raise Unreachable(f"nothing answers at {address}")
        if expected_name is not None and target.name != expected_name:
            raise HandshakeError(f"expected peer {XorName(expected_name).short()}, reached {target.name.short()}")
        if self._connected.get(target.name) is not target:
            self._connected[target.name] = target
            target._watching.append(self)
        return target.peer

    def is_connected(self, name: bytes) -> bool:
        target = self._connected.get(XorName(name))
        return target is not None and not target.closed

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)

    # ------------------------------------------------------------------ delivery

    def deliver(self, delivery: Delivery) -> None:
        self._send_ch.send_nowait(delivery)


def _decode(body: bytes, unpackb: Callable[..., Any] = msgpack.unpackb) -> dict[str, Any]:
    # The receiving copy. The wire's own decoder would also re-validate the envelope, which
    # `encode_body` already required of the sender and which costs more than the decode itself.
    # (str as str and arrays as lists are unpackb's defaults.)
    msg: dict[str, Any] = unpackb(body, strict_map_key=False)
    return msg


# At most this many wake-ups in a row by jumping the clock; then one real sleep lets trio
# attend to everything else (a cancellation, say) even if nothing else is due.
_MAX_JUMPS = 256


def _scheduler(clock: trio.abc.Clock) -> tuple[Any, Any] | None:
    """The running trio loop's run queue and deadline heap, for `SimNetwork._jump`.

    `_jump` asks two things of the scheduler after nearly every wake-up: is any task
    runnable, and when is the next deadline. `trio.lowlevel.current_statistics()` answers
    them, and builds I/O and queue statistics besides, which cost more than the rest of a
    jump; these two private attributes of the runner are what it reads for the answers.
    None (so `_jump` falls back to the public call) if a trio release moves them.
    """
    try:
        runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
        runq, deadlines = runner.runq, runner.deadlines
        if runner.clock is not clock or not callable(deadlines.next_deadline) or len(runq) < 0:
            return None
    except (AttributeError, TypeError):
        return None
    return runq, deadlines


class SimNetwork:
    """Delivers messages between endpoints with the seeded link model. Run `run` in a nursery."""

    def __init__(self, rng: random.Random, trace: Trace, link: LinkModel | None = None, *, tick: float = 0.005) -> None:
        self.rng = rng
        self.trace = trace
        self.link = link or LinkModel()
        self.slot_links: dict[int, LinkModel] = {}  # per-node link faults (either end's applies)
        self.blocked: set[tuple[int, int]] = set()  # (from slot, to slot): node-to-node only
        # (from slot, to slot) -> messages held on that clogged path
        self.clogged: dict[tuple[int, int], list[tuple[SimEndpoint, SimEndpoint, bytes, str]]] = {}
        self.max_frame = DEFAULT_MAX_FRAME
        self._encode = BodyEncoder()  # node.wire.encode_body, with a packer kept across sends
        self._ticks = 1.0 / tick
        self._by_name: dict[bytes, SimEndpoint] = {}  # an XorName hashes and compares as its bytes
        self._by_address: dict[str, SimEndpoint] = {}
        self._last: dict[tuple[int, int], float] = {}  # FIFO: last delivery time per endpoint pair
        self._heap: list[tuple[float, int, SimEndpoint, SimEndpoint, bytes, str]] = []
        self._seq = 0
        self._scope: trio.CancelScope | None = None
        self._timers: list[tuple[float, int, SteppedHost]] = []  # stepped nodes' next deadlines
        self._due: dict[int, SteppedHost] = {}
        self.bytes_sent = 0
        self._uids = 0
        # The time while the delivery loop runs steppers on a stopped virtual clock (which
        # nothing can move under it then); None whenever the clock must be asked (see now()).
        self._at: float | None = None
        self.jumps = 0  # wake-ups that moved the clock themselves instead of sleeping (see _jump)

    def now(self) -> float:
        """trio's current time; inside the delivery loop, the loop's own reading of it."""
        at = self._at
        return trio.current_time() if at is None else at

    def new_uid(self) -> int:
        self._uids += 1
        return self._uids

    # ------------------------------------------------------------------ membership

    def attach(self, endpoint: SimEndpoint) -> None:
        self._by_name[endpoint.name] = endpoint
        if endpoint.address is not None:
            self._by_address[endpoint.address] = endpoint

    def detach(self, endpoint: SimEndpoint) -> None:
        if self._by_name.get(endpoint.name) is endpoint:
            del self._by_name[endpoint.name]
        if endpoint.address is not None and self._by_address.get(endpoint.address) is endpoint:
            del self._by_address[endpoint.address]

    def at_address(self, address: str) -> SimEndpoint | None:
        return self._by_address.get(address)

    def endpoint(self, name: bytes) -> SimEndpoint | None:
        return self._by_name.get(XorName(name))

    def reachable(self, src: SimEndpoint, dst: SimEndpoint) -> bool:
        both_nodes = src.role == "node" and dst.role == "node"
        return not (both_nodes and (src.slot, dst.slot) in self.blocked)

    # ------------------------------------------------------------------ sending

    def send(self, src: SimEndpoint, to_name: bytes | None, to_address: str | None, msg: dict[str, Any]) -> bool:
        """Schedule `msg`'s delivery. False when there is no live endpoint to send to."""
        body = self._encode(msg)  # raises ProtocolError for anything the wire cannot carry
        if len(body) > self.max_frame:
            raise FrameTooLarge(len(body), self.max_frame)
        kind = msg["k"]
        # An XorName hashes and compares as its bytes: no need to build one to look it up.
        dst = self._by_name.get(to_name) if to_name is not None else None
        if dst is None and to_name is None and to_address is not None:
            dst = self._by_address.get(to_address)
        if dst is None or src.closed:
            self.trace.drop(self.now(), kind, src.label, "?" if dst is None else dst.label, "no-route")
            return False
        src.counters["sent"] += 1
        self.bytes_sent += len(body)
        both_nodes = src.role == "node" and dst.role == "node"
        if both_nodes and self.blocked and (src.slot, dst.slot) in self.blocked:
            self.trace.drop(self.now(), kind, src.label, dst.label, "partition")
            return True
        model = self.model(src, dst) if self.slot_links else self.link
        if model.loss and self.rng.random() < model.loss:
            self.trace.drop(self.now(), kind, src.label, dst.label, "loss")
            return True
        if both_nodes and self.clogged:
            held = self.clogged.get((src.slot, dst.slot))
            if held is not None:
                held.append((src, dst, body, kind))  # released, in order, when the path unclogs
                return True
        now = self._at
        if now is None:
            now = trio.current_time()
        if model.duplicate and self.rng.random() < model.duplicate:
            self._schedule(src, dst, body, kind, now, model)
        self._schedule(src, dst, body, kind, now, model)
        return True

    def model(self, src: SimEndpoint, dst: SimEndpoint) -> LinkModel:
        return self.slot_links.get(src.slot) or self.slot_links.get(dst.slot) or self.link

    def _schedule(self, src: SimEndpoint, dst: SimEndpoint, body: bytes, kind: str, now: float,
                  model: LinkModel) -> None:
        rng = self.rng
        extra = model.delay_mean - model.delay_min
        when = now + model.delay_min + (rng.expovariate(1.0 / extra) if extra > 0 else 0.0)
        pair = (src.uid, dst.uid)
        if model.reorder and rng.random() < model.reorder:
            when += rng.expovariate(1.0 / model.reorder_delay)
        else:
            last = self._last.get(pair, 0.0)
            if when < last:
                when = last  # a connection keeps its order
            self._last[pair] = when
        when = math.ceil(when * self._ticks) / self._ticks
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, src, dst, body, kind))
        scope = self._scope  # _wake, inlined
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    # ------------------------------------------------------------------ clogged paths

    def clog(self, src_slot: int, dst_slot: int) -> None:
        """Hold every message from node slot `src_slot` to `dst_slot` until `unclog`."""
        self.clogged.setdefault((src_slot, dst_slot), [])

    def unclog(self, src_slot: int, dst_slot: int) -> None:
        held = self.clogged.pop((src_slot, dst_slot), None)
        now = trio.current_time()
        for src, dst, body, kind in held or ():
            if not dst.closed:
                self._schedule(src, dst, body, kind, now, self.model(src, dst))

    def unclog_all(self) -> None:
        for path in sorted(self.clogged):
            self.unclog(*path)

    # ------------------------------------------------------------------ the delivery loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap, timers, due = self._heap, self._timers, self._due
        trace = self.trace
        pending = trace.pending  # Trace.message, inlined: one line per delivered message
        kinds = trace.kinds
        clock = trio.lowlevel.current_clock()
        # Only a stopped virtual clock may be moved by hand (`_jump`), and only on one does
        # the time stay put while the steppers run (so `now()` can be the loop's reading).
        jumpable = clock if isinstance(clock, trio.testing.MockClock) and clock.rate == 0 else None
        scheduler = _scheduler(clock) if jumpable is not None else None
        heappop = heapq.heappop
        jumps = 0
        shown_when, shown = math.nan, ""  # the last delivery time and its repr: messages share ticks
        while True:
            now = clock.current_time()
            if jumpable is not None:
                self._at = now
            while (heap and heap[0][0] <= now) or (timers and timers[0][0] <= now) or due:
                while heap and heap[0][0] <= now:
                    when, _, src, dst, body, kind = heappop(heap)
                    if dst.closed:
                        trace.drop(when, kind, src.label, dst.label, "down")
                        continue
                    trace.delivered += 1
                    kinds[kind] += 1
                    if when != shown_when:
                        shown_when, shown = when, repr(when)
                    pending.append(f"{shown} m {kind} {src.label} {dst.label}")
                    dst.counters["received"] += 1
                    stepper = dst.stepper
                    if stepper is not None:
                        stepper.inbox.append(Delivery(src.peer, _decode(body)))
                        if stepper.uid not in due:
                            due[stepper.uid] = stepper
                    else:
                        dst.deliver(Delivery(src.peer, _decode(body)))
                if len(pending) >= trace.FLUSH:
                    trace.flush()
                while timers and timers[0][0] <= now:
                    when, _, stepper = heappop(timers)
                    if when == stepper.timer_at:  # else superseded by a later set_timer
                        stepper.timer_at = math.inf
                        if stepper.uid not in due:
                            due[stepper.uid] = stepper
                # Steppers run in the order they became due; what they send is due later.
                for stepper in list(due.values()):
                    stepper.step(now)
                due.clear()
            self._at = None
            deadline = min(heap[0][0] if heap else math.inf, timers[0][0] if timers else math.inf)
            if jumpable is not None and jumps < _MAX_JUMPS and self._jump(jumpable, now, deadline, scheduler):
                jumps += 1
                continue
            jumps = 0
            with trio.CancelScope(deadline=deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None

    def _jump(self, clock: trio.testing.MockClock, now: float, deadline: float,
              scheduler: tuple[Any, Any] | None = None) -> bool:
        """Move the virtual clock to `deadline` ourselves, when sleeping would do just that.

        A sleep costs a cancel scope, a trip through trio's scheduler and an exception. When
        no other task can run and no other task's deadline comes before ours, the sleep would
        end with the clock at `deadline` and only this task woken, so jump and carry on. The
        choice depends only on the run's state, so a seed still replays exactly. (trio draws
        its scheduling shuffle once per batch of woken tasks; skipping batches gives other
        digests than the sleeping loop did, the same on every replay.)
        """
        if not math.isfinite(deadline):
            return False
        if scheduler is not None:
            runq, deadlines = scheduler
            if runq or now + (deadlines.next_deadline() - clock.current_time()) <= deadline:
                return False
        else:
            stats = trio.lowlevel.current_statistics()
            if stats.tasks_runnable or now + stats.seconds_to_next_deadline <= deadline:
                return False
        clock.jump(deadline - now)
        now = trio.current_time()
        if now < deadline:  # rounding; a second jump lands exactly (deadline - now is exact when close)
            clock.jump(deadline - now)
        self.jumps += 1
        return True

    def set_timer(self, stepper: SteppedHost, when: float) -> None:
        """A stepped node's next timer deadline (replacing any earlier one)."""
        if when == stepper.timer_at:
            # Already in the heap, valid, with an earlier sequence number: a second entry
            # would be popped after it and ignored, so the node wakes exactly as it would.
            return
        stepper.timer_at = when
        if math.isfinite(when):
            self._seq += 1
            heapq.heappush(self._timers, (when, self._seq, stepper))
            self._wake(when)

    def wake(self, stepper: SteppedHost) -> None:
        """Run a stepped node now (it was resumed, or just started)."""
        self.set_timer(stepper, trio.current_time())

    def _wake(self, when: float) -> None:
        if self._scope is not None and when < self._scope.deadline:
            self._scope.deadline = when

    @property
    def in_flight(self) -> int:
        return len(self._heap)
