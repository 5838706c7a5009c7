"""Kademlia routing without I/O: the k-bucket table and the iterative node lookup.

The node core feeds this module what it saw (a contact spoke to us, a request timed out,
a FIND_NODE reply arrived) together with the current time, and gets back decisions (whom
to ping, whom to query next, which buckets to refresh). Nothing here touches a socket or
a clock, so one code path serves the real TCP node and the deterministic simulator
(docs/architecture.md principle 1).

Two deliberate departures from bmuller/kademlia (shared/reference/p2p-chaos-anchors.md
§1.7): `RoutingTable.closest` returns *exactly* the nearest contacts the table knows (the
bucket walk below is proven closest-first, and tested against a brute-force sort), and a
contact is evicted only after several failed requests, as the Kademlia paper asks, not
after one.

Ids are kept as Python ints next to each contact, because the simulator holds up to 10,000
tables in one process and `closest()` is the hottest call: XOR of two ints is cheap, and
converting 32 bytes to an int on every comparison is not.

Why one module of about 630 lines: the k-bucket table, the iterative lookup and `Standing`
(who is demoted or banned) all decide which contacts count; `Standing`, at the end, is the
seam if it grows.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from .xorname import XOR_NAME_BITS, XOR_NAME_LEN, XorName

__all__ = ["Contact", "Lookup", "RoutingTable", "Standing"]


@dataclass(frozen=True, slots=True)
class Contact:
    """A node we can talk to: its name in the XOR space and where it listens ("host:port")."""

    name: XorName
    address: str
    # The name as an int, computed once; shared by every table that holds this contact.
    _id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = XorName(self.name)  # validates the length, and is a no-op for an XorName
        if not isinstance(self.address, str):
            raise TypeError(f"a contact address is a 'host:port' str, got {self.address!r:.40}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_id", int.from_bytes(name, "big"))

    def __repr__(self) -> str:
        return f"Contact({self.name.short()}.. @ {self.address})"


class _Bucket:
    """One k-bucket: live contacts least-recently-seen first, plus its replacement cache.

    Parallel lists rather than dicts: a full bucket costs about half the memory of a dict
    that has seen churn, and `ids.index` / `in ids` run at C speed for k around 20.
    """

    __slots__ = ("ids", "contacts", "cache_ids", "cache")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.contacts: list[Contact] = []
        # Replacement cache, freshest last; allocated only once the bucket overflows.
        self.cache_ids: list[int] | None = None
        self.cache: list[Contact] | None = None

    def drop_cached(self, cid: int) -> None:
        if self.cache_ids is not None and cid in self.cache_ids:
            at = self.cache_ids.index(cid)
            del self.cache_ids[at]
            del self.cache[at]  # type: ignore[union-attr]

    def push_cached(self, contact: Contact, limit: int) -> None:
        if limit <= 0:
            return
        if self.cache_ids is None:
            self.cache_ids, self.cache = [], []
        self.drop_cached(contact._id)
        self.cache_ids.append(contact._id)
        self.cache.append(contact)  # type: ignore[union-attr]
        if len(self.cache_ids) > limit:
            del self.cache_ids[0]
            del self.cache[0]  # type: ignore[union-attr]

    def pop_freshest_cached(self) -> Contact | None:
        if not self.cache_ids:
            return None
        self.cache_ids.pop()
        return self.cache.pop()  # type: ignore[union-attr]


# Both helpers append one group of contacts to `out`, nearest first, until `out` holds
# `want`, and say whether it is full. Ids in one table are distinct, so sorting
# (distance, contact) pairs never falls back to comparing contacts.


def _take_all(
    out: list[Contact],
    ids: list[int],
    contacts: list[Contact],
    t: int,
    want: int,
    exclude: object,
    strikes: object,
) -> bool:
    ranked = sorted(zip([cid ^ t for cid in ids], contacts, strict=True))
    out.extend([c for _, c in ranked[: want - len(out)]])
    return len(out) >= want


def _take_filtered(
    out: list[Contact],
    ids: list[int],
    contacts: list[Contact],
    t: int,
    want: int,
    exclude: AbstractSet[bytes] | None,
    strikes: dict[int, int] | None,
) -> bool:
    for _, c in sorted(zip([cid ^ t for cid in ids], contacts, strict=True)):
        if (exclude and c.name in exclude) or (strikes and c._id in strikes):
            continue
        out.append(c)
        if len(out) >= want:
            return True
    return False


class RoutingTable:
    """256 k-buckets around `own`; bucket i holds contacts sharing exactly i leading bits.

    Time is passed in as `now` (seconds, any origin); the table never reads a clock.
    """

    def __init__(
        self,
        own: bytes,
        k: int = 20,
        *,
        strikes: int = 3,
        replacement_cache: int | None = None,
        refresh_interval: float = 3600.0,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if strikes < 1:
            raise ValueError(f"strikes must be at least 1, got {strikes}")
        cache = k if replacement_cache is None else replacement_cache
        if cache < 0:
            raise ValueError(f"replacement_cache must be >= 0, got {cache}")
        self.own = XorName(own)
        self.k = k
        self.strikes = strikes
        self.replacement_cache = cache
        self.refresh_interval = refresh_interval
        self._own = int.from_bytes(self.own, "big")
        # Only non-empty buckets are kept, so closest() and memory scale with what is known,
        # not with the 256 possible prefix lengths.
        self._buckets: dict[int, _Bucket] = {}
        self._strikes: dict[int, int] = {}  # sparse: only contacts that have failed
        self._touched: dict[int, float] = {}
        self._size = 0

    # ------------------------------------------------------------------ lookups of one name

    def bucket_index(self, name: bytes) -> int:
        """Length of the common prefix of `name` and our own name (256 for our own name)."""
        return XOR_NAME_BITS - (self._own ^ int.from_bytes(name, "big")).bit_length()

    def _find(self, name: bytes) -> tuple[int, _Bucket | None, int]:
        if len(name) != XOR_NAME_LEN:
            raise ValueError(f"a name is {XOR_NAME_LEN} bytes, got {len(name)}")
        cid = int.from_bytes(name, "big")
        bucket = self._buckets.get(XOR_NAME_BITS - (self._own ^ cid).bit_length())
        if bucket is None:
            return cid, None, -1
        try:
            return cid, bucket, bucket.ids.index(cid)
        except ValueError:
            return cid, bucket, -1

    def __contains__(self, name: object) -> bool:
        """A name (or a contact, by its name) is in the table proper, not just its cache."""
        if isinstance(name, Contact):
            name = name.name
        if not isinstance(name, bytes) or len(name) != XOR_NAME_LEN:
            return False
        return self._find(name)[2] >= 0

    def __len__(self) -> int:
        return self._size

    def get(self, name: bytes) -> Contact | None:
        _, bucket, at = self._find(name)
        return bucket.contacts[at] if bucket is not None and at >= 0 else None

    def is_suspect(self, name: bytes) -> bool:
        """True while the contact has failed requests not yet cleared by a sign of life."""
        return int.from_bytes(name, "big") in self._strikes

    def contacts(self) -> list[Contact]:
        """Every contact in the table, by bucket, least-recently-seen first within one."""
        return [c for i in sorted(self._buckets) for c in self._buckets[i].contacts]

    def names(self) -> frozenset[XorName]:
        """The names of every contact in the table (not the replacement caches)."""
        return frozenset([c.name for b in self._buckets.values() for c in b.contacts])

    def bucket(self, index: int) -> list[Contact]:
        """The contacts of bucket `index`, least-recently-seen first."""
        b = self._buckets.get(index)
        return list(b.contacts) if b else []

    def replacements(self, index: int) -> list[Contact]:
        """The replacement cache of bucket `index`, freshest last."""
        b = self._buckets.get(index)
        return list(b.cache) if b and b.cache else []

    # ------------------------------------------------------------------ what the node saw

    def observe(self, contact: Contact, now: float) -> Contact | None:
        """`contact` was seen alive. Returns a contact to ping, or None.

        Known contacts move to the tail and lose their strikes (a new address replaces the
        old one: the caller has authenticated the node). A newcomer joins a bucket with
        room; if the bucket is full it waits in the replacement cache and the bucket's
        least-recently-seen contact is returned so the caller can ping it: Kademlia keeps
        old live contacts, so only that contact's failures (`failed`) make room.
        """
        cid = contact._id
        index = XOR_NAME_BITS - (self._own ^ cid).bit_length()
        if index == XOR_NAME_BITS:
            return None  # ourselves
        # Traffic in a bucket's range keeps it fresh (paper §2.3): refresh is for quiet ranges.
        self._touched[index] = now
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        if cid in bucket.ids:
            self._to_tail(bucket, bucket.ids.index(cid), contact)
            return None
        if len(bucket.ids) < self.k:
            bucket.drop_cached(cid)
            bucket.ids.append(cid)
            bucket.contacts.append(contact)
            self._size += 1
            return None
        bucket.push_cached(contact, self.replacement_cache)
        return bucket.contacts[0]

    def seen(self, name: bytes, address: str, now: float) -> bool:
        """`observe` for a contact already in the table at that address, without building a
        `Contact` (every message a node receives is such a sighting). False, changing
        nothing, for anyone else: the caller then observes it."""
        cid = int.from_bytes(name, "big")
        index = XOR_NAME_BITS - (self._own ^ cid).bit_length()
        bucket = self._buckets.get(index)
        if bucket is None:
            return False
        ids = bucket.ids
        try:
            at = ids.index(cid)
        except ValueError:
            return False
        contact = bucket.contacts[at]
        if contact.address != address:
            return False
        self._touched[index] = now
        if at == len(ids) - 1:  # already the most recently seen: only its strikes go
            if self._strikes:
                self._strikes.pop(cid, None)
        else:
            self._to_tail(bucket, at, contact)
        return True

    def _to_tail(self, bucket: _Bucket, at: int, contact: Contact) -> None:
        """A contact seen alive again: the bucket's most recently seen, its strikes forgiven."""
        cid = bucket.ids.pop(at)
        del bucket.contacts[at]
        bucket.ids.append(cid)
        bucket.contacts.append(contact)
        self._strikes.pop(cid, None)

    def failed(self, name: bytes, now: float) -> bool:
        """A request to `name` timed out or was refused. Returns True if it was evicted.

        Each failure is a strike; at `strikes` strikes the contact leaves and the freshest
        replacement takes its place. A failed contact still waiting in a replacement cache
        is simply dropped from it. `now` is accepted for symmetry: strikes count, not age.
        """
        cid, bucket, at = self._find(name)
        if bucket is None:
            return False
        if at < 0:
            bucket.drop_cached(cid)
            return False
        count = self._strikes.get(cid, 0) + 1
        if count < self.strikes:
            self._strikes[cid] = count
            return False
        self._evict(cid, bucket, at)
        return True

    def remove(self, name: bytes) -> bool:
        """Forget `name` (e.g. it left, or failed to prove its identity). True if it was held."""
        cid, bucket, at = self._find(name)
        if bucket is None:
            return False
        if at < 0:
            bucket.drop_cached(cid)
            return False
        self._evict(cid, bucket, at)
        return True

    def _evict(self, cid: int, bucket: _Bucket, at: int) -> None:
        del bucket.ids[at]
        del bucket.contacts[at]
        self._strikes.pop(cid, None)
        self._size -= 1
        promoted = bucket.pop_freshest_cached()
        if promoted is not None:
            # The replacement was seen more recently than anyone in the bucket.
            bucket.ids.append(promoted._id)
            bucket.contacts.append(promoted)
            self._size += 1
        elif not bucket.ids:
            del self._buckets[XOR_NAME_BITS - (self._own ^ cid).bit_length()]

    # ------------------------------------------------------------------ closest

    def closest(
        self,
        target: bytes,
        count: int | None = None,
        *,
        exclude: AbstractSet[bytes] | None = None,
        include_suspect: bool = True,
    ) -> list[Contact]:
        """Exactly the `count` (default k) known contacts closest to `target`, closest first.

        `exclude` holds names to leave out. Why the bucket walk is exact: let j be the
        common prefix length of `target` and our name. A contact in bucket j agrees with
        the target on the first j+1 bits, so it is nearer than any other contact. Every
        contact in a bucket i > j agrees with us, hence differs from the target, first at
        bit j: they tie on that top bit and are sorted together. A contact in bucket i < j
        differs from the target first at bit i, so buckets j-1, j-2, ..., 0 follow in that
        order, each strictly farther than the one before. We stop at the first group that
        fills the answer.
        """
        want = self.k if count is None else count
        if want <= 0 or not self._size:
            return []
        t = int.from_bytes(target, "big")
        j = XOR_NAME_BITS - (self._own ^ t).bit_length()
        buckets = self._buckets
        strikes = self._strikes if not include_suspect and self._strikes else None
        out: list[Contact] = []

        take = _take_all if not exclude and not strikes else _take_filtered
        first = buckets.get(j)
        if first is not None and take(out, first.ids, first.contacts, t, want, exclude, strikes):
            return out
        deeper = [b for i, b in buckets.items() if i > j]
        if deeper:
            ids = [cid for b in deeper for cid in b.ids]
            contacts = [c for b in deeper for c in b.contacts]
            if take(out, ids, contacts, t, want, exclude, strikes):
                return out
        # The shallower buckets that exist, deepest first (not every prefix length below j:
        # a target near our own name has j close to 256, and most buckets are empty).
        for i in sorted([i for i in buckets if i < j], reverse=True):
            b = buckets[i]
            if take(out, b.ids, b.contacts, t, want, exclude, strikes):
                return out
        return out

    def closest_names(
        self, target: bytes, count: int, *, exclude: AbstractSet[bytes] | None = None
    ) -> list[XorName]:
        """The `count` names closest to `target` among the table's contacts (less `exclude`)
        and our own name, closest first: `closest(target, [c.name for c in
        self.closest(target, count, exclude=exclude)] + [own], count)`, without a second sort."""
        near = self.closest(target, count, exclude=exclude)
        t = int.from_bytes(target, "big")
        mine = self._own ^ t
        names = [c.name for c in near]
        for at, contact in enumerate(near):
            if contact._id ^ t > mine:  # distinct names: never equal
                names.insert(at, self.own)
                return names[:count]
        names.append(self.own)
        return names[:count]

    # ------------------------------------------------------------------ bucket refresh

    def stale_buckets(self, now: float) -> list[int]:
        """Buckets to refresh: neither touched nor seen traffic for `refresh_interval`.

        Only buckets up to the deepest non-empty one are candidates: deeper prefixes are
        our own neighbourhood, which a lookup of our own name (or of the deepest bucket)
        already covers, and the 200-odd empty ones beyond it would only cost lookups.
        A bucket never touched is stale, which is what a freshly joined node wants.
        """
        if not self._buckets:
            return []
        deadline = now - self.refresh_interval
        touched = self._touched
        return [
            i for i in range(max(self._buckets) + 1) if i not in touched or touched[i] <= deadline
        ]

    def touch_bucket(self, index: int, now: float) -> None:
        """Record a lookup in bucket `index`'s range (e.g. a refresh lookup) at `now`."""
        if not 0 <= index < XOR_NAME_BITS:
            raise ValueError(f"bucket index must be in [0, {XOR_NAME_BITS}), got {index}")
        self._touched[index] = now

    def random_name_in_bucket(self, index: int, rng: random.Random) -> XorName:
        """A uniformly random name sharing exactly `index` leading bits with ours."""
        if not 0 <= index < XOR_NAME_BITS:
            raise ValueError(f"bucket index must be in [0, {XOR_NAME_BITS}), got {index}")
        free = XOR_NAME_BITS - 1 - index  # bits below the first differing one
        head = ((self._own ^ (1 << free)) >> free) << free
        return XorName.from_int(head | (rng.getrandbits(free) if free else 0))


# ---------------------------------------------------------------------- the node lookup

_NEW, _IN_FLIGHT, _ANSWERED = 0, 1, 2


class Lookup:
    """An iterative, alpha-parallel Kademlia FIND_NODE lookup as a pure state machine.

    Drive it by sending FIND_NODE(target) to every contact returned by `start`, `on_reply`
    and `on_failure`, and feeding back each answer or timeout. Queries go to the nearest
    not-yet-asked candidates among the k nearest known, at most `alpha` at a time; when a
    reply fails to bring anything nearer than the nearest already known, every unasked
    one of the k nearest is queried at once (paper §2.3). Unlike a lock-step crawl, a new
    query leaves as soon as a slot frees, so a larger alpha really does cut latency.

    Returned contacts are only candidates; `result()` holds only contacts that answered.
    Failed contacts are dropped from the candidates. The lookup is done when the k
    nearest remaining candidates have all answered; replies that arrive later are ignored.
    Our own name (`own`) is never queried and never in the result.
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        k: int = 20,
        alpha: int = 3,
        own: bytes | None = None,
    ) -> None:
        if k < 1 or alpha < 1:
            raise ValueError(f"k and alpha must be at least 1, got k={k} alpha={alpha}")
        self.target = XorName(target)
        self.k = k
        self.alpha = alpha
        self._t = int.from_bytes(self.target, "big")
        self._own = None if own is None else int.from_bytes(own, "big")
        self._ranked: list[tuple[int, int]] = []  # (distance, id) of live candidates, sorted
        self._contacts: dict[int, Contact] = {}
        self._state: dict[int, int] = {}  # id -> _NEW / _IN_FLIGHT / _ANSWERED; failed: absent
        self._depth: dict[int, int] = {}  # id -> length of the query chain that reached it
        self._in_flight = 0
        self._wide = False  # no progress lately: ask all unasked among the k nearest
        self._started = False
        self._done = False
        self.queried = 0
        for seed in seeds:
            self._add(seed, 1)

    # ------------------------------------------------------------------ inputs

    def start(self) -> list[Contact]:
        """The first queries to send."""
        if self._started:
            raise RuntimeError("Lookup.start() called twice")
        self._started = True
        return self._next()

    def on_reply(self, contact: Contact, returned: Sequence[Contact]) -> list[Contact]:
        """`contact` answered with `returned` (its nearest to the target). Next queries.

        Only the first k returned contacts are read: an honest node sends no more, and a
        lying one must not blow up the candidate list. A name already known keeps the
        address it was first learned with, so a liar cannot redirect it.
        """
        if self._done or self._state.get(contact._id) != _IN_FLIGHT:
            return []
        return self._answered(contact, returned[: self.k])

    def _answered(self, contact: Contact, returned: Sequence[Contact]) -> list[Contact]:
        cid = contact._id
        if self._done or self._state.get(cid) != _IN_FLIGHT:
            return []
        self._state[cid] = _ANSWERED
        self._in_flight -= 1
        best = self._ranked[0][0]
        depth = self._depth[cid] + 1
        for c in returned:
            self._add(c, depth)
        # Progress means a nearer candidate than the nearest known before this reply.
        self._wide = self._ranked[0][0] >= best
        return self._next()

    def on_reply_wire(self, contact: Contact, pairs: Sequence[Any]) -> list[Contact]:
        """`on_reply` with the `[name, address]` pairs of a `nodes` message, as received:
        the same as `on_reply(contact, [each well-formed pair as a Contact])`, but a name this
        lookup already knows (most of them, late in a lookup) is not made into a `Contact`
        only to be dropped. A pair that cannot be read raises what making it a `Contact`
        would raise; ValueError, TypeError and IndexError skip it."""
        if self._done or self._state.get(contact._id) != _IN_FLIGHT:
            return []
        returned: list[Contact] = []
        known, own, counted = self._contacts, self._own, 0
        for pair in pairs:
            try:
                raw = pair[0]
                if type(raw) is bytes and len(raw) == XOR_NAME_LEN:
                    address = pair[1]
                    cid = int.from_bytes(raw, "big")
                    if cid in known or cid == own:
                        counted += 1  # well formed, and _add would skip it
                        continue
                    found = Contact(XorName(raw), str(address))
                else:
                    found = Contact(XorName(raw), str(pair[1]))
            except (ValueError, TypeError, IndexError):
                continue
            if counted < self.k:
                returned.append(found)
            counted += 1
        return self._answered(contact, returned)

    def on_failure(self, contact: Contact) -> list[Contact]:
        """The query to `contact` timed out or was refused. Next queries."""
        cid = contact._id
        if self._done or self._state.get(cid) != _IN_FLIGHT:
            return []
        # It stays in _contacts, so another node naming it later does not revive it.
        del self._state[cid]
        self._in_flight -= 1
        entry = (cid ^ self._t, cid)
        del self._ranked[bisect.bisect_left(self._ranked, entry)]
        return self._next()

    # ------------------------------------------------------------------ outputs

    @property
    def done(self) -> bool:
        """True when the k nearest candidates have all answered (or none are left)."""
        return self._done

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def result(self) -> list[Contact]:
        """The k nearest contacts that answered, nearest first."""
        out: list[Contact] = []
        for _, cid in self._ranked:
            if self._state[cid] == _ANSWERED:
                out.append(self._contacts[cid])
                if len(out) == self.k:
                    break
        return out

    @property
    def rounds(self) -> int:
        """Hops: the longest chain of queries that led to a contact in the result."""
        return max((self._depth[c._id] for c in self.result()), default=0)

    # ------------------------------------------------------------------ internals

    def _add(self, contact: Contact, depth: int) -> None:
        cid = contact._id
        if cid in self._contacts or cid == self._own:
            return
        self._contacts[cid] = contact
        self._state[cid] = _NEW
        self._depth[cid] = depth
        bisect.insort(self._ranked, (cid ^ self._t, cid))

    def _next(self) -> list[Contact]:
        """Mark and return the next queries; notice when the lookup is done."""
        top = self._ranked[: self.k]
        state = self._state
        if all(state[cid] == _ANSWERED for _, cid in top):
            self._done = True
            return []
        limit = len(self._ranked) if self._wide else self.alpha
        out: list[Contact] = []
        for _, cid in top:
            if self._in_flight >= limit:
                break
            if state[cid] == _NEW:
                state[cid] = _IN_FLIGHT
                self._in_flight += 1
                self.queried += 1
                out.append(self._contacts[cid])
        return out


class Standing:
    """Whether each peer does a node's work, as this node has seen it (docs/security.md).

    Answering pings and lookups costs nothing; a Sybil can do it forever and so sit in every
    routing table near its name. What it cannot fake is work: holding the chunks its group
    hands it, answering the prepares, accepts and syncs of its items. So the node core tells
    this ledger about every answer to a work request (`worked`), every answer to a free one
    such as a ping (`heard`), and every work request that timed out (`lapsed`). A peer that
    lets a work request lapse *while it went on answering us* (a ping we sent after the work
    request was answered before the work request's time ran out) has shirked: an honest node
    that is paused, crashed or cut off (in either direction) answers nothing at all, and one
    behind a slow link answers that ping after the work, so neither ever shirks.

    After `strikes` shirks in a row the peer is *demoted* for `probation` seconds: it is left
    out of this node's close groups (it holds and votes for nothing, and is never the one
    designated to push a copy), though it stays in the routing table and is probed with
    work now and then; one answer to a work request restores it at once. A peer demoted
    `bans` times without answering in between, and that never answered work of ours at all,
    is *banned* for `ban` seconds: removed from the routing table and not let back in (a
    peer that has worked before is only ever demoted: an honest neighbour behind a bad link
    must not lose its place in the routing table). Pure state, fed the time by the caller.

    "Without answering in between" needs a chance to answer: after a demotion, only work
    requests sent after it count towards the next one. The lapses of requests that were in
    flight together are judged together, and one outage makes them all lapse at once: when a
    partition heals (or a paused peer resumes), each request lost in it lapses within a few
    milliseconds, and each is judged by a ping or lookup answered after the heal. Counted one by one,
    a dozen such lapses demoted an honest peer three times in 4 ms and banned it, 10 ms
    before its first answer to work arrived (a restarted node, whose ledger is new, then kept
    its neighbour out of its routing table for two minutes: chaos seed 25 of `eventstore`).
    """

    __slots__ = ("strikes", "probation", "bans", "ban", "_heard", "_shirks", "_demoted", "_demoted_at",
                 "_demotions", "_banned", "_proven", "limit")

    def __init__(self, *, strikes: int = 4, probation: float = 20.0, bans: int = 3, ban: float = 120.0,
                 limit: int = 4096) -> None:
        if strikes < 1 or bans < 1:
            raise ValueError(f"strikes and bans must be at least 1, got {strikes} and {bans}")
        self.strikes = strikes
        self.probation = probation
        self.bans = bans
        self.ban = ban
        self.limit = limit  # peers remembered at most (a flood of names must not grow this)
        self._heard: dict[bytes, float] = {}  # peer -> when we sent the last free request it answered
        self._shirks: dict[bytes, int] = {}  # peer -> work requests it let lapse in a row
        self._demoted: dict[bytes, float] = {}  # peer -> demoted until
        self._demoted_at: dict[bytes, float] = {}  # peer -> when last demoted or banned (until it works)
        self._demotions: dict[bytes, int] = {}  # peer -> demotions in a row, no answer between
        self._banned: dict[bytes, float] = {}  # peer -> banned until
        self._proven: set[bytes] = set()  # peers that have answered work of ours at least once

    def heard(self, name: bytes, now: float) -> None:
        """The peer answered a free request of ours (a ping, a lookup) that we sent at `now`."""
        if name not in self._heard and len(self._heard) >= self.limit:
            self._forget_quiet()
        self._heard[name] = now

    def worked(self, name: bytes) -> None:
        """The peer answered a work request: whatever it owed is forgiven."""
        if name not in self._proven and len(self._proven) < self.limit:
            self._proven.add(name)
        self._shirks.pop(name, None)
        self._demoted.pop(name, None)
        self._demoted_at.pop(name, None)
        self._demotions.pop(name, None)
        # A ban is for peers that never work: one that answers work (it may have been banned
        # on lapses that were the network's doing) is let back at once.
        self._banned.pop(name, None)

    def proven(self, name: bytes) -> bool:
        """Has the peer ever answered work of ours? (Once the ledger is full it cannot tell,
        and says yes: a flood of names must not shut honest newcomers out.)"""
        return name in self._proven or len(self._proven) >= self.limit

    def heard_since(self, name: bytes, when: float) -> bool:
        """Has the peer answered a free request we sent at or after `when`?"""
        return self._heard.get(name, float("-inf")) >= when

    def lapsed(self, name: bytes, asked_at: float, now: float) -> str | None:
        """A work request sent at `asked_at` got no answer by `now`. Returns "demoted" or
        "banned" when that changes the peer's standing, else None."""
        if not self.heard_since(name, asked_at):
            return None  # no ping sent since we asked was answered: down, cut off or slow
        if asked_at < self._demoted_at.get(name, float("-inf")):
            return None  # asked before its last demotion: already judged, with its fellows
        count = self._shirks.get(name, 0) + 1
        if count < self.strikes:
            self._shirks[name] = count
            return None
        self._shirks.pop(name, None)
        demotions = self._demotions.get(name, 0) + 1
        if demotions >= self.bans and name not in self._proven:
            self._demotions.pop(name, None)
            self._demoted.pop(name, None)
            self._demoted_at[name] = now  # the lapses still to come of this burst are judged
            self._banned[name] = now + self.ban
            return "banned"
        self._demotions[name] = demotions
        self._demoted[name] = now + self.probation
        self._demoted_at[name] = now
        return "demoted"

    def counts(self, name: bytes, now: float) -> bool:
        """May the peer hold and vote for items in this node's close groups?"""
        until = self._demoted.get(name)
        return until is None or until <= now

    def any_demoted(self) -> bool:
        """Is anyone demoted, or was lately (`demoted` tells who, now)? Usually not."""
        return bool(self._demoted)

    def demoted(self, now: float) -> set[bytes]:
        """The peers left out of close groups now (usually none)."""
        if not self._demoted:
            return set()
        for name in [n for n, until in self._demoted.items() if until <= now]:
            del self._demoted[name]
        return set(self._demoted)

    def banned(self, name: bytes, now: float) -> bool:
        until = self._banned.get(name)
        if until is None:
            return False
        if until <= now:
            del self._banned[name]
            self._demoted_at.pop(name, None)
            return False
        return True

    def banned_names(self, now: float) -> set[bytes]:
        """The peers banned now."""
        return {n for n in list(self._banned) if self.banned(n, now)}

    def _forget_quiet(self) -> None:
        """Make room: forget the peers heard from longest ago that owe nothing."""
        owing = self._shirks.keys() | self._demoted.keys() | self._demotions.keys()
        quiet = sorted((t, n) for n, t in self._heard.items() if n not in owing)
        for _, name in quiet[: max(1, len(quiet) // 4)]:
            del self._heard[name]
