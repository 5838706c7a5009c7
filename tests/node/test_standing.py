"""Tests of a peer's standing (node.routing.Standing and its hooks in node.core): a peer that
answers pings but lets work requests lapse is left out of close groups, restored by one answer,
and banned from the routing table after repeated demotions; a silent peer (down, cut off)
never loses its standing. The core tests drive a real NodeCore by hand, with no network."""

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
from node.xorname import XorName

A = b"\x01" * 32


def test_a_peer_that_answers_pings_but_not_work_is_demoted_then_banned() -> None:
    s = Standing(strikes=2, probation=10.0, bans=2, ban=50.0)
    now = 0.0
    changes = []
    for _ in range(4):
        asked = now
        s.heard(A, now + 0.5)  # a ping sent after the work request was answered
        now += 1.5
        changes.append(s.lapsed(A, asked, now))
    assert changes == [None, "demoted", None, "banned"]
    assert s.banned(A, now) and not s.banned(A, now + 50.0)


def test_a_peer_that_ever_worked_is_demoted_but_never_banned() -> None:
    s = Standing(strikes=1, bans=1)
    s.worked(A)
    for t in range(10):
        s.heard(A, float(t))
        assert s.lapsed(A, float(t), t + 0.5) == "demoted"
        assert not s.banned(A, t + 0.5)


def test_demotion_ends_with_the_probation_or_with_one_answer() -> None:
    s = Standing(strikes=1, probation=10.0)
    s.heard(A, 1.0)
    assert s.lapsed(A, 0.0, 2.0) == "demoted"
    assert not s.counts(A, 5.0) and s.demoted(5.0) == {A}
    assert s.counts(A, 12.0) and s.demoted(12.0) == set()
    s.heard(A, 13.0)
    assert s.lapsed(A, 12.5, 14.0) == "demoted"
    s.worked(A)
    assert s.counts(A, 14.0) and not s.demoted(14.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.001, 100), st.floats(0, 100)), max_size=60))
def test_a_peer_that_never_answers_after_being_asked_is_never_demoted(events) -> None:
    """Paused, crashed, cut off or slow: no ping sent after we asked is answered, so it never
    shirks (answers to pings sent before the request are no evidence)."""
    s = Standing(strikes=1, bans=1)
    now = 0.0
    for answered_before, gap, wait in events:
        if answered_before:
            s.heard(A, now)  # a ping sent before the request: no evidence about the request
        asked = now + gap
        now = asked + wait
        assert s.lapsed(A, asked, now) is None
        assert s.counts(A, now) and not s.banned(A, now)


def test_the_ledger_stays_bounded_under_a_flood_of_names() -> None:
    s = Standing(limit=64)
    rng = random.Random(1)
    for i in range(10_000):
        s.heard(rng.randbytes(32), float(i))
    assert len(s._heard) <= 64


# ---------------------------------------------------------------------------- in the core


def _core() -> tuple[NodeCore, Peer]:
    rng = random.Random(7)
    core = NodeCore(Keypair.generate(rng), MemoryStore(), NodeConfig(), rng=rng, address="sim:me")
    core.start(0.0)
    sybil = Peer(Keypair.generate(rng).name, "node", "sim:sybil")
    core.handle(0.0, sybil, new_message("ping", addr="sim:sybil"))  # it introduces itself
    core.take_output()
    return core, sybil


def _shirk(core: NodeCore, sybil: Peer, now: float) -> float:
    """Ask the sybil for work and ping it; it answers only the ping. Returns the time after."""
    core.rpc(sybil.name, new_message("chunk_has", names=[]), lambda reply: None)
    core.rpc(sybil.name, new_message("ping", addr=core.address), lambda reply: None)
    pings = [s.msg for s in core.take_output() if s.msg["k"] == "ping" and s.to == sybil.name]
    for ping in pings:
        core.handle(now + 0.1, sybil, reply_to(ping, "pong", addr=sybil.address))
    now += core.config.rpc_timeout + 0.1
    core.tick(now)
    core.take_output()
    return now


def test_the_core_leaves_a_shirking_peer_out_of_its_groups_and_bans_it() -> None:
    core, sybil = _core()
    assert sybil.name in core.group(sybil.name)
    now = 0.0
    for _ in range(core.config.shirk_strikes):
        now = _shirk(core, sybil, now)
    assert sybil.name in core.routing and sybil.name not in core.group(sybil.name)
    for _ in range(core.config.shirk_strikes * (core.config.bans - 1)):
        now = _shirk(core, sybil, now)
    assert sybil.name not in core.routing
    core.handle(now, sybil, new_message("ping", addr=sybil.address))  # knocking again
    assert sybil.name not in core.routing
    core.handle(now + core.config.ban + 1, sybil, new_message("ping", addr=sybil.address))
    assert sybil.name in core.routing


def test_one_answer_to_work_restores_a_demoted_peer_and_the_break_switches_it_off() -> None:
    core, sybil = _core()
    now = 0.0
    for _ in range(core.config.shirk_strikes):
        now = _shirk(core, sybil, now)
    assert sybil.name not in core.group(sybil.name)
    core.rpc(sybil.name, new_message("chunk_has", names=[]), lambda reply: None)
    (ask,) = [s.msg for s in core.take_output() if s.msg["k"] == "chunk_has"]
    core.handle(now, sybil, reply_to(ask, "chunk_have", have=[]))
    assert sybil.name in core.group(sybil.name)

    core, sybil = _core()
    core.config.breaks = frozenset({"trust_idle_members"})
    now = 0.0
    for _ in range(core.config.shirk_strikes * core.config.bans):
        now = _shirk(core, sybil, now)
    assert sybil.name in core.routing and sybil.name in core.group(XorName(sybil.name))


def test_a_shirker_we_never_ping_is_probed_when_its_work_lapses_and_so_demoted() -> None:
    """A Sybil placed next to the data but far from us is not among the neighbours we ping:
    each lapsed work request now sends it a ping, and its answer makes the lapse count."""
    core, sybil = _core()
    now = 0.0
    for _ in range(core.config.shirk_strikes):
        core.rpc(sybil.name, new_message("chunk_has", names=[]), lambda reply: None)
        core.take_output()
        now += core.config.rpc_timeout + 0.1
        sent = core.tick(now)  # the work request lapses: the core probes the peer with a ping
        probes = [s.msg for s in sent if s.msg["k"] == "ping" and s.to == sybil.name]
        assert probes, "a lapse with no fresh answer from the peer must send it a ping"
        core.handle(now + 0.05, sybil, reply_to(probes[-1], "pong", addr=sybil.address))
        core.take_output()
    assert sybil.name in core.routing and sybil.name not in core.group(sybil.name)


def test_a_silent_peer_is_probed_but_never_demoted() -> None:
    core, sybil = _core()
    now, probes = 0.0, 0
    for _ in range(3 * core.config.shirk_strikes):
        core.rpc(sybil.name, new_message("chunk_has", names=[]), lambda reply: None)
        core.take_output()
        now += core.config.rpc_timeout + 0.1
        probes += sum(s.msg["k"] == "ping" and s.to == sybil.name for s in core.tick(now))
        now += core.config.rpc_timeout + 0.1
        core.tick(now)  # the probe lapses too: the peer is down or cut off, not shirking
    assert probes >= 3 * core.config.shirk_strikes  # a probe per lapse (liveness pings besides)
    assert core.standing.demoted(now) == set() and not core.standing.banned(sybil.name, now)
