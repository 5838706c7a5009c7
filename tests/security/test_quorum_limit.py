"""The limit of majority quorums against a Byzantine member (issue 11, seed 172 of `byzantine`).

With R = 5 and a quorum of 3, two majorities can meet in a single member. If that member is a
liar, a write it accepted with exactly two honest members can be undone by a majority that
never saw it: the liar and the two other honest members. The test below does this with real
node cores and nothing forged. Every message the liar sends is one an honest proposer could
send: an accept that adds one empty round to the honest members' own certified copy. Every
acceptor checks what it is sent and takes it rightly. So no acceptor-side rule can refuse it;
only larger quorums can (docs/security.md, "A write only a bare majority accepted").

The test asserts the loss, as `test_rollback.py::test_a_copy_never_confirmed_gives_way_after_the_grace`
asserts the grace's limit: the day acknowledgements wait for n - f members (and accepts carry
the promises that justify them), it fails and must be turned around.
"""

from __future__ import annotations

from corenet import CoreNet

from node.core import NodeCore, Peer
from node.data import Ins
from node.keys import Keypair
from node.messages import STEP
from node.paxos import AcceptorRecord, Ballot, item_key
from node.requests import MutateEntries
from node.wire import new_message


def _holds(core: NodeCore, key: bytes, entry: bytes) -> bool:
    value = core.replicator.record(key).value
    return value is not None and value.state.md is not None and entry in value.state.md.entries


def test_a_liar_undoes_a_write_that_only_a_bare_majority_with_it_accepted() -> None:
    net = CoreNet(10, seed=11)
    owner = Keypair()
    md = net.make_md(owner, name=Keypair().public)
    assert net.insert(md, owner, b"a", b"1")["k"] == "response"
    key = item_key(md.address)
    liar = next(c for c in net.cores if c.replicator.fast.get(key) is not None)  # the MD's coordinator
    old = liar.replicator.record(key).value
    assert old is not None
    members = [c for c in net.cores if c.name in old.members and c is not liar]
    assert len(members) == 4
    # The liar proposes the owner's next write and lets only two members see the accept (the
    # other two lag: in a real run a slow link does this without the liar's help); it never
    # sends the commit. Three of five accepted: a majority, so the owner is told "ok".
    seen, unseen = members[:2], members[2:]
    net.hold_to(liar, "accept", *unseen)
    net.hold(liar, "commit")
    assert net.insert(md, owner, b"later", b"x")["k"] == "response", "the write was acknowledged"
    assert all(_holds(c, key, b"later") for c in [liar, *seen])
    assert not any(_holds(c, key, b"later") for c in unseen)

    # The liar then writes the old value again, one empty round on (what a repair writes), to
    # the two members that never saw the write, at a ballot above all they promised. They
    # check it and rightly take it: it is a step from their own certified copy. The liar's own
    # copy now says the same, so three of five hold the old value at the highest ballot.
    counter = max(c.replicator.counter for c in net.cores) + 10
    ballot = Ballot(counter, bytes(liar.name))
    again = old.with_seq(old.seq + 1)
    step = [old.digest(), [], [bytes(m) for m in old.members], [bytes(m) for m in old.prev], again.digest()]
    for core in unseen:
        msg = new_message("accept", items=[[key, ballot.to_obj(), True, [STEP, step]]])
        net.inject(core, Peer(liar.name, "node", liar.address), msg)
        reply = [m for m in net.inbox.get(liar.name, []) if m.get("re") == msg["id"]]
        assert reply and reply[0]["items"][0][1] == 0, "an honest member took the step"
        assert core.replicator.record(key).digest == again.digest()
    liar.replicator.records[key] = AcceptorRecord(ballot, ballot, again)

    # An honest member now runs the owner's next write. Its round asks every member (the two
    # that hold the acknowledged write among them) and builds, as Paxos must, on the value of
    # the highest ballot it hears of: a majority accepts it, and the acknowledged write is
    # gone from what the group chose. The two honest copies of the write refuse the new value
    # (their grace has not run out), but a majority does not need them.
    assert net.client_request(MutateEntries(md.address, {b"after": Ins(b"y")}), owner, via=unseen[0])["k"] == "response"
    chosen = [c for c in [liar, *members] if _holds(c, key, b"after")]
    assert len(chosen) >= 3, "a majority holds the next write"
    assert not any(_holds(c, key, b"later") for c in chosen), "the acknowledged write was lost"
    assert all(_holds(c, key, b"later") and not _holds(c, key, b"after") for c in seen)
