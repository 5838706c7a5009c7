"""Values of rounds cut short at high ballots, which nobody can prove, do not stall an MD
(node/proposer.py, `Proposal._last_choosable`).

Event-store seed 5 ended with an MD that no round could write for the last 1,400 simulated
seconds. It was moving between two groups; three members held values of failed rounds at
ballots above everyone else's, each its own, with no proof (no certificate, no chain: their
steps built on values nobody else held). Every proposer dropped those members' promises as
unproven, and what was left was no majority of the group the MD moved from. Their promises
still count: a member that reports a lower accepted ballot than b never accepted anything at
b, so when those that may have accepted at a ballot are too few in one group, nothing was
chosen there, and the round builds on the newest value below it.

The state is set up by hand on real node cores (tests/security/corenet.py): the group's votes
for the value the MD moves with are made with the members' own keys, as a round would.
"""

from __future__ import annotations

from corenet import CoreNet

from node.core import NodeCore
from node.data import MutableData
from node.keys import Keypair
from node.paxos import AcceptorRecord, Ballot, Register, item_key
from node.proofs import make_vote


def _stalled(net: CoreNet) -> tuple[MutableData, Keypair, bytes, list[NodeCore], list[NodeCore], Register]:
    owner = Keypair()
    md = net.make_md(owner, name=Keypair().public)
    key = item_key(md.address)
    near = net.group(md.address.name, 6)
    old_group, new_group = near[:5], near[:4] + near[5:6]  # the MD moves: near[4] out, near[5] in
    chosen = next(c.replicator.record(key).value for c in near if c.replicator.record(key).value)
    assert chosen is not None
    moving = chosen.with_members(tuple(c.name for c in new_group), prev=tuple(c.name for c in old_group))
    assert moving.quorums == (tuple(c.name for c in new_group), tuple(c.name for c in old_group))
    top = max(c.replicator.counter for c in net.cores)
    # The moving value, accepted and certified by a majority of both groups...
    base_ballot = Ballot(top + 5, bytes(near[0].name))
    votes = [make_vote(c.keys, key, moving.digest()) for c in near[:4] + near[5:6]]
    honest = [near[0], near[1], near[5]]
    for core in honest:
        core.replicator.write(key, AcceptorRecord(base_ballot, base_ballot, moving))
    near[0].replicator.certs[key] = (moving.digest(), votes)
    # ... and three members (a majority of the old group, two of the new) that went on to
    # accept values of rounds that failed, at higher ballots, and can prove none of them.
    lost = [near[2], near[3], near[4]]
    for i, core in enumerate(lost):
        ballot = Ballot(top + 10 + i, bytes(core.name))
        core.replicator.write(key, AcceptorRecord(ballot, ballot, moving.with_seq(moving.seq + 2 + i)))
    return md, owner, key, honest, lost, moving


def test_unprovable_values_at_high_ballots_do_not_stall_a_moving_md() -> None:
    net = CoreNet(10, seed=5)
    md, owner, key, honest, lost, moving = _stalled(net)
    assert net.group(md.address.name)[0] is honest[0]  # the client's request reaches an honest member
    answer = net.insert(md, owner, b"after", b"1")
    assert answer["k"] == "response", answer
    assert any(e == "unchosen_ballots" for _t, _i, e, _f in net.logs)
    # Chosen: a majority of each of the value's groups holds the write (the members that held
    # lost values took it too: it descends from the moving value, which was chosen).
    written = set()
    for core in honest + lost:
        value = core.replicator.record(key).value
        if value is not None and value.state.md is not None and b"after" in value.state.md.entries:
            written.add(core.name)
    assert written & {c.name for c in lost}
    new_group, old_group = moving.quorums
    assert len(written & set(new_group)) >= 3 and len(written & set(old_group)) >= 3
