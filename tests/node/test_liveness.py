"""How often a node pings its neighbours, and how soon it notices one is gone
(`NodeCore._check_liveness`, docs/replication.md "Liveness").

A neighbour that is new or lately failed a request is pinged every `ping_interval`; once
steady, one in the close group of an item this node holds every `ping_steady`, any other
every `ping_idle`. The promise that pays for this: a neighbour that dies is still evicted
within a stated time, and a ping that goes unanswered brings back the pings of every second.

The first tests drive one real NodeCore by hand against scripted neighbours (they answer
pings, or, once dead, nothing); the last runs real cores over the in-memory network."""

from __future__ import annotations

import random

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from client.localnet import LocalNetwork
from node.core import NodeConfig, NodeCore
from node.keys import Keypair
from node.peer import Peer
from node.routing import Contact, Lookup, RoutingTable
from node.store import MemoryStore
from node.wire import new_message, reply_to
from node.xorname import XorName, sha3_256

STEP = 0.05


class Neighbourhood:
    """One core and `count` scripted neighbours that answer its pings while alive."""

    def __init__(self, count: int, seed: int = 3, config: NodeConfig | None = None) -> None:
        rng = random.Random(seed)
        self.config = config or NodeConfig()
        self.core = NodeCore(Keypair.generate(rng), MemoryStore(), self.config, rng=rng, address="sim:me")
        self.core.start(0.0)
        self.now = 0.0
        self.peers = [Peer(Keypair.generate(rng).name, "node", f"sim:{i}") for i in range(count)]
        self.dead: set[bytes] = set()
        self.pings: dict[bytes, list[float]] = {p.name: [] for p in self.peers}
        self.answers: dict[bytes, list[float]] = {p.name: [] for p in self.peers}  # its signs of life
        self.evicted_at: dict[bytes, float] = {}
        for peer in self.peers:  # each introduces itself
            self.core.handle(0.0, peer, new_message("ping", addr=peer.address))
        self.core.take_output()
        self.core.ready = True

    def run(self, until: float) -> None:
        by_name = {p.name: p for p in self.peers}
        while self.now < until:
            self.now = round(self.now + STEP, 6)
            out = self.core.tick(self.now)
            while out:
                send = out.pop(0)
                peer = by_name.get(send.to) if send.to is not None else None
                if peer is None:
                    continue
                msg = send.msg
                if msg["k"] == "ping":
                    self.pings[peer.name].append(self.now)
                if peer.name in self.dead:
                    continue
                # A live neighbour does what a node does: answers pings, lookups and questions.
                if msg["k"] == "ping":
                    reply = reply_to(msg, "pong", addr=peer.address)
                elif msg["k"] == "find_node":
                    reply = reply_to(msg, "nodes", contacts=[], net=self.core.network_id)
                elif msg["k"] == "chunk_has":
                    reply = reply_to(msg, "chunk_have", have=msg["names"])
                else:
                    raise AssertionError(f"unexpected {msg['k']}")
                self.answers[peer.name].append(self.now)
                out += self.core.handle(self.now, peer, reply)
            for name in self.dead:
                if name not in self.core.routing:
                    self.evicted_at.setdefault(name, self.now)

    def hold_a_chunk(self) -> set[bytes]:
        """Store a chunk whose close group holds this node; returns the other members."""
        core = self.core
        for i in range(1000):
            value = b"chunk %d" % i
            name = XorName(sha3_256(value))
            if core.name in core.group(name):
                core.store.put_chunk(name, value)
                return set(core.group(name)) - {core.name}
        raise AssertionError("no chunk lands here")

    def pinged(self, name: bytes, start: float, end: float) -> int:
        return sum(1 for t in self.pings[name] if start <= t < end)


def test_new_neighbours_are_pinged_every_interval_then_less_once_steady() -> None:
    hood = Neighbourhood(8)
    config = hood.config
    # An item held here makes the other members of its close group matter.
    watched = hood.hold_a_chunk()
    assert len(watched) == config.replication - 1
    hood.run(config.steady_after)
    for peer in hood.peers:  # new: pinged once it has been silent a second, at the next check
        assert hood.pinged(peer.name, 1.5, config.steady_after) >= (config.steady_after - 1.5) / 2.25 - 1
    hood.run(config.steady_after + 100)
    start, end = config.steady_after + 20, config.steady_after + 100
    for peer in hood.peers:
        count = hood.pinged(peer.name, start, end)
        allowance = config.ping_steady if peer.name in watched else config.ping_idle
        # at most one ping per allowance (fewer when it answers other requests meanwhile) ...
        assert 1 <= count <= (end - start) / allowance + 1, (allowance, count)
        # ... and never silent for longer than the allowance and the check's jitter
        heard = [t for t in hood.answers[peer.name] if start <= t < end]
        assert max(b - a for a, b in zip([start, *heard], [*heard, end], strict=True)) \
            <= allowance + 1.25 * config.ping_interval + STEP, allowance


def _eviction_bound(config: NodeConfig, allowance: float) -> float:
    """What _check_liveness promises: the allowance, then `strikes` checks (each at most 1.25
    ping intervals after the one before) and the last ping's timeout."""
    return allowance + config.strikes * 1.25 * config.ping_interval + config.rpc_timeout


def test_a_steady_neighbour_that_dies_is_evicted_within_the_stated_time() -> None:
    hood = Neighbourhood(8, seed=5)
    core, config = hood.core, hood.config
    watched = sorted(hood.hold_a_chunk())
    idle = sorted({p.name for p in hood.peers} - set(watched) - {core.name})
    hood.run(60.0)
    died = hood.now
    victims = {watched[0], idle[0]}
    hood.dead |= victims
    hood.run(died + 20)
    assert set(hood.evicted_at) == victims
    assert hood.evicted_at[watched[0]] - died <= _eviction_bound(config, config.ping_steady)
    assert hood.evicted_at[idle[0]] - died <= _eviction_bound(config, config.ping_idle)
    # Once a ping went unanswered, the next came about a second later, until the eviction.
    for name in victims:
        after = [t for t in hood.pings[name] if died <= t < hood.evicted_at[name]]
        assert len(after) >= config.strikes
        assert all(b - a <= 1.25 * config.ping_interval + STEP for a, b in zip(after[1:], after[2:], strict=False))
    # The survivors answered all along and are still there.
    assert all(p.name in core.routing for p in hood.peers if p.name not in victims)


def test_one_unanswered_ping_brings_back_the_pings_of_every_second() -> None:
    hood = Neighbourhood(8, seed=6)
    config = hood.config
    hood.run(60.0)
    name = hood.peers[0].name
    hood.dead.add(name)  # a stall: it misses two pings (one short of eviction), then answers again
    stalled = hood.now
    while len([t for t in hood.pings[name] if t > stalled]) < config.strikes - 1:
        hood.run(hood.now + STEP)
    hood.dead.clear()
    back = hood.now
    assert name in hood.core.routing  # one miss is not enough to be evicted ...
    hood.run(back + config.steady_after - 1)
    # ... but it is watched closely again until it has been steady for a while
    assert hood.pinged(name, back + 1, back + config.steady_after - 1) >= (config.steady_after - 2) / 2.25 - 1


def test_a_neighbour_that_speaks_needs_no_ping() -> None:
    hood = Neighbourhood(4, seed=7)
    chatty = hood.peers[0]
    for t in range(1, 40):
        hood.run(float(t))
        hood.core.handle(hood.now, chatty, new_message("ping", addr=chatty.address))
        hood.core.take_output()
    assert hood.pinged(chatty.name, 0, 40) == 0
    assert all(hood.pinged(p.name, 0, 40) > 0 for p in hood.peers[1:])


async def test_a_crashed_holder_is_noticed_and_its_chunk_back_on_r_nodes_in_time(autojump_clock) -> None:
    """Real cores: a steady network holding a chunk, one holder crashes; the others evict it
    within the stated time and the chunk is on R live nodes again within 10 s (the recovery
    target node_footprint.py measures on real processes)."""
    async with LocalNetwork.start(nodes=10, seed=8) as net:
        config = net.config
        async with net.client() as client:
            name = await client.put_idata(b"a chunk to keep through a crash")
            await net.until(lambda: sorted(net.holders(name)) == sorted(net.close_group(name)), within=30)
            await trio.sleep(config.steady_after + 30)  # steady: the idle neighbours are pinged rarely
            before = sum(n.core.metrics.msgs_out["ping"] for n in net.live() if n.core)
            await trio.sleep(20)  # a window of virtual time to count pings in, not a wait
            pings = sum(n.core.metrics.msgs_out["ping"] for n in net.live() if n.core) - before
            # Ten nodes, nine neighbours each: a ping a second to each would be ~900 in 20 s
            # even if mutual neighbours shared them half the time.
            assert pings < 300, pings
            victim = net.close_group(name)[0]
            gone = XorName(net.nodes[victim].keys.name)
            sharing = [net.nodes[i] for i in net.close_group(name) if i != victim]
            await net.crash(victim)
            crashed = trio.current_time()
            await net.until(lambda: all(gone not in n.core.routing for n in sharing if n.core),
                            within=_eviction_bound(config, config.ping_steady) + 0.5, step=0.05)
            await net.until(lambda: sorted(net.holders(name)) == sorted(net.close_group(name)), within=10, step=0.05)
            assert trio.current_time() - crashed <= 10.0
            assert len(net.holders(name)) == config.replication
            await net.until(lambda: all(gone not in n.core.routing for n in net.live() if n.core),
                            within=_eviction_bound(config, config.ping_idle), step=0.05)


def test_an_evicted_neighbour_is_knocked_on_often_at_first_then_rarely() -> None:
    """Evicted contacts are pinged again (a healed partition is found at once), but one that
    left for good draws a ping every `lost_every` seconds after the first `lost_fast`, not
    several a second for the hour it is remembered."""
    hood = Neighbourhood(6, seed=9)
    config = hood.config
    hood.run(30.0)
    gone, back = hood.peers[0].name, hood.peers[1].name
    hood.dead |= {gone, back}
    hood.run(45.0)
    evicted = min(hood.evicted_at[gone], hood.evicted_at[back])
    assert max(hood.evicted_at.values()) < 45.0
    hood.dead.discard(back)  # the partition heals for this one: found again within seconds
    hood.run(50.0)
    assert back in hood.core.routing
    hood.run(evicted + config.lost_fast + 300)
    early = hood.pinged(gone, hood.evicted_at[gone], hood.evicted_at[gone] + config.lost_fast)
    late = hood.pinged(gone, hood.evicted_at[gone] + config.lost_fast, hood.now)
    assert early >= config.lost_fast / 2  # a few a second, shared with nobody else lost
    assert late <= 300 / config.lost_every + 1
    assert gone not in hood.core.routing


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), max_size=200))
def test_a_sighting_of_a_known_contact_is_an_observe(events) -> None:
    """`RoutingTable.seen`, the short cut a node takes for every message from a known contact,
    leaves the table as `observe` would (order, strikes, freshness); for anyone else it
    changes nothing and says so."""
    rng = random.Random(1)
    own = rng.randbytes(32)
    names = [rng.randbytes(32) for _ in range(41)]
    a, b = RoutingTable(own, k=4), RoutingTable(own, k=4)
    for i, (who, port) in enumerate(events):
        contact = Contact(XorName(names[who]), f"sim:{who}:{port}")
        if i % 7 == 3:  # now and then a failure, so there are strikes to clear
            a.failed(contact.name, float(i))
            b.failed(contact.name, float(i))
            continue
        a.observe(contact, float(i))
        if not b.seen(contact.name, contact.address, float(i)):
            assert contact not in b.contacts()  # a newcomer, or a known name at a new address
            b.observe(contact, float(i))
        assert a.contacts() == b.contacts() and a._strikes == b._strikes and a._touched == b._touched
        assert [c.address for c in a.contacts()] == [c.address for c in b.contacts()]


_PAIR = st.one_of(
    st.tuples(st.integers(0, 30), st.sampled_from(["sim:a", "sim:b"])).map(lambda t: [t[0], t[1]]),  # a name index
    st.just([b"short", "sim:x"]), st.just([]), st.just(7), st.just("ab"), st.just([b"\x00" * 32]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_PAIR, max_size=70), st.integers(1, 8))
def test_reading_a_lookup_reply_as_received_is_reading_it_as_contacts(pairs, k) -> None:
    """`Lookup.on_reply_wire` (the node's lookups read `nodes` replies with it, skipping the
    names they know without making Contacts of them) does what `on_reply` does with the
    well-formed pairs made into Contacts."""
    rng = random.Random(2)
    names = [rng.randbytes(32) for _ in range(31)]
    target, own = rng.randbytes(32), names[0]
    wire = [[names[p[0]], p[1]] if isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) else p
            for p in pairs]
    contacts = []
    for pair in wire:
        try:
            contacts.append(Contact(XorName(pair[0]), str(pair[1])))
        except (ValueError, TypeError, IndexError):
            continue
    seeds = [Contact(XorName(n), f"sim:seed{i}") for i, n in enumerate(names[1:6])]
    a, b = (Lookup(target, seeds, k=k, alpha=2, own=own) for _ in range(2))
    first_a, first_b = a.start(), b.start()
    assert first_a == first_b
    assert a.on_reply(first_a[0], contacts) == b.on_reply_wire(first_b[0], wire)
    assert a.result() == b.result() and a._ranked == b._ranked and a._depth == b._depth
