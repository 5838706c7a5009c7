"""Real node cores wired by hand so that a clique of nodes knows only itself and one bridge
node far from a target name, while the rest of the network knows everyone: the view a node
has of a far region while routing settles (tests/node/test_chunk_placement.py,
tests/node/test_md_placement.py). Virtual time, no transport."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from node.core import NodeConfig, NodeCore, Peer, Send
from node.keys import Keypair
from node.store import MemoryStore
from node.wire import new_message
from node.xorname import XorName, closest, distance


class CliqueNet:
    """Cores that know whom the test says, and a loop that moves their messages.

    `far_name(rng, half)` gives the target: a name in the other half of the name space than
    the clique's (`half` is the clique's top bit)."""

    def __init__(self, seed: int, config: NodeConfig, far_name: Callable[[random.Random, int], bytes]) -> None:
        rng = random.Random(seed)
        keys = [Keypair.generate(rng) for _ in range(160)]
        by_prefix: dict[int, list[Keypair]] = {}
        for k in keys:
            by_prefix.setdefault(k.name[0] >> 5, []).append(k)
        prefix, clique = max(by_prefix.items(), key=lambda item: len(item[1]))
        clique = clique[:9]
        top = prefix >> 2
        same_half = [k for k in keys if k.name[0] >> 7 == top and k.name[0] >> 5 != prefix]
        other_half = [k for k in keys if k.name[0] >> 7 != top]
        rest = same_half[:6] + other_half[:10]
        self.target = XorName(far_name(rng, top))
        assert self.target[0] >> 7 != top
        # The bridge: the node of the target's half farthest from it. The clique sees it as the
        # target's nearest node, as a real node sees some contact of its farthest bucket.
        bridge = max(other_half[:10], key=lambda k: distance(k.name, self.target))
        self.now = 0.0
        self.cores: dict[XorName, NodeCore] = {}
        for i, k in enumerate(clique + rest):
            core = NodeCore(k, MemoryStore(), config, rng=random.Random(rng.getrandbits(64)), address=f"sim:{i}")
            core.start(0.0)
            core.take_output()
            self.cores[k.name] = core
        self.clique = [self.cores[k.name] for k in clique]
        self.rest = [self.cores[k.name] for k in rest]
        self.bridge = self.cores[bridge.name]
        for knower in self.rest:
            self.introduce(knower, list(self.cores.values()))
        for knower in self.clique:
            self.introduce(knower, [*self.clique, self.bridge])
        self.queue: list[tuple[NodeCore | Peer, Send]] = []
        self.inbox: list[dict[str, Any]] = []
        self.true_group = closest(self.target, self.cores, config.replication)
        assert not set(self.true_group) & {c.name for c in [*self.clique, self.bridge]}

    @staticmethod
    def introduce(knower: NodeCore, known: list[NodeCore]) -> None:
        for other in known:
            if other is not knower:
                knower.handle(0.0, Peer(other.name, "node", other.address), new_message("ping", addr=other.address))
        knower.take_output()

    def nearest_in_clique(self) -> NodeCore:
        return self.cores[closest(self.target, [c.name for c in self.clique], 1)[0]]

    def deliver(self) -> None:
        while self.queue:
            sender, send = self.queue.pop(0)
            target = self.cores.get(send.to) if send.to is not None else None
            if target is None:
                self.inbox.append(send.msg)
                continue
            peer = sender if isinstance(sender, Peer) else Peer(sender.name, "node", sender.address)
            self.queue.extend((target, s) for s in target.handle(self.now, peer, send.msg))

    def inject(self, core: NodeCore, peer: Peer, msg: dict[str, Any]) -> None:
        self.queue.extend((core, s) for s in core.handle(self.now, peer, msg))
        self.deliver()

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for core in self.cores.values():
                self.queue.extend((core, s) for s in core.tick(self.now))
            self.deliver()

    def answer(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        return next((m for m in self.inbox if m.get("re") == msg["id"]), None)
