"""The limit of majority quorums against a Byzantine member (issue 11, seed 172 of `byzantine`).

With R = 5 and a quorum of 3, two majorities can meet in a single member. A liar in both can
get two different values each accepted by a majority: the owner's write, which it accepted
with two honest members, and another write, which it puts on the other two. Both carry
requests their clients signed, each member checks what it is sent and rightly takes it, and
each write can be acknowledged. Whatever the group builds on next, one acknowledged write is
lost. So no check an acceptor or a proposer can make closes this; only larger quorums can
(docs/security.md, "A write only a bare majority accepted").

What is the liar's own doing: it sends the second write's accept at a ballot it never
prepared (an acceptor takes any ballot at or above its promise), and it hides that it
accepted the first write. The test models the latter by setting the liar's own record, as a
Byzantine node may do with its own store.

The test asserts the loss, as `test_rollback.py::test_a_copy_never_confirmed_gives_way_after_the_grace`
asserts the grace's limit: the day acknowledgements wait for more accepts (and accepts carry
the promises that justify them), it fails and must be turned around.
"""

from __future__ import annotations

import random
import time

from corenet import CoreNet

from node.acceptor import UNCONFIRMED_GRACE
from node.core import NodeCore, Peer
from node.data import Ins
from node.keys import Keypair
from node.messages import STEP
from node.paxos import AcceptorRecord, Ballot, item_key
from node.requests import MutateEntries, Request, apply_mutation
from node.wire import new_message


def _holds(core: NodeCore, key: bytes, entry: bytes) -> bool:
    value = core.replicator.record(key).value
    return value is not None and value.state.md is not None and entry in value.state.md.entries


def test_a_liar_in_two_bare_majorities_loses_one_of_two_acknowledged_writes() -> None:
    net = CoreNet(10, seed=11)
    owner = Keypair.generate(random.Random(7))
    md = net.make_md(owner, name=b"bare majority")
    assert net.insert(md, owner, b"a", b"1")["k"] == "response"
    key = item_key(md.address)
    liar = next(c for c in net.cores if c.replicator.fast.get(key) is not None)  # the MD's coordinator
    old = liar.replicator.record(key).value
    assert old is not None
    members = [c for c in net.cores if c.name in old.members and c is not liar]
    assert len(members) == 4
    # The liar proposes the owner's write and lets only two members see the accept (the other
    # two lag: in a real run a slow link does this without the liar's help); it never sends
    # the commit. Three of five accepted: a majority, so the owner is told "ok".
    seen, unseen = members[:2], members[2:]
    net.hold_to(liar, "accept", *unseen)
    net.hold(liar, "commit")
    assert net.insert(md, owner, b"later", b"x")["k"] == "response", "the write was acknowledged"
    assert all(_holds(c, key, b"later") for c in [liar, *seen])
    assert not any(_holds(c, key, b"later") for c in unseen)

    # Another write reaches the liar (signed by its client, here the owner again). The liar
    # builds it on the value before the first write and sends its accept to the two members
    # that lack the first, at a ballot above all they promised. They check the request and
    # the step and rightly take it; the liar says it holds the same. Three of five hold it at
    # the highest ballot: it is chosen as much as the first write, and the liar may tell that
    # client "ok" too.
    request = Request.signed(MutateEntries(md.address, {b"other": Ins(b"z")}), owner,
                             network=net.cores[0].network_id, expires=int(time.time()) + 600)
    other = old.with_state(apply_mutation(old.state, request)).with_seq(old.seq + 1)
    step = [old.digest(), [request.to_obj()], [bytes(m) for m in old.members], [bytes(m) for m in old.prev],
            other.digest()]
    ballot = Ballot(max(c.replicator.counter for c in net.cores) + 10, bytes(liar.name))
    for core in unseen:
        msg = new_message("accept", items=[[key, ballot.to_obj(), True, [STEP, step]]])
        net.inject(core, Peer(liar.name, "node", liar.address), msg)
        reply = [m for m in net.inbox.get(liar.name, []) if m.get("re") == msg["id"]]
        assert reply and reply[0]["items"][0][1] == 0, "an honest member took the step"
        assert core.replicator.record(key).digest == other.digest()
    liar.replicator.records[key] = AcceptorRecord(ballot, ballot, other)

    # An honest member runs the owner's next write. Its round asks all five and builds, as
    # Paxos must, on the value of the highest ballot it hears of; a majority accepts it. The
    # two honest copies of the first write refuse it at first, and their own repair rounds,
    # which build on the highest ballot too, soon replace them.
    assert net.client_request(MutateEntries(md.address, {b"after": Ins(b"y")}), owner, via=unseen[0])["k"] == "response"
    chosen = [c for c in [liar, *members] if _holds(c, key, b"after")]
    assert len(chosen) >= 3, "a majority holds the next write"
    assert all(_holds(c, key, b"other") and not _holds(c, key, b"later") for c in chosen), \
        "the group kept the second write and lost the first, acknowledged one"
    net.advance(2 * UNCONFIRMED_GRACE)
    assert not any(_holds(c, key, b"later") for c in [liar, *members]), "no copy of the first write is left"
