"""The node core: one SAFE vault as a sans-IO state machine.

`NodeCore` is fed messages and the current time and returns the messages to send. It owns
routing (Kademlia), liveness checks, the acceptor and proposer of every MD it helps keep
(`node.replication`), its IData chunks (`node.chunks`) and the anti-entropy that moves
data to the current close group under churn. It never touches a socket, a clock or the
global random module: a `NodeHost` drives it over TCP in a real process, and the
deterministic simulator drives the same object over an in-memory network under a virtual
clock.

    core = NodeCore(keys, store, NodeConfig(), rng=random.Random(seed), address="127.0.0.1:7000")
    out = core.start(now, bootstrap=["127.0.0.1:7001"])
    out = core.handle(now, Peer(...), msg)     # a message arrived
    out = core.tick(now)                       # timers due (call at core.next_deadline())
    # each item of `out` is a Send(to_name, to_address, msg)

Why one module of about 750 lines: it is the dispatch of every message kind and the node's
timers; the services it runs live in their own modules and see it only through
node/services.py.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import errors as E
from .config import NodeConfig
from .groups import CloseGroups
from .keys import Keypair
from .peer import Peer
from .proofs import ack_field
from .routing import Contact, Lookup, RoutingTable, Standing
from .store import Store
from .wire import PROTOCOL_VERSION, new_message, reply_to
from .xorname import XorName, closest

Log = Callable[..., None]


class Send(NamedTuple):
    """A message for the host to send (a named tuple: the core makes one per message)."""

    to: XorName | None
    address: str | None
    msg: dict[str, Any]



_ANY_PEER = XorName(bytes(32))  # a bootstrap contact's name is not known in advance

# What hostile input can raise while a handler reads it: each gets a typed error back and
# changes nothing. Anything else is a bug in this code, and the host logs it.
_BAD_INPUT = (KeyError, TypeError, ValueError, IndexError, OverflowError, UnicodeError, AttributeError)



@dataclass(slots=True)
class _Pending:
    to: XorName
    on_reply: Callable[[dict[str, Any] | None], None]
    kind: str
    sent: float = 0.0
    timer: int = 0  # its expiry timer, cancelled when the answer comes


# Requests any live peer answers at once and at no cost: answering them proves nothing about
# whether a peer does a node's work (see `Standing`). Every other node-to-node request is work.
_FREE = frozenset({"ping", "find_node"})
# Requests whose answer waits on other nodes' work (a client request forwarded to the MD's
# coordinator is answered when its consensus round ends): an answer still counts as work
# done, but a lapse is no evidence against the peer asked.
# (A chunk handed to its close group, `chunk_hand`, is answered once the group has stored it.)
_DELEGATED = frozenset({"md_request", "chunk_hand"})


@dataclass
class Metrics:
    msgs_in: Counter[str] = field(default_factory=Counter)
    msgs_out: Counter[str] = field(default_factory=Counter)
    client_requests: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def record_latency(self, kind: str, seconds: float) -> None:
        window = self.latencies.setdefault(kind, [])
        window.append(seconds)
        if len(window) > 2048:  # keep a sliding sample, enough for p50/p99
            del window[:1024]


class NodeCore:
    """One vault. See the module docstring for how it is driven."""

    def __init__(
        self,
        keys: Keypair,
        store: Store,
        config: NodeConfig | None = None,
        *,
        rng: random.Random,
        address: str,
        log: Log | None = None,
        wall_offset: float | None = None,
    ) -> None:
        from .accounts import AccountGuard
        from .chunks import ChunkKeeper
        from .replication import Replicator

        self.keys = keys
        self.name = keys.name
        self.store = store
        self.config = config or NodeConfig()
        self.rng = rng
        self.address = address
        self.log: Log = log or (lambda *a, **k: None)
        # Wall-clock time is `now + wall_offset` (the host knows the clock; the simulator sets a
        # fixed epoch). None: this core cannot tell the time of day, and request expiries
        # are not checked (unit tests that drive a core by hand).
        self.wall_offset = wall_offset
        self.network_id = self.config.network_id
        self.routing = RoutingTable(self.name, self.config.k, strikes=self.config.strikes)
        self.standing = Standing(strikes=self.config.shirk_strikes, probation=self.config.probation,
                                 bans=self.config.bans, ban=self.config.ban)
        self.metrics = Metrics()
        self.now = 0.0
        self.started_at = 0.0
        self.ready = False  # routing has bootstrapped; until then we do not coordinate
        self._out: list[Send] = []
        self._pending: dict[bytes, _Pending] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        # Timers cancelled before they are due (an answered rpc's expiry): skipped, and never
        # the deadline a host sleeps until, so an answered request costs no later wake-up.
        self._cancelled: set[int] = set()
        # When each node last sent us anything: a neighbour that spoke within the last ping
        # interval is alive and needs no ping (most of a quiet network's traffic was pings).
        self._heard_from: dict[bytes, float] = {}
        # Since when each of the 2R+2 nearest contacts has been near and answered every request
        # (see _check_liveness), and which of them share a close group of an item held here.
        self._steady: dict[bytes, float] = {}
        self._watched: frozenset[bytes] = frozenset()
        self._watched_stamp: tuple[int, int] = (-1, -1)
        self._watched_at = -math.inf
        self._near: tuple[XorName, ...] = ()  # the 2R+2 nearest contacts' names, and when
        self._near_stamp: tuple[int, int] = (-1, -1)  # routing last gained or lost one
        self._local: list[tuple[Peer, dict[str, Any]]] = []
        self._bootstrap: list[str] = []
        self._lookups_running = 0
        self._lost: dict[XorName, tuple[Contact, float]] = {}  # evicted contacts, to re-check
        self._recalled: dict[bytes, float] = {}  # when each was last knocked on
        self.membership_epoch = 0  # bumped whenever routing gains or loses a contact
        self._groups = CloseGroups(self.routing)  # see group()
        # The neighbourhood as the last self-lookup left it, and how many refresh ticks to
        # let pass before the next one (see _refresh_neighbours).
        self._neighbours: frozenset[XorName] = frozenset()
        self._neighbour_backoff = 1
        self._neighbour_skip = 0
        self.replicator = Replicator(self)
        self.chunks = ChunkKeeper(self)
        self.accounts = AccountGuard(self)
        self._handlers: dict[str, Callable[[Peer, dict[str, Any]], None]] = {
            "ping": self._on_ping,
            "find_node": self._on_find_node,
            "request": self._on_client_request,
            "read": self.replicator.on_read,
            "locate": self._on_locate,
        }
        self._handlers.update(self.replicator.handlers())
        self._handlers.update(self.chunks.handlers())

    # ================================================================ driving interface

    def start(self, now: float, bootstrap: list[str] = ()) -> list[Send]:  # type: ignore[assignment]
        self.now = self.started_at = now
        self._bootstrap = [a for a in bootstrap if a != self.address]
        if not self.network_id and not self._bootstrap:
            self.network_id = bytes(self.name)  # the first node names the network
        self.replicator.load()
        self._join()
        self._every(self.config.ping_interval, self._check_liveness)
        self._every(self.config.sync_interval, self._sync)
        self._every(self.config.refresh_interval / 10, self._refresh_buckets)
        self._every(self.config.neighbour_refresh, self._refresh_neighbours)
        return self.take_output()

    def handle(self, now: float, peer: Peer, msg: dict[str, Any]) -> list[Send]:
        if now > self.now:
            self.now = now
        self._dispatch(peer, msg)
        if self._local:
            self._drain_local()
        return self.take_output()

    def tick(self, now: float) -> list[Send]:
        if now > self.now:
            self.now = now
        timers, cancelled = self._timers, self._cancelled
        while timers and timers[0][0] <= now:
            _, seq, fn = heapq.heappop(timers)
            if seq in cancelled:
                cancelled.discard(seq)
                continue
            fn()
            if self._local:
                self._drain_local()
        return self.take_output()

    def next_deadline(self) -> float:
        while self._timers and self._timers[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._timers)[1])
        return self._timers[0][0] if self._timers else float("inf")

    # ================================================================ plumbing

    def take_output(self) -> list[Send]:
        out, self._out = self._out, []
        return out

    def send(self, to: XorName | None, address: str | None, msg: dict[str, Any]) -> None:
        self.metrics.msgs_out[msg["k"]] += 1
        if to == self.name:
            self._local.append((Peer(self.name, "node", self.address), msg))
        else:
            self._out.append(Send(to, address, msg))

    def reply(self, peer: Peer, request: dict[str, Any], kind: str, **fields: Any) -> None:
        self.send(peer.name, peer.address if peer.role == "node" else None, reply_to(request, kind, **fields))

    def reply_error(self, peer: Peer, request: dict[str, Any], exc: E.SafeError) -> None:
        self.reply(peer, request, "error", err=exc.to_wire())

    def _drain_local(self) -> None:
        # Messages to ourselves are handled after the current handler returns, never
        # re-entrantly, so a handler sees a consistent state while it runs.
        while self._local:
            peer, msg = self._local.pop(0)
            self._dispatch(peer, msg)

    def _dispatch(self, peer: Peer, msg: dict[str, Any]) -> None:
        kind = msg.get("k")
        self.metrics.msgs_in[kind if type(kind) is str else str(kind)] += 1
        if peer.role == "node" and peer.name != self.name and peer.address:
            if self.standing.banned(peer.name, self.now) or not self.routing.seen(peer.name, peer.address, self.now):
                self._observe(Contact(peer.name, peer.address))
            self._heard_from[peer.name] = self.now
        if "re" in msg:
            re = msg["re"]
            pending = self._pending.pop(re, None) if isinstance(re, bytes) else None
            if pending is not None and pending.to in (peer.name, _ANY_PEER):
                self.cancel_timer(pending.timer)
                if pending.kind in _FREE:
                    # It answers us (as of when we asked: over a congested link, a pong can
                    # overtake nothing sent after it, so only pings sent after a work
                    # request show that the work request was ignored)...
                    self.standing.heard(peer.name, pending.sent)
                else:
                    self.standing.worked(peer.name)  # ...and does its work
                try:
                    pending.on_reply(msg)
                except _BAD_INPUT as exc:
                    # A malformed reply (a Byzantine peer's) is as good as no reply.
                    self.log("bad_reply", kind=kind, peer=peer.name.hex(), error=repr(exc)[:200])
            elif pending is not None:  # a reply from someone we did not ask: ignore it
                self._pending[re] = pending
            return
        handler = self._handlers.get(kind)  # type: ignore[arg-type]
        if handler is None:
            self.reply_error(peer, msg, E.ProtocolError(f"unknown message kind {kind!r}"))
            return
        if peer.role == "client" and kind not in ("request", "read", "find_node", "locate", "ping"):
            self.reply_error(peer, msg, E.InvalidOperation(f"{kind} is for nodes only"))
            return
        try:
            handler(peer, msg)
        except E.SafeError as exc:
            self.reply_error(peer, msg, exc)
        except _BAD_INPUT as exc:
            # Bad input gets a typed error and changes nothing; the node never crashes on it.
            self.log("bad_message", kind=kind, peer=peer.name.hex(), error=repr(exc)[:200])
            self.reply_error(peer, msg, E.ProtocolError(f"malformed {kind}: {exc!r:.120}"))

    def rpc(
        self,
        to: Contact | XorName,
        msg: dict[str, Any],
        on_reply: Callable[[dict[str, Any] | None], None],
        timeout: float | None = None,
    ) -> None:
        """Send `msg` and call `on_reply` with the answer, or with None on timeout."""
        address: str | None
        if isinstance(to, Contact):
            name, address = to.name, to.address
        else:
            name = to if type(to) is XorName else XorName(to)
            contact = self.routing.get(name) or (self._lost[name][0] if name in self._lost else None)
            address = contact.address if contact else None
        mid = msg["id"]
        pending = self._pending[mid] = _Pending(name, on_reply, msg["k"], self.now)

        def expire() -> None:
            pending = self._pending.pop(mid, None)
            if pending is not None:
                if pending.kind not in _FREE and pending.kind not in _DELEGATED and name != self.name:
                    self._lapsed(name, pending.sent)
                contact = self.routing.get(name)
                if name in self._steady:
                    self._steady[name] = self.now  # not steady: watch it closely again
                if name != self.name and self.routing.failed(name, self.now):
                    self.log("evicted", peer=name.hex())
                    if contact is not None:
                        self._lost[name] = (contact, self.now)
                    self.on_membership_change()
                pending.on_reply(None)

        pending.timer = self.at(self.now + (timeout or self.config.rpc_timeout), expire)
        self.send(name, address, msg)

    def at(self, when: float, fn: Callable[[], None]) -> int:
        """Call `fn` once the time is `when`; returns a handle for `cancel_timer`."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn))
        return self._timer_seq

    def cancel_timer(self, handle: int) -> None:
        """Forget a timer that has not fired yet (only such a handle may be given: one that
        fired would be remembered here for ever). 0 means no timer."""
        if handle:
            self._cancelled.add(handle)

    def _every(self, interval: float, fn: Callable[[], None]) -> None:
        # Jitter spreads periodic work of many nodes apart (and is drawn from the seeded rng).
        def run() -> None:
            fn()
            self.at(self.now + interval * (0.75 + 0.5 * self.rng.random()), run)

        self.at(self.now + interval * self.rng.random(), run)

    # ================================================================ routing and liveness

    def _observe(self, contact: Contact) -> None:
        if self.standing.banned(contact.name, self.now):
            return  # it answered pings and shirked work, again and again: not let back yet
        known = contact.name in self.routing
        to_check = self.routing.observe(contact, self.now)
        if to_check is not None:
            self._ping(to_check)
        if not known and contact.name in self.routing:
            self.on_membership_change()

    def on_membership_change(self) -> None:
        """Routing gained or lost a contact: close groups may have moved."""
        self.membership_epoch += 1
        if self._neighbour_skip and self._neighbourhood() != self._neighbours:
            self._neighbour_backoff, self._neighbour_skip = 1, 0  # look again at the next tick
        self.replicator.membership_changed()
        self.chunks.membership_changed()

    def group(self, name: bytes, count: int | None = None) -> list[XorName]:
        """The `count` (default R) nodes closest to `name` that this node knows, itself included,
        leaving out peers demoted for shirking work (`Standing`)."""
        count = count or self.config.replication
        demoted: set[bytes] | None = None
        if self.standing.any_demoted() and "trust_idle_members" not in self.config.breaks:
            demoted = self.standing.demoted(self.now) or None
        # Remembered until routing gains or loses a contact (every such change bumps the
        # epoch) or the demoted peers change: replication asks this several times per message.
        return self._groups.get(name, count, self.membership_epoch, demoted)

    # ================================================================ standing (Sybil members)

    def _lapsed(self, name: XorName, sent: float, probe: bool = True) -> None:
        """A work request to `name` went unanswered; it may have shirked (`Standing`).

        Whether it shirked depends on whether it answers pings sent after the work request.
        Liveness pings go to our own neighbours only, so a peer near an item but far from us
        (a Sybil placed next to the data) would never be asked and never judged: ask it now,
        and judge the lapse again when it answers."""
        if "trust_idle_members" in self.config.breaks:
            return
        if probe and not self.standing.heard_since(name, sent):
            contact = self.routing.get(name)
            if contact is not None:
                self.rpc(contact, new_message("ping", addr=self.address),
                         lambda reply: self._lapsed(name, sent, probe=False) if reply is not None else None)
            return
        change = self.standing.lapsed(name, sent, self.now)
        if change is None:
            return
        self.log("peer_" + change, peer=name.hex())
        if change == "banned":
            self._lost.pop(name, None)
            self._recalled.pop(name, None)
            self.routing.remove(name)
        self.on_membership_change()

    def proven(self, name: bytes) -> bool:
        return "trust_idle_members" in self.config.breaks or self.standing.proven(name)

    def give_work(self, name: bytes) -> None:
        """Send a peer the least work there is (an empty `chunk_has`): its answer, or its
        lapse, is what `Standing` judges it by."""
        contact = self.routing.get(name)
        if contact is not None:
            self.rpc(contact, new_message("chunk_has", names=[]), lambda reply: None)

    def _probe_demoted(self) -> None:
        """Give each demoted neighbour a little work now and then: one answer restores it."""
        for name in sorted(self.standing.demoted(self.now)):
            self.give_work(name)

    def recently_lost(self, name: bytes, count: int, within: float | None = None) -> list[XorName]:
        """The `count` contacts nearest `name` among those evicted lately (in the last `within`
        seconds, if given) and not back."""
        since = -math.inf if within is None else self.now - within
        return closest(name, [n for n, (_c, t) in self._lost.items() if t >= since and n not in self.routing], count)

    def knows_group(self, name: bytes) -> bool:
        """Can our routing view of `name`'s close group be taken as the truth? (`ChunkKeeper.knows_group`)"""
        return self.chunks.knows_group(name)

    def contact(self, name: XorName) -> Contact | None:
        if name == self.name:
            return Contact(self.name, self.address)
        return self.routing.get(name)

    def _ping(self, contact: Contact) -> None:
        self.rpc(contact, new_message("ping", addr=self.address), lambda reply: None)

    def _on_ping(self, peer: Peer, msg: dict[str, Any]) -> None:
        self.reply(peer, msg, "pong", addr=self.address)

    def _sync(self) -> None:
        if self.ready:
            self.replicator.sync()
            self.chunks.sync()

    def _check_liveness(self) -> None:
        """Ping the neighbours whose silence has lasted longer than they are allowed.

        Neighbours matter most: they share our close groups. Others are checked when used.
        Anything a neighbour sends is proof of life, and a ping's answer proves both sides
        alive, so mutual neighbours mostly share one ping. How long a neighbour may stay
        silent depends on what its death would cost (NodeConfig): `ping_interval` while it is
        new or has lately failed a request, `ping_steady` once it has been steady for
        `steady_after` seconds and shares a close group of an item we hold, `ping_idle` if it
        shares none. Once a ping goes unanswered, the pings come every `ping_interval` until
        it answers or has missed `strikes` of them. Checks come 0.75 to 1.25 ping intervals
        apart, so a neighbour that dies is evicted within its allowance + strikes x 1.25 ping
        intervals + rpc_timeout: 6.25 s if new or sharing our data (as before the allowances),
        15.25 s if not (defaults).
        """
        config = self.config
        now = self.now
        near = self._nearest()
        steady = self._steady
        if len(steady) != len(near) or any(c.name not in steady for c in near):
            self._steady = steady = {c.name: steady.get(c.name, now) for c in near}
        watched = self._watched_names(near)
        heard = self._heard_from
        for contact in near:
            name = contact.name
            if now - steady[name] < config.steady_after:
                allowance = config.ping_interval
            elif name in watched:
                allowance = config.ping_steady
            else:
                allowance = config.ping_idle
            if heard.get(name, -math.inf) < now - allowance:
                self._ping(contact)
        if len(heard) > 4 * len(near) + 64:  # keep it to the neighbourhood
            keep = now - max(config.ping_interval, config.ping_steady, config.ping_idle)
            self._heard_from = {n: t for n, t in heard.items() if t >= keep}
        self._recall_lost()
        self._probe_demoted()

    def _nearest(self) -> list[Contact]:
        """Our 2R+2 nearest contacts. Which they are changes only when routing gains or loses
        a contact (each bumps the epoch); their addresses are looked up afresh."""
        stamp = (self.membership_epoch, len(self.routing))
        if stamp != self._near_stamp:
            self._near_stamp = stamp
            self._near = tuple(c.name for c in self.routing.closest(self.name, 2 * self.config.replication + 2))
        get = self.routing.get
        return [c for c in map(get, self._near) if c is not None]

    def _watched_names(self, near: list[Contact]) -> frozenset[bytes]:
        """Which of `near` are in the close group of an MD or chunk this node holds.

        Looked at again when routing changed or the number of MDs held did, and at least every
        sync interval (chunks come and go without routing changing); it stops early once every
        neighbour is found, which in a small network is after a few items."""
        stamp = (self.membership_epoch, len(self.replicator.records))
        if stamp == self._watched_stamp and self.now - self._watched_at < self.config.sync_interval:
            return self._watched
        self._watched_stamp, self._watched_at = stamp, self.now
        wanted = {c.name for c in near}
        found: set[bytes] = set()
        items = (key[:32] for key in self.replicator.records)  # lazily: the search stops early
        for group_of in (items, self.store.chunk_names()):
            for item in group_of:
                found.update(m for m in self.group(item) if m in wanted)
                if len(found) == len(wanted):
                    break
            if len(found) == len(wanted):
                break
        self._watched = frozenset(found)
        return self._watched

    def _recall_lost(self) -> None:
        """Knock again, now and then, on contacts we evicted.

        After a partition heals, each side has evicted the other, and nothing would ever make
        them meet again until a bucket refresh an hour later. So evicted contacts are pinged
        a few at a time, for `lost_memory` seconds; one that answers is observed, which puts
        it back in the table (and its groups back together). Up to three a check among those
        evicted in the last `lost_fast` seconds or not knocked on for `lost_every`: most
        partitions heal within a minute, and a node that left for good (churn) would otherwise
        draw three pings a second from each of its old neighbours for an hour.
        """
        config, now = self.config, self.now
        for name, (_contact, since) in list(self._lost.items()):
            if name in self.routing or now - since > config.lost_memory:
                del self._lost[name]
                self._recalled.pop(name, None)
        if not self._lost:
            return
        due = sorted(name for name, (_contact, since) in self._lost.items()
                     if now - since < config.lost_fast or now - self._recalled.get(name, since) >= config.lost_every)
        for name in self.rng.sample(due, min(3, len(due))):
            self._recalled[name] = now
            self.rpc(self._lost[name][0], new_message("ping", addr=self.address), lambda reply: None)

    def _on_find_node(self, peer: Peer, msg: dict[str, Any]) -> None:
        target = XorName(msg["target"])
        count = min(int(msg.get("count", self.config.k)), 64)
        found = self.routing.closest(target, count, exclude={peer.name})
        contacts = [[bytes(c.name), c.address] for c in found]
        if self.ready or not contacts:
            contacts.append([bytes(self.name), self.address])
        self.reply(peer, msg, "nodes", contacts=contacts, net=self.network_id)

    def lookup(self, target: XorName, done: Callable[[list[Contact]], None], k: int | None = None) -> None:
        """An iterative Kademlia lookup of `target`'s closest nodes (the `k` nearest that
        answer; by default the routing table's k)."""
        seeds = self.routing.closest(target, self.config.k)
        lookup = Lookup(target, seeds, k=k or self.config.k, alpha=self.config.alpha, own=self.name)
        self._lookups_running += 1

        def ask(contacts: list[Contact]) -> None:
            for contact in contacts:
                self.rpc(contact, new_message("find_node", target=bytes(target)), on_answer(contact))
            if lookup.done:
                self._lookups_running -= 1
                done(lookup.result())

        def on_answer(contact: Contact) -> Callable[[dict[str, Any] | None], None]:
            def handle(reply: dict[str, Any] | None) -> None:
                if lookup.done:
                    return
                if reply is None or reply.get("k") != "nodes":
                    ask(lookup.on_failure(contact))
                    return
                ask(lookup.on_reply_wire(contact, reply.get("contacts", [])[:64]))

            return handle

        ask(lookup.start())

    def _join(self) -> None:
        """Introduce ourselves to the bootstrap contacts, then look up our own name."""
        if not self._bootstrap:
            self.ready = True
            return
        answered = {"n": 0, "left": len(self._bootstrap)}

        def after_bootstrap(reply: dict[str, Any] | None) -> None:
            answered["left"] -= 1
            if reply is not None:
                answered["n"] += 1
                net = reply.get("net")
                if not self.network_id and isinstance(net, bytes) and 0 < len(net) <= 64:
                    self.network_id = net
            if answered["left"] == 0:
                if answered["n"] == 0:
                    self.log("bootstrap_failed", contacts=self._bootstrap)
                    self.at(self.now + 1.0, self._join)
                    return
                self.lookup(self.name, lambda _found: self._joined())

        for address in self._bootstrap:
            msg = new_message("find_node", target=bytes(self.name))
            self._rpc_by_address(address, msg, after_bootstrap)

    def _joined(self) -> None:
        if not self.ready:
            self.ready = True
            self.log("joined", contacts=len(self.routing))
            self.on_membership_change()

    def _rpc_by_address(
        self, address: str, msg: dict[str, Any], on_reply: Callable[[dict[str, Any] | None], None]
    ) -> None:
        # A bootstrap contact's name is unknown until the transport's handshake tells it, so
        # its reply is matched by message id alone.
        mid = msg["id"]
        pending = self._pending[mid] = _Pending(_ANY_PEER, on_reply, msg["k"])

        def expire() -> None:
            pending = self._pending.pop(mid, None)
            if pending is not None:
                pending.on_reply(None)

        pending.timer = self.at(self.now + self.config.rpc_timeout, expire)
        self.metrics.msgs_out[msg["k"]] += 1
        self._out.append(Send(None, address, msg))

    def _refresh_neighbours(self) -> None:
        """Look up our own name now and then: the neighbourhood is where our close groups
        are, and a node that joined or came back while we could not hear it (a partition, a
        pause) is found this way even if it never contacts us itself.

        A lookup that leaves the neighbourhood as it was doubles the wait before the next
        one, up to `neighbour_backoff` times the interval; a change to the neighbourhood
        brings it back to the interval at once. In a settled network of 1,000 nodes these
        lookups were over half of all messages.
        """
        if not self.ready or self._lookups_running > 4:
            return
        if self._neighbour_skip:
            self._neighbour_skip -= 1
            return

        def done(_found: list[Contact]) -> None:
            now = self._neighbourhood()
            same = now == self._neighbours
            self._neighbours = now
            self._neighbour_backoff = min(2 * self._neighbour_backoff, self.config.neighbour_backoff) if same else 1
            self._neighbour_skip = self._neighbour_backoff - 1

        self.lookup(self.name, done)

    def _neighbourhood(self) -> frozenset[XorName]:
        return frozenset(c.name for c in self.routing.closest(self.name, 2 * self.config.replication + 2))

    def _refresh_buckets(self) -> None:
        if self._lookups_running > 4:
            return
        for index in self.routing.stale_buckets(self.now)[:3]:
            self.routing.touch_bucket(index, self.now)
            self.lookup(self.routing.random_name_in_bucket(index, self.rng), lambda _f: None)

    # ================================================================ client requests

    def _on_client_request(self, peer: Peer, msg: dict[str, Any]) -> None:
        from .requests import Request

        started = self.now
        request = Request.from_obj(msg["req"])
        self.replicator.verify(request)  # remembered: our own acceptor will not check it again
        self.check_fresh(request)
        kind = request.op.KIND
        self.metrics.client_requests[kind] += 1
        if not self.ready:
            raise E.NotReady("this node is still joining the network")
        if request.op.MUTATES and len(self.routing) + 1 < self.config.replication:
            # Fewer nodes than a close group: acknowledging would promise R copies it cannot
            # make. Say so rather than keep a write on fewer nodes than the contract says.
            raise E.NotReady(
                f"this node knows {len(self.routing) + 1} nodes; a close group needs {self.config.replication}")
        answered = {"done": False}
        deadline = {"timer": 0}

        def respond(result: Any = None, error: E.SafeError | None = None, ack_proof: Any = None) -> None:
            if answered["done"]:
                return
            answered["done"] = True
            self.cancel_timer(deadline["timer"])
            self.metrics.record_latency(kind, self.now - started)
            if error is not None:
                self.reply_error(peer, msg, error)
            else:
                self.reply(peer, msg, "response", result=result, **ack_field(ack_proof))

        if request.op.INTERNAL:
            raise E.InvalidOperation(f"{kind} is made by nodes, not clients")
        if "fake_ack" in self.config.lie and request.op.MUTATES and not request.op.IDATA:
            respond()  # a Byzantine member's "ok" to a write it drops (test-only lying mode)
            return

        def too_late() -> None:
            deadline["timer"] = 0  # fired: nothing to cancel
            respond(error=E.RequestTimeout("the close group did not answer in time"))

        def proceed(on_success: Callable[[], None] | None) -> None:
            def done(result: Any = None, error: E.SafeError | None = None, ack_proof: Any = None) -> None:
                if error is None and on_success is not None:
                    on_success()  # charge the account for a mutation that took effect
                respond(result, error, ack_proof)

            if request.op.IDATA:
                self.chunks.submit(request, done)
            else:
                self.replicator.submit(request, done)

        self.accounts.check(request, proceed, lambda error: respond(error=error))
        if not answered["done"]:  # most reads are answered at once and need no deadline
            deadline["timer"] = self.at(self.now + self.config.client_deadline, too_late)

    def check_fresh(self, request: Any) -> None:
        """A client's mutation must be signed for this network and not expired (nor expire
        implausibly far ahead), so that nobody can replay it elsewhere or much later."""
        if not request.op.MUTATES or request.op.INTERNAL:
            return
        if self.network_id and request.network != self.network_id:
            raise E.InvalidSignature("the request is not signed for this network")
        if self.wall_offset is None:
            return
        wall = self.now + self.wall_offset
        if request.expires == 0:
            raise E.InvalidSignature("the request is not signed with an expiry")
        if request.expires < wall - self.config.clock_skew:
            raise E.InvalidSignature("the request has expired")
        if request.expires > wall + self.config.max_request_ttl + self.config.clock_skew:
            raise E.InvalidSignature("the request's expiry is implausibly far ahead")

    def _on_locate(self, peer: Peer, msg: dict[str, Any]) -> None:
        name = XorName(msg["name"])
        self.reply(
            peer, msg, "located",
            close_group=[bytes(n) for n in self.group(name)],
            holds=self.chunks.holds(name) or self.replicator.holds(name),
        )

    # ================================================================ status

    def status(self) -> dict[str, Any]:
        stats = self.store.stats()
        lat = {}
        for kind, window in self.metrics.latencies.items():
            ordered = sorted(window)
            lat[kind] = {
                "n": len(ordered),
                "p50_ms": round(1000 * ordered[len(ordered) // 2], 3),
                "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            }
        return {
            "id": self.name.hex(),
            "address": self.address,
            "protocol": PROTOCOL_VERSION,
            "ready": self.ready,
            "contacts": len(self.routing),
            "chunks": stats.chunks,
            "mds": self.replicator.count(),
            "bytes": stats.bytes,
            "uptime": round(self.now - self.started_at, 3),
            "msgs_in": dict(self.metrics.msgs_in),
            "msgs_out": dict(self.metrics.msgs_out),
            "client_requests": dict(self.metrics.client_requests),
            "latency": lat,
        }
