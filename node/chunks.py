"""IData on a node: storing, serving and re-homing immutable chunks.

A chunk needs no consensus: its name is the hash of its bytes, so any holder's copy can be
checked by anyone, and storing it twice changes nothing. A put is acknowledged once a
majority of the chunk's close group holds it durably; a get is answered by any holder
whose bytes hash to the name. Anti-entropy pushes each chunk to the members of its current
close group that lack it, and a node that is no longer in a chunk's group lets it go once
a majority of the group holds it. A node that cannot trust its view of a chunk's group (far
from its own neighbourhood) looks the group up first, and hands a chunk that belongs
elsewhere to the group (`chunk_hand`, authorised by the client's signed put): while routing
settles, a put or a copy can otherwise sit on nodes that are not the group for good. Part of
the sans-IO node core (see `node.core`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack

from . import errors as E
from . import rules
from .data import ImmutableData
from .messages import CHUNK_PUT
from .proofs import majority
from .requests import GetIData, PutIData, Request, op_to_obj
from .routing import Contact
from .wire import new_message
from .xorname import XorName, closest, distance, sha3_256

if TYPE_CHECKING:
    from .peer import Peer
    from .services import NodeServices

Respond = Callable[..., None]
MAX_PUSHES_IN_FLIGHT = 16
# Read back and checked every sync round (~2 s): so many chunks, or so many bytes. A node
# with 10,000 small chunks checks each one every five minutes or so, not every round.
SCRUB_CHUNKS_PER_ROUND = 64
SCRUB_BYTES_PER_ROUND = 8 * 1024 * 1024


PAID = "chunkpaid"  # store namespace: the client's signed put each chunk was paid with

# A paid copy handed to the chunk's close group by a node outside it (see `ChunkKeeper._place`).
CHUNK_HAND = "chunk_hand"
MAX_HANDS = 2  # hand-offs a chunk may take on its way to its group (the first, and one more)
LOCATES_IN_FLIGHT = 2  # lookups the anti-entropy runs at once to check doubtful chunks' groups
# How long a lookup's word on a chunk's group stands (seconds): if it left us out of the group,
# a minute (then we look again, until a hand-off succeeds); if it put us in, ten (the group's
# members then keep it where it belongs, as they keep their own neighbourhood).
LOCATED_FOR = 60.0
LOCATED_MEMBER_FOR = 600.0
PLACED_FOR = 60.0  # how long a group we stored a chunk in is taken to still hold it


def paid_proof(request: Request) -> dict[str, Any]:
    """A signed put without its operation (the chunk itself travels beside it)."""
    return {k: v for k, v in request.to_obj().items() if k != "op"}



class ChunkKeeper:
    """The IData chunks one node keeps."""

    def __init__(self, core: NodeServices) -> None:
        self.core = core
        self._pushes: deque[tuple[XorName, XorName]] = deque()
        self._pushing = 0
        self._queued: set[tuple[XorName, XorName]] = set()
        self._last_group: dict[bytes, tuple[XorName, ...]] = {}
        self._left_at: dict[bytes, float] = {}
        self._sync_due = False
        self._rounds = 0
        self._confirmed: dict[bytes, set[XorName]] = {}
        self._epoch_seen = -1
        self._scrub_queue: list[bytes] = []
        # Placement while routing settles (see `_place` and `_locate`).
        self._region: tuple[int, int] = (-1, 0)  # (epoch, radius of our 2R+2 nearest contacts)
        self._located: dict[bytes, tuple[float, tuple[XorName, ...]]] = {}  # name -> (until, group found)
        self._locating: set[bytes] = set()
        self._locate_queue: deque[bytes] = deque()
        self._locates = 0
        self._handed: dict[bytes, float] = {}  # chunks handed to their group (when), to let go
        self._placed: dict[bytes, float] = {}  # chunks a majority of our group stored (when)

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], None]]:
        return {"chunk_put": self.on_put, "chunk_get": self.on_get, "chunk_has": self.on_has,
                CHUNK_HAND: self.on_hand}

    # ---------------------------------------------------------------- local store

    def _served(self, value: bytes) -> bytes:
        """The bytes we hand out; damaged on purpose in the test-only "corrupt" lying mode."""
        if "corrupt" in self.core.config.lie and value:
            return bytes([value[0] ^ 0xFF]) + value[1:]
        return value

    def _load(self, name: bytes) -> bytes | None:
        """Our copy of chunk `name`, only if its bytes hash to the name (a damaged copy is
        logged and quarantined by the store: never served)."""
        try:
            return self.core.store.get_chunk_addressed(name)
        except E.CorruptRecord as exc:
            self.core.log("corrupt_chunk", name=name.hex(), error=str(exc))
            return None

    def _keep(self, data: ImmutableData, paid: bytes | None) -> None:
        if not self.core.store.has_chunk(data.name):
            self.core.store.put_chunk(data.name, data.value)
        if paid is not None and self.core.store.get_record(PAID, data.name) is None:
            self.core.store.put_record(PAID, data.name, paid)
        self._left_at.pop(bytes(data.name), None)

    def _paid_by(self, name: bytes) -> dict[str, Any] | None:
        raw = self.core.store.get_record(PAID, name)
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def _check_paid(self, data: ImmutableData, proof: Any) -> bytes:
        """The client's signed put a copy was paid with, checked; its packed form to keep.
        A chunk is content-addressed, so a copy cannot be forged, only stored unpaid: every
        copy travels with the signature of the client who asked for it (node/proofs.py has
        the same idea for MDs)."""
        if "trust_any_peer" in self.core.config.breaks and proof is None:
            return b""
        if not isinstance(proof, dict):
            raise E.AccessDenied("a chunk_put must carry the client's signed put it was paid with")
        request = Request.from_obj({**proof, "op": op_to_obj(PutIData(data))})
        request.verify()
        if request.network and self.core.network_id and request.network != self.core.network_id:
            raise E.InvalidSignature("the put was signed for another network")
        return msgpack.packb(paid_proof(request), use_bin_type=True)

    def holds(self, name: bytes) -> bool:
        return self.core.store.contains_chunk(name)

    # ---------------------------------------------------------------- client requests

    def submit(self, request: Request, respond: Respond) -> None:
        op = request.op
        if isinstance(op, PutIData):
            self._put(op.data, request, respond)
        elif isinstance(op, GetIData):
            self._get(op, respond)
        else:
            raise E.InvalidOperation(f"{op.KIND} is not an IData operation")

    def _put(self, data: ImmutableData, request: Request, respond: Respond) -> None:
        rules.check_idata(data)
        if "ack_before_quorum" in self.core.config.breaks:
            respond(result=None)
        self._place(data, paid_proof(request), respond, MAX_HANDS)

    # ---------------------------------------------------------------- placement

    def knows_group(self, name: bytes) -> bool:
        """Can our routing view of `name`'s close group be taken as the truth?

        A node knows its own neighbourhood well: everyone within the distance of its 2R+2
        nearest contacts (its self-lookups find them, and a node that joins nearby contacts
        it). Every true member of the group lies within the distance of the farthest member
        we see, r, of the name, so within d(us, name) + r of us (XOR distances obey the
        triangle inequality; `farthest` below is a bound a little tighter). If that is inside
        our neighbourhood, we know every member. Far from us we know only some nodes of a
        region, not the nearest to each name: a node that took a put there and trusted its
        view stored the chunk on the wrong nodes (`sim scale --nodes 200 --duration 300
        --seed 1` before this check). A node that knows fewer than 2R+2 others is in a
        network small enough to know it whole."""
        core = self.core
        wanted = 2 * core.config.replication + 2
        if self._region[0] != core.membership_epoch:
            near = core.routing.closest(core.name, wanted)
            radius = distance(core.name, near[-1].name) if len(near) >= wanted else 1 << 257
            self._region = (core.membership_epoch, radius)
        group = core.group(name)
        ours, spread = distance(core.name, name), distance(name, group[-1])
        # d(us, m) = ours XOR d(name, m), and d(name, m) <= spread: bounded by the sum, and by
        # `ours` with every bit below spread's highest one set; whichever is lower.
        farthest = min(ours + spread, ours | ((1 << spread.bit_length()) - 1))
        return farthest <= self._region[1]

    def _view(self, name: bytes, found: Sequence[Contact] = ()) -> list[Contact]:
        """The chunk's close group by our own view, widened by the nodes a lookup found."""
        contacts = {c.name: c for c in found if c.name != self.core.name}
        for member in self.core.group(name):
            contact = self.core.contact(member)
            if contact is not None:
                contacts[member] = contact
        return [contacts[m] for m in closest(name, contacts, self.core.config.replication)]

    def _place(self, data: ImmutableData, proof: dict[str, Any] | None, respond: Respond, hands: int) -> None:
        """Get a paid chunk stored by a majority of its close group, then `respond`.

        Where we trust our view of the group (`knows_group`) we use it; otherwise an
        iterative lookup finds the group first. If we are in it, we store the chunk and send
        it to the other members (`chunk_put`, which members accept only from a node in their
        own view of the group). If we are not, we hand it to the nearest member
        (`chunk_hand`, up to `hands` more times in all), which does the same from its own
        view: the same second hop MD requests take (`Replicator.on_md_request`)."""
        name = data.name
        if "trust_any_peer" in self.core.config.breaks or self.knows_group(name):
            self._placed_in(data, proof, respond, hands, self._view(name))
            return

        def found(contacts: list[Contact]) -> None:
            view = self._view(name, contacts)
            self._remember(name, view)
            self._placed_in(data, proof, respond, hands, view)

        self.core.lookup(name, found, k=2 * self.core.config.replication)

    def _placed_in(self, data: ImmutableData, proof: dict[str, Any] | None, respond: Respond, hands: int,
                   group: list[Contact]) -> None:
        if any(c.name == self.core.name for c in group):
            self._store_in(data, proof, group, respond)
        elif hands <= 0:
            respond(error=E.NotReady("this node is not in the chunk's close group either"))
        else:
            self._hand(data, proof, group, respond, MAX_HANDS - hands)

    def _store_in(self, data: ImmutableData, proof: dict[str, Any] | None, group: list[Contact],
                  respond: Respond) -> None:
        """Store the chunk here and on the other members; answer once a majority has it."""
        need = majority(len(group))
        tally = {"ok": 0, "failed": 0}
        name = bytes(data.name)

        def count(ok: bool) -> None:
            tally["ok" if ok else "failed"] += 1
            if tally["ok"] == need:
                self._placed[name] = self.core.now
                respond(result=None)
            elif len(group) - tally["failed"] < need and tally["ok"] < need:
                respond(error=E.QuorumNotReached("too few of the chunk's close group stored it"))

        for member in group:
            if member.name == self.core.name:
                self._keep(data, msgpack.packb(proof, use_bin_type=True) if proof is not None else None)
                count(True)
            else:
                self.core.rpc(
                    member,
                    new_message(CHUNK_PUT, value=data.value, paid=proof),
                    lambda reply: count(reply is not None and reply.get("k") == "chunk_ok"),
                )

    def _hand(self, data: ImmutableData, proof: dict[str, Any] | None, group: list[Contact], respond: Respond,
              hop: int, tried: int = 0) -> None:
        """Hand the chunk to the members of its group, nearest first, until one has had it
        stored by a majority of the group."""
        members = [c for c in group if c.name != self.core.name]
        if tried >= len(members):
            respond(error=E.QuorumNotReached("no member of the chunk's close group took it"))
            return

        def answered(reply: dict[str, Any] | None) -> None:
            if reply is not None and reply.get("k") == "chunk_ok":
                respond(result=None)
            else:
                self._hand(data, proof, group, respond, hop, tried + 1)

        self.core.rpc(members[tried], new_message(CHUNK_HAND, value=data.value, paid=proof, hop=hop), answered,
                      timeout=self.core.config.client_deadline / (3 if hop == 0 else 6))

    def _get(self, op: GetIData, respond: Respond) -> None:
        value = self._load(op.chunk)
        if value is not None:
            respond(result=self._served(value))
            return
        holders = [m for m in self.core.group(op.chunk) if m != self.core.name]
        missing = {"n": 0}

        def try_next() -> None:
            if not holders:
                if missing["n"] >= majority(len(self.core.group(op.chunk))) - 1:
                    respond(error=E.NoSuchData(f"no IData {op.chunk.hex()}"))
                else:
                    respond(error=E.QuorumNotReached("no holder of the chunk answered"))
                return
            member = holders.pop(0)
            self.core.rpc(member, new_message("chunk_get", name=bytes(op.chunk)), on_reply)

        def on_reply(reply: dict[str, Any] | None) -> None:
            if reply is not None and reply.get("k") == "chunk":
                raw = reply.get("value")
                if isinstance(raw, bytes) and sha3_256(raw) == op.chunk:
                    respond(result=raw)
                    return
            elif reply is not None and reply.get("k") == "error":
                missing["n"] += 1
            try_next()

        try_next()

    # ---------------------------------------------------------------- node messages

    def on_put(self, peer: Peer, msg: dict[str, Any]) -> None:
        value = msg["value"]
        if not isinstance(value, bytes):
            raise E.ProtocolError("chunk_put carries bytes")
        data = ImmutableData(value)
        rules.check_idata(data)
        if not self.may_hold(peer, data.name):
            # Only a node of the chunk's group (as we see it) may hand us a copy: anyone else
            # would store data that no client paid for.
            raise E.AccessDenied("chunk_put from a node outside the chunk's close group")
        paid = self._check_paid(data, msg.get("paid"))
        self._keep(data, paid or None)
        self.core.reply(peer, msg, "chunk_ok", name=bytes(data.name))

    def on_hand(self, peer: Peer, msg: dict[str, Any]) -> None:
        """A node outside a chunk's close group hands us a paid copy: a client's put that
        reached it, or a copy it holds and has found does not belong with it.

        What authorises the store is the client's signed put the copy travels with (checked
        here as for any copy), not the sender: so the sender need not be in our view of the
        group. We store only if *we* are in it (after a lookup, where we doubt our view);
        otherwise we hand it on once more, or refuse. The members we then send it to see a
        `chunk_put` from a member, as for any put."""
        value = msg["value"]
        hop = msg.get("hop")
        if not isinstance(value, bytes) or type(hop) is not int or not 0 <= hop < MAX_HANDS:
            raise E.ProtocolError("chunk_hand carries bytes and a hop count of 0 or 1")
        data = ImmutableData(value)
        rules.check_idata(data)
        if not self.core.ready:
            raise E.NotReady("this node is still joining the network")
        paid = self._check_paid(data, msg.get("paid"))
        proof = msgpack.unpackb(paid, raw=False) if paid else None

        def respond(result: Any = None, error: E.SafeError | None = None) -> None:
            if error is not None:
                self.core.reply_error(peer, msg, error)
            else:
                self.core.reply(peer, msg, "chunk_ok", name=bytes(data.name))

        placed = self._placed.get(bytes(data.name))
        if placed is not None and self.core.now - placed < PLACED_FOR and self.holds(data.name):
            respond()  # stored by a majority of the group a moment ago: no need to send it again
            return
        self._place(data, proof, respond, MAX_HANDS - 1 - hop)

    def may_hold(self, peer: Peer, name: bytes) -> bool:
        if peer.name == self.core.name or "trust_any_peer" in self.core.config.breaks:
            return True
        if self.core.name not in self.core.group(name, 2 * self.core.config.replication):
            return False  # not ours to keep either
        # The group as we see it, and the next two: a holder that has just left the group
        # still hands its copies to the new members.
        return peer.name in self.core.group(name, self.core.config.replication + 2)

    def on_get(self, peer: Peer, msg: dict[str, Any]) -> None:
        value = self._load(XorName(msg["name"]))
        if value is None:
            raise E.NoSuchData("not held here")
        self.core.reply(peer, msg, "chunk", value=self._served(value))

    def on_has(self, peer: Peer, msg: dict[str, Any]) -> None:
        names = msg["names"]
        if not isinstance(names, list):
            raise E.ProtocolError("chunk_has carries a list of names")
        have = [n for n in names[:5000] if isinstance(n, bytes) and len(n) == 32 and self.core.store.contains_chunk(n)]
        self.core.reply(peer, msg, "chunk_have", have=have)

    # ---------------------------------------------------------------- anti-entropy

    def membership_changed(self) -> None:
        if not self._sync_due:
            self._sync_due = True

            def soon() -> None:
                self._sync_due = False
                if self.core.ready:
                    self.sync(changed_only=True)

            self.core.at(self.core.now + 0.2, soon)

    def sync(self, changed_only: bool = False) -> None:
        """Ask the chunks' group members what they lack, and push it to them.

        Cheap when nothing moved: between full rounds (every fifth), chunks are looked at only
        if routing changed since the last look, and then only those whose group changed.
        """
        if "no_anti_entropy" in self.core.config.breaks:
            return
        if not changed_only:
            self._scrub()  # our own disk: even a node that withholds its help keeps it honest
        if "withhold" in self.core.config.lie:
            return
        self._rounds += 1
        full = not changed_only and self._rounds % 5 == 0
        if not full and self._epoch_seen == self.core.membership_epoch:
            return
        self._epoch_seen = self.core.membership_epoch
        me = self.core.name
        if full:
            self._forget_placements()
        asks: dict[XorName, list[bytes]] = {}
        for name in self.core.store.chunk_names():
            group = tuple(self.core.group(name))
            if not full and self._last_group.get(name) == group:
                continue
            self._last_group[name] = group
            if name in self._handed:
                continue  # on its way out: its group has it (see _forget_placements)
            if not self.knows_group(name):
                self._locate(name)
            for member in group:
                if member != me:
                    asks.setdefault(member, []).append(name)
            if me not in group:
                self._left_at.setdefault(name, self.core.now)
        for member, names in asks.items():
            for start in range(0, len(names), 2000):
                part = names[start:start + 2000]
                self.core.rpc(
                    member,
                    new_message("chunk_has", names=part),
                    partial(self._on_have, member, part, full=full),
                )

    def _locate(self, name: bytes) -> None:
        """Check by lookup the group of a chunk we hold but doubt our view of (`knows_group`).

        A copy stored while routing settled can sit on nodes that are not its group, and
        that never learn of the nearer nodes (a routing table holds only some of the nodes
        far from its owner), so anti-entropy by their views would keep it there for good."""
        located = self._located.get(name)
        if name in self._locating or (located is not None and self.core.now < located[0]):
            return
        self._locating.add(name)
        self._locate_queue.append(name)
        self._pump_locates()

    def _pump_locates(self) -> None:
        while self._locate_queue and self._locates < LOCATES_IN_FLIGHT:
            name = self._locate_queue.popleft()
            self._locates += 1
            self.core.lookup(XorName(name), partial(self._on_located, name), k=2 * self.core.config.replication)

    def _on_located(self, name: bytes, found: list[Contact]) -> None:
        self._locates -= 1
        self._locating.discard(name)
        view = self._view(name, found)
        self._remember(name, view)
        value = self._load(name) if self.holds(name) else None
        paid = self._paid_by(name)
        if value is not None and (paid is not None or "trust_any_peer" in self.core.config.breaks):
            data = ImmutableData(value)
            if any(c.name == self.core.name for c in view):
                # We belong, and the lookup may have shown us members we did not know: they
                # hear from a member, which they accept, and already holding it costs nothing.
                known = set(self.core.group(name))
                for contact in view:
                    if contact.name not in known:
                        self.core.rpc(contact, new_message(CHUNK_PUT, value=value, paid=paid), lambda _r: None)
            else:
                # Not ours: hand it to the group, which stores it as it would a put (the
                # client's signed put authorises it), then let our copy go.
                self._hand(data, paid, view, partial(self._handed_over, name), 0)
        self._pump_locates()

    def _remember(self, name: bytes, view: list[Contact]) -> None:
        names = tuple(c.name for c in view)
        until = self.core.now + (LOCATED_MEMBER_FOR if self.core.name in names else LOCATED_FOR)
        self._located[bytes(name)] = (until, names)

    def _handed_over(self, name: bytes, result: Any = None, error: E.SafeError | None = None) -> None:
        if error is None:
            self._handed.setdefault(name, self.core.now)
            self.core.log("chunk_rehomed", name=name.hex())

    def _forget_placements(self) -> None:
        """Drop what lookups and hand-offs taught us once it is stale, and let copies go
        that a majority of their group has held for the grace period."""
        now = self.core.now
        for name in [n for n, (until, _) in self._located.items() if now >= until]:
            del self._located[name]
        for name in [n for n, when in self._placed.items() if now - when >= PLACED_FOR]:
            del self._placed[name]
        for name, since in list(self._handed.items()):
            if now - since < self.core.config.grace:
                continue
            del self._handed[name]
            out = self.core.name not in self.core.group(name) or not self.knows_group(name)
            if out and not self._displaced_by_unproven(name):
                self.core.store.delete_chunk(name)
                for other in (self._left_at, self._last_group, self._confirmed):
                    other.pop(name, None)
                self.core.log("chunk_released", name=name.hex())

    def _scrub(self) -> None:
        """Read a few chunks back each round, so that a copy that rotted on disk is found
        (and quarantined: we then no longer claim it, and the group sends it again) even if
        nobody asks for it. "Do you hold it?" is answered from the index alone."""
        budget = SCRUB_BYTES_PER_ROUND
        if not self._scrub_queue:
            self._scrub_queue = sorted(self.core.store.chunk_names(), reverse=True)
        for _ in range(min(SCRUB_CHUNKS_PER_ROUND, len(self._scrub_queue))):
            value = self._load(self._scrub_queue.pop())
            budget -= len(value) if value is not None else 0
            if budget <= 0:
                break

    def _on_have(self, member: XorName, asked: list[bytes], reply: dict[str, Any] | None, *,
                 full: bool) -> None:
        if reply is None or reply.get("k") != "chunk_have":
            return
        have = {n for n in reply.get("have", []) if isinstance(n, bytes)}
        for name in asked:
            if name in self._handed:
                continue
            if name not in have:
                if full or self._pusher(name, member) == self.core.name:
                    self._queue_push(XorName(name), member)
            elif name in self._left_at:
                self._maybe_release(name, member)
        self._pump()

    def _pusher(self, name: bytes, lacking: XorName) -> XorName | None:
        """Who sends a chunk to a member that lacks it, right after routing changed: the
        closest other member of its group (or we, if we are leaving it). Everyone else waits
        for the next full round, so a new member gets one copy, not one from each holder."""
        group = [m for m in self.core.group(name) if m != lacking]
        if self.core.name not in group:
            return self.core.name
        return group[0] if group else None

    def _maybe_release(self, name: bytes, holder: XorName) -> None:
        """Drop a chunk we no longer should hold once a majority of its group has it."""
        group = self.core.group(name)
        if self.core.name in group or self._displaced_by_unproven(name):
            self._left_at.pop(name, None)
            self._confirmed.pop(name, None)
            return
        confirmed = self._confirmed.setdefault(name, set())
        confirmed.add(holder)
        confirmed &= set(group)
        if self.core.now - self._left_at[name] < self.core.config.grace:
            return
        if len(confirmed) >= majority(len(group)):
            self.core.store.delete_chunk(name)
            for table in (self._left_at, self._last_group, self._confirmed):
                table.pop(name, None)
            self.core.log("chunk_released", name=name.hex())

    def _displaced_by_unproven(self, name: bytes) -> bool:
        """Are we out of the chunk's group only because of peers that never did work of ours?

        A Sybil that answers pings and lookups but no work sits in our view of a group (and in
        the lookups that locate it) until enough of our work requests to it lapse (rule 10),
        and nothing makes us send it any: a node that is not in the group sends its members
        no work. Meanwhile it pushes us out of the group, and we would let our copy go, one
        honest copy fewer for as long as it stays (byzantine seed 22: a member handed a chunk
        on and dropped it because a `stranger` stood in the located group, and lacked it at
        the end). So we keep the copy while the peers ahead of us have never answered our
        work. Our anti-entropy rounds ask every member of our view for its chunks (work): an
        honest newcomer answers and is trusted from then on, a Sybil's lapses get it demoted
        and out of the group, and either way the copy then goes as it would have."""
        if "trust_idle_members" in self.core.config.breaks:
            return False
        core, r = self.core, self.core.config.replication
        me, standing, now = core.name, core.standing, core.now
        candidates = set(core.group(name, 2 * r))
        located = self._located.get(bytes(name))
        if located is not None:
            candidates.update(located[1])
        demoted = standing.demoted(now) if standing.any_demoted() else set()
        ranked = [m for m in closest(name, candidates, len(candidates))
                  if m not in demoted and not standing.banned(m, now)]
        trusted = [m for m in ranked if m == me or standing.proven(m)]
        return me in trusted[:r]

    def _queue_push(self, name: XorName, member: XorName) -> None:
        if (name, member) not in self._queued:
            self._queued.add((name, member))
            self._pushes.append((name, member))

    def _pump(self) -> None:
        while self._pushes and self._pushing < MAX_PUSHES_IN_FLIGHT:
            name, member = self._pushes.popleft()
            self._queued.discard((name, member))
            value = self._load(name)
            if value is None:
                continue
            self._pushing += 1

            def done(_reply: dict[str, Any] | None) -> None:
                self._pushing -= 1
                self._pump()

            paid = self._paid_by(name)
            if paid is None and "trust_any_peer" not in self.core.config.breaks:
                self._pushing -= 1
                self.core.log("unpaid_chunk", name=name.hex())  # nobody would take it from us
                continue
            self.core.rpc(member, new_message(CHUNK_PUT, value=value, paid=paid), done)
