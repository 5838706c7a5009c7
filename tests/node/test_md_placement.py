"""A request for an MD is run by the MD's true close group even when it reaches a node that
counts itself in the group by a view it cannot trust (`Replicator._route`, the lookup it runs
where `knows_group` says no).

`sim scale --nodes 200 --duration 300 --seed 5` reported an MD that exists as absent: while
routing settled, a node far from the MD, knowing none of its nearest nodes, saw itself among
them, proposed on its own view of the group (nodes that never held the MD) and answered "no
such MD". Here real node cores are wired by hand as in test_chunk_placement.py: a clique of
nodes knows only itself and one bridge node far from the MD, the rest of the network knows
everyone. Virtual time, no transport.
"""

from __future__ import annotations

import random
from typing import Any

from node import errors as E
from node.core import NodeConfig, NodeCore, Peer, Send
from node.data import MDataAddress, MutableData
from node.keys import Keypair
from node.ops import GetMDataVersion, PutMData
from node.requests import Request
from node.store import MemoryStore
from node.wire import new_message
from node.xorname import XorName, closest, distance

R = 3
TAG = 15000
NETWORK = b"md-placement-test"
CONFIG = NodeConfig(replication=R, network_id=NETWORK)


class Net:
    """Cores that know whom the test says, and a loop that moves their messages."""

    def __init__(self, seed: int) -> None:
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
        # The MD lives in the other half of the name space from the clique: far from all of it.
        name = bytearray(rng.randbytes(32))
        name[0] = (name[0] & 0x7F) | ((1 - top) << 7)
        self.address = MDataAddress(XorName(bytes(name)), TAG)
        # The bridge: the node of the MD's half farthest from the MD. The clique sees it as
        # the MD's nearest node, as a real node sees some contact of its farthest bucket.
        bridge = max(other_half[:10], key=lambda k: distance(k.name, self.address.name))
        self.now = 0.0
        self.cores: dict[XorName, NodeCore] = {}
        for i, k in enumerate(clique + rest):
            core = NodeCore(k, MemoryStore(), CONFIG, rng=random.Random(rng.getrandbits(64)), address=f"sim:{i}")
            core.start(0.0)
            core.take_output()
            self.cores[k.name] = core
        self.clique = [self.cores[k.name] for k in clique]
        self.bridge = self.cores[bridge.name]
        for knower in [self.cores[k.name] for k in rest]:
            self.introduce(knower, list(self.cores.values()))
        for knower in self.clique:
            self.introduce(knower, [*self.clique, self.bridge])
        self.queue: list[tuple[NodeCore | Peer, Send]] = []
        self.inbox: list[dict[str, Any]] = []
        self.true_group = closest(self.address.name, self.cores, R)
        assert not set(self.true_group) & {c.name for c in [*self.clique, self.bridge]}
        # The clique's nearest node to the MD: it sees itself in the MD's group, among the clique
        # and the bridge, and knows that region too little to trust that view.
        self.taker = self.cores[closest(self.address.name, [c.name for c in self.clique], 1)[0]]
        view = self.taker.group(self.address.name)
        assert self.taker.name in view and not set(view) & set(self.true_group)
        assert not self.taker.knows_group(self.address.name)

    @staticmethod
    def introduce(knower: NodeCore, known: list[NodeCore]) -> None:
        for other in known:
            if other is not knower:
                knower.handle(0.0, Peer(other.name, "node", other.address), new_message("ping", addr=other.address))
        knower.take_output()

    def deliver(self) -> None:
        while self.queue:
            sender, send = self.queue.pop(0)
            target = self.cores.get(send.to) if send.to is not None else None
            if target is None:
                self.inbox.append(send.msg)
                continue
            peer = sender if isinstance(sender, Peer) else Peer(sender.name, "node", sender.address)
            self.queue.extend((target, s) for s in target.handle(self.now, peer, send.msg))

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for core in self.cores.values():
                self.queue.extend((core, s) for s in core.tick(self.now))
            self.deliver()

    def ask(self, core: NodeCore, request: Request) -> dict[str, Any]:
        """A client's request to `core`, and its answer (within the client deadline)."""
        msg = new_message("request", req=request.to_obj())
        client = Peer(Keypair.generate(random.Random(len(self.inbox))).name, "client", None)
        self.queue.extend((core, s) for s in core.handle(self.now, client, msg))
        self.deliver()
        for _ in range(int(CONFIG.client_deadline / 0.1) + 1):
            answer = next((m for m in self.inbox if m.get("re") == msg["id"]), None)
            if answer is not None:
                return answer
            self.advance(0.1)
        raise AssertionError("no answer within the client deadline")

    def holders(self) -> set[XorName]:
        return {n for n, core in self.cores.items() if core.replicator.holds(self.address.name)}

    def create(self, core: NodeCore) -> dict[str, Any]:
        owner = Keypair.generate(random.Random(7))
        md = MutableData(self.address.name, TAG, owners=frozenset([owner.public]))
        return self.ask(core, Request.signed(PutMData(md), owner, network=NETWORK))


def test_an_md_created_through_a_node_that_wrongly_counts_itself_in_lands_on_the_true_group() -> None:
    net = Net(seed=3)
    answer = net.create(net.taker)
    assert answer["k"] == "response", answer
    # Acknowledged means a majority of the *true* group holds it, and nobody else was asked to.
    assert len(net.holders() & set(net.true_group)) >= R // 2 + 1
    assert not net.holders() - set(net.true_group)
    net.advance(3.0)
    assert net.holders() == set(net.true_group)


def test_an_md_on_its_true_group_is_not_reported_absent_by_a_node_that_wrongly_counts_itself_in() -> None:
    net = Net(seed=3)
    assert net.create(net.cores[net.true_group[0]])["k"] == "response"
    assert net.holders() == set(net.true_group)
    assert net.taker.name in net.taker.group(net.address.name)  # still the wrong view
    answer = net.ask(net.taker, Request(GetMDataVersion(net.address)))
    assert answer["k"] == "response" and answer["result"] == 0, answer
    # A second request within the lookup's memory goes straight to the group: no second lookup.
    looked = net.taker.metrics.msgs_out["find_node"]
    answer = net.ask(net.taker, Request(GetMDataVersion(net.address)))
    assert answer["k"] == "response" and answer["result"] == 0, answer
    assert net.taker.metrics.msgs_out["find_node"] == looked


def test_a_passed_on_request_found_outside_the_group_by_lookup_is_refused_not_passed_again() -> None:
    """The hop rule holds after a lookup too: a member's second pass is the last one."""
    net = Net(seed=3)
    msg = new_message("md_request", req=Request(GetMDataVersion(net.address)).to_obj(), hop=1)
    sender = Peer(Keypair.generate(random.Random(11)).name, "node", None)  # its answer lands in the inbox
    net.queue.extend((net.taker, s) for s in net.taker.handle(net.now, sender, msg))
    net.deliver()
    net.advance(1.0)
    answer = next(m for m in net.inbox if m.get("re") == msg["id"])
    assert answer["k"] == "error" and answer["err"]["code"] == E.NotReady("").to_wire()["code"], answer
    assert net.taker.metrics.msgs_out["find_node"] > 0  # it did look before refusing
    assert net.taker.metrics.msgs_out["md_request"] == 0 and net.taker.metrics.msgs_out["prepare"] == 0
