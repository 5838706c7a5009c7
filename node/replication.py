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

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import errors as E
from .data import Value
from .errors import error_from_wire
from .mdstore import RecordStore
from .paxos import (
    MAX_COUNTER,
    MAX_JUMP,
    ZERO,
    AcceptorRecord,
    Ballot,
    Register,
    check_names,
    item_key,
    on_accept,
    on_prepare,
)
from .proofs import certifies, has_majorities, majority, make_vote
from .requests import MDataOp, Request, apply_mutation, read_mdata
from .routing import Contact
from .rules import MDataState
from .wire import new_message
from .xorname import XorName

if TYPE_CHECKING:
    from .core import NodeCore, Peer

Respond = Callable[..., None]

# Promise / accept statuses on the wire. NOT_MEMBER: the sender is not one of the nodes the
# receiver believes may hold the MD, so what it says about the MD counts for nothing.
OK, REJECTED, NEED_STATE, NOT_READY, NOT_MEMBER = 0, 1, 2, 3, 4
MAX_ITEMS = 512  # items in one prepare / accept
MAX_BATCH = 1024  # requests in one step

# Accept payloads: how the acceptor gets the proposed value (see node/proofs.py).
STEP = 1  # [STEP, step]: apply the step to the value it holds
CERTIFIED = 2  # [CERTIFIED, base, votes, step]: adopt a certified base, then apply the step
TWO_STEPS = 3  # [TWO_STEPS, step to base, step]: a base nobody certified yet, derived from ours
FULL = 0  # [FULL, value]: take it on faith (only with a test-only break)


@dataclass
class _Promise:
    accepted: Ballot
    digest: bytes
    value: Register | None
    vote: Any = None
    step: Any = None
    cert: Any = None


@dataclass
class Proposal:
    """One consensus round on one MD, carrying a batch of client requests (or none, for a
    repair or a membership change)."""

    rep: Replicator
    key: bytes
    name: XorName
    batch: list[tuple[Request, Respond]]
    purpose: str  # "client", "repair" or "reconfig"
    attempt: int = 0
    redirects: int = 0
    phase: str = "idle"
    ballot: Ballot = ZERO
    # The groups of which a majority must promise: the known value's members, and the group
    # it is moving away from while that move is not known to be complete.
    quorums: tuple[tuple[XorName, ...], ...] = ()
    extended: tuple[XorName, ...] = ()
    promises: dict[XorName, _Promise] = field(default_factory=dict)
    refused: set[XorName] = field(default_factory=set)
    acked: set[XorName] = field(default_factory=set)
    new: Register | None = None
    base: Register | None = None
    results: list[tuple[Respond, Any, E.SafeError | None]] = field(default_factory=list)
    # What proves `base` to an acceptor that does not hold it: votes of its group, or the
    # step that derived it from an older value.
    base_votes: list[Any] | None = None
    base_step: list[Any] | None = None
    step: list[Any] = field(default_factory=list)
    votes: dict[XorName, Any] = field(default_factory=dict)
    sent_proof: set[XorName] = field(default_factory=set)
    token: int = 0  # bumps on every (re)start, so late replies of an old round are ignored

    @property
    def core(self) -> NodeCore:
        return self.rep.core

    @property
    def members(self) -> tuple[XorName, ...]:
        return tuple(dict.fromkeys(n for group in self.quorums for n in group))

    # ---------------------------------------------------------------- start / retry

    def start(self) -> None:
        self.attempt += 1
        if self.attempt > self.core.config.proposal_attempts:
            self.core.log("proposal_failed", key=self.key.hex(), purpose=self.purpose, phase=self.phase,
                          promised=len(self.promises), refused=len(self.refused), acked=len(self.acked))
            self.finish_all(E.QuorumNotReached("could not reach a quorum of the close group"))
            return
        fast = self.rep.fast.get(self.key)
        if fast is not None and self.purpose == "client":
            ballot, value = fast
            self.token += 1
            self.ballot, self.quorums, self.base = ballot, value.quorums, value
            self.promises, self.refused = {}, set()
            self.base_votes, self.base_step = self.rep.cert_for(self.key, value), None
            # Our value was chosen when we last wrote it, but another proposer may have moved
            # the MD on since: even an answer that changes nothing goes through an accept, which
            # a majority refuses if anyone got further.
            self.compute(value, chosen=False, base_chosen=True, known_base=True)
            return
        record = self.rep.record(self.key)
        if record.value is not None and record.value.members:
            # Our copy names the groups; ask our view of the group as well, so that a copy
            # whose members all left still leads us to where the MD lives now.
            quorums = record.value.quorums
            view = tuple(n for n in self.core.group(self.name) if not any(n in g for g in quorums))
            self.prepare(quorums, view)
        else:
            # We hold nothing for this MD: ask a wider ring too, so that a group that moved
            # (nodes joined nearer the name) is still found before we conclude it is absent.
            group = tuple(self.core.group(self.name))
            wide = tuple(n for n in self.core.group(self.name, 2 * self.core.config.replication) if n not in group)
            self.prepare((group,), wide)

    def retry(self) -> None:
        self.rep.fast.pop(self.key, None)
        self.phase = "backoff"
        self.token += 1
        token = self.token
        delay = self.core.rng.uniform(0.005, 0.02) * (2 ** min(self.attempt, 6))

        def again() -> None:
            if self.token == token and self.phase == "backoff":
                self.start()

        self.core.at(self.core.now + delay, again)

    # ---------------------------------------------------------------- phase 1

    def prepare(self, quorums: tuple[tuple[XorName, ...], ...], extended: tuple[XorName, ...]) -> None:
        self.token += 1
        token = self.token
        self.phase = "prepare"
        self.ballot = self.rep.new_ballot()
        self.quorums, self.extended = quorums, extended
        self.promises, self.refused = {}, set()
        hint = self.rep.record(self.key).digest
        msg_items = [[self.key, self.ballot.to_obj(), hint]]
        for target in dict.fromkeys(self.members + extended):
            self.core.rpc(
                target,
                new_message("prepare", items=msg_items),
                lambda reply, t=target: self.on_promise(token, t, reply),
            )

    def on_promise(self, token: int, target: XorName, reply: dict[str, Any] | None) -> None:
        if token != self.token or self.phase != "prepare":
            return
        item = _first_item(reply, "promise")
        try:
            promise = self._read_promise(token, item)
        except (ValueError, TypeError, IndexError, E.SafeError) as exc:
            # A malformed promise is a refusal: a Byzantine member cannot crash its proposer.
            self.core.log("bad_promise", peer=target.hex(), error=repr(exc)[:120])
            promise = None
        if promise is None:
            self.refused.add(target)
        else:
            self.promises[target] = promise
        self.evaluate_promises()

    def _read_promise(self, token: int, item: list[Any] | None) -> _Promise | None:
        if item is None or len(item) < 6:
            return None
        status, promised, accepted, digest, raw = item[1], item[2], item[3], item[4], item[5]
        if status != OK:
            if promised is not None:
                self.rep.see(self.rep.ballot(promised))
            return None
        if not isinstance(digest, bytes):
            return None
        value = None
        own = self.rep.record(self.key)
        if raw is not None:
            value = Register.decode(raw)
            if value.digest() != digest:
                return None
        elif digest and digest == own.digest:
            value = own.value
        elif digest:
            return None  # a value it would not show us proves nothing
        vote = item[7] if len(item) > 7 else None
        step = item[8] if len(item) > 8 else None
        cert = item[9] if len(item) > 9 else None
        if value is None and len(item) > 6 and self.extended:
            self._learn(token, item[6])
        return _Promise(self.rep.ballot(accepted), digest, value, vote, step, cert)

    def _learn(self, token: int, near: Any) -> None:
        """Ask, too, the nodes an acceptor holding nothing named as the group, if they are
        closer to the name than those we asked (absence is then decided among them too)."""
        target_int = int.from_bytes(self.name, "big")
        asked = set(self.members) | set(self.extended)
        ring = sorted(asked, key=lambda n: int.from_bytes(n, "big") ^ target_int)
        horizon = int.from_bytes(ring[-1], "big") ^ target_int if ring else -1
        for item in near[: self.core.config.replication] if isinstance(near, list) else []:
            try:
                name, address = XorName(item[0]), str(item[1])
            except (ValueError, TypeError, IndexError):
                continue
            if name in asked or (int.from_bytes(name, "big") ^ target_int) > horizon or len(self.extended) > 4 * len(self.members):
                continue
            asked.add(name)
            self.extended = self.extended + (name,)
            self.core.rpc(
                Contact(name, address),
                new_message("prepare", items=[[self.key, self.ballot.to_obj(), self.rep.record(self.key).digest]]),
                lambda reply, t=name: self.on_promise(token, t, reply),
            )

    def evaluate_promises(self) -> None:
        promised = set(self.promises)
        answered = len(self.promises) + len(self.refused)
        waiting_wide = self.extended and answered < len(set(self.members + self.extended))
        have_quorum = _majorities(promised, self.quorums)
        best_any = max(self.promises.values(), key=lambda p: p.accepted) if self.promises else None
        newer = best_any is not None and (have_quorum or best_any.accepted > self.rep.record(self.key).accepted)
        if (newer and best_any is not None and best_any.value is not None and best_any.value.members
                and best_any.value.quorums != self.quorums):
            # Someone holds a newer value naming other groups: the MD moved, or is moving. Run
            # the round with the groups that value names (this is only a choice of whom to
            # ask: what counts is that a majority of each of them answers).
            self.redirects += 1
            if self.redirects > 4:
                self.retry()
            else:
                self.prepare(best_any.value.quorums, ())
            return
        if not have_quorum:
            if _out_of_reach(self.refused, self.quorums):
                self.retry()
            return
        best = max(self.promises.values(), key=lambda p: p.accepted)
        if best.value is not None and not self._prove(best):
            # Nobody can show where this value came from: not our own copy, no certificate
            # from its group, no step from a value others hold. If too few nodes may hold it
            # for it to have been chosen, whoever reported it is lying (or holds a round that
            # failed): its promise counts for nothing, and we decide among the rest. Else it
            # may be a chosen value whose proof is out of reach for now: building on anything
            # else could lose it, so we wait for every answer and then try again.
            if self._could_be_chosen(best.digest):
                if answered < len(set(self.members + self.extended)):
                    return
                self.core.log("unproven_value", key=self.key.hex(), digest=best.digest.hex(), wait=True)
                self.retry()
                return
            for name, promise in list(self.promises.items()):
                if promise.digest == best.digest:
                    del self.promises[name]
                    self.refused.add(name)
            self.core.log("unproven_value", key=self.key.hex(), digest=best.digest.hex(), wait=False)
            self.evaluate_promises()
            return
        if best.value is None and best.digest:
            # The highest value was not sent to us (we thought we had it); ask again for it.
            self.rep.forget_hint(self.key)
            self.retry()
            return
        if best.value is None and self.extended:
            # Absence needs the wider ring to agree too, so that a group that has moved
            # (nodes joined nearer the name) is found before we conclude nothing is there;
            # and every node asked must have answered (or timed out), since one holder among
            # them is enough to show the MD exists.
            wide = sum(1 for n in self.extended if n in self.promises)
            if waiting_wide:
                return
            if wide < majority(len(self.extended)):
                self.retry()
                return
        # The base is chosen when a majority of each of its groups reported it accepted.
        holders = {n for n, p in self.promises.items() if p.accepted == best.accepted}
        chosen = _majorities(holders, self.quorums)
        self.compute(best.value, chosen=chosen, base_chosen=chosen, known_base=False)

    # ---------------------------------------------------------------- apply

    def compute(self, base: Register | None, *, chosen: bool, base_chosen: bool, known_base: bool) -> None:
        """Apply the batch to `base`. `chosen`: the base is known chosen *now*, so an answer
        that changes nothing may go out without an accept. `base_chosen`: it was chosen (now
        or when we wrote it), so a membership move it carries is complete."""
        group = tuple(self.core.group(self.name))
        start = base or Register(MDataState(), group)
        value = start
        self.results = []
        applied: list[Request] = []
        for request, respond in self.batch:
            if "skip_version_check" in self.core.config.breaks:
                request = _blind(request, value)
            try:
                if request.op.MUTATES:
                    state = apply_mutation(value.state, request)
                    if state is not value.state:
                        applied.append(request)
                    value = value.with_state(state)
                    self.results.append((respond, None, None))
                else:
                    result = read_mdata(value.state.md, request.op)
                    self.results.append((respond, request.op.encode_result(result), None))
            except E.SafeError as exc:
                self.results.append((respond, None, exc))
        if value.prev and base_chosen:
            value = value.with_members(value.members)  # the move was accepted by both groups
        if self.purpose == "reconfig" and not value.prev and group != value.members:
            # A move starts only from a settled value: one group change at a time.
            value = value.with_members(group, prev=value.members)
        unchanged = value.digest() == start.digest()
        # A repair exists to write the value back to members that lag, so it always writes.
        if unchanged and (base is None or (chosen and self.purpose != "repair")):
            self.finish()
            return
        # A round that changes the value counts it; a retried request writes the same value
        # again, under the same digest. A repair counts too: a member holding a value of a
        # round that failed (with a higher count than the chosen one) takes the repaired
        # value only if its count is not lower (see Replicator.adopt_certified).
        bump = not unchanged or self.purpose == "repair"
        self.base, self.new = start, value.with_seq(start.seq + 1) if bump else value
        self.accept(applied, known_base=known_base)

    def _prove(self, promise: _Promise) -> bool:
        """Is the promised value genuine? Sets `base_votes` / `base_step` to what proves it."""
        value = promise.value
        assert value is not None
        rep = self.rep
        self.base_votes, self.base_step = None, None
        own = rep.record(self.key)
        if own.value is not None and own.digest == promise.digest:
            # Our own copy: we checked it when we stored it. What proves it to others is
            # checked by them, so the votes are passed on unverified (no cost on this path).
            self.base_votes = rep.cert_for(self.key, own.value) or self._votes_for(promise.digest)
            step = rep.steps.get(self.key)
            self.base_step = step if step is not None and step[4] == promise.digest else None
            return True
        if rep.unvalidated:
            return True
        votes = self._votes_for(promise.digest)
        if rep.certified(self.key, value, votes):
            self.base_votes = votes
            return True
        # Not certified (its round was cut short): derivable from the value we hold, or from
        # one that another node reported? (Never from the reporter's own word alone: a liar
        # would have to be two nodes to show both a forged base and a step from it.)
        step = promise.step
        if not isinstance(step, list) or len(step) != 5:
            return False
        bases = [own.value] + [p.value for p in self.promises.values()
                               if p.value is not None and p.digest == step[0] and p is not promise]
        for base in bases:
            if base is None or base.digest() != step[0]:
                continue
            derived = rep.apply_step(self.key, base, step)
            if derived is not None and derived.digest() == promise.digest:
                self.base_step = step
                return True
        return False

    def _votes_for(self, digest: bytes) -> list[Any]:
        votes = []
        for p in self.promises.values():
            if p.digest == digest:
                votes.extend(p.cert if isinstance(p.cert, list) else [])
                if p.vote is not None:
                    votes.append(p.vote)
        return votes

    def _could_be_chosen(self, digest: bytes) -> bool:
        """Could a majority of each group have accepted the value with `digest`? Not if too
        many members told us they hold something else (an older value: `best` is the newest)."""
        for group in self.quorums:
            possible = sum(1 for n in group if n not in self.promises or self.promises[n].digest == digest)
            if possible < majority(len(group)):
                return False
        return True

    # ---------------------------------------------------------------- phase 2

    def accept(self, applied: list[Request], *, known_base: bool) -> None:
        assert self.new is not None and self.base is not None
        self.token += 1
        token = self.token
        self.phase = "accept"
        self.acked = set()
        self.refused = set()
        new, base = self.new, self.base
        if "ack_before_quorum" in self.core.config.breaks:
            self.rep.fast.pop(self.key, None)
            self.finish()  # broken on purpose: the client hears "ok" before anything is durable
        self.step = [base.digest(), [r.to_obj() for r in applied], list(map(bytes, new.members)),
                     list(map(bytes, new.prev)), new.digest()]
        self.votes, self.sent_proof = {}, set()
        # Blind (rewritten, unsigned) requests of the test-only break travel as full values.
        blind = "skip_version_check" in self.core.config.breaks
        targets = dict.fromkeys(self.members + tuple(n for g in new.quorums for n in g))
        for target in targets:
            promise = self.promises.get(target)
            same_base = promise.digest == base.digest() if promise else known_base
            if blind:
                payload = [FULL, new.encode()]
            elif same_base or promise is None:
                payload = [STEP, self.step]
            else:
                payload = self._proof_payload(target, promise.digest)
            self.send_accept(token, target, payload)

    def _proof_payload(self, target: XorName, their_digest: bytes | None) -> list[Any]:
        """The accept for a target that does not hold our base: the base's certificate, or the
        step that derived the base from what the target holds."""
        assert self.base is not None
        self.sent_proof.add(target)
        if self.base_votes and len(self.base_votes) >= majority(len(self.base.members)):
            return [CERTIFIED, self.base.encode(), self.base_votes, self.step]
        if self.base_step is not None and (their_digest is None or their_digest == self.base_step[0]):
            return [TWO_STEPS, self.base_step, self.step]
        if self.rep.unvalidated:
            assert self.new is not None
            return [FULL, self.new.encode()]
        return [STEP, self.step]  # nothing proves our base to it: it will refuse

    def send_accept(self, token: int, target: XorName, payload: list[Any]) -> None:
        item = [self.key, self.ballot.to_obj(), True, payload]
        self.core.rpc(
            target,
            new_message("accept", items=[item]),
            lambda reply: self.on_accepted(token, target, reply),
        )

    def on_accepted(self, token: int, target: XorName, reply: dict[str, Any] | None) -> None:
        if token != self.token or self.phase != "accept":
            return
        assert self.new is not None
        item = _first_item(reply, "accepted")
        if item is None:
            self.refused.add(target)
        elif item[1] == OK:
            self.acked.add(target)
            if len(item) > 3 and item[3] is not None:
                self.votes[target] = item[3]
        elif item[1] == NEED_STATE and target not in self.sent_proof:
            self.send_accept(token, target, self._proof_payload(target, None))
            return
        else:
            if len(item) > 2 and item[2] is not None:
                with contextlib.suppress(ValueError, E.SafeError):
                    self.rep.see(self.rep.ballot(item[2]))
            self.refused.add(target)
        # Chosen once a majority of each group the new value names has accepted it: then any
        # later round, which asks a majority of the groups of the newest value it knows, meets it.
        if _majorities(self.acked, self.new.quorums):
            self.rep.fast[self.key] = (self.ballot.successor(), self.new)
            # The votes that came with the acceptances certify the new value: they are what we
            # show a member that lags behind when we next build on it.
            votes = list(self.votes.values())
            self.rep.certs[self.key] = (self.new.digest(), votes)
            self.rep.announce(self.key, self.new, votes)
            self.finish()
            return
        if _out_of_reach(self.refused, self.new.quorums):
            self.retry()

    # ---------------------------------------------------------------- completion

    def finish(self) -> None:
        if self.phase == "done":
            return
        self.phase = "done"
        self.token += 1
        for respond, result, error in self.results:
            respond(result=result, error=error)
        self.results = []
        self.rep.proposal_done(self)

    def finish_all(self, error: E.SafeError) -> None:
        self.results = [(respond, None, error) for _r, respond in self.batch]
        self.finish()


_majorities = has_majorities


def _out_of_reach(refused: set[XorName], quorums: tuple[tuple[XorName, ...], ...]) -> bool:
    """Have so many refused that some group can no longer give a majority?"""
    return any(len(group) - sum(1 for n in group if n in refused) < majority(len(group)) for group in quorums)


def _blind(request: Request, value: Register) -> Request:
    """Test-only break: turn conditional entry writes into blind overwrites (lost updates)."""
    from .data import Del, Ins, Update
    from .requests import MutateEntries

    op, md = request.op, value.state.md
    if not isinstance(op, MutateEntries) or md is None:
        return request
    actions = {}
    for key, action in op.actions.items():
        current = md.entries.get(key)
        if current is None:
            actions[key] = Ins(b"" if isinstance(action, Del) else action.content)
        elif isinstance(action, Del):
            actions[key] = Del(current.entry_version + 1)
        else:
            actions[key] = Update(action.content, current.entry_version + 1)
    return Request(MutateEntries(op.address, actions), request.requester, request.request_id, request.owner)


def _items(msg: dict[str, Any], width: int, limit: int = MAX_ITEMS) -> list[list[Any]]:
    """The items of a node message, each a list of `width` fields starting with a 40-byte MD
    key; anything else is a ProtocolError (and changes nothing)."""
    items = msg["items"]
    if not isinstance(items, list) or len(items) > limit:
        raise E.ProtocolError(f"items: a list of at most {limit}")
    for item in items:
        if not isinstance(item, list) or len(item) != width or not isinstance(item[0], bytes) or len(item[0]) != 40:
            raise E.ProtocolError(f"an item is [md key (40 bytes), ...] of {width} fields")
    return items


def _first_item(reply: dict[str, Any] | None, kind: str) -> list[Any] | None:
    if reply is None or reply.get("k") != kind:
        return None
    items = reply.get("items")
    if not isinstance(items, list) or not items or not isinstance(items[0], list):
        return None
    item = items[0]
    return item if len(item) >= 2 else None


class Replicator:
    """The MDs one node keeps: acceptor records, proposals, anti-entropy."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.disk = RecordStore(core.store)
        self.records: dict[bytes, AcceptorRecord] = {}
        self.proposals: dict[bytes, Proposal] = {}
        self.queued: dict[bytes, list[tuple[Request, Respond]]] = {}
        self.fast: dict[bytes, tuple[Ballot, Register]] = {}
        self.counter = 0
        self.left_at: dict[bytes, float] = {}
        self.quarantined: set[bytes] = set()
        self._sync_due = False
        self._sync_rounds = 0
        self._last_group: dict[bytes, tuple[XorName, ...]] = {}
        self._first_seen: dict[bytes, AcceptorRecord] = {}  # only for the "stale" lying mode
        self._epoch_seen = -1
        self._unsettled = False
        self._catch_up: list[bytes] = []
        # Proofs of the values we hold (kept in memory: after a restart the first round on an
        # MD gathers them again). certs: votes of a majority of the group for a value we know
        # was chosen; steps: how our value was derived from the one before it.
        self.certs: dict[bytes, tuple[bytes, list[Any]]] = {}
        self.steps: dict[bytes, list[Any]] = {}

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], None]]:
        return {"prepare": self.on_prepare, "accept": self.on_accept, "sync": self.on_sync,
                "md_request": self.on_md_request, "commit": self.on_commit}

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

    def record(self, key: bytes) -> AcceptorRecord:
        return self.records.get(key) or AcceptorRecord()

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
        target = int.from_bytes(name, "big")
        view = self.core.group(name, width * self.core.config.replication + 2)
        radius = max((int.from_bytes(n, "big") ^ target for n in view), default=-1)
        record = self.records.get(key)
        named: set[XorName] = set()
        if record is not None and record.value is not None:
            named = set(record.value.members) | set(record.value.prev)
        return lambda node: node in named or (int.from_bytes(node, "big") ^ target) <= radius

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

    def vote(self, key: bytes, digest: bytes) -> list[bytes]:
        return make_vote(self.core.keys, key, digest)

    def certified(self, key: bytes, value: Register, votes: Any) -> bool:
        # Voters are counted among the 2R nodes nearest the name that we know: a value that
        # moves to a new group is certified by the group it comes from.
        return bool(votes) and certifies(key, value.digest(), votes, value.quorums, self.plausible(key, 2))

    def announce(self, key: bytes, value: Register, votes: list[Any]) -> None:
        """Tell the members that `value` was chosen, with its certificate:
        any of them can then prove it to a proposer (a value known only to a minority of its
        holders, with no certificate, would stall the MD). One message each, no reply."""
        members = {n for group in value.quorums for n in group} - {self.core.name}
        for name in sorted(members):
            contact = self.core.contact(name)
            self.core.send(name, contact.address if contact else None,
                           new_message("commit", items=[[key, value.digest(), votes]]))

    def on_commit(self, peer: Peer, msg: dict[str, Any]) -> None:
        """A proposer says a value was chosen, with its votes. Kept (unverified: whoever uses
        a certificate checks it) if it is the value we hold."""
        for key, digest, votes in _items(msg, 3, limit=64):
            record = self.records.get(key)
            if record is not None and record.digest == digest and isinstance(votes, list) and self.speaks_for(peer, key):
                self.certs[key] = (digest, votes[:16])

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
                request.verify()
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
        for key, ballot_obj, hint in _items(msg, 3):
            if not self.speaks_for(peer, key):
                out.append([key, NOT_MEMBER, None, None, b"", None])
                continue
            ballot = self.ballot(ballot_obj)
            self.see(ballot)
            if key in self.quarantined:
                out.append([key, NOT_READY, None, None, b"", None])
                continue
            record = self.record(key)
            record2, ok = on_prepare(record, ballot)
            if record2 is not record:
                self.write(key, record2)
            if not ok:
                out.append([key, REJECTED, record2.promised.to_obj(), None, b"", None])
                continue
            digest = record2.digest
            raw = record2.value.encode() if record2.value is not None and hint != digest else None
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
            out.append([key, OK, None, record2.accepted.to_obj(), digest, raw, near, vote, step, cert])
        self.core.reply(peer, msg, "promise", items=out)

    def on_accept(self, peer: Peer, msg: dict[str, Any]) -> None:
        out = []
        for key, ballot_obj, fast, payload in _items(msg, 4):
            if not self.speaks_for(peer, key):
                out.append([key, NOT_MEMBER, None])
                continue
            ballot = self.ballot(ballot_obj)
            self.see(ballot)
            if key in self.quarantined:
                out.append([key, NOT_READY, None])
                continue
            record = self.record(key)
            if ballot < record.promised:
                out.append([key, REJECTED, record.promised.to_obj()])
                continue
            value, step = self._value_from(key, record, payload)
            if value is None:
                out.append([key, NEED_STATE, None])
                continue
            record2, ok = on_accept(record, ballot, value, fast=bool(fast))
            self.write(key, record2)
            if step is not None:
                self.steps[key] = step
            else:
                self.steps.pop(key, None)
            self.left_at.pop(key, None)
            if self.fast.get(key) is not None and self.fast[key][0] <= ballot and peer.name != self.core.name:
                self.fast.pop(key, None)  # someone else moved this MD on: our fast ballot is spent
            out.append([key, OK, None, self.vote(key, value.digest())])
        self.core.reply(peer, msg, "accepted", items=out)

    def _value_from(self, key: bytes, record: AcceptorRecord, payload: Any) -> tuple[Register | None, Any]:
        """The value an accept proposes, if it is proven to us (node/proofs.py), and the step
        that derived it; (None, None) if we cannot check it (the proposer then sends proof)."""
        if not isinstance(payload, list) or not payload:
            raise E.ProtocolError("an accept's payload is [mode, ...]")
        mode = payload[0]
        if mode == STEP and len(payload) == 2:
            return self.apply_step(key, record.value, payload[1]), payload[1]
        if mode == TWO_STEPS and len(payload) == 3:
            base = self.apply_step(key, record.value, payload[1])
            return self.apply_step(key, base, payload[2]), payload[2]
        if mode == CERTIFIED and len(payload) == 4:
            base = self.adopt_certified(key, payload[1], payload[2])
            value = None if base is None else self.apply_step(key, base, payload[3])
            if value is not None and record.value is not None and value.seq < record.value.seq:
                # An old certified value cannot roll our copy back (a replayed certificate).
                self.core.log("stale_certificate", key=key.hex(), seq=value.seq, ours=record.value.seq)
                return None, None
            return value, payload[3]
        if mode == FULL and len(payload) == 2 and (self.unvalidated or "skip_version_check" in self.core.config.breaks):
            return Register.decode(payload[1]), None
        raise E.ProtocolError(f"an accept must prove its value (mode {mode!r:.20} proves nothing)")

    def adopt_certified(self, key: bytes, raw: Any, votes: Any) -> Register | None:
        """A base value shown with its certificate, if the certificate holds."""
        if not isinstance(raw, bytes):
            return None
        base = Register.decode(raw)
        if not self.certified(key, base, votes):
            self.core.log("bad_certificate", key=key.hex())
            return None
        self.certs[key] = (base.digest(), votes)
        return base

    # ---------------------------------------------------------------- proposer

    def submit(self, request: Request, respond: Respond, proof: Request | None = None) -> None:
        """Run `request` on its MD: here if we are in the MD's close group, else through the
        closest member (only members may propose; node/core.py's account checks and clients
        with a stale view of the group reach other nodes). `proof`: the client's signed
        request an internal charge is for."""
        op = request.op
        assert isinstance(op, MDataOp)
        key = item_key(op.address)
        if self.core.ready and self.core.name not in self.core.group(op.address.name) \
                and "trust_any_peer" not in self.core.config.breaks:
            self._forward(request, respond, proof)
            return
        self._enqueue(key, op.address.name, [(request, respond)], "client")

    def _forward(self, request: Request, respond: Respond, proof: Request | None, tried: int = 0) -> None:
        group = self.core.group(request.op.name)
        members = [m for m in group if m != self.core.name]
        if tried >= len(members):
            respond(error=E.QuorumNotReached("no member of the close group took the request"))
            return
        fields: dict[str, Any] = {"req": request.to_obj()}
        if proof is not None:
            fields["proof"] = proof.to_obj()

        def answered(reply: dict[str, Any] | None) -> None:
            if reply is None:
                self._forward(request, respond, proof, tried + 1)
            elif reply.get("k") == "response":
                respond(result=reply.get("result"))
            elif reply.get("k") == "error":
                respond(error=error_from_wire(reply.get("err")))
            else:
                self._forward(request, respond, proof, tried + 1)

        self.core.rpc(members[tried], new_message("md_request", **fields), answered,
                      timeout=self.core.config.client_deadline / 2)

    def on_md_request(self, peer: Peer, msg: dict[str, Any]) -> None:
        """A node that is not in an MD's group asks us, a member, to run a request on it."""
        request = Request.from_obj(msg["req"])
        request.verify()
        op = request.op
        if not isinstance(op, MDataOp):
            raise E.InvalidOperation("md_request carries an MD operation")
        if op.INTERNAL:
            # An internal charge must show the client's signed request it charges for, so a
            # node cannot spend anyone's allowance on mutations nobody asked for.
            proof = Request.from_obj(msg.get("proof"))
            proof.verify()
            if proof.request_id != request.request_id or proof.account_owner != getattr(op, "owner", None):
                raise E.InvalidOperation("a charge must come with the request it is for")
        elif op.MUTATES:
            self.core.check_fresh(request)
        if self.core.name not in self.core.group(op.name):
            raise E.NotReady("this node is not in that MD's close group either")

        def respond(result: Any = None, error: E.SafeError | None = None) -> None:
            if error is not None:
                self.core.reply_error(peer, msg, error)
            else:
                self.core.reply(peer, msg, "response", result=result)

        key = item_key(op.address)
        self._enqueue(key, op.address.name, [(request, respond)], "client")

    def _enqueue(self, key: bytes, name: XorName, batch: list[tuple[Request, Respond]], purpose: str) -> None:
        if key in self.proposals:
            if batch:
                self.queued.setdefault(key, []).extend(batch)
            return
        proposal = Proposal(self, key, name, batch, purpose)
        self.proposals[key] = proposal
        proposal.start()

    def proposal_done(self, proposal: Proposal) -> None:
        self.proposals.pop(proposal.key, None)
        waiting = self.queued.pop(proposal.key, None)
        if waiting:
            # Everything that queued up while the last round ran goes in one round: group
            # commit per MD, which is what makes a hot stream fast.
            self._enqueue(proposal.key, proposal.name, waiting, "client")

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
        self.core.reply(peer, msg, "read_reply", **fields)

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
        if "no_anti_entropy" in self.core.config.breaks:
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
            if self._coordinator(members, group) != me:
                continue
            if group != members or record.value.prev:
                self._unsettled = True  # look again next round, until the members are right
                if budget > 0 and key not in self.proposals:
                    budget -= 1
                    self._enqueue(key, name, [], "reconfig")
            elif full:
                for member in members:
                    if member != me:
                        digests.setdefault(member, []).append([key, record.accepted.to_obj(), record.digest])
        for member, items in digests.items():
            for start in range(0, len(items), 500):
                chunk = items[start:start + 500]
                self.core.rpc(member, new_message("sync", items=chunk), self._on_sync_reply)

    def _catch_up_some(self) -> None:
        budget = self.core.config.max_sync_proposals // 2 - len(self.proposals)
        while self._catch_up and budget > 0:
            key = self._catch_up.pop()
            if key in self.records and key not in self.proposals:
                budget -= 1
                self._enqueue(key, XorName(key[:32]), [], "repair")

    def _coordinator(self, members: tuple[XorName, ...], group: tuple[XorName, ...]) -> XorName | None:
        """The closest live member: it drives membership changes and repairs."""
        for name in members:  # members are kept sorted by distance to the MD's name
            if name == self.core.name or (name in self.core.routing and not self.core.routing.is_suspect(name)):
                return name
        return group[0] if group else None

    def _drop(self, key: bytes) -> None:
        self.fast.pop(key, None)
        self.certs.pop(key, None)
        self.steps.pop(key, None)
        self.left_at.pop(key, None)
        self._last_group.pop(key, None)
        self.disk.delete(key, self.records.pop(key, None))
        self.core.log("md_dropped", key=key.hex())

    def on_sync(self, peer: Peer, msg: dict[str, Any]) -> None:
        stale = []
        for key, accepted, digest in _items(msg, 3, limit=1000):
            if not self.speaks_for(peer, key):
                continue
            record = self.record(key)
            if key in self.quarantined or record.accepted != self.ballot(accepted) or record.digest != digest:
                stale.append(key)
        self.core.reply(peer, msg, "sync_diff", keys=stale)

    def _on_sync_reply(self, reply: dict[str, Any] | None) -> None:
        if reply is None or reply.get("k") != "sync_diff":
            return
        budget = self.core.config.max_sync_proposals - len(self.proposals)
        for key in reply.get("keys", [])[:budget]:
            if isinstance(key, bytes) and len(key) == 40 and key not in self.proposals:
                self._enqueue(key, XorName(key[:32]), [], "repair")
