"""Protocol-level attackers: peers that speak the node protocol with intent to harm.

The liars of `simulations.byzantine` only bend their own replies. The attackers here send
node-to-node messages of their own, built exactly as `node.replication` and `node.chunks`
build theirs (`node.wire.new_message`) and sent through the simulated network like any
node's, so a node core sees them as it would see a peer on TCP:

- ``ghost``: an outsider with its own keypair and no address. It never enters a routing
  table; it just sends.
- ``stranger``: an outsider with an address that answers pings and lookups, so it sits in
  the routing tables like a node; its key is chosen so that it is far from every item it
  attacks (never in their close groups).
- ``member``: a real node (the real core, joined like any other) whose key is chosen so
  that it is the closest node to one of the workload's MDs, so that MD's coordinator; it
  answers the protocol honestly but withholds all anti-entropy (no digests, repairs, moves
  or chunk pushes: lying mode "withhold"), answers every client's MD write "ok" at once and
  drops it (lying mode "fake_ack": the client must find the "ok" unproven and ask another
  member), and sends forged messages about the items of its own group.

Each round, every attacker that is up performs one attack from the scenario's menu:

- ``forge``: an ``accept`` carrying a full MD value (payload mode 0) that makes the attacker
  the owner and rewrites an entry, with no signed request behind it; now and then an MD
  that no client created at all;
- ``handoff``: a full value that moves the MD to a group naming the outsiders (a forged
  hand-off of the register);
- ``huge-ballot``: ``prepare`` and ``accept`` with ballot counters 2**64-1 and 2**63 (the
  accept is a no-op delta, so only the number is wrong);
- ``stale-ballot``: ``prepare`` and forged ``accept`` with ballot 0 or 1;
- ``replay``: a ``prepare``, ``accept`` or ``chunk_put`` the attackers captured earlier (the
  member and the stranger see real ones), resent later to the item's group;
- ``chunk``: ``chunk_put`` of content no client paid for, to a chunk group the attacker is
  not in (with a ``name`` field its bytes do not hash to, half of the time);
- ``sync``: anti-entropy digests claiming versions that do not exist;
- ``rollback``: an ``accept`` carrying a genuine certificate of an older value of the
  member's MD (one the member itself held and saw certified), as it is or followed by steps
  that only count rounds, so that it seems to count more rounds than the newer copies. The
  member also sends it the moment an accept of a newer value reaches it, to race that value's
  commit: members that took the newer value do not know yet that it was chosen.

Every choice is drawn from the seeded generator the run gives, so a seed replays exactly.
The harm, if any, is for `simulations.integrity` to find; `counts` says what was sent and
how the network answered (``<kind>:<reply>``).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from node.data import Action, MutableData, PermissionSet, Value
from node.errors import ProtocolError
from node.keys import Keypair
from node.messages import CERTIFIED, CHAIN
from node.paxos import AcceptorRecord, Ballot, Register, item_key
from node.proofs import looks_certified
from node.rules import MDataState
from node.wire import new_message
from node.xorname import XorName, sha3_256

from .network import Delivery, SimEndpoint
from .simulator import SimNode, SimStore, Simulator
from .workloads import MD_TAG, Workload

ATTACKS: dict[str, str] = {
    "forge": "accept with a full MD value changing owner and entries, no signed request (or an MD nobody created)",
    "handoff": "accept with a full MD value moving the MD to a group of attackers",
    "huge-ballot": "prepare and accept with ballot counters 2**64-1 and 2**63",
    "stale-ballot": "prepare and forged accept with ballot 0 or 1",
    "replay": "captured prepare/accept/chunk_put messages resent later",
    "chunk": "chunk_put of content nobody paid for, to a group the sender is not in",
    "sync": "anti-entropy digests of versions that do not exist",
    "rollback": "accept with a replayed genuine certificate of an older value, racing the newer value's commit",
}
KINDS = ("ghost", "stranger", "member")
HUGE = (2**64 - 1, 2**63)
CAPTURED = ("prepare", "accept", "chunk_put")
OUTSIDER_SLOT = 1000  # outsiders' slots: never partitioned or slowed (those faults pick node slots)


@dataclass
class Attacker:
    kind: str
    label: str
    keys: Keypair
    endpoint: SimEndpoint | None = None  # outsiders
    node: SimNode | None = None  # the member
    sent: Counter[str] = field(default_factory=Counter)

    @property
    def name(self) -> XorName:
        return self.node.name if self.node is not None else self.keys.name

    @property
    def up(self) -> bool:
        if self.node is not None:
            return self.node.state == "up" and self.node.endpoint is not None and not self.node.endpoint.closed
        return self.endpoint is not None and not self.endpoint.closed


class Attackers:
    """The attackers of one run; `setup` after the workload's MDs exist, then `run`."""

    def __init__(self, sim: Simulator, workload: Workload, rng: random.Random, attacks: Iterable[str],
                 kinds: Iterable[str] = KINDS, counts: Counter[str] | None = None, interval: float = 1.5) -> None:
        unknown = (set(attacks) - set(ATTACKS)) | (set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown attacks {sorted(unknown)}; known: {', '.join([*ATTACKS, *KINDS])}")
        self.sim = sim
        self.workload = workload
        self.rng = rng
        self.attacks = tuple(a for a in ATTACKS if a in set(attacks))
        self.kinds = tuple(k for k in KINDS if k in set(kinds))
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.interval = interval
        self.attackers: list[Attacker] = []
        self.captured: deque[tuple[str, dict[str, Any]]] = deque(maxlen=64)  # (kind, message)
        self._asked: dict[bytes, str] = {}  # message id we sent -> what it was, to count replies
        self.member_md = 0  # index of the workload MD whose group the member joins
        # Certified values of the member's MD the member held, oldest first: (value, votes).
        self.certified: list[tuple[Register, list[Any]]] = []
        self._raced = -1e9  # when the member last raced a commit with a rollback

    # ------------------------------------------------------------------ setup

    async def setup(self) -> None:
        names = [bytes(md.name) for md in self.workload.mds]
        # Outsiders stand far from every MD they attack, so that no crash of a few nodes ever
        # makes one of them part of a close group (in a small network: beyond every node).
        far = min(2 * self.sim.config.replication, len(self.sim.live()))
        for index, kind in enumerate(self.kinds):
            label = f"x{index}" if kind != "member" else "member"
            if kind == "member":
                self.member_md = self.rng.randrange(len(names))
                # The closest node to its MD, so the coordinator of that MD's moves and repairs,
                # which it withholds (lying mode "withhold"): the other members must not wait
                # for it for ever (node.replication, MOVE_PATIENCE).
                keys = self._grind(lambda n: self._rank(n, names[self.member_md]) == 0)
                attacker = Attacker(kind, label, keys)
                slot = len(self.sim.nodes)
                config = dataclasses.replace(self.sim.config, lie=self.sim.config.lie | {"withhold", "fake_ack"})
                attacker.node = SimNode(slot, keys, SimStore(), f"sim:{slot}", wrapper=self._capturing(attacker),
                                        config=config)
                self.sim.nodes.append(attacker.node)
                await self.sim.start(attacker.node)
                attacker.label = attacker.node.label
            else:
                keys = self._grind(lambda n: all(self._rank(n, t) >= far for t in names))
                attacker = Attacker(kind, label, keys)
                address = f"sim:{label}" if kind == "stranger" else None
                endpoint = SimEndpoint(self.sim.network, keys.name, "node", address, OUTSIDER_SLOT + index, label)
                attacker.endpoint = endpoint
                self.sim.network.attach(endpoint)
                self.sim.nursery.start_soon(self._serve, attacker)
            self.attackers.append(attacker)
            self.sim.trace.event(self.sim.now, "fault", "attacker", role=kind, node=attacker.label,
                                 name=attacker.name.short())

    def _rank(self, name: bytes, target: bytes) -> int:
        """How many live nodes are closer to `target` than `name` is."""
        t = int.from_bytes(target, "big")
        mine = int.from_bytes(name, "big") ^ t
        return sum(1 for n in self.sim.live() if (int.from_bytes(n.name, "big") ^ t) < mine)

    def _grind(self, good: Any, tries: int = 4096) -> Keypair:
        """A keypair whose name satisfies `good` (the attacker chooses where it stands)."""
        keys = Keypair.generate(self.rng)
        for _ in range(tries):
            if good(keys.name):
                return keys
            keys = Keypair.generate(self.rng)
        return keys

    def _capturing(self, attacker: Attacker) -> Any:
        def wrap(node: SimNode, endpoint: SimEndpoint) -> _CapturingEndpoint:
            return _CapturingEndpoint(endpoint, self)

        return wrap

    # ------------------------------------------------------------------ outsiders' own loop

    async def _serve(self, attacker: Attacker) -> None:
        """An outsider reads its inbox: it answers pings and lookups (a stranger must, to stay
        in routing tables), keeps what it can replay, and counts the answers it got."""
        endpoint = attacker.endpoint
        assert endpoint is not None
        while not endpoint.closed:
            try:
                delivery = await endpoint.inbox.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            self.saw(delivery)
            msg, peer = delivery.msg, delivery.peer
            kind = msg.get("k")
            if "re" in msg or attacker.kind != "stranger":
                continue
            if kind == "ping":
                reply = new_message("pong", addr=endpoint.address, id=self.rng.randbytes(16))
            elif kind == "find_node":
                target = msg.get("target", b"")
                near = self.sim.close_group(target if isinstance(target, bytes) else b"", 8)
                contacts = [[bytes(n.name), n.address] for n in near] + [[bytes(endpoint.name), endpoint.address]]
                reply = new_message("nodes", contacts=contacts, id=self.rng.randbytes(16))
            else:
                continue
            reply["re"] = msg["id"]
            endpoint.send_nowait(peer.name, peer.address, reply)

    def saw(self, delivery: Delivery) -> None:
        msg = delivery.msg
        what = self._asked.pop(msg.get("re", b""), None) if "re" in msg else None
        if what is not None:
            self.counts[f"{what}:{_outcome(msg)}"] += 1
        elif msg.get("k") in CAPTURED and "re" not in msg:
            self.captured.append((msg["k"], msg))
            if msg["k"] == "accept" and "rollback" in self.attacks:
                self._race(msg)

    # ------------------------------------------------------------------ the attack loop

    async def run(self, until: float) -> None:
        if not self.attacks:
            return
        await trio.sleep(self.rng.uniform(1.0, 2.0))  # the member joins its group first
        while self.sim.now < until:
            for attacker in self.attackers:
                attack = self.rng.choice(self.attacks)
                if attacker.up:
                    getattr(self, "_" + attack.replace("-", "_"))(attacker)
            await trio.sleep(self.rng.expovariate(1.0 / self.interval))

    def _send(self, attacker: Attacker, to: SimNode, msg: dict[str, Any], what: str) -> None:
        endpoint = attacker.endpoint
        if attacker.node is not None:
            endpoint = attacker.node.endpoint
        if endpoint is None or to is attacker.node or not to.up:
            return
        self._asked[msg["id"]] = what
        if len(self._asked) > 4096:
            self._asked.clear()
        attacker.sent[what] += 1
        self.counts[f"{what}:sent"] += 1
        try:
            endpoint.send_nowait(to.name, to.address, msg)
        except ProtocolError:  # not encodable: no wire could carry it either
            self.counts[f"{what}:unsendable"] += 1

    def _msg(self, kind: str, **fields: Any) -> dict[str, Any]:
        return new_message(kind, id=self.rng.randbytes(16), **fields)

    def _targets(self, name: bytes) -> list[SimNode]:
        return [n for n in self.sim.close_group(name) if n.core is not None]

    def _md_index(self, attacker: Attacker) -> int:
        return self.member_md if attacker.kind == "member" else self.rng.randrange(len(self.workload.mds))

    def _honest(self, key: bytes) -> AcceptorRecord | None:
        """The newest record of `key` an honest node holds (the attackers watched the traffic)."""
        best: AcceptorRecord | None = None
        for node in self.sim.close_group(key[:32]):
            record = node.core.replicator.records.get(key) if node.core is not None else None
            if record is not None and record.value is not None and (best is None or record.accepted > best.accepted):
                best = record
        return best

    def _ballot(self, attacker: Attacker, key: bytes) -> Ballot:
        """A ballot just above every (ordinary) promise the group made: one that wins."""
        promised = [n.core.replicator.record(key).promised.counter for n in self.sim.live() if n.core is not None]
        top = max((c for c in promised if c < 2**62), default=0)
        return Ballot(top + self.rng.randrange(1, 100), bytes(attacker.name))

    def _accept(self, attacker: Attacker, key: bytes, ballot: Ballot, value: Register, what: str) -> None:
        item = [key, ballot.to_obj(), False, [0, value.encode()]]
        for node in self._targets(key[:32]):
            self._send(attacker, node, self._msg("accept", items=[item]), what)

    # ------------------------------------------------------------------ the attacks

    def _forge(self, attacker: Attacker) -> None:
        md = self.workload.mds[self._md_index(attacker)]
        key = item_key(md.address)
        if self.rng.random() < 0.25:  # an MD that no client ever asked for
            name = self._member_name(attacker) if attacker.kind == "member" else XorName.random(self.rng)
            forged = MutableData(name, MD_TAG, {b"k0": Value(b"forged:new", 0)},
                                 {attacker.keys.public: PermissionSet.allowing(*Action)}, 0,
                                 frozenset({attacker.keys.public}))
            key = item_key(forged.address)
            members = tuple(n.name for n in self.sim.close_group(name))
            self._accept(attacker, key, self._ballot(attacker, key), Register(MDataState(forged), members), "forge-new")
            return
        record = self._honest(key)
        if record is None or record.value is None or record.value.state.md is None:
            return
        current = record.value.state.md
        entry = f"k{self.rng.randrange(self.workload.config.entries_per_md)}".encode()
        old = current.entries.get(entry)
        version = (old.entry_version + 1) if old else 0
        entries = {**current.entries, entry: Value(b"forged:" + attacker.label.encode(), version)}
        permissions = {**current.permissions, attacker.keys.public: PermissionSet.allowing(*Action)}
        forged = current.replace(entries=entries, permissions=permissions, owners=frozenset({attacker.keys.public}),
                                 version=current.version + 1)
        value = record.value.with_state(MDataState(forged, record.value.state.recent))
        self._accept(attacker, key, self._ballot(attacker, key), value, "forge")

    def _member_name(self, attacker: Attacker) -> XorName:
        """A fresh name in whose close group the member stands (else no member could write it)."""
        name = XorName.random(self.rng)
        for _ in range(256):
            if self._rank(attacker.name, name) < self.sim.config.replication - 1:
                break
            name = XorName.random(self.rng)
        return name

    def _handoff(self, attacker: Attacker) -> None:
        md = self.workload.mds[self._md_index(attacker)]
        key = item_key(md.address)
        record = self._honest(key)
        if record is None or record.value is None:
            return
        ours = tuple(a.name for a in self.attackers)
        members = (ours + record.value.members)[: self.sim.config.replication]
        value = record.value.with_members(members, prev=record.value.members)
        self._accept(attacker, key, self._ballot(attacker, key), value, "handoff")

    def _huge_ballot(self, attacker: Attacker) -> None:
        md = self.workload.mds[self._md_index(attacker)]
        key = item_key(md.address)
        ballot = Ballot(self.rng.choice(HUGE), bytes(attacker.name))
        record = self._honest(key)
        for node in self._targets(md.name):
            if self.rng.random() < 0.5 or record is None or record.value is None:
                self._send(attacker, node, self._msg("prepare", items=[[key, ballot.to_obj(), b""]]), "huge-prepare")
            else:
                # A delta that changes nothing: only the ballot is hostile (fast: promise its successor).
                value = record.value
                delta = [value.digest(), [], list(map(bytes, value.members)), list(map(bytes, value.prev)),
                         value.digest()]
                item = [key, ballot.to_obj(), True, [1, delta]]
                self._send(attacker, node, self._msg("accept", items=[item]), "huge-accept")

    def _stale_ballot(self, attacker: Attacker) -> None:
        md = self.workload.mds[self._md_index(attacker)]
        key = item_key(md.address)
        ballot = Ballot(self.rng.choice((0, 1)), bytes(attacker.name))
        for node in self._targets(md.name):
            self._send(attacker, node, self._msg("prepare", items=[[key, ballot.to_obj(), b""]]), "stale-prepare")
        record = self._honest(key)
        if record is not None and record.value is not None and record.value.state.md is not None:
            current = record.value.state.md
            forged = current.replace(owners=frozenset({attacker.keys.public}), version=current.version + 1)
            self._accept(attacker, key, ballot, record.value.with_state(MDataState(forged)), "stale-accept")

    def _replay(self, attacker: Attacker) -> None:
        if not self.captured:
            return
        kind, msg = self.captured[self.rng.randrange(len(self.captured))]
        if kind == "chunk_put":
            value = msg.get("value")
            name = sha3_256(value) if isinstance(value, bytes) else b""
        else:
            items = msg.get("items")
            name = items[0][0][:32] if isinstance(items, list) and items and isinstance(items[0], list) else b""
        if len(name) != 32:
            return
        replayed = {**msg}  # the same message, id and all, from the attacker's connection
        for node in self._targets(name):
            self._send(attacker, node, replayed, f"replay-{kind}")

    def _chunk(self, attacker: Attacker) -> None:
        far = min(self.sim.config.replication + 3, len(self.sim.live()))
        value = self.rng.randbytes(self.rng.randrange(16, 512))
        for _ in range(256):  # content whose close group the attacker is not in, nor near it
            if self._rank(attacker.name, sha3_256(value)) >= far:
                break
            value = self.rng.randbytes(len(value))
        name = sha3_256(value)
        fields: dict[str, Any] = {"value": value}
        if self.rng.random() < 0.5:
            fields["name"] = bytes(XorName.random(self.rng))  # a name its bytes do not hash to
        for node in self._targets(name):
            self._send(attacker, node, self._msg("chunk_put", **fields), "chunk")

    def _sync(self, attacker: Attacker) -> None:
        md = self.workload.mds[self._md_index(attacker)]
        key = item_key(md.address)
        item = [key, [self.rng.randrange(1, 1 << 20), bytes(attacker.name)], self.rng.randbytes(16)]
        for node in self._targets(md.name):
            self._send(attacker, node, self._msg("sync", items=[item]), "sync")


    # ------------------------------------------------------------------ rolling back

    def _member_key(self) -> bytes:
        return item_key(self.workload.mds[self.member_md].address)

    def _remember(self, attacker: Attacker) -> None:
        """Keep the member's copy of its MD with the certificate it knows, if it has one."""
        if attacker.node is None or attacker.node.core is None:
            return
        key = self._member_key()
        rep = attacker.node.core.replicator
        value = rep.record(key).value
        votes = None if value is None else rep.cert_for(key, value)
        if value is None or votes is None or not looks_certified(votes, value.quorums):
            return
        if all(v.digest() != value.digest() for v, _ in self.certified):
            self.certified.append((value, list(votes)))
            del self.certified[1:-7]  # the oldest and the latest few

    def _race(self, msg: dict[str, Any]) -> None:
        """An accept reached the member: if it is for the member's MD, replay an older
        certified value to the group now, before the new value's commit gets there."""
        member = next((a for a in self.attackers if a.kind == "member"), None)
        items = msg.get("items")
        key = self._member_key()
        if member is None or not member.up or not isinstance(items, list) or not any(
                isinstance(item, list) and item and item[0] == key for item in items):
            return
        self._remember(member)
        if self.sim.now - self._raced < 3.0:
            return
        self._raced = self.sim.now
        self._rollback(member)

    def _rollback(self, attacker: Attacker) -> None:
        self._remember(attacker)
        if not self.certified:
            return
        key = self._member_key()
        old, votes = self.certified[0] if self.rng.random() < 0.5 else self.rng.choice(self.certified)
        members, prev = [bytes(m) for m in old.members], [bytes(m) for m in old.prev]
        steps, value = [], old
        for _ in range(self.rng.randrange(4)):  # rounds that change nothing, only counted
            after = value.with_seq(value.seq + 1)
            steps.append([value.digest(), [], members, prev, after.digest()])
            value = after
        if not steps:
            payload = [CERTIFIED, old.encode(), votes, [old.digest(), [], members, prev, old.digest()]]
        elif len(steps) == 1:
            payload = [CERTIFIED, old.encode(), votes, steps[0]]
        else:
            payload = [CHAIN, old.encode(), votes, steps[:-1], steps[-1]]
        item = [key, self._ballot(attacker, key).to_obj(), False, payload]
        for node in self._targets(key[:32]):
            self._send(attacker, node, self._msg("accept", items=[item]), "rollback")


class _PeekingInbox:
    def __init__(self, outer: _CapturingEndpoint) -> None:
        self._outer = outer
        self._inner = outer.inner.inbox

    async def receive(self) -> Delivery:
        return self._outer.saw(await self._inner.receive())

    def receive_nowait(self) -> Delivery:
        return self._outer.saw(self._inner.receive_nowait())


class _CapturingEndpoint:
    """The member's endpoint: passes everything through, and shows the attackers what it got."""

    def __init__(self, inner: SimEndpoint, attackers: Attackers) -> None:
        self.inner = inner
        self.attackers = attackers
        self.address = inner.address
        self.inbox = _PeekingInbox(self)

    def saw(self, delivery: Delivery) -> Delivery:
        self.attackers.saw(delivery)
        return delivery

    def send_nowait(self, to_name: bytes | None, to_address: str | None, msg: dict[str, Any]) -> bool:
        return self.inner.send_nowait(to_name, to_address, msg)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()


def _outcome(reply: dict[str, Any]) -> str:
    """A reply in a word: its kind, and for item replies the first item's status."""
    kind = str(reply.get("k"))
    items = reply.get("items")
    if isinstance(items, list) and items and isinstance(items[0], list) and len(items[0]) > 1:
        return f"{kind}={items[0][1]}"
    if kind == "error" and isinstance(reply.get("err"), dict):
        return f"error={reply['err'].get('code')}"
    return kind
