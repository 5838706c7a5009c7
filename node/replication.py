"""MD replication: each MD is a CASPaxos register kept by its close group.

This module is the acceptor and the proposer of every MD a node helps keep, plus the
anti-entropy that moves MDs to their current close group under churn. It is part of the
sans-IO node core: it reads and writes the store it is given and sends messages through
`NodeCore.rpc`; time comes from `core.now`.

A client's mutation reaches any node, usually the closest member of the group. That node
proposes: prepare (learn the highest accepted value from a majority), apply the request
with the rules engine, accept (write the result to a majority, durably). Requests that
arrive for the same MD while a round runs are batched into the next round. A successful
accept also promises the proposer's next ballot, so the next round skips the prepare.
docs/replication.md has the protocol, the membership-change rule and the proof sketch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from . import errors as E
from .acceptor import Acceptor
from .data import Value
from .errors import error_from_wire
from .mdstore import RecordStore
from .messages import (
    ACCEPT,
    ACCEPTED,
    COMMIT,
    MAX_COMMITS,
    MAX_ITEMS,
    MD_REQUEST,
    PREPARE,
    READ_REPLY,
    SYNC,
    SYNC_DIFF,
    SyncItem,
)
from .paxos import AcceptorRecord, Ballot, Register, item_key
from .proofs import ack_field
from .proposer import Proposal, Respond
from .requests import MDataOp, Request, read_mdata
from .routing import Contact
from .rules import RECENT_REQUESTS, MDataState
from .wire import new_message
from .xorname import XorName, closest

if TYPE_CHECKING:
    from .peer import Peer
    from .services import NodeServices

Reply = Callable[[dict[str, Any] | None], None]

# How long a commit with no accept to the same member waits for one to ride on.
COMMIT_LINGER = 0.25

# How long a member waits for an MD's coordinator to move it to its current close group
# before it runs the move itself (a few of the coordinator's sync rounds).
MOVE_PATIENCE = 15.0

# How long an MD's close group found by a lookup (`Replicator._located_group`) is taken as is,
# at most: it is forgotten sooner, as soon as our routing gains or loses a contact.
LOCATED_FOR = 30.0


class Replicator(Acceptor):
    """The MDs one node keeps: acceptor records, proposals, anti-entropy."""

    def __init__(self, core: NodeServices) -> None:
        self.core = core
        self.disk = RecordStore(core.store)
        self.records: dict[bytes, AcceptorRecord] = {}
        self.proposals: dict[bytes, Proposal] = {}
        self.queued: dict[bytes, list[tuple[Request, Respond]]] = {}
        self.fast: dict[bytes, tuple[Ballot, Register]] = {}
        self.counter = 0
        self.left_at: dict[bytes, float] = {}
        self.accepted_at: dict[bytes, tuple[bytes, float]] = {}  # see Acceptor.descends
        self.settling: set[bytes] = set()
        self.quarantined: set[bytes] = set()
        self._sync_due = False
        self._sync_rounds = 0
        self._last_group: dict[bytes, tuple[XorName, ...]] = {}
        self._first_seen: dict[bytes, AcceptorRecord] = {}  # only for the "stale" lying mode
        self._epoch_seen = -1
        self._unsettled = False
        self._move_waits: dict[bytes, float] = {}  # MD -> since when we wait for its coordinator to move it
        self._catch_up: list[bytes] = []
        # Proofs of the values we hold (kept in memory: after a restart the first round on an
        # MD gathers them again). certs: votes of a majority of the group for a value we know
        # was chosen; steps: how our value was derived from the one before it.
        self.certs: dict[bytes, tuple[bytes, list[Any]]] = {}
        self.steps: dict[bytes, list[Any]] = {}
        self.chains: dict[bytes, tuple[bytes | Register, list[Any], list[Any]]] = {}  # see Acceptor._extend_chain
        self.floors: dict[bytes, int] = {}  # the highest count of rounds of a certificate we checked
        self.floor_values: dict[bytes, bytes] = {}  # ... and the digest of the value certified at it
        # Accept items and commits waiting for the end of the batch the host is handling, per
        # member: see `flush`.
        self._accepts: dict[XorName, list[tuple[list[Any], Reply]]] = {}
        self._commits: dict[XorName, list[list[Any]]] = {}
        self._flush_due = False
        self._linger: dict[XorName, list[list[Any]]] = {}  # commits waiting for an accept to ride on
        self._linger_due = False
        self.verified: set[bytes] = set()  # client signatures this node checked (Acceptor.verify)
        # MD groups found by lookup where we doubt our view (see `_route`): name -> (when, group).
        self._located: dict[bytes, tuple[float, tuple[Contact, ...]]] = {}
        self._located_epoch = -1
        self._locating: dict[bytes, list[Callable[[tuple[Contact, ...]], None]]] = {}

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], None]]:
        return {PREPARE: self.on_prepare, ACCEPT: self.on_accept, SYNC: self.on_sync,
                MD_REQUEST: self.on_md_request, COMMIT: self.on_commit}

    # ---------------------------------------------------------------- outbox

    def queue_accept(self, target: XorName, item: list[Any], on_reply: Reply) -> None:
        """Send an accept item to `target` when this batch's output leaves (`flush`); its
        answer (or None) goes to `on_reply` as an `accepted` reply of that one item."""
        if target == self.core.name:  # our own acceptor: no wire, nothing to merge
            self.core.rpc(target, new_message(ACCEPT, items=[item]), on_reply)
        else:
            self._flush_soon()
            self._accepts.setdefault(target, []).append((item, on_reply))

    def queue_commit(self, target: XorName, item: list[Any]) -> None:
        self._flush_soon()
        self._commits.setdefault(target, []).append(item)

    def _flush_soon(self) -> None:
        # A timer due now: the host (and the simulator) run the timers that are due right
        # after handling a batch of messages, in the same turn, so nothing waits for it.
        if not self._flush_due:
            self._flush_due = True
            self.core.at(self.core.now, self.flush)

    def flush(self) -> None:
        """One message per member for everything replication has for it after a batch: the
        accepts of all rounds started meanwhile (of any MDs), with the commits of rounds
        that ended riding along (a commit for round n of an MD then travels in the frame of
        round n+1's accept, which carries the same certificate). What each acceptor is told,
        and in which order, is as if every item had been a message of its own: only the
        envelopes are fewer, and envelopes are most of a message's cost on the wire. Runs as
        a timer due at once (`_flush_soon`): the host runs due timers after each batch of
        messages it hands the core, so this is the end of the batch."""
        self._flush_due = False
        accepts, commits = self._accepts, self._commits
        if not accepts and not commits:
            return
        self._accepts, self._commits = {}, {}
        # A commit with no accept to ride on waits COMMIT_LINGER for one (under steady load
        # the same members get the next round's accepts within milliseconds) and then goes
        # on its own: every member still hears every commit, a little later at most.
        lingering = {t: items for t, items in commits.items() if t not in accepts}
        for target, items in lingering.items():
            self._linger.setdefault(target, []).extend(items)
            del commits[target]
        if lingering and not self._linger_due:
            self._linger_due = True
            self.core.at(self.core.now + COMMIT_LINGER, self._commit_lingering)
        for target in accepts:
            if target in self._linger:  # its own lingering commits ride now, before the new ones
                commits[target] = self._linger.pop(target) + commits.get(target, [])
        for target in list(dict.fromkeys([*commits, *accepts])):
            riding = commits.get(target, [])
            pending = accepts.get(target, [])
            for start in range(0, len(pending), MAX_ITEMS):
                chunk = pending[start:start + MAX_ITEMS]
                fields: dict[str, Any] = {"items": [item for item, _ in chunk]}
                if riding:
                    fields["commits"], riding = riding[:MAX_COMMITS], riding[MAX_COMMITS:]
                self.core.rpc(target, new_message(ACCEPT, **fields), partial(_demux, [cb for _, cb in chunk]))
            self._send_commits(target, riding)

    def _commit_lingering(self) -> None:
        """Commits that found no accept to ride on within COMMIT_LINGER go on their own."""
        self._linger_due = False
        for target, items in self._linger.items():
            self._send_commits(target, items)
        self._linger = {}

    def _send_commits(self, target: XorName, items: list[list[Any]]) -> None:
        """Commits with no accept to ride on, in messages of their own."""
        contact = self.core.contact(target)
        for start in range(0, len(items), MAX_COMMITS):
            self.core.send(target, contact.address if contact else None,
                           new_message(COMMIT, items=items[start:start + MAX_COMMITS]))

    # ---------------------------------------------------------------- records

    def load(self) -> None:
        """Read every record this node's disk holds (at start, and after a restart)."""
        self.records, bad = self.disk.load()
        self.quarantined |= bad
        for key in bad:
            self.core.log("corrupt_record", key=key.hex())
        for record in self.records.values():
            self.see(record.promised)
        # Back from a stop: what we hold may be behind. Each such MD gets a repair round once
        # we have joined, which reads the newest value from a majority and writes it to all.
        self._catch_up = [k for k, r in self.records.items() if r.value is not None]

    def write(self, key: bytes, record: AcceptorRecord) -> None:
        self.disk.write(key, self.records.get(key), record)
        self.records[key] = record

    def forget_hint(self, key: bytes) -> None:
        """Our copy may be stale although its digest looked current; stop trusting it."""
        self.fast.pop(key, None)

    def holds(self, name: bytes) -> bool:
        return any(k[:32] == name and r.value is not None for k, r in self.records.items())

    def count(self) -> int:
        return sum(1 for r in self.records.values() if r.value is not None and r.value.state.md is not None)

    def submit(self, request: Request, respond: Respond, proof: Request | None = None) -> None:
        """Run `request` on its MD: here if we are in the MD's close group, else through the
        closest member (only members may propose; node/core.py's account checks and clients
        with a stale view of the group reach other nodes). `proof`: the client's signed
        request an internal charge is for."""
        op = request.op
        assert isinstance(op, MDataOp)
        if not self.core.ready or "trust_any_peer" in self.core.config.breaks:
            self._enqueue(item_key(op.address), op.address.name, [(request, respond)], "client")
            return
        self._route(request, respond, proof, 0)

    def _route(self, request: Request, respond: Respond, proof: Request | None, next_hop: int | None) -> None:
        """Propose if we are in the MD's close group, else pass the request to a member (with
        hop count `next_hop`; None: we may not pass it on, and refuse).

        Far from our own neighbourhood our view of a group may be made of the nearest nodes we
        happen to know, not the nearest there are (`NodeServices.knows_group`): a node that
        counted itself in on such a view proposed on a group of nodes that never held the MD
        and answered "no such MD" for one that exists (`sim scale --nodes 200 --duration 300
        --seed 5`, before this check). Where we doubt our view, a lookup of the name decides,
        as for chunks (`ChunkKeeper._place`)."""
        op = request.op
        assert isinstance(op, MDataOp)
        name = op.address.name
        if self.core.name not in self.core.group(name):
            self._pass_on(request, respond, proof, next_hop, None)
        elif self.core.knows_group(name) or "trust_any_peer" in self.core.config.breaks:
            self._enqueue(item_key(op.address), name, [(request, respond)], "client")
        else:
            self._located_group(name, partial(self._route_by, request, respond, proof, next_hop))

    def _route_by(self, request: Request, respond: Respond, proof: Request | None, next_hop: int | None,
                  group: tuple[Contact, ...]) -> None:
        """`_route` once a lookup has shown us the MD's group. We propose only if we are in it
        and our routing view agrees (the proposer and the acceptors work from routing views;
        a member we found but routing has no room for would be left out of the round)."""
        op = request.op
        assert isinstance(op, MDataOp)
        names = {c.name for c in group}
        if self.core.name in names and names == set(self.core.group(op.address.name)):
            self._enqueue(item_key(op.address), op.address.name, [(request, respond)], "client")
        else:
            self._pass_on(request, respond, proof, next_hop, [c for c in group if c.name != self.core.name])

    def _pass_on(self, request: Request, respond: Respond, proof: Request | None, next_hop: int | None,
                 group: list[Contact] | None) -> None:
        if next_hop is None:
            respond(error=E.NotReady("this node is not in that MD's close group either"))
        else:
            self._forward(request, respond, proof, hop=next_hop, group=group)

    def _located_group(self, name: XorName, then: Callable[[tuple[Contact, ...]], None]) -> None:
        """Call `then` with `name`'s close group as a lookup finds it, widened by our view.
        A group found is remembered while our routing stays as it was (and LOCATED_FOR at
        most); requests that come while a lookup runs wait for it rather than start another."""
        epoch = self.core.membership_epoch
        if self._located_epoch != epoch:
            self._located, self._located_epoch = {}, epoch
        known = self._located.get(bytes(name))
        if known is not None and self.core.now - known[0] < LOCATED_FOR:
            then(known[1])
            return
        waiting = self._locating.get(bytes(name))
        if waiting is not None:
            waiting.append(then)
            return
        self._locating[bytes(name)] = [then]

        def found(contacts: list[Contact]) -> None:
            near = {c.name: c for c in contacts if c.name != self.core.name}
            for member in self.core.group(name):
                contact = self.core.contact(member)
                if contact is not None:
                    near[member] = contact
            group = tuple(near[m] for m in closest(name, near, self.core.config.replication))
            # Whom the lookup met is in routing now (if there was room): the epoch to check
            # the memory against is the one after the lookup.
            if self._located_epoch != self.core.membership_epoch:
                self._located, self._located_epoch = {}, self.core.membership_epoch
            self._located[bytes(name)] = (self.core.now, group)
            for waiter in self._locating.pop(bytes(name), []):
                waiter(group)

        self.core.lookup(name, found, k=2 * self.core.config.replication)

    def _forward(self, request: Request, respond: Respond, proof: Request | None, tried: int = 0,
                 hop: int = 0, group: Sequence[Contact | XorName] | None = None) -> None:
        """Pass the request to the members of `group` (by default our view of the MD's group),
        nearest first, until one answers."""
        if group is None:
            group = [m for m in self.core.group(request.op.name) if m != self.core.name]
        if tried >= len(group):
            respond(error=E.QuorumNotReached("no member of the close group took the request"))
            return
        fields: dict[str, Any] = {"req": request.to_obj(), "hop": hop}
        if proof is not None:
            fields["proof"] = proof.to_obj()

        def answered(reply: dict[str, Any] | None) -> None:
            if reply is None:
                self._forward(request, respond, proof, tried + 1, hop, group)
            elif reply.get("k") == "response":
                respond(result=reply.get("result"), ack_proof=reply.get("ack_proof"))  # the client checks it
            elif reply.get("k") == "error":
                respond(error=error_from_wire(reply.get("err")))
            else:
                self._forward(request, respond, proof, tried + 1, hop, group)

        self.core.rpc(group[tried], new_message(MD_REQUEST, **fields), answered,
                      timeout=self.core.config.client_deadline / (2 if hop == 0 else 4))

    def on_md_request(self, peer: Peer, msg: dict[str, Any]) -> None:
        """A node that is not in an MD's group asks us, a member, to run a request on it."""
        request = Request.from_obj(msg["req"])
        request.verify()
        op = request.op
        if not isinstance(op, MDataOp):
            raise E.InvalidOperation("md_request carries an MD operation")
        proof: Request | None = None
        if op.INTERNAL:
            # An internal charge must show the client's signed request it charges for, so a
            # node cannot spend anyone's allowance on mutations nobody asked for.
            proof = Request.from_obj(msg.get("proof"))
            proof.verify()
            if proof.request_id != request.request_id or proof.account_owner != getattr(op, "owner", None):
                raise E.InvalidOperation("a charge must come with the request it is for")
        elif op.MUTATES:
            self.core.check_fresh(request)

        def respond(result: Any = None, error: E.SafeError | None = None, ack_proof: Any = None) -> None:
            if error is not None:
                self.core.reply_error(peer, msg, error)
            else:
                self.core.reply(peer, msg, "response", result=result, **ack_field(ack_proof))

        if not self.core.ready:
            if self.core.name not in self.core.group(op.name):
                raise E.NotReady("this node is not in that MD's close group either")
            self._enqueue(item_key(op.address), op.address.name, [(request, respond)], "client")
            return
        # The asker's view of the group may have been off (in a large network a node far from
        # the MD knows some nodes of its region, not the nearest). Ours is nearer the truth:
        # if we are not in the group either, we pass the request on once to the members we
        # know; a second miss is refused.
        self._route(request, respond, proof, 1 if msg.get("hop") == 0 else None)

    def _enqueue(self, key: bytes, name: XorName, batch: list[tuple[Request, Respond]], purpose: str) -> None:
        if key in self.proposals:
            if batch:
                self.queued.setdefault(key, []).extend(batch)
            return
        proposal = Proposal(self, key, name, batch, purpose)
        self.proposals[key] = proposal
        proposal.start()

    def repair(self, key: bytes) -> None:
        """A repair round on the MD at `key`, unless a round on it is under way."""
        if key in self.records and key not in self.proposals and key not in self.quarantined:
            self._enqueue(key, XorName(key[:32]), [], "repair")

    def proposal_done(self, proposal: Proposal) -> None:
        self.proposals.pop(proposal.key, None)
        waiting = self.queued.pop(proposal.key, None)
        if waiting:
            # Everything that queued up while the last round ran goes in one round: group
            # commit per MD, which is what makes a hot stream fast. At most as many as a value
            # remembers (RECENT_REQUESTS), so each request of the round is still in the new
            # value's window: its "ok" can be proven to the client, and a retry of it is known.
            if len(waiting) > RECENT_REQUESTS:
                self.queued[proposal.key] = waiting[RECENT_REQUESTS:]
            self._enqueue(proposal.key, proposal.name, waiting[:RECENT_REQUESTS], "client")

    # ---------------------------------------------------------------- client reads

    def on_read(self, peer: Peer, msg: dict[str, Any]) -> None:
        """Answer a read from our own copy; the client compares a quorum of such answers."""
        request = Request.from_obj(msg["req"])
        op = request.op
        if not isinstance(op, MDataOp) or op.MUTATES:
            raise E.InvalidOperation("read takes an MD read operation")
        key = item_key(op.address)
        if key in self.quarantined:
            raise E.NotReady("this node lost its copy of that MD and is recovering it")
        record = self._liar_view(key, self.record(key))
        fields: dict[str, Any] = {
            "acc": record.accepted.to_obj(),
            "digest": record.digest,
            "members": [bytes(m) for m in (record.value.members if record.value else ())],
            "prev": [bytes(m) for m in (record.value.prev if record.value else ())],
        }
        try:
            md = record.value.state.md if record.value else None
            fields["result"] = op.encode_result(read_mdata(md, op))
        except E.ClientError as exc:
            fields["err"] = exc.to_wire()
        self.core.reply(peer, msg, READ_REPLY, **fields)

    def _liar_view(self, key: bytes, record: AcceptorRecord) -> AcceptorRecord:
        """What a node in a test-only lying mode tells clients instead of the truth."""
        lie = self.core.config.lie
        if not lie or record.value is None or record.value.state.md is None:
            return record
        if "stale" in lie:
            first = self._first_seen.setdefault(key, record)
            if first is not record:
                return first
        if "forge" in lie:
            md = record.value.state.md
            forged = {k: Value(b"forged:" + v.content, v.entry_version + 1) for k, v in md.entries.items()}
            value = record.value.with_state(MDataState(md.replace(entries=forged, version=md.version + 1)))
            # Claim a newer ballot too, as a liar hoping to win a "highest answer" client would.
            return AcceptorRecord(record.promised, Ballot(record.accepted.counter + 1, record.accepted.proposer), value)
        return record

    # ---------------------------------------------------------------- anti-entropy

    def membership_changed(self) -> None:
        if not self._sync_due:
            self._sync_due = True
            self.core.at(self.core.now + 0.2, self._sync_soon)

    def _sync_soon(self) -> None:
        self._sync_due = False
        if self.core.ready:
            self.sync(changed_only=True)

    def sync(self, changed_only: bool = False) -> None:
        """Move each MD we coordinate to its current close group, and bring laggards up to date."""
        if "no_anti_entropy" in self.core.config.breaks or "withhold" in self.core.config.lie:
            return
        self._sync_rounds += 1
        full = not changed_only and self._sync_rounds % 3 == 0
        self._catch_up_some()
        if not full and self._epoch_seen == self.core.membership_epoch and not self._unsettled:
            return  # nothing moved since we last looked, and nothing is left to finish
        self._epoch_seen = self.core.membership_epoch
        self._unsettled = False
        digests: dict[XorName, list[list[Any]]] = {}
        budget = self.core.config.max_sync_proposals - len(self.proposals)
        me = self.core.name
        for key, record in list(self.records.items()):
            name = XorName(key[:32])
            group = tuple(self.core.group(name))
            if record.value is None:
                # Only a promise (a creation that never completed here). Keep it while we may
                # be asked about the MD; forget it once we are not in its group.
                if me not in group:
                    since = self.left_at.setdefault(key, self.core.now)
                    if self.core.now - since > self.core.config.grace:
                        self._drop(key)
                continue
            members = record.value.members
            if changed_only and self._last_group.get(key) == group and group == members and not record.value.prev:
                continue
            self._last_group[key] = group
            if me not in group and me not in members and me not in record.value.prev:
                since = self.left_at.setdefault(key, self.core.now)
                if self.core.now - since > self.core.config.grace:
                    self._drop(key)
                continue
            moving = group != members or bool(record.value.prev)
            if self._coordinator(name, members, group) != me:
                # A coordinator that withholds repair or moves (Byzantine, or wedged) must only
                # slow them down: a member that has waited MOVE_PATIENCE for a move makes it
                # itself, and now and then every member checks the others' copies itself.
                if "trust_the_coordinator" in self.core.config.breaks:
                    continue
                if moving and me in group:
                    self._unsettled = True
                    waited = self.core.now - self._move_waits.setdefault(key, self.core.now)
                    if waited >= MOVE_PATIENCE and budget > 0 and key not in self.proposals:
                        budget -= 1
                        self._enqueue(key, name, [], "reconfig")
                elif full and self._sync_rounds % 9 == 0 and me in members and not moving:
                    self._move_waits.pop(key, None)
                    for member in members:
                        if member != me:
                            digests.setdefault(member, []).append(
                                SyncItem(key, record.accepted, record.digest).to_wire())
                continue
            self._move_waits.pop(key, None)
            if moving:
                self._unsettled = True  # look again next round, until the members are right
                if budget > 0 and key not in self.proposals:
                    budget -= 1
                    self._enqueue(key, name, [], "reconfig")
            elif full:
                for member in members:
                    if member != me:
                        digests.setdefault(member, []).append(SyncItem(key, record.accepted, record.digest).to_wire())
        for member, items in digests.items():
            for start in range(0, len(items), 500):
                chunk = items[start:start + 500]
                self.core.rpc(member, new_message(SYNC, items=chunk), self._on_sync_reply)

    def _catch_up_some(self) -> None:
        budget = self.core.config.max_sync_proposals // 2 - len(self.proposals)
        while self._catch_up and budget > 0:
            key = self._catch_up.pop()
            if key in self.records and key not in self.proposals:
                budget -= 1
                self._enqueue(key, XorName(key[:32]), [], "repair")

    def _coordinator(self, name: XorName, members: tuple[XorName, ...], group: tuple[XorName, ...]) -> XorName | None:
        """The closest live member: it drives membership changes and repairs.

        A node whose own copy is stale may not find itself among that copy's members while
        every up-to-date copy names it, as the closest, the coordinator: each side would wait
        for the other for ever. So a node that holds a copy and is in its own view of the
        group counts itself a candidate, whatever its copy says."""
        me = self.core.name
        candidates = members
        if me not in members and me in group:
            candidates = tuple(closest(name, (*members, me), len(members) + 1))
        for member in candidates:
            if member == me or (member in self.core.routing and not self.core.routing.is_suspect(member)):
                return member
        return group[0] if group else None

    def _drop(self, key: bytes) -> None:
        self.fast.pop(key, None)
        self.certs.pop(key, None)
        self.steps.pop(key, None)
        self.floors.pop(key, None)
        self.floor_values.pop(key, None)
        self.chains.pop(key, None)
        self.left_at.pop(key, None)
        self._last_group.pop(key, None)
        self._move_waits.pop(key, None)
        self.disk.delete(key, self.records.pop(key, None))
        self.core.log("md_dropped", key=key.hex())

    def _on_sync_reply(self, reply: dict[str, Any] | None) -> None:
        if reply is None or reply.get("k") != SYNC_DIFF:
            return
        budget = self.core.config.max_sync_proposals - len(self.proposals)
        for key in reply.get("keys", [])[:budget]:
            if isinstance(key, bytes) and len(key) == 40 and key not in self.proposals:
                self._enqueue(key, XorName(key[:32]), [], "repair")


def _demux(callbacks: list[Reply], reply: dict[str, Any] | None) -> None:
    """Hand each item of a merged accept's answer to the round that sent it, as an answer of
    its own. No answer, an error, or a missing item: that round hears None (no answer)."""
    items = reply.get("items") if reply is not None and reply.get("k") == ACCEPTED else None
    for index, callback in enumerate(callbacks):
        if isinstance(items, list) and index < len(items):
            callback({"k": ACCEPTED, "items": [items[index]]})
        else:
            callback(None if reply is None or reply.get("k") == ACCEPTED else reply)
