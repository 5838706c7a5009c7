"""The stepped driver: a node core run by the network's own loop instead of a trio task.

`NodeHost` costs two trio task switches per wake-up, which is most of a simulated message's
price. For large or long runs the simulator can instead call the core straight from the
network's delivery loop: `SteppedHost.step` does what one turn of `NodeHost.run` does, with
the same contract - hand each message of the batch to the core, fire the timers that are
due, sync the store, and only then send what the batch produced (group commit). Only the
core's public driving interface is used (`start`, `handle`, `tick`, `next_deadline`).

This is a second *driver*, not a second node: the node is the core, and the trio host stays
the default (`Simulator(driver="host")`). `safenet sim scale` and `--driver stepped` use this
one; a test checks both drivers reach the same verdicts.
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

    def start(self, now: float, bootstrap: list[str]) -> None:
        self._run(lambda: self.core.start(now, list(bootstrap)))

    def step(self, now: float) -> None:
        """One or more turns of the host loop at `now` (all waiting messages, then timers)."""
        if self.dead or self.paused:
            return
        core = self.core
        while True:
            batch, self.inbox = self.inbox[:MAX_BATCH], self.inbox[MAX_BATCH:]

            def turn(batch: list[Delivery] = batch) -> list[Any]:
                out = []
                for delivery in batch:
                    if self.inbound is not None:
                        delivery = self.inbound(delivery)
                    out.extend(core.handle(now, delivery.peer, delivery.msg))
                out.extend(core.tick(now))
                return out

            self._run(turn)
            if self.dead or not self.inbox:
                break

    def _run(self, turn: Callable[[], list[Any]]) -> None:
        try:
            out = turn()
            self.core.store.sync()  # group commit: durable before anything it says leaves
            for send in out:
                self.outward.send_nowait(send.to, send.address, send.msg)
        except Exception as exc:  # a node must never crash: the simulator records it
            self.dead = True
            self.on_error(exc)
            return
        self.network.set_timer(self, self.core.next_deadline())
