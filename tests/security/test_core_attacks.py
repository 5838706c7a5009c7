"""Attacks on the node core itself: forged node messages, hostile numbers and shapes.

The cores here are the real `NodeCore`s, wired together by hand (`corenet.py`), so each test
can speak as an outsider that claims to be a node, or as a Byzantine member of the MD's close
group, and then check what every honest core stored. docs/security.md lists which line of
the threat model each test proves.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from corenet import CoreNet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import errors as E
from node.chunks import paid_proof
from node.core import Peer
from node.data import ImmutableData, Ins
from node.keys import Keypair
from node.mdstore import RecordStore
from node.messages import CERTIFIED, FULL, NOT_MEMBER, STEP, TWO_STEPS
from node.paxos import MAX_COUNTER, Ballot, Register, item_key
from node.proofs import make_vote
from node.requests import MutateEntries, PutIData, Request
from node.rules import MDataState
from node.wire import new_message
from node.xorname import XorName


@pytest.fixture
def net() -> CoreNet:
    return CoreNet(10, seed=11)


@pytest.fixture
def victim(net: CoreNet) -> tuple[Any, Keypair]:
    owner = Keypair()
    md = net.make_md(owner, name=Keypair().public)
    assert net.insert(md, owner, b"a", b"1")["k"] == "response"
    return md, owner


def far_keys(name: bytes, net: CoreNet) -> Keypair:
    """An identity farther from `name` than every node: an outsider that cannot choose a name
    near its target (docs/security.md says why a real one cannot cheaply)."""
    target = int.from_bytes(name, "big")
    farthest = max(int.from_bytes(c.name, "big") ^ target for c in net.cores)
    while True:
        keys = Keypair()
        if int.from_bytes(keys.name, "big") ^ target > farthest:
            return keys


def _replies(net: CoreNet, peer: Peer, msg: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in net.inbox.get(peer.name, []) if m.get("re") == msg["id"]]


def _assert_intact(net: CoreNet, md: Any, owner: Keypair, entries: dict[bytes, bytes]) -> None:
    """Every copy of the MD is owned by `owner` and holds exactly `entries`; every record
    every core wrote reads back."""
    copies = [v for v in net.copies(md).values() if v is not None]
    assert len(copies) >= 3
    for value in copies:
        stored = value.state.md
        assert stored is not None and stored.owners == frozenset({owner.public}), "the owner changed"
        assert {k: v.content for k, v in stored.entries.items()} == entries, "the entries changed"
    for core in net.cores:
        _, bad = RecordStore(core.store).load()
        assert not bad, "a core stored a record it cannot read back"


def _forged_value(md: Any, thief: Keypair, base: Register) -> Register:
    stolen = base.state.md.replace(owners=frozenset({thief.public}), version=base.state.md.version + 1)
    return base.with_state(MDataState(stolen, base.state.recent)).with_seq(base.seq + 1)


def _accept(key: bytes, payload: list[Any], counter: int = 10**6) -> dict[str, Any]:
    return new_message("accept", items=[[key, [counter, bytes(32)], True, payload]])


# ------------------------------------------------------------------------ outsiders


def test_an_outsider_posing_as_a_node_cannot_change_an_md(net: CoreNet, victim) -> None:
    """The attack of the issue: a peer that says it is a node sends a full forged value to the
    close group. It is not in the group in anyone's view, so nothing it says about the MD counts."""
    md, owner = victim
    thief = far_keys(md.address.name, net)
    outsider = Peer(thief.name, "node", "127.0.0.1:1")
    key = item_key(md.address)
    base = next(v for v in net.copies(md).values() if v is not None)
    forged = _forged_value(md, thief, base)
    for payload in ([FULL, forged.encode()], [CERTIFIED, forged.encode(), [make_vote(thief, key, forged.digest())],
                                              [forged.digest(), [], [], [], forged.digest()]]):
        for member in net.group(md.address.name):
            msg = _accept(key, payload)
            net.inject(member, outsider, msg)
            (reply,) = _replies(net, outsider, msg)
            assert reply["k"] == "accepted" and reply["items"][0][1] == NOT_MEMBER
    _assert_intact(net, md, owner, {b"k": b"v0", b"a": b"1"})


def test_a_chunk_from_outside_the_group_is_not_stored(net: CoreNet) -> None:
    value = b"nobody paid for this" * 10
    name = XorName.hash_of(value)
    outsider = Peer(far_keys(name, net).name, "node", "127.0.0.1:1")
    for core in net.group(name):
        msg = new_message("chunk_put", value=value)
        net.inject(core, outsider, msg)
        (reply,) = _replies(net, outsider, msg)
        assert reply["k"] == "error"
        assert not core.store.contains_chunk(name)


# ------------------------------------------------------------------------ a Byzantine member


def test_a_byzantine_member_cannot_make_honest_members_store_a_forged_value(net: CoreNet, victim) -> None:
    """A member of the group proposes a value no client signed, in every form an accept can
    take; the honest members refuse each, and the owner keeps her MD."""
    md, owner = victim
    key = item_key(md.address)
    group = net.group(md.address.name)
    liar_core, honest = group[0], group[1:]
    liar = liar_core.keys
    member = Peer(liar.name, "node", liar_core.address)
    base = net.copies(md)[honest[0].name]
    forged = _forged_value(md, liar, base)
    unsigned = Request(MutateEntries(md.address, {b"z": Ins(b"forged")}), owner.public)
    steps = {
        "full value": [FULL, forged.encode()],
        "certificate signed by the liar alone": [CERTIFIED, forged.encode(), [make_vote(liar, key, forged.digest())],
                                                 [forged.digest(), [], [bytes(m) for m in forged.members], [],
                                                  forged.digest()]],
        "certificate of strangers": [CERTIFIED, forged.encode(),
                                     [make_vote(Keypair(), key, forged.digest()) for _ in range(5)],
                                     [forged.digest(), [], [bytes(m) for m in forged.members], [], forged.digest()]],
        "unsigned request in a step": [STEP, [base.digest(), [unsigned.to_obj()], [bytes(m) for m in base.members], [],
                                              b"x" * 16]],
        "garbage second step": [TWO_STEPS, [base.digest(), [], [], [], base.digest()], ["junk"]],
    }
    for label, payload in steps.items():
        for core in honest:
            msg = _accept(key, payload, counter=core.replicator.counter + 100)
            net.inject(core, member, msg)
            replies = _replies(net, member, msg)
            assert replies, label
            assert replies[0]["k"] == "error" or replies[0]["items"][0][1] != 0, f"{label}: accepted"
    _assert_intact(net, md, owner, {b"k": b"v0", b"a": b"1"})
    # ... and the group still serves its owner.
    assert net.insert(md, owner, b"b", b"2")["k"] == "response"
    _assert_intact(net, md, owner, {b"k": b"v0", b"a": b"1", b"b": b"2"})


def test_a_replayed_old_certificate_cannot_roll_an_md_back(net: CoreNet, victim) -> None:
    md, owner = victim
    key = item_key(md.address)
    group = net.group(md.address.name)
    old = net.copies(md)[group[1].name]
    votes = [make_vote(c.keys, key, old.digest()) for c in group]  # a genuine certificate of it
    assert net.insert(md, owner, b"later", b"x")["k"] == "response"
    member = Peer(group[0].name, "node", group[0].address)
    payload = [CERTIFIED, old.encode(), votes, [old.digest(), [], [bytes(m) for m in old.members], [], old.digest()]]
    for core in group[1:]:
        net.inject(core, member, _accept(key, payload, counter=core.replicator.counter + 100))
    _assert_intact(net, md, owner, {b"k": b"v0", b"a": b"1", b"later": b"x"})


# ------------------------------------------------------------------------ hostile numbers


@pytest.mark.parametrize("counter", [2**64 - 1, 2**63, MAX_COUNTER + 1, -1])
def test_an_unencodable_or_huge_ballot_is_refused_and_nothing_breaks(net: CoreNet, victim, counter: int) -> None:
    md, owner = victim
    key = item_key(md.address)
    group = net.group(md.address.name)
    member = Peer(group[0].name, "node", group[0].address)
    for core in group[1:]:
        msg = new_message("prepare", items=[[key, [counter, bytes(group[0].name)], b""]])
        net.inject(core, member, msg)
        (reply,) = _replies(net, member, msg)
        assert reply["k"] == "error"
    assert net.insert(md, owner, b"after-%d" % (counter % 1000), b"ok")["k"] == "response"
    for core in net.cores:
        assert core.replicator.counter < 2**62
        assert not RecordStore(core.store).load()[1]


def test_a_ballot_far_ahead_of_any_seen_cannot_spend_the_ballot_space(net: CoreNet, victim) -> None:
    md, owner = victim
    key = item_key(md.address)
    group = net.group(md.address.name)
    member = Peer(group[0].name, "node", group[0].address)
    for core in group[1:]:
        msg = new_message("prepare", items=[[key, [MAX_COUNTER, bytes(group[0].name)], b""]])
        net.inject(core, member, msg)
        assert _replies(net, member, msg)[0]["k"] == "error"
        assert core.replicator.record(key).promised < Ballot(MAX_COUNTER, b"")
    assert net.insert(md, owner, b"still", b"writable")["k"] == "response"


# ------------------------------------------------------------------------ signed requests


def _request(net: CoreNet, md: Any, owner: Keypair, **binding: Any) -> dict[str, Any]:
    request = Request.signed(MutateEntries(md.address, {b"bound-%d" % len(net.inbox): Ins(b"x")}), owner, **binding)
    client = Peer(Keypair().name, "client")
    msg = new_message("request", req=request.to_obj())
    net.inject(net.group(md.address.name)[0], client, msg)
    for _ in range(40):
        if _replies(net, client, msg):
            break
        net.advance(0.5)
    return _replies(net, client, msg)[0]


def test_requests_are_bound_to_the_network_and_expire(net: CoreNet, victim) -> None:
    md, owner = victim
    network, now = net.cores[0].network_id, int(time.time())
    assert network and all(c.network_id == network for c in net.cores)
    assert _request(net, md, owner, network=network, expires=now + 600)["k"] == "response"
    for label, binding in {
        "another network": {"network": b"elsewhere", "expires": now + 600},
        "no network": {"expires": now + 600},
        "expired": {"network": network, "expires": now - 3600},
        "no expiry": {"network": network},
        "expiry far ahead": {"network": network, "expires": now + 10 * 86400},
    }.items():
        reply = _request(net, md, owner, **binding)
        assert reply["k"] == "error" and reply["err"]["code"] == E.InvalidSignature.code, (label, reply)


# ------------------------------------------------------------------------ anything at all

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=False),
    st.binary(max_size=48), st.text(max_size=12),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=4), inner, max_size=4), max_leaves=20)
_KINDS = ["prepare", "accept", "sync", "chunk_put", "chunk_hand", "chunk_get", "chunk_has", "find_node", "ping",
          "read", "request", "md_request", "locate", "promise", "accepted", "nope"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_message_of_any_shape_raises_out_of_the_core_or_changes_data(net: CoreNet, victim, data) -> None:
    md, owner = victim
    key = item_key(md.address)
    group = net.group(md.address.name)
    as_member = data.draw(st.booleans(), label="from a member")
    sender = Peer(group[0].name if as_member else far_keys(md.address.name, net).name,
                  data.draw(st.sampled_from(["node", "client"])), "127.0.0.1:1")
    kind = data.draw(st.sampled_from(_KINDS), label="kind")
    # Fields that look almost right (a real key, a real base digest) with hostile parts.
    item = data.draw(st.lists(st.one_of(_values, st.just(key), st.just(bytes(40))), max_size=6), label="item")
    fields = data.draw(st.dictionaries(st.sampled_from(["items", "value", "name", "names", "target", "req", "re",
                                                        "count", "keys", "paid", "hop"]),
                                       st.one_of(_values, st.just([item]), st.just(item)), max_size=3), label="fields")
    msg = new_message(kind, **fields)
    msgpack.packb(msg)  # what an attacker can send at all
    for core in group[1:3]:
        net.inject(core, sender, msg)  # must not raise
    net.advance(0.5)
    _assert_intact(net, md, owner, {b"k": b"v0", b"a": b"1"})


def test_a_member_cannot_store_a_chunk_nobody_paid_for(net: CoreNet) -> None:
    """Even a node of the chunk's group needs the client's signed put to hand a copy over:
    with none, with one for other bytes, or with a forged signature, nothing is stored."""
    value = b"a member's own unpaid chunk" * 4
    name = XorName.hash_of(value)
    group = net.group(name)
    member, target = group[0], group[1]
    peer = Peer(member.name, "node", member.address)
    payer = Keypair()
    other = Request.signed(PutIData(ImmutableData(b"something else")), payer, network=net.cores[0].network_id)
    genuine = Request.signed(PutIData(ImmutableData(value)), payer, network=net.cores[0].network_id)
    forged = {**paid_proof(genuine), "sig": Keypair().sign(genuine.signing_bytes())}
    for label, paid in {"no proof": None, "another chunk's proof": paid_proof(other), "forged": forged}.items():
        msg = new_message("chunk_put", value=value, **({} if paid is None else {"paid": paid}))
        net.inject(target, peer, msg)
        (reply,) = _replies(net, peer, msg)
        assert reply["k"] == "error", label
        assert not target.store.contains_chunk(name), label
    msg = new_message("chunk_put", value=value, paid=paid_proof(genuine))
    net.inject(target, peer, msg)
    assert _replies(net, peer, msg)[0]["k"] == "chunk_ok"
    assert target.store.contains_chunk(name)
