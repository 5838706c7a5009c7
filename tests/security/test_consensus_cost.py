"""The cheaper consensus (issue 13) keeps every check: a signature checked once per node is
still checked for every request that differs, and rounds that share an envelope are each
decided as if alone, with nothing from outside the group counted."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from corenet import CoreNet

from node import errors as E
from node.core import Peer
from node.data import Ins
from node.keys import Keypair
from node.messages import STEP
from node.paxos import item_key
from node.requests import MutateEntries, Request
from node.wire import new_message


@pytest.fixture(scope="module")
def net() -> CoreNet:
    return CoreNet(8, seed=5)


def _signed(net: CoreNet, op: Any, keys: Keypair) -> Request:
    return Request.signed(op, keys, network=net.cores[0].network_id, expires=int(time.time()) + 600)


def test_a_signature_checked_once_is_still_checked_for_any_other_request(net: CoreNet) -> None:
    owner, thief = Keypair(), Keypair()
    md = net.make_md(owner, name=b"verify-once")
    rep = net.cores[0].replicator
    good = _signed(net, MutateEntries(md.address, {b"x": Ins(b"1")}), owner)
    rep.verify(good)
    rep.verify(good)  # remembered: no error, no second check needed
    other_op = replace(good, op=MutateEntries(md.address, {b"x": Ins(b"2")}))
    other_key = replace(good, requester=thief.public)
    other_id = replace(good, request_id=bytes(16))
    for forged in (other_op, other_key, other_id):
        with pytest.raises(E.InvalidSignature):
            rep.verify(forged)
    with pytest.raises(E.InvalidSignature):
        rep.verify(replace(good, signature=b""))


def test_rounds_started_in_one_batch_share_one_envelope_per_member(net: CoreNet) -> None:
    owner = Keypair()
    mds = [net.make_md(owner, name=b"batch%d" % i) for i in range(12)]
    for md in mds:
        assert net.insert(md, owner, b"warm", b"w")["k"] == "response"  # every proposer on its fast path
    # The node that is nearest (the proposer) for the most of them.
    core = max(net.cores, key=lambda c: sum(net.group(md.address.name)[0] is c for md in mds))
    mine = [md for md in mds if net.group(md.address.name)[0] is core]
    assert len(mine) >= 2
    client = Peer(Keypair().name, "client")
    sent: list[Any] = []
    ids = []
    for i, md in enumerate(mine):
        op = MutateEntries(md.address, {b"b": Ins(b"%d" % i)})
        msg = new_message("request", req=_signed(net, op, owner).to_obj())
        net._injected.add(msg["id"])
        ids.append(msg["id"])
        out = core.handle(net.now, client, msg)
        assert not any(s.msg["k"] == "accept" for s in out), "accepts wait for the end of the batch"
        net._route(core, out)
    flushed = core.tick(net.now)
    sent = [s for s in flushed if s.msg["k"] == "accept"]
    members = {n for md in mine for n in net.copies(md) if n != core.name}
    assert 1 <= len(sent) <= len(members) < 4 * len(mine)  # one message per member, not per round
    assert sum(len(s.msg["items"]) for s in sent) == sum(4 for _ in mine)  # every round's item, once
    net._route(core, flushed)
    net.deliver()
    net.advance(1.0)
    answers = [m for m in net.inbox.get(client.name, []) if m.get("re") in ids]
    assert len(answers) == len(mine) and all(a["k"] == "response" for a in answers)
    for md in mine:
        copies = [v for v in net.copies(md).values() if v is not None]
        assert sum(1 for v in copies if v.state.md.entries.get(b"b") is not None) >= 3


def _far_peer(net: CoreNet, name: bytes) -> Peer:
    """A node-role peer farther from `name` than every node: no group would count it."""
    target = int.from_bytes(name, "big")
    farthest = max(int.from_bytes(c.name, "big") ^ target for c in net.cores)
    while True:
        keys = Keypair()
        if int.from_bytes(keys.name, "big") ^ target > farthest:
            return Peer(keys.name, "node", "10.9.9.9:1")


def test_commits_ride_in_an_accept_and_count_only_from_the_group(net: CoreNet) -> None:
    owner = Keypair()
    md = net.make_md(owner, name=b"riding")
    assert net.insert(md, owner, b"a", b"1")["k"] == "response"
    key = item_key(md.address)
    proposer, member = net.group(md.address.name)[:2]
    digest, votes = member.replicator.certs[key]
    assert digest == member.replicator.records[key].digest
    noop = [[key, [10**6, bytes(32)], True, [STEP, [digest, [], [], [], digest]]]]

    # From outside the group: the commit riding along is ignored like the accept.
    del member.replicator.certs[key]
    junk = [[key, digest, [[bytes(Keypair().public), bytes(64)]]]]
    net.inject(member, _far_peer(net, md.address.name), new_message("accept", items=noop, commits=junk))
    assert key not in member.replicator.certs, "a stranger's commit was kept"

    # From the proposer: the commit riding in its accept message is taken as a commit would be.
    net.inject(member, Peer(proposer.name, "node", proposer.address),
               new_message("accept", items=[], commits=[[key, digest, votes]]))
    assert member.replicator.certs.get(key) == (digest, votes)
    assert net.insert(md, owner, b"b", b"2")["k"] == "response"
