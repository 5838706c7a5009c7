"""Tests of node.routing: the k-bucket table against a brute-force sort and a reference
model, the eviction rules, and the node lookup on synthetic in-memory networks.

Networks here are plain dicts of RoutingTables; a "query" is a call to the queried
node's `closest()`. Everything is seeded, so a failure replays exactly.
"""

from __future__ import annotations

import asyncio
import random
import warnings
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.routing import Contact, Lookup, RoutingTable
from node.xorname import XorName, closest

# ---------------------------------------------------------------------- helpers


def contact(value: int, port: int = 1) -> Contact:
    return Contact(XorName.from_int(value), f"10.0.0.1:{port}")


def dist(target: bytes, c: Contact) -> int:
    return int.from_bytes(target, "big") ^ int(c.name)


def brute_closest(
    contacts: list[Contact], target: bytes, count: int, skip: Callable[[Contact], bool]
) -> list[Contact]:
    return sorted((c for c in contacts if not skip(c)), key=lambda c: dist(target, c))[:count]


def near(own: int, rng: random.Random) -> int:
    """A name sharing a random-length prefix with `own`, so deep buckets get used too."""
    return own ^ (rng.getrandbits(256) >> rng.randrange(257))


Answer = Callable[[Contact], list[Contact] | None]


def drive(lookup: Lookup, answer: Answer, rng: random.Random) -> Lookup:
    """Run a lookup to the end, answering outstanding queries in a random order."""
    pending = lookup.start()
    while pending:
        queried = pending.pop(rng.randrange(len(pending)))
        reply = answer(queried)
        if reply is None:
            pending.extend(lookup.on_failure(queried))
        else:
            pending.extend(lookup.on_reply(queried, reply))
    assert lookup.done
    return lookup


class Network:
    """N nodes with their tables, in memory; `dead` nodes never answer."""

    def __init__(self, n: int, k: int, rng: random.Random) -> None:
        self.k = k
        self.rng = rng
        self.nodes = [
            Contact(XorName.random(rng), f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:5483")
            for i in range(n)
        ]
        self.tables = {c.name: RoutingTable(c.name, k) for c in self.nodes}
        self.dead: set[XorName] = set()

    def fill_by_observation(self) -> None:
        """Each node observes every other once, in its own random order."""
        for c in self.nodes:
            table = self.tables[c.name]
            order = self.nodes[:]
            self.rng.shuffle(order)
            for other in order:
                table.observe(other, 0.0)

    def fill_by_joining(self) -> None:
        """Nodes join one by one: bootstrap off a random earlier node, look up their own name.

        Both ends of every query observe each other, as a real node would on a request and
        on a reply; a full bucket's least-recently-seen contact is pinged and answers.
        """
        for i, c in enumerate(self.nodes):
            if i:
                self.see(c.name, self.rng.choice(self.nodes[:i]))
                self.lookup(c, c.name, learn=True)

    def see(self, who: XorName, other: Contact) -> None:
        to_ping = self.tables[who].observe(other, 0.0)
        if to_ping is None:
            return
        if to_ping.name in self.dead:
            self.tables[who].failed(to_ping.name, 0.0)
        else:
            self.tables[who].observe(to_ping, 0.0)

    def lookup(self, me: Contact, target: bytes, *, learn: bool = False, alpha: int = 3) -> Lookup:
        table = self.tables[me.name]

        def answer(queried: Contact) -> list[Contact] | None:
            if queried.name in self.dead:
                if learn:
                    table.failed(queried.name, 0.0)
                return None
            if learn:
                self.see(queried.name, me)
                self.see(me.name, queried)
            return self.tables[queried.name].closest(target, self.k)

        seeds = table.closest(target, self.k)
        return drive(Lookup(target, seeds, self.k, alpha, own=me.name), answer, self.rng)

    def truth(self, me: Contact, target: bytes) -> list[Contact]:
        return brute_closest(
            self.nodes, target, self.k, lambda c: c.name in self.dead or c.name == me.name
        )

    def random_target(self) -> XorName:
        # Half uniform, half right next to a node, where the close group is decided.
        if self.rng.random() < 0.5:
            return XorName.random(self.rng)
        return XorName.from_int(int(self.rng.choice(self.nodes).name) ^ self.rng.getrandbits(12))

    def alive(self) -> list[Contact]:
        return [c for c in self.nodes if c.name not in self.dead]


# ---------------------------------------------------------------------- Contact


def test_contact_is_a_small_value() -> None:
    a = contact(5, 1)
    assert a == contact(5, 1) and hash(a) == hash(contact(5, 1))
    assert a != contact(5, 2)
    assert isinstance(Contact(bytes(32), "h:1").name, XorName)  # type: ignore[arg-type]
    assert not hasattr(a, "__dict__")
    with pytest.raises(ValueError):
        Contact(b"short", "h:1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Contact(bytes(32), 1234)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- closest() is exact

names_near_own = st.integers(0, 2**256 - 1).flatmap(
    lambda own: st.tuples(
        st.just(own),
        st.lists(
            st.tuples(st.integers(0, 2**256 - 1), st.integers(0, 256)).map(
                lambda rs: own ^ (rs[0] >> rs[1])
            ),
            max_size=120,
        ),
    )
)


@settings(max_examples=300, deadline=None)
@given(
    names_near_own,
    st.integers(1, 8),
    st.data(),
)
def test_closest_equals_brute_force(
    own_and_names: tuple[int, list[int]], k: int, data: st.DataObject
) -> None:
    own, names = own_and_names
    table = RoutingTable(XorName.from_int(own), k, strikes=2)
    for i, n in enumerate(names):
        table.observe(contact(n, i), float(i))
    held = table.contacts()
    for c in data.draw(st.lists(st.sampled_from(held), max_size=6)) if held else []:
        table.failed(c.name, 0.0)
    held = table.contacts()

    base = data.draw(st.sampled_from([own, *names]) if names else st.just(own))
    target = XorName.from_int(
        base ^ (data.draw(st.integers(0, 2**256 - 1)) >> data.draw(st.integers(0, 256)))
    )
    count = data.draw(st.one_of(st.none(), st.integers(0, len(held) + 3)))
    exclude = set(data.draw(st.lists(st.sampled_from(held), max_size=5)) if held else [])
    exclude_names = {c.name for c in exclude}
    include_suspect = data.draw(st.booleans())

    got = table.closest(
        target, count, exclude=exclude_names or None, include_suspect=include_suspect
    )
    want = brute_closest(
        held,
        target,
        k if count is None else count,
        lambda c: c.name in exclude_names or (not include_suspect and table.is_suspect(c.name)),
    )
    assert got == want
    # A close group: the same nearest contacts with our own name merged in.
    n = k if count is None else count
    others = [c.name for c in brute_closest(held, target, len(held), lambda c: c.name in exclude_names)]
    assert table.closest_names(target, n, exclude=exclude_names or None) == closest(
        target, [*others, table.own], n
    )
    assert table.names() == {c.name for c in held}


def test_closest_on_a_large_random_table_and_at_every_contact() -> None:
    rng = random.Random(11)
    own = XorName.random(rng)
    table = RoutingTable(own, 20)
    for i in range(5000):
        table.observe(contact(rng.getrandbits(256), i), 0.0)
    held = table.contacts()
    assert 150 < len(held) < 400
    targets = [XorName.random(rng) for _ in range(300)] + [c.name for c in held] + [own]
    for target in targets:
        for count in (1, 8, 20, 50):
            assert table.closest(target, count) == brute_closest(
                held, target, count, lambda c: False
            )


def test_closest_of_an_empty_table_and_nonpositive_counts() -> None:
    table = RoutingTable(XorName.from_int(1))
    assert table.closest(XorName.from_int(2)) == []
    table.observe(contact(2), 0.0)
    assert table.closest(XorName.from_int(2), 0) == []
    assert table.closest(XorName.from_int(2), -3) == []


# ---------------------------------------------------------------------- bucket invariants


class ModelTable:
    """A deliberately naive model of the table's rules, to compare the real one against."""

    def __init__(self, own: int, k: int, strikes: int, cache: int) -> None:
        self.own, self.k, self.max_strikes, self.max_cache = own, k, strikes, cache
        self.buckets: dict[int, list[Contact]] = {}
        self.caches: dict[int, list[Contact]] = {}
        self.strikes: dict[XorName, int] = {}

    def index(self, name: bytes) -> int:
        return 256 - (self.own ^ int.from_bytes(name, "big")).bit_length()

    def observe(self, c: Contact) -> Contact | None:
        i = self.index(c.name)
        if i == 256:
            return None
        bucket, cache = self.buckets.setdefault(i, []), self.caches.setdefault(i, [])
        held = [x for x in bucket if x.name == c.name]
        if held:
            bucket.remove(held[0])
            bucket.append(c)
            self.strikes.pop(c.name, None)
            return None
        cache[:] = [x for x in cache if x.name != c.name]
        if len(bucket) < self.k:
            bucket.append(c)
            return None
        if self.max_cache:
            cache.append(c)
            del cache[: max(0, len(cache) - self.max_cache)]
        return bucket[0]

    def seen(self, c: Contact) -> bool:
        i = self.index(c.name)
        bucket = self.buckets.get(i, [])
        held = [x for x in bucket if x.name == c.name and x.address == c.address]
        if not held:
            return False
        bucket.remove(held[0])
        bucket.append(held[0])
        self.strikes.pop(c.name, None)
        return True

    def failed(self, name: XorName) -> bool:
        i = self.index(name)
        bucket, cache = self.buckets.get(i, []), self.caches.get(i, [])
        if not any(x.name == name for x in bucket):
            cache[:] = [x for x in cache if x.name != name]
            return False
        self.strikes[name] = self.strikes.get(name, 0) + 1
        if self.strikes[name] < self.max_strikes:
            return False
        self.remove(name)
        return True

    def remove(self, name: XorName) -> None:
        i = self.index(name)
        bucket, cache = self.buckets.get(i, []), self.caches.get(i, [])
        before = len(bucket)
        bucket[:] = [x for x in bucket if x.name != name]
        cache[:] = [x for x in cache if x.name != name]
        self.strikes.pop(name, None)
        if len(bucket) < before and cache:
            bucket.append(cache.pop())


ops = st.lists(
    st.tuples(
        st.sampled_from(["observe", "observe", "observe", "seen", "failed", "remove"]),
        st.integers(0, 39),
        st.integers(0, 3),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**256 - 1),
    st.lists(st.tuples(st.integers(0, 2**256 - 1), st.integers(0, 12)), min_size=40, max_size=40),
    ops,
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(0, 3),
)
def test_table_matches_model_and_keeps_invariants(
    own: int,
    pool_bits: list[tuple[int, int]],
    operations: list[tuple[str, int, int]],
    k: int,
    strikes: int,
    cache: int,
) -> None:
    # Names clustered in the first few buckets so that buckets overflow with small k.
    pool = [own ^ (1 << 255 >> shift) ^ (r >> (shift + 1)) for r, shift in pool_bits]
    table = RoutingTable(XorName.from_int(own), k, strikes=strikes, replacement_cache=cache)
    model = ModelTable(own, k, strikes, cache)
    for op, which, port in operations:
        c = contact(pool[which], port)
        if op == "observe":
            assert table.observe(c, 0.0) == model.observe(c)
        elif op == "seen":  # mostly at the address held (a message from a known contact)
            held = table.get(c.name)
            if held is not None and port != 3:
                c = held
            assert table.seen(c.name, c.address, 0.0) == model.seen(c)
        elif op == "failed":
            assert table.failed(c.name, 0.0) == model.failed(c.name)
        else:
            table.remove(c.name)
            model.remove(c.name)

        total = 0
        for i in range(256):
            got = table.bucket(i)
            assert got == model.buckets.get(i, [])
            assert table.replacements(i) == model.caches.get(i, [])
            assert len(got) <= k and len(table.replacements(i)) <= cache
            assert all(table.bucket_index(x.name) == i for x in got)
            assert not {x.name for x in got} & {x.name for x in table.replacements(i)}
            total += len(got)
        assert len(table) == total == len(table.contacts())
        for x in table.contacts():
            assert x.name in table and table.get(x.name) == x
            assert table.is_suspect(x.name) == (x.name in model.strikes)


# ---------------------------------------------------------------------- eviction rules


def full_bucket_table(k: int = 3, strikes: int = 3) -> tuple[RoutingTable, list[Contact]]:
    """A table whose bucket 0 is full: three contacts whose first bit differs from own (0)."""
    table = RoutingTable(XorName.from_int(0), k, strikes=strikes)
    members = [contact((1 << 255) | i, i) for i in range(1, k + 1)]
    for t, c in enumerate(members):
        assert table.observe(c, float(t)) is None
    return table, members


def test_observe_moves_to_tail_and_updates_the_address() -> None:
    table, members = full_bucket_table()
    moved = Contact(members[0].name, "10.9.9.9:1")
    assert table.observe(moved, 5.0) is None
    assert table.bucket(0) == [members[1], members[2], moved]
    assert table.get(members[0].name) is moved
    assert len(table) == 3


def test_observing_ourselves_is_ignored() -> None:
    table = RoutingTable(XorName.from_int(7))
    assert table.observe(contact(7), 0.0) is None
    assert len(table) == 0 and contact(7).name not in table


def test_observe_when_full_returns_the_least_recently_seen_to_ping() -> None:
    table, members = full_bucket_table()
    newcomer = contact((1 << 255) | 99, 99)
    assert table.observe(newcomer, 10.0) == members[0]
    assert newcomer.name not in table
    assert table.replacements(0) == [newcomer]
    # The ping is answered: the old contact stays and moves to the tail.
    assert table.observe(members[0], 11.0) is None
    assert table.bucket(0) == [members[1], members[2], members[0]]
    assert table.observe(newcomer, 12.0) == members[1]


def test_one_failure_does_not_evict_and_strikes_do() -> None:
    table, members = full_bucket_table(strikes=3)
    spare_old, spare_new = contact((1 << 255) | 98, 98), contact((1 << 255) | 99, 99)
    table.observe(spare_old, 1.0)
    table.observe(spare_new, 2.0)
    head = members[0]
    assert table.failed(head.name, 3.0) is False
    assert head.name in table and table.is_suspect(head.name)
    assert table.failed(head.name, 4.0) is False
    assert table.failed(head.name, 5.0) is True
    assert head.name not in table and not table.is_suspect(head.name)
    # The freshest replacement is promoted, the older one keeps waiting.
    assert table.bucket(0) == [members[1], members[2], spare_new]
    assert table.replacements(0) == [spare_old]


def test_a_sign_of_life_clears_strikes() -> None:
    table, members = full_bucket_table(strikes=2)
    assert table.failed(members[1].name, 1.0) is False
    assert table.observe(members[1], 2.0) is None
    assert not table.is_suspect(members[1].name)
    assert table.failed(members[1].name, 3.0) is False  # the count started again


def test_a_message_clears_strikes_wherever_the_contact_stands() -> None:
    table, members = full_bucket_table(strikes=2)
    for c in (members[-1], members[0]):  # the most and the least recently seen
        assert table.failed(c.name, 1.0) is False and table.is_suspect(c.name)
        assert table.seen(c.name, c.address, 2.0)
        assert not table.is_suspect(c.name)
        assert table.bucket(0)[-1] == c
    assert not table.seen(members[1].name, "elsewhere:1", 3.0)  # another address: observe it instead
    assert table.bucket(0)[-1] == members[0]


def test_strikes_of_one_evicts_at_once_like_bmuller() -> None:
    table, members = full_bucket_table(strikes=1)
    assert table.failed(members[0].name, 0.0) is True
    assert len(table) == 2


def test_an_evicted_contact_that_comes_back_reenters_normally() -> None:
    table, members = full_bucket_table(strikes=1)
    table.failed(members[2].name, 0.0)
    assert table.observe(members[2], 1.0) is None
    assert table.bucket(0)[-1] == members[2]
    assert not table.is_suspect(members[2].name)


def test_failed_replacement_is_dropped_and_unknown_names_are_harmless() -> None:
    table, members = full_bucket_table()
    spare = contact((1 << 255) | 99, 99)
    table.observe(spare, 1.0)
    assert table.failed(spare.name, 2.0) is False
    assert table.replacements(0) == []
    assert table.failed(XorName.from_int(12345), 2.0) is False
    assert table.remove(XorName.from_int(12345)) is False


def test_remove_promotes_a_replacement_and_empties_buckets() -> None:
    table, members = full_bucket_table()
    spare = contact((1 << 255) | 99, 99)
    table.observe(spare, 1.0)
    assert table.remove(members[1].name) is True
    assert table.bucket(0) == [members[0], members[2], spare]
    for c in table.contacts():
        table.remove(c.name)
    assert len(table) == 0 and table.contacts() == [] and table.stale_buckets(0.0) == []


def test_closest_can_leave_out_suspects() -> None:
    table, members = full_bucket_table()
    table.failed(members[0].name, 0.0)
    target = members[0].name
    assert table.closest(target, 1) == [members[0]]
    assert members[0] not in table.closest(target, include_suspect=False)
    assert len(table.closest(target, include_suspect=False)) == 2


def test_constructor_rejects_nonsense() -> None:
    for kwargs in ({"k": 0}, {"strikes": 0}, {"replacement_cache": -1}):
        with pytest.raises(ValueError):
            RoutingTable(XorName.from_int(0), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- bucket refresh


def test_stale_buckets_follow_touches_and_traffic() -> None:
    table = RoutingTable(XorName.from_int(0), 20, refresh_interval=100.0)
    assert table.stale_buckets(0.0) == []
    table.observe(contact(1 << 252), 10.0)  # bucket 3
    # Buckets 0-2 were never touched; bucket 3 has traffic.
    assert table.stale_buckets(50.0) == [0, 1, 2]
    table.touch_bucket(1, 60.0)
    assert table.stale_buckets(109.0) == [0, 2]
    assert table.stale_buckets(110.0) == [0, 2, 3]
    assert table.stale_buckets(160.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        table.touch_bucket(256, 0.0)


@given(st.integers(0, 2**256 - 1), st.integers(0, 255), st.integers(0, 2**32))
def test_random_name_in_bucket_lands_in_that_bucket(own: int, index: int, seed: int) -> None:
    table = RoutingTable(XorName.from_int(own))
    name = table.random_name_in_bucket(index, random.Random(seed))
    assert isinstance(name, XorName)
    assert table.bucket_index(name) == index


def test_random_name_in_bucket_is_spread_out() -> None:
    table = RoutingTable(XorName.random(random.Random(1)))
    rng = random.Random(2)
    assert len({table.random_name_in_bucket(200, rng) for _ in range(50)}) == 50
    assert table.random_name_in_bucket(255, rng) == table.random_name_in_bucket(255, rng)


# ---------------------------------------------------------------------- Lookup, the state machine


def test_lookup_with_no_seeds_is_done_at_once() -> None:
    lookup = Lookup(XorName.from_int(5), [])
    assert lookup.start() == [] and lookup.done and lookup.result() == [] and lookup.rounds == 0


def test_lookup_keeps_alpha_in_flight_and_never_queries_itself() -> None:
    own = contact(0)
    seeds = [own] + [contact(i) for i in range(1, 10)]
    lookup = Lookup(XorName.from_int(0), seeds, k=4, alpha=2, own=own.name)
    first = lookup.start()
    assert first == [contact(1), contact(2)] and lookup.in_flight == 2
    # A reply bringing ourselves and nothing nearer: no progress, so ask all of the k nearest.
    nxt = lookup.on_reply(first[0], [own, contact(3)])
    assert nxt == [contact(3), contact(4)]
    assert own not in nxt
    with pytest.raises(RuntimeError):
        lookup.start()


def test_lookup_ignores_unexpected_and_duplicate_replies() -> None:
    lookup = Lookup(XorName.from_int(0), [contact(1), contact(2)], k=2, alpha=1)
    (first,) = lookup.start()
    assert lookup.on_reply(contact(77), [contact(3)]) == []  # never asked
    lookup.on_reply(first, [])
    assert lookup.on_reply(first, [contact(3)]) == []  # asked, already answered
    assert lookup.on_failure(first) == []
    assert lookup.queried == 2


def test_lookup_result_holds_only_answering_contacts() -> None:
    seeds = [contact(i) for i in range(1, 6)]
    lookup = Lookup(XorName.from_int(0), seeds, k=3, alpha=3)
    pending = lookup.start()
    while pending:
        c = pending.pop(0)
        pending += lookup.on_failure(c) if int(c.name) % 2 else lookup.on_reply(c, [])
    assert lookup.done
    assert lookup.result() == [contact(2), contact(4)]


def test_lookup_where_everyone_fails_ends_empty() -> None:
    lookup = Lookup(XorName.from_int(0), [contact(i) for i in range(1, 30)], k=5, alpha=3)
    pending = lookup.start()
    while pending:
        pending += lookup.on_failure(pending.pop())
    assert lookup.done and lookup.result() == [] and lookup.queried == 29


def test_a_known_name_keeps_its_first_address() -> None:
    lookup = Lookup(XorName.from_int(0), [contact(2, 1)], k=2, alpha=1)
    (first,) = lookup.start()
    nxt = lookup.on_reply(first, [contact(1, 1), Contact(XorName.from_int(2), "evil:1")])
    assert nxt == [contact(1, 1)]
    lookup.on_reply(nxt[0], [contact(2, 666)])
    assert lookup.done and lookup.result() == [contact(1, 1), contact(2, 1)]


def test_lookup_counts_hops() -> None:
    # A chain: node i only knows node i-1, nearer to target 0. The lookup walks it hop by hop.
    chain = {i: contact(i) for i in range(1, 8)}
    lookup = Lookup(XorName.from_int(0), [chain[7]], k=1, alpha=1)
    drive(lookup, lambda c: [chain[int(c.name) - 1]] if int(c.name) > 1 else [], random.Random(0))
    assert lookup.result() == [chain[1]]
    assert lookup.rounds == 7 and lookup.queried == 7


# ---------------------------------------------------------------------- Lookup on networks


@pytest.mark.parametrize("fill", ["observation", "joining"])
def test_lookups_find_exactly_the_k_closest(fill: str) -> None:
    rng = random.Random(20240 + len(fill))
    net = Network(400, 20, rng)
    if fill == "observation":
        net.fill_by_observation()
    else:
        net.fill_by_joining()
    for _ in range(150):
        me, target = rng.choice(net.nodes), net.random_target()
        lookup = net.lookup(me, target)
        assert lookup.result() == net.truth(me, target)
        assert 1 <= lookup.rounds <= 8


def test_lookups_with_small_k_and_wide_alpha() -> None:
    rng = random.Random(7)
    net = Network(300, 4, rng)
    net.fill_by_joining()
    for alpha in (1, 3, 10):
        for _ in range(60):
            me, target = rng.choice(net.nodes), net.random_target()
            assert net.lookup(me, target, alpha=alpha).result() == net.truth(me, target)


def test_lookups_with_dead_nodes_and_stale_tables_stay_sound() -> None:
    """Tables still list the dead, so an answer of k contacts may carry fewer than k live
    ones and the global truth can be out of reach; the lookup must still end, return only
    nodes that answered, nearest first, and miss no live node that anybody returned."""
    rng = random.Random(31)
    net = Network(400, 20, rng)
    net.fill_by_joining()
    net.dead = {c.name for c in rng.sample(net.nodes, 40)}
    exact = 0
    for _ in range(100):
        me, target = rng.choice(net.alive()), net.random_target()
        seeds = net.tables[me.name].closest(target, net.k)
        lookup = Lookup(target, seeds, net.k, 3, own=me.name)
        seen: set[XorName] = set()  # names the lookup was told about before it ended
        answered: set[XorName] = set()
        pending = lookup.start()
        while pending:
            c = pending.pop(rng.randrange(len(pending)))
            if c.name in net.dead:
                pending += lookup.on_failure(c)
                continue
            reply = net.tables[c.name].closest(target, net.k)
            if not lookup.done:
                answered.add(c.name)
                seen.update(x.name for x in reply)
            pending += lookup.on_reply(c, reply)
        assert lookup.done
        result = lookup.result()
        assert all(c.name in answered for c in result)
        assert [dist(target, c) for c in result] == sorted(dist(target, c) for c in result)
        reachable = [c for c in net.alive() if c.name != me.name and (c.name in seen or c in seeds)]
        assert result == brute_closest(reachable, target, net.k, lambda c: False)
        exact += result == net.truth(me, target)
    assert exact >= 80  # measured: 96/100 for this seed


def test_lookups_are_exact_again_once_tables_have_struck_out_the_dead() -> None:
    rng = random.Random(32)
    net = Network(400, 20, rng)
    net.fill_by_observation()
    net.dead = {c.name for c in rng.sample(net.nodes, 40)}
    # Liveness sweeps: every live node pings what its table holds; a dead contact fails
    # each time until its strikes run out and a replacement (pinged next sweep, and maybe
    # dead too) takes its place.
    sweeps, struck = 0, 1
    while struck and sweeps < 60:
        sweeps, struck = sweeps + 1, 0
        for c in net.alive():
            table = net.tables[c.name]
            for held in table.contacts():
                if held.name in net.dead:
                    table.failed(held.name, 0.0)
                    struck += 1
    assert sweeps > 3 and not struck
    for _ in range(150):
        me, target = rng.choice(net.alive()), net.random_target()
        assert net.lookup(me, target).result() == net.truth(me, target)


def test_lookups_that_learn_evict_the_dead_from_the_querier() -> None:
    rng = random.Random(33)
    net = Network(200, 8, rng)
    net.fill_by_joining()
    me = net.nodes[0]
    net.dead = {c.name for c in net.tables[me.name].contacts()[:5]}
    for _ in range(40):
        net.lookup(me, net.random_target(), learn=True)
        for name in net.dead:
            if name in net.tables[me.name]:
                net.lookup(me, name, learn=True)
    assert not net.dead & {c.name for c in net.tables[me.name].contacts()}


# ---------------------------------------------------------------------- against bmuller/kademlia


class _DummyProtocol:
    """Stands in for bmuller's KademliaProtocol: `add_contact` wraps `call_ping` in
    `asyncio.ensure_future`; a future of a loop that never runs is returned as is, so no
    task is scheduled and no "no current event loop" warning is raised."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call_ping(self, node: object) -> asyncio.Future[None]:
        return self.loop.create_future()


def test_bmuller_find_neighbors_is_approximate_and_ours_is_exact() -> None:
    kademlia_routing = pytest.importorskip("kademlia.routing")
    kademlia_node = pytest.importorskip("kademlia.node")
    rng = random.Random(3)
    ids = [rng.getrandbits(160) for _ in range(2001)]
    loop = asyncio.new_event_loop()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            own = kademlia_node.Node(ids[0].to_bytes(20, "big"))
            theirs = kademlia_routing.RoutingTable(_DummyProtocol(loop), 20, own)
            for i, n in enumerate(ids[1:]):
                theirs.add_contact(kademlia_node.Node(n.to_bytes(20, "big"), "10.0.0.1", i))
        if caught:
            pytest.skip(f"bmuller's table warned {len(caught)} times without an event loop")
    finally:
        loop.close()

    # Same ids in our 256-bit space: pad with zero low bits, which keeps every XOR order.
    ours = RoutingTable(XorName.from_int(ids[0] << 96), 20)
    for i, n in enumerate(ids[1:]):
        ours.observe(contact(n << 96, i), 0.0)

    their_held = [n for b in theirs.buckets for n in b.get_nodes()]
    our_held = ours.contacts()
    differs = 0
    for _ in range(400):
        t = rng.getrandbits(160)
        got = [n.long_id for n in theirs.find_neighbors(kademlia_node.Node(t.to_bytes(20, "big")))]
        exact = sorted((n.long_id for n in their_held), key=lambda x: x ^ t)[:20]
        differs += got != exact
        target = XorName.from_int(t << 96)
        assert ours.closest(target) == brute_closest(our_held, target, 20, lambda c: False)
    assert differs > 0  # measured: 10 of 400 for this seed
