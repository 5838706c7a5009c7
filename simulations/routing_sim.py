"""Routing only: 10,000 routing tables and iterative lookups, without 10,000 node hosts.

A full node costs a trio task, timers and a store; a lookup needs none of that. This mode
builds one `node.routing.RoutingTable` per node (the node's own class) and runs the node's
own `node.routing.Lookup` state machine, answering each FIND_NODE straight from the
queried node's table as `NodeCore._on_find_node` does (its k closest, the asker left out,
itself appended). Queries are answered in the order they are sent, as if every link had the
same latency, so the hop counts are those of an unloaded network.

Tables are built one of two ways:

- ``fill`` (default): what a settled network converges to - every bucket holds k random
  nodes of its range (all of them if fewer), found directly from the sorted list of ids;
- ``join``: nodes join one at a time through a random earlier node, by looking up their own
  name; every node that answers learns the joiner and the joiner learns everyone it hears
  from (no bucket refresh afterwards, so far buckets stay thin: a pessimistic network).

Each lookup's R nearest results are compared with the exact close group (a brute-force
search of the sorted ids), so "exact" means the lookup found precisely the R nodes that
hold data at that name.
"""

from __future__ import annotations

import bisect
import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from node.routing import Contact, Lookup, RoutingTable
from node.xorname import XOR_NAME_BITS, XorName

from .determinism import sub_rng


@dataclass
class RoutingFigures:
    nodes: int
    lookups: int
    k: int
    alpha: int
    replication: int
    build: str
    build_s: float
    lookups_s: float
    exact_share: float
    hops_median: float
    hops_p99: float
    hops_max: int
    queries_mean: float
    table_mean: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RoutingNetwork:
    """`n` nodes' routing tables, over one sorted list of ids."""

    def __init__(self, n: int, seed: int, *, k: int = 20, alpha: int = 3, replication: int = 5) -> None:
        self.k, self.alpha, self.replication = k, alpha, replication
        self.rng = sub_rng(seed, "routing")
        names = {XorName.random(self.rng) for _ in range(n)}
        self.contacts = sorted((Contact(name, f"sim:{i}") for i, name in enumerate(sorted(names))), key=lambda c: c._id)
        self.ids = [c._id for c in self.contacts]
        self.index = {c._id: i for i, c in enumerate(self.contacts)}
        self.tables = [RoutingTable(c.name, k) for c in self.contacts]

    # ------------------------------------------------------------------ building tables

    def fill(self) -> None:
        """Every bucket gets k random members of its range (all of them if fewer)."""
        ids, contacts, k, rng = self.ids, self.contacts, self.k, self.rng
        for own, table in zip(self.contacts, self.tables, strict=True):
            for depth in range(XOR_NAME_BITS):
                free = XOR_NAME_BITS - depth - 1
                # The range of names sharing exactly `depth` leading bits with ours.
                low = ((own._id >> free) ^ 1) << free
                lo, hi = bisect.bisect_left(ids, low), bisect.bisect_left(ids, low + (1 << free))
                picks = rng.sample(range(lo, hi), k) if hi - lo > k else list(range(lo, hi))
                for i in picks:
                    table.observe(contacts[i], 0.0)
                # Stop once no other node shares the next bit with us.
                same_lo = bisect.bisect_left(ids, (own._id >> free) << free)
                same_hi = bisect.bisect_left(ids, ((own._id >> free) + 1) << free)
                if same_hi - same_lo <= 1:
                    break

    def join(self) -> None:
        """Nodes join one by one through a random earlier node (see the module doc)."""
        joined: list[int] = [0]
        for i in range(1, len(self.contacts)):
            via = self.contacts[self.rng.choice(joined)]
            newcomer = self.contacts[i]
            self.tables[i].observe(via, 0.0)
            self.tables[self.index[via._id]].observe(newcomer, 0.0)
            lookup, _ = self.lookup(i, newcomer.name)
            for contact in lookup.result():
                self.tables[i].observe(contact, 0.0)
            joined.append(i)

    # ------------------------------------------------------------------ lookups

    def lookup(self, source: int, target: bytes) -> tuple[Lookup, int]:
        """Run one lookup from node `source`; returns it and how many queries it sent."""
        asker = self.contacts[source]
        table = self.tables[source]
        lookup = Lookup(target, table.closest(target, self.k), k=self.k, alpha=self.alpha, own=asker.name)
        pending = list(lookup.start())
        queries = len(pending)
        at = 0
        while at < len(pending):
            contact = pending[at]
            at += 1
            answering = self.tables[self.index[contact._id]]
            reply = answering.closest(target, self.k, exclude={asker.name})
            reply.append(contact)  # the node names itself last, as NodeCore._on_find_node does
            answering.observe(asker, 0.0)  # a query is traffic: the asker becomes known
            more = lookup.on_reply(contact, reply)
            queries += len(more)
            pending.extend(more)
        return lookup, queries

    def exact_group(self, target: bytes, count: int) -> list[int]:
        """The `count` ids nearest `target`: they lie within the smallest prefix range holding `count`."""
        t = int.from_bytes(target, "big")
        ids = self.ids
        lo, hi = 0, len(ids)
        for free in range(XOR_NAME_BITS - 1, -1, -1):
            prefix = t >> free
            a = bisect.bisect_left(ids, prefix << free, lo, hi)
            b = bisect.bisect_left(ids, (prefix + 1) << free, lo, hi)
            if b - a < count:
                break
            lo, hi = a, b
        return sorted(ids[lo:hi], key=lambda i: i ^ t)[:count]


def run_routing(nodes: int, lookups: int, seed: int = 1, *, k: int = 20, alpha: int = 3, replication: int = 5,
                build: str = "fill") -> tuple[RoutingFigures, list[int]]:
    """Build `nodes` tables, run `lookups` lookups of random names from random nodes."""
    started = time.perf_counter()
    net = RoutingNetwork(nodes, seed, k=k, alpha=alpha, replication=replication)
    if build == "fill":
        net.fill()
    elif build == "join":
        net.join()
    else:
        raise ValueError(f"build is 'fill' or 'join', got {build!r}")
    built = time.perf_counter()
    rng = sub_rng(seed, "routing-lookups")
    hops: list[int] = []
    queries: list[int] = []
    exact = 0
    for _ in range(lookups):
        source = rng.randrange(nodes)
        target = XorName.random(rng)
        lookup, sent = net.lookup(source, target)
        own = net.contacts[source]._id
        found = [c._id for c in lookup.result()]
        # The asker is a candidate member of the group too: it knows itself without asking.
        t = int.from_bytes(target, "big")
        found = sorted([*found, own], key=lambda i: i ^ t)[:replication]
        exact += found == net.exact_group(target, replication)
        hops.append(lookup.rounds)
        queries.append(sent)
    done = time.perf_counter()
    ordered = sorted(hops)
    figures = RoutingFigures(
        nodes=nodes, lookups=lookups, k=k, alpha=alpha, replication=replication, build=build,
        build_s=round(built - started, 2), lookups_s=round(done - built, 2),
        exact_share=exact / lookups if lookups else 1.0,
        hops_median=float(ordered[len(ordered) // 2]) if ordered else 0.0,
        hops_p99=float(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]) if ordered else 0.0,
        hops_max=max(ordered, default=0),
        queries_mean=round(sum(queries) / len(queries), 2) if queries else 0.0,
        table_mean=round(sum(len(t) for t in net.tables) / nodes, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    return figures, hops


def hop_histogram(hops: list[int]) -> dict[int, int]:
    return dict(sorted(Counter(hops).items()))
