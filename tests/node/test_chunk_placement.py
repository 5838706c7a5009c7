"""A chunk reaches its true close group even when the node that takes the put, or the nodes
that hold a copy, do not know the group (`ChunkKeeper.knows_group`, `_place`, `_locate`).

`sim scale --nodes 200 --duration 300 --seed 1` lost two chunks this way while routing
settled: a node far from the chunk, which knew none of its nearest nodes, took the put, found
itself in the group by its own view and stored the chunk on nodes that thought the same; the
true group refused their pushes (they were not in its view), and the holders never learned
of the nearer nodes. Here real node cores are wired by hand so that a clique of nodes knows
only itself and one bridge node, far from the chunk, while the rest of the network knows
everyone. Virtual time, no transport.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import msgpack
import pytest
from clique_testing import CliqueNet
from hypothesis import given, settings
from hypothesis import strategies as st

from node import errors as E
from node.chunks import CHUNK_HAND, PAID, paid_proof
from node.core import NodeConfig, NodeCore, Peer
from node.data import ImmutableData
from node.keys import Keypair
from node.requests import PutIData, Request
from node.wire import new_message
from node.xorname import XorName

R = 3
NETWORK = b"placement-test"
CONFIG = NodeConfig(replication=R, network_id=NETWORK)


CHUNKS = [ImmutableData(b"placement %d" % i) for i in range(32)]


def _far_chunk(_rng: random.Random, half: int) -> bytes:
    return bytes(next(c.name for c in CHUNKS if c.name[0] >> 7 != half))


class Net(CliqueNet):
    """The clique and a chunk in the other half of the name space: far from all of it."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed, CONFIG, _far_chunk)
        self.data = next(c for c in CHUNKS if c.name == self.target)

    def holders(self, name: bytes) -> set[XorName]:
        return {n for n, core in self.cores.items() if core.store.contains_chunk(name)}


def _signed_put(data: ImmutableData, payer: Keypair) -> Request:
    return Request.signed(PutIData(data), payer, network=NETWORK)


def test_the_setup_is_the_bug_s_setup() -> None:
    """The clique's nearest node to the chunk sees itself in the chunk's group, and its view
    is the clique's: nobody there knows a member of the true group."""
    net = Net(seed=3)
    taker = net.nearest_in_clique()
    view = taker.group(net.data.name)
    assert taker.name in view and net.bridge.name in view
    assert not set(view) & set(net.true_group)
    assert not taker.chunks.knows_group(net.data.name)  # far from its own neighbourhood


def test_a_put_taken_outside_the_true_group_lands_on_it() -> None:
    net = Net(seed=3)
    taker = net.nearest_in_clique()
    request = _signed_put(net.data, Keypair.generate(random.Random(7)))
    msg = new_message("request", req=request.to_obj())
    net.inject(taker, Peer(Keypair.generate(random.Random(8)).name, "client", None), msg)
    for _ in range(100):
        if net.answer(msg) is not None:
            break
        net.advance(0.1)
    answer = net.answer(msg)
    assert answer is not None and answer["k"] == "response", answer
    # Acknowledged means a majority of the *true* group holds it.
    assert len(net.holders(net.data.name) & set(net.true_group)) >= R // 2 + 1
    net.advance(3.0)
    assert net.holders(net.data.name) == set(net.true_group)


def test_copies_on_the_wrong_nodes_are_handed_to_the_true_group_and_let_go() -> None:
    net = Net(seed=3)
    payer = Keypair.generate(random.Random(9))
    paid = msgpack.packb(paid_proof(_signed_put(net.data, payer)), use_bin_type=True)
    view = net.nearest_in_clique().group(net.data.name)
    assert net.bridge.name in view
    misplaced = [c for c in net.clique if c.name in view]
    assert len(misplaced) == R - 1
    for core in misplaced:  # what the put of the old code left: the clique's view of the group
        core.store.put_chunk(net.data.name, net.data.value)
        core.store.put_record(PAID, net.data.name, paid)
    net.advance(15.0)
    assert set(net.true_group) <= net.holders(net.data.name)
    net.advance(CONFIG.grace + 15.0)
    assert net.holders(net.data.name) == set(net.true_group)
    for core in net.cores.values():  # every copy still carries the client's signed put
        if core.store.contains_chunk(net.data.name):
            assert core.store.get_record(PAID, net.data.name) == paid


# ---------------------------------------------------------------- who may hand a chunk over


def _hand(net: Net, receiver: NodeCore, sender: Peer, data: ImmutableData, **fields: Any) -> dict[str, Any]:
    msg = new_message(CHUNK_HAND, value=data.value, **fields)
    net.inject(receiver, sender, msg)
    net.advance(3.0)
    answer = net.answer(msg)
    assert answer is not None
    return answer


def test_a_hand_off_without_the_client_s_signed_put_stores_nothing() -> None:
    net = Net(seed=3)
    member = net.cores[net.true_group[0]]
    outsider = Peer(Keypair.generate(random.Random(11)).name, "node", "sim:outsider")
    other = _signed_put(ImmutableData(b"another chunk"), Keypair.generate(random.Random(12)))
    forged = {**paid_proof(_signed_put(net.data, Keypair.generate(random.Random(13)))), "sig": bytes(64)}
    for label, paid in {"no proof": None, "another chunk's proof": paid_proof(other), "forged": forged}.items():
        fields = {"hop": 0} if paid is None else {"hop": 0, "paid": paid}
        answer = _hand(net, member, outsider, net.data, **fields)
        assert answer["k"] == "error", label
        assert not net.holders(net.data.name), label


def test_a_paid_hand_off_is_stored_by_the_group_whoever_sends_it() -> None:
    net = Net(seed=3)
    member = net.cores[net.true_group[-1]]
    outsider = Peer(Keypair.generate(random.Random(14)).name, "node", "sim:outsider")
    paid = paid_proof(_signed_put(net.data, Keypair.generate(random.Random(15))))
    answer = _hand(net, member, outsider, net.data, hop=0, paid=paid)
    assert answer["k"] == "chunk_ok", answer
    assert net.holders(net.data.name) == set(net.true_group)


def test_a_second_hand_off_to_a_node_outside_the_group_is_refused_not_passed_on() -> None:
    net = Net(seed=3)
    far = net.rest[1]  # in the clique's half: far from the chunk, and it knows everyone
    assert far.name not in net.true_group
    sender = Peer(Keypair.generate(random.Random(18)).name, "node", "sim:outsider")
    paid = paid_proof(_signed_put(net.data, Keypair.generate(random.Random(16))))
    answer = _hand(net, far, sender, net.data, hop=1, paid=paid)
    assert answer["k"] == "error" and answer["err"]["code"] == E.NotReady("").to_wire()["code"], answer
    assert far.metrics.msgs_out[CHUNK_HAND] == 0 and far.metrics.msgs_out["chunk_put"] == 0
    assert not net.holders(net.data.name)


@pytest.mark.parametrize("hop", [-1, 2, 2**70, "0", None])
def test_a_hand_off_with_a_hop_count_out_of_range_is_refused(hop: Any) -> None:
    net = Net(seed=3)
    member = net.cores[net.true_group[0]]
    paid = paid_proof(_signed_put(net.data, Keypair.generate(random.Random(17))))
    outsider = Peer(Keypair.generate(random.Random(19)).name, "node", "sim:outsider")
    answer = _hand(net, member, outsider, net.data, hop=hop, paid=paid)
    assert answer["k"] == "error"
    assert not net.holders(net.data.name)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                     st.binary(max_size=48), st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_hand_off_of_any_shape_raises_nothing_and_stores_nothing_unpaid(data: st.DataObject) -> None:
    net = _shared_net()
    member = net.cores[net.true_group[0]]
    genuine = paid_proof(_signed_put(net.data, Keypair.generate(random.Random(21))))
    paid = data.draw(st.one_of(_values, st.builds(lambda k, v: {**genuine, k: v}, st.sampled_from(sorted(genuine)),
                                                  _values)), label="paid")
    fields = data.draw(st.dictionaries(st.sampled_from(["value", "hop", "paid"]), _values, max_size=3), label="fields")
    msg = new_message(CHUNK_HAND, **{"paid": paid, **fields})
    msgpack.packb(msg)  # what an attacker can send at all
    outsider = Peer(Keypair.generate(random.Random(22)).name, "node", "sim:outsider")
    net.inject(member, outsider, msg)  # must not raise
    net.advance(0.5)
    stored = {n for core in net.cores.values() for n in core.store.chunk_names()}
    assert not stored, "a hand-off without the client's signed put for its content stored something"



@functools.cache
def _shared_net() -> Net:
    return Net(seed=4)  # nothing in it changes while these examples run: they store nothing
