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

from clique_testing import CliqueNet

from node import errors as E
from node.core import NodeConfig, NodeCore, Peer
from node.data import MDataAddress, MutableData
from node.keys import Keypair
from node.ops import GetMDataVersion, PutMData
from node.requests import Request
from node.wire import new_message
from node.xorname import XorName

R = 3
TAG = 15000
NETWORK = b"md-placement-test"
CONFIG = NodeConfig(replication=R, network_id=NETWORK)


def _far_md_name(rng: random.Random, half: int) -> bytes:
    name = bytearray(rng.randbytes(32))
    name[0] = (name[0] & 0x7F) | ((1 - half) << 7)
    return bytes(name)


class Net(CliqueNet):
    """The clique and an MD in the other half of the name space: far from all of it."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, CONFIG, _far_md_name)
        self.address = MDataAddress(self.target, TAG)
        # The clique's nearest node to the MD: it sees itself in the MD's group, among the clique
        # and the bridge, and knows that region too little to trust that view.
        self.taker = self.nearest_in_clique()
        view = self.taker.group(self.address.name)
        assert self.taker.name in view and not set(view) & set(self.true_group)
        assert not self.taker.knows_group(self.address.name)

    def ask(self, core: NodeCore, request: Request) -> dict[str, Any]:
        """A client's request to `core`, and its answer (within the client deadline)."""
        msg = new_message("request", req=request.to_obj())
        self.inject(core, Peer(Keypair.generate(random.Random(len(self.inbox))).name, "client", None), msg)
        for _ in range(int(CONFIG.client_deadline / 0.1) + 1):
            answer = self.answer(msg)
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
    net.inject(net.taker, sender, msg)
    net.advance(1.0)
    answer = next(m for m in net.inbox if m.get("re") == msg["id"])
    assert answer["k"] == "error" and answer["err"]["code"] == E.NotReady("").to_wire()["code"], answer
    assert net.taker.metrics.msgs_out["find_node"] > 0  # it did look before refusing
    assert net.taker.metrics.msgs_out["md_request"] == 0 and net.taker.metrics.msgs_out["prepare"] == 0
