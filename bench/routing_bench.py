"""Figures for node.routing: closest() speed, and synthetic networks of 1,000 and 10,000
nodes built by Kademlia joins, with their memory, lookup speed, hops and exactness.

A script that prints numbers, not a test:

    .venv/bin/python bench/routing_bench.py [--sizes 1000 10000] [--lookups 2000] [--seed 1]

Rates and build times are CPU seconds of this process (`time.process_time`), so that other
load on the machine does not skew them. Networks live in one process as a dict of RoutingTables;
a query is a direct call of the queried node's `closest()`, so lookups/s measures the routing code alone (no transport).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import statistics
import time
from collections.abc import Callable

import psutil

from node.routing import Contact, Lookup, RoutingTable
from node.xorname import XorName

K = 20
ALPHA = 3


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# ---------------------------------------------------------------------- closest()


def bench_closest(rng: random.Random, calls: int) -> None:
    """A table shaped like one in a ~650k-node network: buckets 0-14 full, 300 contacts."""
    own = XorName.random(rng)
    table = RoutingTable(own, K)
    for index in range(15):
        for i in range(K):
            table.observe(Contact(table.random_name_in_bucket(index, rng), f"h:{i}"), 0.0)
    held = table.contacts()
    uniform = [XorName.random(rng) for _ in range(1000)]
    # What a node mostly answers: FIND_NODE for names near itself or near its contacts.
    near = [XorName.from_int(int(c.name) ^ rng.getrandbits(224)) for c in held]

    def rate(fn: Callable[[XorName], object], targets: list[XorName], calls: int = calls) -> float:
        reps = max(1, calls // len(targets))
        start = time.process_time()
        for _ in range(reps):
            for t in targets:
                fn(t)
        return reps * len(targets) / (time.process_time() - start)

    pairs = [(int(c.name), c) for c in held]

    def nsmallest(t: XorName) -> list[tuple[int, Contact]]:
        ti = int(t)
        return heapq.nsmallest(K, pairs, key=lambda p: p[0] ^ ti)

    print(f"closest(): table of {len(held)} contacts, k={K}, {calls:,} calls per figure")
    print(f"  bucket walk, uniform targets   {rate(table.closest, uniform):>10,.0f} calls/s")
    print(f"  bucket walk, near a contact    {rate(table.closest, near):>10,.0f} calls/s")
    ref = rate(nsmallest, uniform, calls // 10)
    print(f"  heapq.nsmallest, int ids (ref) {ref:>10,.0f} calls/s")


# ---------------------------------------------------------------------- networks


class Network:
    def __init__(self, n: int, rng: random.Random) -> None:
        self.rng = rng
        self.nodes = [
            Contact(XorName.random(rng), f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:5483")
            for i in range(n)
        ]
        self.tables: dict[XorName, RoutingTable] = {}
        self.dead: set[XorName] = set()

    def see(self, who: XorName, other: Contact) -> None:
        to_ping = self.tables[who].observe(other, 0.0)
        if to_ping is not None:  # everyone is alive while the network is built
            self.tables[who].observe(to_ping, 0.0)

    def lookup(self, me: Contact, target: XorName, *, learn: bool) -> Lookup:
        table = self.tables[me.name]
        lookup = Lookup(target, table.closest(target, K), K, ALPHA, own=me.name)
        pending = lookup.start()
        while pending:
            queried = pending.pop(self.rng.randrange(len(pending)))
            if queried.name in self.dead:
                pending += lookup.on_failure(queried)
                continue
            if learn:
                self.see(queried.name, me)
                self.see(me.name, queried)
            pending += lookup.on_reply(queried, self.tables[queried.name].closest(target, K))
        return lookup

    def join_all(self) -> int:
        """Nodes join one at a time: bootstrap off a random earlier node, look up their own
        name, then refresh every bucket farther out than their nearest neighbour. Returns the
        number of lookups done."""
        lookups = 0
        for i, me in enumerate(self.nodes):
            table = self.tables[me.name] = RoutingTable(me.name, K)
            if not i:
                continue
            self.see(me.name, self.nodes[self.rng.randrange(i)])
            self.lookup(me, me.name, learn=True)
            lookups += 1
            nearest = table.closest(me.name, 1)
            deepest = table.bucket_index(nearest[0].name) if nearest else 0
            for index in range(deepest):
                self.lookup(me, table.random_name_in_bucket(index, self.rng), learn=True)
                table.touch_bucket(index, 0.0)
                lookups += 1
        return lookups

    def target(self) -> XorName:
        if self.rng.random() < 0.5:
            return XorName.random(self.rng)
        return XorName.from_int(int(self.rng.choice(self.nodes).name) ^ self.rng.getrandbits(16))

    def truth(self, me: Contact, target: XorName) -> list[Contact]:
        t = int(target)
        live = (c for c in self.nodes if c.name not in self.dead and c.name != me.name)
        return heapq.nsmallest(K, live, key=lambda c: int(c.name) ^ t)


def bench_network(n: int, lookups: int, rng: random.Random) -> None:
    before = rss()
    start = time.process_time()
    net = Network(n, rng)
    joins = net.join_all()
    build = time.process_time() - start
    grown = rss() - before
    held = [len(t) for t in net.tables.values()]
    cached = sum(len(t.replacements(i)) for t in net.tables.values() for i in range(256))
    entries = sum(held) + cached
    print(f"\nN={n:,} k={K} alpha={ALPHA}")
    print(f"  build by joins       {build:8.1f} s CPU  ({joins:,} join/refresh lookups)")
    print(
        f"  memory (RSS growth)  {grown / 2**20:8.1f} MiB  = {grown / n / 1024:.1f} KiB/node, "
        f"{grown / entries:.0f} B per table or cache entry"
    )
    print(
        f"  contacts per table   mean {statistics.mean(held):.0f}, min {min(held)}, max {max(held)};"
        f" replacement entries {cached / n:.0f}/node"
    )
    for dead_share in (0.0, 0.1):
        net.dead = {c.name for c in rng.sample(net.nodes, int(dead_share * n))}
        live = [c for c in net.nodes if c.name not in net.dead]
        jobs = [(rng.choice(live), net.target()) for _ in range(lookups)]
        start = time.process_time()
        done = [net.lookup(me, target, learn=False) for me, target in jobs]
        elapsed = time.process_time() - start
        rounds = [lk.rounds for lk in done]
        queried = [lk.queried for lk in done]
        exact = sum(lk.result() == net.truth(me, t) for lk, (me, t) in zip(done, jobs, strict=True))
        label = f"{int(dead_share * 100)}% dead (tables stale)" if dead_share else "all alive"
        print(f"  lookups, {label}:")
        print(f"    {lookups / elapsed:8,.0f} lookups/s")
        print(
            f"    rounds median {statistics.median(rounds):.0f}, p99 {percentile(rounds, 0.99)},"
            f" max {max(rounds)}; queries median {statistics.median(queried):.0f},"
            f" p99 {percentile(queried, 0.99)}"
        )
        print(f"    exact (= brute-force k closest live) {exact / lookups:7.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"seed {args.seed}")
    rng = random.Random(args.seed)
    bench_closest(rng, args.calls)
    for n in args.sizes:
        bench_network(n, args.lookups, random.Random(f"{args.seed}-{n}"))


if __name__ == "__main__":
    main()
