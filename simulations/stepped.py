"""The stepped driver: a node core run by the network's own loop instead of a trio task.

`NodeHost` costs two trio task switches per wake-up, which is most of a simulated message's
price. For large or long runs the simulator can instead call the core straight from the
network's delivery loop: `SteppedHost.step` does what one turn of `NodeHost.run` does, with
the same contract - hand each message of the batch to the core, fire the timers that are
due, sync the store, and only then send what the batch produced (group commit). Only the
core's public driving interface is used (`start`, `handle`, `tick`, `next_deadline`).

This is a second *driver*, not a second node: the node is the core. `run_sim`, `chaos run`
and `sim scale` use it by default; `--driver host` (and `Simulator(driver="host")`) runs the
real `NodeHost` instead, and tests run both.

The driver also stands for the node's machine: its clock can drift (`set_rate`: the core is
handed the drifted time, and its next deadline is mapped back to network time), and its disk
can be slow (`sync_delay`: what a turn produced leaves when the sync covering it returns).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.core import NodeCore
from node.peer import Outward

if TYPE_CHECKING:
    from .network import Delivery, SimNetwork

MAX_BATCH = 128  # as NodeHost: a turn handles at most this many messages


class SteppedHost:
    """Drives one core from the network loop; see the module docstring."""

    def __init__(self, core: NodeCore, outward: Outward, network: SimNetwork, uid: int,
                 on_error: Callable[[BaseException], None],
                 inbound: Callable[[Delivery], Delivery] | None = None) -> None:
        self.core = core
        self.uid = uid  # its endpoint's: the network's key for it
        self.outward = outward  # what it sends through (its endpoint, or a lying wrapper)
        self.network = network
        self.on_error = on_error
        self.inbound = inbound
        self.inbox: list[Delivery] = []
        self.timer_at = math.inf
        self.paused = False
        self.dead = False
        self.clock: tuple[float, float, float] | None = None  # (since, reading then, rate): see set_rate
        self.sync_delay = 0.0  # a slow disk's sync latency
        self.sync_start = self.sync_end = -math.inf  # the last sync the slow disk was given
        self.held: list[tuple[float, list[Any]]] = []  # (when the sync returns, what then leaves)

    # ------------------------------------------------------------------ faults of this node's machine

    def set_rate(self, now: float, rate: float = 1.0) -> None:
        """From `now` on, the node's clock runs at `rate` seconds per real second (drift).

        The clock stays continuous and never goes back: what it gained or lost so far is kept
        as an offset when the rate changes, as a drifting crystal's error stays after it is
        replaced. (A clock that is merely *set* wrong is the wall clock's business: the
        `clock-skew` fault moves the core's `wall_offset` instead.)
        """
        here = self._core_time(now)
        self.clock = None if rate == 1.0 and here == now else (now, here, rate)
        if not self.dead:
            self.network.set_timer(self, self._network_time(self.core.next_deadline()))

    def _core_time(self, t: float) -> float:
        if self.clock is None:
            return t
        t0, c0, rate = self.clock
        return c0 + rate * (t - t0)

    def _network_time(self, c: float) -> float:
        """The first network time at which the node's clock reads `c` or later."""
        if self.clock is None or not math.isfinite(c):
            return c
        t0, c0, rate = self.clock
        t = max(self.network.now(), t0 + (c - c0) / rate)
        while self._core_time(t) < c:  # rounding: step up to the next float that gets there
            t = math.nextafter(t, math.inf)
        return t

    # ------------------------------------------------------------------ driving

    def start(self, now: float, bootstrap: list[str]) -> None:
        self._run(lambda: self.core.start(self._core_time(now), list(bootstrap)), now)

    def step(self, now: float) -> None:
        """One or more turns of the host loop at `now` (all waiting messages, then timers)."""
        if self.dead or self.paused:
            return
        if self.held and self.held[0][0] <= now:
            try:
                self._release(now)
            except Exception as exc:  # as in _run
                self.dead = True
                self.on_error(exc)
                return
        core = self.core
        at = now if self.clock is None else self._core_time(now)
        handle, tick = core.handle, core.tick
        inbound = self.inbound
        while True:
            # One turn, as _run does it; written out because it runs once per wake-up.
            inbox = self.inbox
            if len(inbox) <= MAX_BATCH:
                batch, self.inbox = inbox, []
            else:
                batch, self.inbox = inbox[:MAX_BATCH], inbox[MAX_BATCH:]
            try:
                out: list[Any] = []
                for delivery in batch:
                    if inbound is not None:
                        delivery = inbound(delivery)
                    out += handle(at, delivery.peer, delivery.msg)
                out += tick(at)
                self._commit(out, now)
            except Exception as exc:  # a node must never crash: the simulator records it
                self.dead = True
                self.on_error(exc)
                return
            self._rearm()
            if self.dead or not self.inbox:
                break

    def _run(self, turn: Callable[[], list[Any]], now: float) -> None:
        try:
            self._commit(turn(), now)
        except Exception as exc:  # a node must never crash: the simulator records it
            self.dead = True
            self.on_error(exc)
            return
        self._rearm()

    def _commit(self, out: list[Any], now: float) -> None:
        """Sync the store, then send what the turn produced (or hold it for a slow disk)."""
        self.core.store.sync()  # group commit: durable before anything it says leaves
        if self.sync_delay > 0 and out:
            # A slow disk, with group commit: what the turn produced waits for a sync that
            # covers its writes. One not yet started takes them too; else a new one starts
            # when the disk is free. Syncs finish in order, so nothing overtakes.
            if self.sync_start < now:
                self.sync_start = max(now, self.sync_end)
                self.sync_end = self.sync_start + self.sync_delay
            self.held.append((self.sync_end, out))
        elif self.held:
            self.held.append((now, out))  # behind what still waits for the disk
        else:
            send = self.outward.send_nowait
            for item in out:
                send(item.to, item.address, item.msg)

    def _rearm(self) -> None:
        """Wake again at the core's next deadline, or when held output may leave."""
        wake = self.core.next_deadline()
        if self.clock is not None:
            wake = self._network_time(wake)
        if self.held:
            wake = min(wake, self.held[0][0])
        self.network.set_timer(self, wake)

    def _release(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            self._send(self.held.pop(0)[1])

    def _send(self, out: list[Any]) -> None:
        for send in out:
            self.outward.send_nowait(send.to, send.address, send.msg)
