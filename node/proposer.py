"""The proposer side of per-MD consensus: one round of CASPaxos on one MD.

A client's mutation reaches a member of the MD's close group, which proposes: prepare
(learn the highest accepted value from a majority, and prove it), apply the batch of
requests with the rules engine, accept (write the result to a majority, durably). A
successful accept also promises the proposer's next ballot, so its next round skips the
prepare. docs/replication.md has the protocol and its proof sketch; docs/security.md says
how values are proven (node/proofs.py) so that no single liar can make a forged one stick.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from . import errors as E
from .messages import (
    ACCEPTED,
    ALL_PROOFS,
    CERTIFIED,
    CERTIFIED_PARENT,
    CHAIN,
    FULL,
    MAX_CHAIN,
    NEED_STATE,
    OK,
    PREPARE,
    PROMISE,
    STEP,
    TWO_STEPS,
    Accept,
    Accepted,
    Prepare,
    Promise,
    first_item,
)
from .paxos import ZERO, Ballot, Register
from .proofs import has_majorities, looks_certified, majority
from .requests import Request, apply_mutation, read_mdata
from .routing import Contact
from .rules import MDataState
from .wire import new_message
from .xorname import XorName, closest, distance

if TYPE_CHECKING:
    from .replication import Replicator
    from .services import NodeServices

Respond = Callable[..., None]

@dataclass
class _Promise:
    accepted: Ballot
    digest: bytes
    value: Register | None
    vote: Any = None
    step: Any = None
    cert: Any = None
    chain: Any = None


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
    parent: tuple[Register, list[Any]] | None = None  # the base's parent value and its votes
    base_chain: list[Any] | None = None  # [anchor, votes, steps]: see Acceptor._extend_chain
    step: list[Any] = field(default_factory=list)
    votes: dict[XorName, Any] = field(default_factory=dict)
    sent_proof: dict[XorName, set[int]] = field(default_factory=dict)  # proof modes tried per target
    token: int = 0  # bumps on every (re)start, so late replies of an old round are ignored
    # What shows a client that its write took effect: [the value's head, votes for it]
    # (node/proofs.py, `proves_ack`). Sent with every "ok" of the round.
    ack_proof: list[Any] | None = None

    @property
    def core(self) -> NodeServices:
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
            config = self.core.config
            view = tuple(self.core.group(self.name))
            # Contacts we evicted lately stay in the group whose majority must answer "nothing":
            # a partition evicts the other side after a few seconds, and each side would
            # otherwise see a full group of its own and create the MD a second time. They
            # cannot answer while cut off, so only the side holding a majority of the group as
            # it was can conclude absence (docs/replication.md, "Creating an MD").
            lost = () if "forget_lost_members" in config.breaks else tuple(
                self.core.recently_lost(self.name, config.replication, within=config.absence_memory))
            group = tuple(closest(self.name, view + lost, config.replication))
            wide = tuple(n for n in self.core.group(self.name, 2 * config.replication) if n not in group)
            # Seeing fewer nodes than a close group, we may be the one cut off: every contact
            # we lost lately is asked too.
            if len(view) < config.replication:
                wide += tuple(n for n in self.core.recently_lost(self.name, config.replication)
                              if n not in group and n not in wide)
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
        msg_items = [Prepare(self.key, self.ballot, hint).to_wire()]
        for target in dict.fromkeys(self.members + extended):
            self.core.rpc(
                target,
                new_message(PREPARE, items=msg_items),
                partial(self.on_promise, token, target),
            )

    def on_promise(self, token: int, target: XorName, reply: dict[str, Any] | None) -> None:
        if token != self.token or self.phase != "prepare":
            return
        try:
            promise = self._read_promise(token, first_item(reply, PROMISE, Promise, self.rep.ballot))
        except (ValueError, TypeError, E.SafeError) as exc:
            # A malformed promise is a refusal: a Byzantine member cannot crash its proposer.
            self.core.log("bad_promise", peer=target.hex(), error=repr(exc)[:120])
            promise = None
        if promise is None:
            self.refused.add(target)
        else:
            self.promises[target] = promise
        self.evaluate_promises()

    def _read_promise(self, token: int, item: Promise | None) -> _Promise | None:
        if item is None or item.key != self.key:
            return None
        digest, raw = item.digest, item.value
        if item.status != OK:
            if item.promised is not None:
                self.rep.see(item.promised)
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
        if value is None and item.near:
            self._learn(token, item.near)
        return _Promise(item.accepted or ZERO, digest, value, item.vote, item.step, item.cert, item.chain)

    def _learn(self, token: int, near: Any) -> None:
        """Ask, too, the nodes an acceptor holding nothing named as the group, if they are
        closer to the name than those we asked (absence is then decided among them too)."""
        asked = set(self.members) | set(self.extended)
        horizon = max((distance(n, self.name) for n in asked), default=-1)
        for item in near[: self.core.config.replication] if isinstance(near, list) else []:
            try:
                name, address = XorName(item[0]), item[1]
                if not isinstance(address, str) or len(address) > 256:
                    continue
            except (ValueError, TypeError, IndexError):
                continue
            if (name in asked or distance(name, self.name) > horizon
                    or len(self.extended) > 4 * len(self.members)):
                continue
            asked.add(name)
            self.extended = self.extended + (name,)
            self.core.rpc(
                Contact(name, address),
                new_message(PREPARE,
                            items=[Prepare(self.key, self.ballot, self.rep.record(self.key).digest).to_wire()]),
                partial(self.on_promise, token, name),
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
        fresher = self._certified_newer(best)
        if fresher is not None:
            # A value the promises certify that counts more rounds than the one with the highest
            # ballot: chosen values only count up, so the latter was not accepted after it by the
            # rules (a liar's report of an old certified value, or copies that gave way to one,
            # Acceptor.descends). We build on the newer one, which also puts those copies right.
            self.core.log("older_than_certified", key=self.key.hex(), digest=best.digest.hex())
            best = fresher
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
        own = self.rep.record(self.key).value
        if own is not None and best.digest != own.digest() and not self._could_hold(own):
            # Our own copy is not the base, and too few members may hold it (or anything newer)
            # for it to have been chosen: it is a round's that was cut short, and our acceptor
            # need not hold it against the value we build instead (Acceptor.descends).
            self.rep.not_chosen(self.key, own.digest())
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
        self.ack_proof = None
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
        # A move never shrinks the group below R: a view with fewer nodes than that near the
        # name is one cut down by a partition (or by demotions), and a group drawn from it
        # names nodes far from the name that the other side will not find plausible once it
        # heals, so that no member there can check the move (Acceptor.apply_step) and the MD
        # stalls in it. (A network of fewer than R nodes has small groups from the start.)
        full_view = len(group) >= min(self.core.config.replication, len(value.members))
        if self.purpose == "reconfig" and not value.prev and group != value.members and full_view:
            # A move starts only from a settled value: one group change at a time. And it
            # takes in only nodes that have done work for us: a newcomer that has not yet is
            # given a little (an empty chunk_has) and the move waits for a later round, so a
            # Sybil that answers pings but never works is demoted before it can get in.
            untried = [n for n in group if n not in value.members and n != self.core.name
                       and not self.core.proven(n)]
            for name in untried:
                self.core.give_work(name)
            if not untried:
                value = value.with_members(group, prev=value.members)
        unchanged = value.digest() == start.digest()
        # A repair exists to write the value back to members that lag, so it always writes.
        if unchanged and (base is None or (chosen and self.purpose != "repair")):
            if base is not None:
                # Chosen, and the batch changed nothing (retries of requests the value holds,
                # or reads): the holders' own votes, which came with their promises, vouch for
                # it (not the certificates they pass on unchecked, which a liar can pad).
                digest = start.digest()
                self.ack_proof = [start.head(), [p.vote for p in self.promises.values()
                                             if p.digest == digest and p.vote is not None]]
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
        self.base_votes, self.base_step, self.parent = None, None, None
        own = rep.record(self.key)
        self.base_chain = rep.chain_for(self.key, promise.digest) if own.digest == promise.digest else None
        if self.base_chain is None and isinstance(promise.chain, list) and len(promise.chain) == 3:
            self.base_chain = promise.chain  # checked below before we rely on it
        if own.value is not None and own.digest == promise.digest:
            # Our own copy: we checked it when we stored it. What proves it to others is
            # checked by them, so the votes are passed on unverified (no cost on this path).
            self.base_votes = rep.cert_for(self.key, own.value) or self._votes_for(promise.digest)
            step = rep.steps.get(self.key)
            self.base_step = step if step is not None and step[4] == promise.digest else None
            self._find_parent()
            return True
        if rep.unvalidated:
            return True
        votes = self._votes_for(promise.digest)
        if rep.certified(self.key, value, votes):
            self.base_votes = votes
            return True
        # Not certified (its round was cut short): derived by steps from a certified value?
        if self._chain_proves(promise.digest):
            return True
        self.base_chain = None
        # ... or derivable from the value we hold, or from one that another node reported?
        # (Never from the reporter's own word alone: a liar would have to be two nodes to show
        # both a forged base and a step from it.)
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
                self._find_parent()
                return True
        return False

    def _certified_newer(self, best: _Promise) -> _Promise | None:
        """The promise of the value with the highest count of rounds above `best`'s that the
        promises' votes certify, if any (checked only when such a count was reported)."""
        if best.value is None:
            return None
        checked: set[bytes] = set()
        for p in sorted(self.promises.values(), key=lambda p: -(p.value.seq if p.value is not None else -1)):
            value = p.value
            if value is None or value.seq <= best.value.seq:
                return None
            if p.digest not in checked:
                checked.add(p.digest)
                if self.rep.certified(self.key, value, self._votes_for(p.digest)):
                    return p
        return None

    def _chain_anchor_looks_certified(self) -> bool:
        assert self.base_chain is not None
        anchor, votes, _steps = self.base_chain
        with contextlib.suppress(ValueError, TypeError):
            value = anchor if isinstance(anchor, Register) else Register.decode(anchor)
            return looks_certified(votes, value.quorums)
        return False

    def _chain_proves(self, digest: bytes) -> bool:
        chain = self.base_chain
        if chain is None or not isinstance(chain[2], list) or len(chain[2]) > MAX_CHAIN:
            return False
        try:
            value: Register | None = Register.decode(chain[0])
        except (ValueError, TypeError):
            return False
        if value is None or not self.rep.certified(self.key, value, chain[1]):
            return False
        for step in chain[2]:
            value = None if value is None else self.rep.apply_step(self.key, value, step)
        return value is not None and value.digest() == digest

    def _find_parent(self) -> None:
        """The value our base was derived from, if another node showed it to us with votes:
        what proves an uncertified base to a member that holds neither (a new member)."""
        step = self.base_step
        if step is None:
            return
        for p in self.promises.values():
            if p.value is not None and p.digest == step[0]:
                self.parent = (p.value, self._votes_for(p.digest))
                return

    def _votes_for(self, digest: bytes) -> list[Any]:
        votes = []
        for p in self.promises.values():
            if p.digest == digest:
                votes.extend(p.cert if isinstance(p.cert, list) else [])
                if p.vote is not None:
                    votes.append(p.vote)
        return votes

    def _could_hold(self, value: Register) -> bool:
        """Could a majority of each group `value` names hold it or a value derived from it?
        Only members that told us they hold something else that counts no more rounds are
        ruled out (a liar can rule out only itself, so a value an honest majority holds is
        never ruled out)."""
        digest = value.digest()

        def may_hold(name: XorName) -> bool:
            promise = self.promises.get(name)
            if promise is None or promise.digest == digest:
                return True
            return promise.value is not None and promise.value.seq > value.seq

        return all(sum(1 for n in group if may_hold(n)) >= majority(len(group)) for group in value.quorums)

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
        self.votes, self.sent_proof = {}, {}
        # Blind (rewritten, unsigned) requests of the test-only break travel as full values.
        blind = "skip_version_check" in self.core.config.breaks
        targets = dict.fromkeys(self.members + tuple(n for g in new.quorums for n in g))
        for target in targets:
            promise = self.promises.get(target)
            same_base = promise.digest == base.digest() if promise else known_base
            if blind:
                payload = [FULL, new.encode()]
            elif same_base or promise is None:
                # With the base's certificate when we have it: the accept of round n+1 tells
                # the group that round n's value was chosen (instead of a commit message).
                proven = looks_certified(self.base_votes, base.quorums)
                payload = [STEP, self.step, self.base_votes] if proven else [STEP, self.step]
            else:
                payload = self._proof_payload(target, promise.digest)
            self.send_accept(token, target, payload)

    def _proof_payload(self, target: XorName, their_digest: bytes | None) -> list[Any]:
        """The accept for a target that does not hold our base: the base's certificate, or the
        step that derived the base from what the target holds."""
        assert self.base is not None
        tried = self.sent_proof.setdefault(target, set())
        if CERTIFIED not in tried and self._looks_certified(self.base, self.base_votes):
            tried.add(CERTIFIED)
            return [CERTIFIED, self.base.encode(), self.base_votes, self.step]
        if TWO_STEPS not in tried and self.base_step is not None and their_digest in (None, self.base_step[0]):
            tried.add(TWO_STEPS)
            return [TWO_STEPS, self.base_step, self.step]
        if CERTIFIED_PARENT not in tried and self.base_step is not None and self.parent is not None \
                and self._looks_certified(*self.parent):
            tried.add(CERTIFIED_PARENT)
            parent, votes = self.parent
            return [CERTIFIED_PARENT, parent.encode(), votes, self.base_step, self.step]
        if CHAIN not in tried and self.base_chain is not None and self._chain_anchor_looks_certified():
            tried.add(CHAIN)
            anchor, votes, steps = self.base_chain
            return [CHAIN, anchor, votes, steps, self.step]
        tried.update(ALL_PROOFS)
        if self.rep.unvalidated:
            assert self.new is not None
            return [FULL, self.new.encode()]
        return [STEP, self.step]  # nothing proves our base to it: it will refuse

    @staticmethod
    def _looks_certified(value: Register, votes: list[Any] | None) -> bool:
        """Do `votes` name a majority of each group `value` names? (A value in the middle of
        a move needs both.)"""
        return looks_certified(votes, value.quorums)

    def send_accept(self, token: int, target: XorName, payload: list[Any]) -> None:
        item = Accept(self.key, self.ballot, True, payload)
        # Through the replicator's outbox: the accepts of every round this node starts while
        # handling one batch of messages leave as one message per member (node/replication.py).
        self.rep.queue_accept(target, item.to_wire(), partial(self.on_accepted, token, target))

    def on_accepted(self, token: int, target: XorName, reply: dict[str, Any] | None) -> None:
        if token != self.token or self.phase != "accept":
            return
        assert self.new is not None
        item: Accepted | None = None
        with contextlib.suppress(ValueError, TypeError, E.SafeError):  # malformed: no answer
            item = first_item(reply, ACCEPTED, Accepted, self.rep.ballot)
        if item is None or item.key != self.key:
            self.refused.add(target)
        elif item.status == OK:
            self.acked.add(target)
            if item.vote is not None:
                self.votes[target] = item.vote
        elif item.status == NEED_STATE and self.sent_proof.get(target) != ALL_PROOFS:
            self.send_accept(token, target, self._proof_payload(target, None))
            return
        else:
            if item.promised is not None:
                self.rep.see(item.promised)
            self.refused.add(target)
        # Chosen once a majority of each group the new value names has accepted it: then any
        # later round, which asks a majority of the groups of the newest value it knows, meets it.
        if _majorities(self.acked, self.new.quorums):
            self.rep.fast[self.key] = (self.ballot.successor(), self.new)
            # The votes that came with the acceptances certify the new value: they are what we
            # show a member that lags behind when we next build on it.
            votes = list(self.votes.values())
            self.rep.certs[self.key] = (self.new.digest(), votes)
            self.ack_proof = [self.new.head(), votes]
            # Every member learns now that the value was chosen (the next round's accept says
            # so too). Telling only those that did not answer yet would save messages, but a
            # member must know its own copy is chosen to refuse a replayed certificate of the
            # value before it (docs/security.md, "No going back").
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
            respond(result=result, error=error, ack_proof=self.ack_proof if error is None else None)
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
    from .data import Del, EntryAction, Ins, Update
    from .requests import MutateEntries

    op, md = request.op, value.state.md
    if not isinstance(op, MutateEntries) or md is None:
        return request
    actions: dict[bytes, EntryAction] = {}
    for key, action in op.actions.items():
        current = md.entries.get(key)
        if current is None:
            actions[key] = Ins(b"" if isinstance(action, Del) else action.content)
        elif isinstance(action, Del):
            actions[key] = Del(current.entry_version + 1)
        else:
            actions[key] = Update(action.content, current.entry_version + 1)
    return Request(MutateEntries(op.address, actions), request.requester, request.request_id, request.owner)
