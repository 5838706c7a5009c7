"""The acceptor side of per-MD consensus, and what an acceptor believes.

Every MD a node helps keep has an acceptor record (node/paxos.py). This mixin of the
`Replicator` answers prepares and accepts, and decides what it will store: only values it
derives itself from client-signed requests, or values certified by their group
(node/proofs.py, docs/security.md), told by nodes it believes may hold the MD. Ballots and
every other field are bounded as they are read (node/messages.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from . import errors as E
from .messages import (
    ACCEPTED,
    CERTIFIED,
    CERTIFIED_PARENT,
    CHAIN,
    FULL,
    MAX_BATCH,
    MAX_CHAIN,
    MAX_COMMITS,
    MAX_ITEMS,
    NEED_STATE,
    NOT_MEMBER,
    NOT_READY,
    OK,
    PROMISE,
    REJECTED,
    STEP,
    SYNC_DIFF,
    TWO_STEPS,
    Accept,
    Accepted,
    Commit,
    Prepare,
    Promise,
    SyncItem,
    read_items,
)
from .paxos import (
    MAX_COUNTER,
    MAX_JUMP,
    AcceptorRecord,
    Ballot,
    Register,
    check_names,
    item_key,
    on_accept,
    on_prepare,
)
from .proofs import certifies, looks_certified, make_vote
from .requests import REQUEST_ID_LEN, MDataOp, Request, apply_mutation
from .rules import MDataState
from .xorname import XorName, distance

# How long a value we accepted, not (yet) known chosen, is kept against a certified value that
# does not descend from it (`Acceptor.descends`): longer than a commit takes to arrive.
UNCONFIRMED_GRACE = 5.0
# After this long unconfirmed, an acceptor runs a repair round to settle it (`Acceptor._confirm`),
CONFIRM_AFTER = 2.0
CONFIRM_STAGGER = 0.5  # ... plus this for each member nearer the MD's name
CONFIRM_SOON = 0.25  # ... or this, once the copy held up a value that does not descend from it

if TYPE_CHECKING:
    from .peer import Peer
    from .services import NodeServices


class Acceptor:
    """The acceptor half of `Replicator` (node/replication.py), which provides the state."""

    core: NodeServices
    counter: int
    records: dict[bytes, AcceptorRecord]
    quarantined: set[bytes]
    certs: dict[bytes, tuple[bytes, list[Any]]]
    steps: dict[bytes, list[Any]]
    chains: dict[bytes, tuple[bytes | Register, list[Any], list[Any]]]
    floors: dict[bytes, int]
    floor_values: dict[bytes, bytes]
    verified: set[bytes]
    fast: dict[bytes, tuple[Ballot, Register]]
    left_at: dict[bytes, float]
    accepted_at: dict[bytes, tuple[bytes, float]]  # the digest of our value and when we took it, until confirmed
    settling: set[bytes]  # digests of our values a repair round is due for soon (Acceptor.descends)

    def record(self, key: bytes) -> AcceptorRecord:
        return self.records.get(key) or AcceptorRecord()

    def write(self, key: bytes, record: AcceptorRecord) -> None:  # the Replicator saves it
        raise NotImplementedError

    def new_ballot(self) -> Ballot:
        self.counter = min(self.counter + 1, MAX_COUNTER)
        return Ballot(self.counter, bytes(self.core.name))

    def see(self, ballot: Ballot) -> None:
        if ballot.counter <= self.counter + MAX_JUMP or self.unbounded:
            self.counter = max(self.counter, ballot.counter)

    # ---------------------------------------------------------------- trust

    @property
    def unvalidated(self) -> bool:
        """Test-only break: acceptors store whatever value a proposer sends."""
        return "accept_unvalidated" in self.core.config.breaks

    @property
    def unbounded(self) -> bool:
        """Test-only break: ballots are not bounded (a huge one poisons the node)."""
        return "unbounded_numbers" in self.core.config.breaks

    @property
    def any_certified(self) -> bool:
        """Test-only break: a certified value is adopted whatever its count of rounds and
        whether or not it descends from ours (a replayed old certificate rolls copies back)."""
        return "adopt_any_certified" in self.core.config.breaks

    def ballot(self, obj: Any) -> Ballot:
        """A ballot from the wire: bounded, and no further ahead of what we have seen than any
        honest proposer could be (so one message cannot use up an MD's ballots)."""
        if self.unbounded:
            counter, proposer = obj
            if not isinstance(counter, int) or not isinstance(proposer, bytes):
                raise ValueError("a ballot is [counter, proposer]")
            return Ballot(counter, proposer)
        ballot = Ballot.from_obj(obj)
        if ballot.counter > self.counter + MAX_JUMP:
            raise E.ProtocolError(f"ballot {ballot.counter} is implausibly far ahead of {self.counter}")
        return ballot

    def plausible(self, key: bytes, width: int = 1) -> Callable[[XorName], bool]:
        """Which nodes we believe may hold the MD at `key`: any as near to its name as the
        farthest of our view of its close group (of `width` times R nodes, with a margin of
        two, since views differ for a while when nodes come and go), and the groups our
        copy names (a move under way). Judged by distance, not by whom we know: a member we
        lost sight of in a partition still counts, and a node's name is the hash of its key,
        so an outsider cannot simply claim a near one (docs/security.md)."""
        name = key[:32]
        view = self.core.group(name, width * self.core.config.replication + 2)
        radius = max((distance(n, name) for n in view), default=-1)  # group() is cached, this is cheap
        record = self.records.get(key)
        named: set[XorName] = set()
        if record is not None and record.value is not None:
            named = set(record.value.members) | set(record.value.prev)
        return lambda node: node in named or distance(node, name) <= radius

    def speaks_for(self, peer: Peer, key: bytes) -> bool:
        """May `peer` tell us about the MD at `key` (propose, accept, sync)?"""
        if peer.name == self.core.name or "trust_any_peer" in self.core.config.breaks:
            return True
        record = self.records.get(key)
        # Holding nothing for the MD, we may be a new member it is moving to; the group it
        # moves from can be farther from the name than our view's margin, so we listen to
        # the 2R nearest we know (what they send must still be proven).
        width = 1 if record is not None and record.value is not None else 2
        return self.plausible(key, width)(peer.name)

    def verify(self, request: Request) -> None:
        """`request.verify()`, once per node: a signed request this node has checked (as it
        arrived from the client, or in an earlier step) is not checked again. Remembered by a
        hash of everything the signature covers, the key and the signature, so a request
        that differs in any of them is checked afresh."""
        op = request.op
        if (not op.MUTATES or op.INTERNAL or request.requester is None or not request.signature
                or len(request.request_id) != REQUEST_ID_LEN):
            request.verify()  # raises, or passes what needs no signature
            return
        signed = request.signing_bytes()
        token = hashlib.blake2b(signed, digest_size=32, key=bytes(request.requester)).digest() + request.signature
        if token in self.verified:
            return
        if not request.requester.verify(signed, request.signature):  # as request.verify(), encoded once
            raise E.InvalidSignature("the request's signature does not verify")
        if len(self.verified) >= 4096:
            self.verified.clear()
        self.verified.add(token)

    def vote(self, key: bytes, digest: bytes) -> list[bytes]:
        return make_vote(self.core.keys, key, digest)

    def certified(self, key: bytes, value: Register, votes: Any) -> bool:
        # Voters are counted among the 2R nodes nearest the name that we know: a value that
        # moves to a new group is certified by the group it comes from.
        return bool(votes) and certifies(key, value.digest(), votes, value.quorums, self.plausible(key, 2))

    def announce(self, key: bytes, value: Register, votes: list[Any],
                 skip: set[XorName] | frozenset[XorName] = frozenset()) -> None:
        """Tell the members that `value` was chosen, with its certificate:
        any of them can then prove it to a proposer (a value known only to a minority of its
        holders, with no certificate, would stall the MD). One message each, no reply."""
        members = {n for group in value.quorums for n in group} - {self.core.name} - set(skip)
        item = Commit(key, value.digest(), votes).to_wire()
        for name in sorted(members):
            self.queue_commit(name, item)  # leaves with this batch's output, with any accept to it

    def queue_accept(self, target: XorName, item: list[Any], on_reply: Callable[[dict[str, Any] | None], None]) -> None:
        raise NotImplementedError  # the Replicator's outbox

    def queue_commit(self, target: XorName, item: list[Any]) -> None:
        raise NotImplementedError  # the Replicator's outbox

    def on_commit(self, peer: Peer, msg: dict[str, Any]) -> None:
        """A proposer says a value was chosen, with its votes. Kept (unverified: whoever uses
        a certificate checks it) if it is the value we hold. (Commits also ride in an accept
        message to the same member, in its `commits` field: see `on_accept`.)"""
        for item in read_items(msg, Commit, self.ballot, MAX_COMMITS):
            record = self.records.get(item.key)
            if record is not None and record.digest == item.digest and self.speaks_for(peer, item.key):
                self.certs[item.key] = (item.digest, item.votes)
                self.chains.pop(item.key, None)  # the value is certified itself now

    def _extend_chain(self, key: bytes, old: Register | None, new: Register, payload: list[Any]) -> None:
        """Keep how our value follows from the last certified value we knew: that certified
        anchor, its votes and the steps since. It is what proves our value to a member that
        holds neither it nor anything between (node/proofs.py): a value whose round was cut
        short has no certificate of its own."""
        if old is not None and new.digest() == old.digest():
            return
        mode = payload[0]
        if mode == CHAIN:
            chain: tuple[bytes | Register, list[Any], list[Any]] | None = (
                payload[1], payload[2], payload[3] + [payload[4]])
        elif mode == CERTIFIED:
            chain = (payload[1], payload[2], [payload[3]])
        elif mode == CERTIFIED_PARENT:
            chain = (payload[1], payload[2], [payload[3], payload[4]])
        else:
            steps = [payload[1]] if mode == STEP else payload[1:3] if mode == TWO_STEPS else None
            known = self.chains.get(key)
            cert = None if old is None else self.cert_for(key, old)
            if cert is not None and old is not None and not looks_certified(cert, old.quorums):
                cert = None  # too few votes to anchor a chain on
            if steps is None or old is None:
                chain = None
            elif cert is not None:
                chain = (old, cert, steps)  # encoded only if someone asks for it
            elif known is not None and known[2] and known[2][-1][4] == old.digest():
                chain = (known[0], known[1], known[2] + steps)
            else:
                chain = None
        if chain is None or len(chain[2]) > MAX_CHAIN:
            self.chains.pop(key, None)
        else:
            self.chains[key] = chain

    def chain_for(self, key: bytes, digest: bytes) -> list[Any] | None:
        chain = self.chains.get(key)
        if chain is None or not chain[2] or chain[2][-1][4] != digest:
            return None
        anchor = chain[0]
        return [anchor.encode() if isinstance(anchor, Register) else anchor, chain[1], chain[2]]

    def cert_for(self, key: bytes, value: Register) -> list[Any] | None:
        cert = self.certs.get(key)
        return cert[1] if cert is not None and cert[0] == value.digest() else None

    def apply_step(self, key: bytes, base: Register | None, step: Any) -> Register | None:
        """The value `step` derives from `base`, checked as an acceptor must: every request
        signed by its requester and applied by our own rules engine, the new members ones we
        find plausible. None if the step does not apply to `base` or proves nothing."""
        if not isinstance(step, list) or len(step) != 5:
            return None
        base_digest, requests, members, prev, new_digest = step
        if not isinstance(requests, list) or len(requests) > MAX_BATCH or not isinstance(new_digest, bytes):
            return None
        new_members, new_prev = check_names(members), check_names(prev)
        if base is None:
            # Nothing here yet: the step must start from the empty value of its own group.
            base = Register(MDataState(), new_members)
        if base.digest() != base_digest:
            return None
        if not self.unvalidated:
            # Views of the group differ while nodes come and go: a move may name any node
            # we see among the 2R nearest.
            plausible = self.plausible(key, 2)
            old = set(base.members) | set(base.prev)
            if not all(n in old or plausible(n) for n in new_members + new_prev):
                return None
        value = base
        for obj in requests:
            request = Request.from_obj(obj)
            if self.core.config.verify_on_accept or not self.unvalidated:
                self.verify(request)
            op = request.op
            if not isinstance(op, MDataOp) or not op.MUTATES or item_key(op.address) != key:
                return None  # a request for another MD proves nothing about this one
            try:
                value = value.with_state(apply_mutation(value.state, request))
            except E.ClientError:
                return None  # we disagree with the proposer's base
        value = value.with_members(new_members, new_prev)
        if value.digest() == new_digest:
            return value  # the same value written again (a repair, a retried request)
        value = value.with_seq(base.seq + 1)
        return value if value.digest() == new_digest else None

    # ---------------------------------------------------------------- acceptor

    def on_prepare(self, peer: Peer, msg: dict[str, Any]) -> None:
        out = []
        for item in read_items(msg, Prepare, self.ballot, MAX_ITEMS):
            key, ballot = item.key, item.ballot
            if not self.speaks_for(peer, key):
                out.append(Promise(key, NOT_MEMBER).to_wire())
                continue
            self.see(ballot)
            if key in self.quarantined:
                out.append(Promise(key, NOT_READY).to_wire())
                continue
            record = self.record(key)
            record2, ok = on_prepare(record, ballot)
            if record2 is not record:
                self.write(key, record2)
            if not ok:
                out.append(Promise(key, REJECTED, record2.promised).to_wire())
                continue
            digest = record2.digest
            raw = record2.value.encode() if record2.value is not None and item.hint != digest else None
            # Holding nothing, we tell the proposer whom we would ask: our view of the group.
            # A proposer whose own view is far off (it joined during a partition) learns the
            # real group this way before it concludes that the MD does not exist.
            near = [] if record2.value is not None else [
                [bytes(c.name), c.address] for c in self.core.routing.closest(key[:32], self.core.config.replication)]
            # Our vote for what we hold, and how we derived it: what lets the proposer prove
            # our value to members that lack it (node/proofs.py).
            vote = self.vote(key, digest) if record2.value is not None else None
            step = self.steps.get(key)
            if step is not None and step[4] != digest:
                step = None
            cert = self.cert_for(key, record2.value) if record2.value is not None else None
            chain = None if cert is not None or raw is None else self.chain_for(key, digest)
            out.append(Promise(key, OK, None, record2.accepted, digest, raw, near, vote, step, cert,
                               chain).to_wire())
        self.core.reply(peer, msg, PROMISE, items=out)

    def on_accept(self, peer: Peer, msg: dict[str, Any]) -> None:
        if msg.get("commits") is not None:
            # Commits the proposer had for us when it sent this: handled first, as they would
            # be had they come on their own just before it.
            self.on_commit(peer, {"items": msg["commits"]})
        out = []
        for item in read_items(msg, Accept, self.ballot, MAX_ITEMS):
            key, ballot = item.key, item.ballot
            if not self.speaks_for(peer, key):
                out.append(Accepted(key, NOT_MEMBER).to_wire())
                continue
            self.see(ballot)
            if key in self.quarantined:
                out.append(Accepted(key, NOT_READY).to_wire())
                continue
            record = self.record(key)
            if ballot < record.promised:
                out.append(Accepted(key, REJECTED, record.promised).to_wire())
                continue
            value, step = self._value_from(key, record, item.payload)
            if value is None:
                out.append(Accepted(key, NEED_STATE).to_wire())
                continue
            payload = item.payload
            if payload[0] == STEP and len(payload) == 3 and record.value is not None \
                    and isinstance(payload[1], list) and payload[1] and payload[1][0] == record.digest \
                    and looks_certified(payload[2], record.value.quorums):
                self.certs[key] = (record.digest, payload[2][:16])  # our value was chosen (unverified)
            self._extend_chain(key, record.value, value, payload)
            record2, ok = on_accept(record, ballot, value, fast=item.fast)
            self.write(key, record2)
            if record.digest != record2.digest:
                self.accepted_at[key] = (record2.digest, self.core.now)
                self.core.at(self.core.now + self._confirm_delay(key, value),
                             partial(self._confirm, key, record2.digest))
            if step is not None:
                self.steps[key] = step
            else:
                self.steps.pop(key, None)
            self.left_at.pop(key, None)
            if self.fast.get(key) is not None and self.fast[key][0] <= ballot and peer.name != self.core.name:
                self.fast.pop(key, None)  # someone else moved this MD on: our fast ballot is spent
            out.append(Accepted(key, OK, None, self.vote(key, value.digest())).to_wire())
        self.core.reply(peer, msg, ACCEPTED, items=out)

    def _value_from(self, key: bytes, record: AcceptorRecord, payload: Any) -> tuple[Register | None, Any]:
        """The value an accept proposes, if it is proven to us (node/proofs.py), and the step
        that derived it; (None, None) if we cannot check it (the proposer then sends proof)."""
        if not isinstance(payload, list) or not payload:
            raise E.ProtocolError("an accept's payload is [mode, ...]")
        mode = payload[0]
        if mode == STEP and len(payload) in (2, 3):
            return self.apply_step(key, record.value, payload[1]), payload[1]
        if mode == TWO_STEPS and len(payload) == 3:
            base = self.apply_step(key, record.value, payload[1])
            return self.apply_step(key, base, payload[2]), payload[2]
        # The other proofs start from a certified value (the anchor), not from ours: the value
        # they lead to must also descend from ours (docs/security.md, "No going back").
        if mode == CERTIFIED and len(payload) == 4:
            anchor, steps = self.adopt_certified(key, record, payload[1], payload[2]), [payload[3]]
        elif mode == CERTIFIED_PARENT and len(payload) == 5:
            anchor, steps = self.adopt_certified(key, record, payload[1], payload[2]), payload[3:5]
        elif mode == CHAIN and len(payload) == 5 and isinstance(payload[3], list) and len(payload[3]) <= MAX_CHAIN:
            anchor, steps = self.adopt_certified(key, record, payload[1], payload[2]), payload[3] + [payload[4]]
        elif mode == FULL and len(payload) == 2 and (
                self.unvalidated or "skip_version_check" in self.core.config.breaks):
            return Register.decode(payload[1]), None
        else:
            raise E.ProtocolError(f"an accept must prove its value (mode {mode!r:.20} proves nothing)")
        value, path = anchor, []
        for step in steps:
            value = None if value is None else self.apply_step(key, value, step)
            path.append(value)
        if value is None or anchor is None or not self.descends(key, record, anchor, path):
            return None, None
        return value, steps[-1]

    def descends(self, key: bytes, record: AcceptorRecord, anchor: Register, path: list[Register | None]) -> bool:
        """May a value proven from the certified `anchor` by the steps that led to `path`
        replace ours? Only if it descends from ours (our value is on the way), or its anchor
        is certified at a higher count of rounds than ours (chosen values only count up, so a
        certified value that counts more was chosen after ours), or at the same count while
        ours is not known chosen (a value of a round that was cut short, which a value chosen
        instead replaces). Counts reached by steps prove nothing here: anyone with a
        certificate can add rounds that change nothing. Without this, a member with a genuine
        certificate of an old value could roll back every copy whose certificate had not yet
        arrived (it comes after the acceptance, with the proposer's commit)."""
        own = record.value
        if own is None or self.any_certified:
            return True
        digest = own.digest()
        if anchor.digest() == digest or any(v is not None and v.digest() == digest for v in path):
            return True
        if anchor.seq > own.seq:
            return True
        if not self._known_chosen(key, own):
            if anchor.seq == own.seq:
                return True
            # Not known chosen, but maybe chosen all the same: the proposer's commit leaves when
            # a majority has accepted, so an honest proposer's reaches us within moments. Until
            # then our copy is held; a copy that stayed unconfirmed longer is most likely of a
            # round that was cut short, and a value chosen instead must be able to replace it
            # (or the MD would stall where our accept is needed).
            since = self.accepted_at.get(key)
            if since is None or since[0] != digest or self.core.now - since[1] >= UNCONFIRMED_GRACE:
                return True
        self.core.log("not_a_descendant", key=key.hex(), seq=anchor.seq, own=own.seq)
        if digest not in self.settling:
            # Refused while held: settle it soon rather than at CONFIRM_AFTER (two proposers
            # that duel leave values of cut-short rounds, which hold up the winner meanwhile).
            if len(self.settling) >= 4096:
                self.settling.clear()
            self.settling.add(digest)
            self.core.at(self.core.now + self._confirm_delay(key, own, soon=True), partial(self._confirm, key, digest))
        return False

    def _confirm(self, key: bytes, digest: bytes) -> None:
        """CONFIRM_AFTER after we took the value with `digest`: if it is not known chosen by now
        (the commit was lost, or its proposer withheld it), a repair round of our own settles
        it while the grace lasts: it gathers the members' votes for our value and writes its
        successor with them, so every member learns it was chosen (or it finds what replaced
        it). Known chosen, its count becomes our floor: a certificate kept unverified (as a
        commit brings it) could later be overwritten by a member's junk one."""
        since = self.accepted_at.get(key)
        if since is None or since[0] != digest:
            return  # replaced since: the newer value has its own turn
        value = self.record(key).value
        if value is None or value.digest() != digest:
            self.accepted_at.pop(key, None)
        elif self._known_chosen(key, value):
            self.accepted_at.pop(key, None)
            self._raise_floor(key, value)
        else:
            self.repair(key)

    def _confirm_delay(self, key: bytes, value: Register, soon: bool = False) -> float:
        """CONFIRM_AFTER (CONFIRM_SOON once we refused something for it), and a little more
        for each member nearer the MD's name than we are: one member at a time starts a
        repair round, not all at once (rounds that run at the same time get in each other's
        way)."""
        name = key[:32]
        mine = distance(self.core.name, name)
        rank = sum(1 for n in value.members if distance(n, name) < mine)
        return (CONFIRM_SOON + CONFIRM_STAGGER / 4 * rank) if soon else (CONFIRM_AFTER + CONFIRM_STAGGER * rank)

    def repair(self, key: bytes) -> None:
        raise NotImplementedError  # the Replicator starts rounds

    def not_chosen(self, key: bytes, digest: bytes) -> None:
        """Our proposer learnt from a majority's promises that our value with `digest` was not
        chosen (Proposal._could_hold): its grace ends now."""
        since = self.accepted_at.get(key)
        if since is not None and since[0] == digest:
            self.accepted_at[key] = (digest, float("-inf"))

    def _raise_floor(self, key: bytes, value: Register) -> None:
        """`value` is known chosen: its count is our floor, if no lower than the one we had."""
        if value.seq >= self.floors.get(key, 0):
            self.floors[key] = value.seq
            self.floor_values[key] = value.digest()

    def _known_chosen(self, key: bytes, own: Register) -> bool:
        """Do we know our copy was chosen (or that a newer value was): a certified count
        higher than our copy's checked before (our floor), the same count if it was our copy
        that was certified at it, or its certificate, checked now? Another value certified at
        our copy's count says our copy was *not* chosen (two values of one count cannot both
        be): taken as known chosen, it held a copy of a round cut short against the chosen
        value for good (event-store seed 5: three members kept such a copy, refused every
        proof built on the chosen one, and the MD stalled)."""
        floor = self.floors.get(key, -1)
        if floor > own.seq or (floor == own.seq and self.floor_values.get(key) == own.digest()):
            return True
        cert = self.cert_for(key, own)
        return cert is not None and self.certified(key, own, cert)

    def adopt_certified(self, key: bytes, record: AcceptorRecord, raw: Any, votes: Any) -> Register | None:
        """A base value shown with its certificate, if the certificate holds and the value is
        not older than a certified value we have seen: a replayed certificate of an old value
        cannot roll the MD back. (Chosen values only ever grow their count of rounds; our own
        copy may have a higher count without being chosen, so it does not set the floor.)"""
        if not isinstance(raw, bytes):
            return None
        base = Register.decode(raw)
        own = record.value
        if own is not None and base.seq < own.seq and self.floors.get(key, 0) < own.seq:
            # Older than our copy: refused if our copy is known chosen (its certificate came
            # with the proposer's commit; checked now, on this rare path, not on arrival).
            cert = self.cert_for(key, own)
            if cert is not None and self.certified(key, own, cert):
                self._raise_floor(key, own)
        if base.seq < self.floors.get(key, 0) and not self.any_certified:
            self.core.log("stale_certificate", key=key.hex(), seq=base.seq, floor=self.floors[key])
            return None
        if not self.certified(key, base, votes):
            self.core.log("bad_certificate", key=key.hex())
            return None
        self.certs[key] = (base.digest(), votes)
        self._raise_floor(key, base)
        return base

    # ---------------------------------------------------------------- proposer


    def on_sync(self, peer: Peer, msg: dict[str, Any]) -> None:
        stale = []
        for item in read_items(msg, SyncItem, self.ballot, 1000):
            if not self.speaks_for(peer, item.key):
                continue
            record = self.record(item.key)
            if item.key in self.quarantined or record.accepted != item.accepted or record.digest != item.digest:
                stale.append(item.key)
        self.core.reply(peer, msg, SYNC_DIFF, keys=stale)
