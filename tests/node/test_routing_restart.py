"""A restarted node must keep its neighbours after an outage heals (chaos seed 25 of
`eventstore`): the work requests lost in a partition all lapse at once when it heals, and
were counted as as many shirks, so a node whose `Standing` ledger was new (it had just
restarted) demoted its neighbour three times in 4 ms, banned it, and kept it out of its
routing table for two minutes. These drive a real NodeCore by hand, with no network and no
clock: the partition is messages not delivered, the heal is answers delivered again."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.core import NodeConfig, NodeCore
from node.keys import Keypair
from node.peer import Peer
from node.routing import Standing
from node.store import MemoryStore
from node.wire import new_message, reply_to

A = b"\x02" * 32


def _restarted() -> tuple[NodeCore, Peer, list[str]]:
    """A core just (re)started, with a fresh ledger, and a neighbour that introduced itself."""
    rng = random.Random(25)
    logged: list[str] = []
    core = NodeCore(Keypair.generate(rng), MemoryStore(), NodeConfig(), rng=rng, address="sim:3",
                    log=lambda event, **fields: logged.append(event))
    core.start(0.0)
    neighbour = Peer(Keypair.generate(rng).name, "node", "sim:10")
    core.handle(0.0, neighbour, new_message("ping", addr=neighbour.address))
    core.take_output()
    assert neighbour.name in core.routing
    return core, neighbour, logged


def test_work_lost_in_a_partition_does_not_ban_a_neighbour_when_it_heals() -> None:
    core, neighbour, logged = _restarted()
    # Cut off: a dozen work requests (an MD's prepares, say) leave at t=1 and are lost.
    core.tick(1.0)
    for _ in range(12):
        core.rpc(neighbour.name, new_message("chunk_has", names=[]), lambda reply: None)
    core.take_output()
    # The partition heals at t=2, before they time out: the neighbour answers our liveness ping.
    pings = [s.msg for s in core.tick(2.0) if s.msg["k"] == "ping" and s.to == neighbour.name]
    assert pings
    for ping in pings:
        core.handle(2.01, neighbour, reply_to(ping, "pong", addr=neighbour.address))
    core.take_output()
    # The dozen lapse together, each judged by that answer.
    now = 1.0 + core.config.rpc_timeout + 0.1
    core.tick(now)
    core.take_output()
    assert not core.standing.banned(neighbour.name, now)
    assert logged.count("peer_demoted") <= 1 and "peer_banned" not in logged
    # It knocks (as its own liveness checks do) and is in the routing table again...
    core.handle(now + 0.02, neighbour, new_message("ping", addr=neighbour.address))
    assert neighbour.name in core.routing
    # ...and the first work it answers puts it back in our close groups.
    core.rpc(neighbour.name, new_message("chunk_has", names=[]), lambda reply: None)
    (ask,) = [s.msg for s in core.take_output() if s.msg["k"] == "chunk_has"]
    core.handle(now + 0.03, neighbour, reply_to(ask, "chunk_have", have=[]))
    assert neighbour.name in core.group(neighbour.name)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60))
def test_lapses_of_requests_in_flight_together_demote_at_most_once(count: int, offsets: list[float]) -> None:
    """However many requests one outage swallowed, the peer had no chance to answer between
    their lapses: together they weigh as one demotion at most, never a ban."""
    s = Standing(strikes=2, probation=20.0, bans=2, ban=120.0)
    asked = [10.0 + offsets[i % len(offsets)] for i in range(count)]  # all out before the heal
    s.heard(A, 12.0)  # a ping sent after the heal was answered
    changes = [s.lapsed(A, t, 12.5 + i * 0.001) for i, t in enumerate(asked)]
    assert changes.count("demoted") <= 1 and "banned" not in changes
    assert not s.banned(A, 13.0)


def test_a_shirker_asked_again_after_each_demotion_is_still_banned() -> None:
    """The defence still works: requests sent after a demotion that lapse count again."""
    s = Standing(strikes=2, probation=20.0, bans=2, ban=120.0)
    now, changes = 0.0, []
    for _ in range(2):  # two demotions' worth, each burst sent after the last demotion
        asked = now
        s.heard(A, asked + 0.5)
        now += 1.5
        changes += [s.lapsed(A, asked, now + i * 0.001) for i in range(5)]
        now += 0.1
    assert changes.count("demoted") == 1 and changes.count("banned") == 1


def test_an_answer_to_work_lifts_a_ban() -> None:
    s = Standing(strikes=1, bans=1, ban=120.0)
    s.heard(A, 1.0)
    assert s.lapsed(A, 0.0, 2.0) == "banned"
    s.worked(A)
    assert not s.banned(A, 3.0) and s.proven(A)
