"""IData on a node: storing, serving and re-homing immutable chunks.

A chunk needs no consensus: its name is the hash of its bytes, so any holder's copy can be
checked by anyone, and storing it twice changes nothing. A put is acknowledged once a
majority of the chunk's close group holds it durably; a get is answered by any holder
whose bytes hash to the name. Anti-entropy pushes each chunk to the members of its current
close group that lack it, and a node that is no longer in a chunk's group lets it go once
a majority of the group holds it. Part of the sans-IO node core (see `node.core`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack

from . import errors as E
from . import rules
from .data import ImmutableData
from .messages import CHUNK_PUT
from .proofs import majority
from .requests import GetIData, PutIData, Request, op_to_obj
from .wire import new_message
from .xorname import XorName, sha3_256

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

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], None]]:
        return {"chunk_put": self.on_put, "chunk_get": self.on_get, "chunk_has": self.on_has}

    # ---------------------------------------------------------------- local store

    def _served(self, value: bytes) -> bytes:
        """The bytes we hand out; damaged on purpose in the test-only "corrupt" lying mode."""
        if "corrupt" in self.core.config.lie and value:
            return bytes([value[0] ^ 0xFF]) + value[1:]
        return value

    def _load(self, name: bytes) -> bytes | None:
        try:
            value = self.core.store.get_chunk(name)
        except E.CorruptRecord as exc:
            self.core.log("corrupt_chunk", name=name.hex(), error=str(exc))
            return None
        if value is not None and sha3_256(value) != name:
            self.core.log("corrupt_chunk", name=name.hex(), error="content does not hash to name")
            self.core.store.delete_chunk(name)
            return None
        return value

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
        proof = paid_proof(request)
        group = self.core.group(data.name)
        need = majority(len(group))
        tally = {"ok": 0, "failed": 0}

        def count(ok: bool) -> None:
            tally["ok" if ok else "failed"] += 1
            if tally["ok"] == need:
                respond(result=None)
            elif len(group) - tally["failed"] < need and tally["ok"] < need:
                respond(error=E.QuorumNotReached("too few of the chunk's close group stored it"))

        if "ack_before_quorum" in self.core.config.breaks:
            respond(result=None)
        for member in group:
            if member == self.core.name:
                self._keep(data, msgpack.packb(proof, use_bin_type=True))
                count(True)
            else:
                self.core.rpc(
                    member,
                    new_message(CHUNK_PUT, value=data.value, paid=proof),
                    lambda reply: count(reply is not None and reply.get("k") == "chunk_ok"),
                )

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
        if "no_anti_entropy" in self.core.config.breaks or "withhold" in self.core.config.lie:
            return
        if not changed_only:
            self._scrub()
        self._rounds += 1
        full = not changed_only and self._rounds % 5 == 0
        if not full and self._epoch_seen == self.core.membership_epoch:
            return
        self._epoch_seen = self.core.membership_epoch
        me = self.core.name
        asks: dict[XorName, list[bytes]] = {}
        for name in self.core.store.chunk_names():
            group = tuple(self.core.group(name))
            if not full and self._last_group.get(name) == group:
                continue
            self._last_group[name] = group
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
        if self.core.name in group:
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
