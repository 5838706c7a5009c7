"""A member keeps its copy of a chunk while the only peers that push it out of the chunk's
close group are peers that never did work for it (byzantine seed 22: a `stranger` Sybil,
which answers pings and lookups and nothing else, stood in a member's view of a chunk's
group; the member handed its copy on and dropped it, and lacked it at the end).

These drive a real NodeCore by hand, with no network and no clock."""

from __future__ import annotations

import random

from node.core import NodeConfig, NodeCore
from node.data import ImmutableData
from node.keys import Keypair
from node.peer import Peer
from node.store import MemoryStore
from node.wire import new_message
from node.xorname import XorName, distance


def _setup(breaks: frozenset[str] = frozenset()) -> tuple[NodeCore, XorName, list[Peer], Peer]:
    """A core that holds a chunk and is the sixth nearest to it of six nodes (R = 5): four
    peers that have answered its work, and one that never has, all nearer than it."""
    rng = random.Random(22)
    core = NodeCore(Keypair.generate(rng), MemoryStore(), NodeConfig(breaks=breaks), rng=rng, address="sim:15")
    core.start(0.0)
    peers = [Peer(Keypair.generate(rng).name, "node", f"sim:{i}") for i in range(5)]
    for i in range(10_000):
        data = ImmutableData(b"chunk %d" % i)
        if all(distance(p.name, data.name) < distance(core.name, data.name) for p in peers):
            break
    for peer in peers:
        core.handle(0.0, peer, new_message("ping", addr=peer.address))
    core.take_output()
    honest, stranger = peers[:4], peers[4]
    for peer in honest:
        core.standing.worked(peer.name)
    core.store.put_chunk(data.name, data.value)
    assert core.name not in core.group(data.name)  # out of the group as it sees it
    return core, data.name, honest, stranger


def _release_round(core: NodeCore, name: XorName, holders: list[Peer]) -> None:
    """The grace is over and a majority of the group answered that it holds the chunk."""
    left_at = core.chunks._left_at
    left_at[name] = core.now - core.config.grace - 1.0
    for holder in holders:
        if name in left_at:  # as the sync round asks: only while we still mean to leave
            core.chunks._maybe_release(name, holder.name)


def test_a_member_displaced_only_by_a_peer_that_never_worked_keeps_its_copy() -> None:
    core, name, honest, stranger = _setup()
    _release_round(core, name, honest)
    assert core.store.contains_chunk(name)  # kept: one honest copy fewer otherwise
    # Our next anti-entropy round asks every member of our view, the stranger too, for its
    # chunks: work, which a Sybil lets lapse (and is demoted) and a newcomer answers.
    core.chunks.sync()
    asked = {s.to for s in core.take_output() if s.msg["k"] == "chunk_has"}
    assert stranger.name in asked
    # An honest newcomer answers: trusted from then on, and the copy goes.
    core.standing.worked(stranger.name)
    _release_round(core, name, honest)
    assert not core.store.contains_chunk(name)


def test_with_the_defence_off_the_copy_goes_at_once() -> None:
    core, name, honest, _stranger = _setup(frozenset({"trust_idle_members"}))
    _release_round(core, name, honest)
    assert not core.store.contains_chunk(name)
