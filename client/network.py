"""The client of the real network: signed requests over the wire, quorum reads, failover.

    async with NetworkClient.open(["127.0.0.1:7000"]) as client:   # or open_cluster()
        name = await client.put_idata(b"hello")

How it talks to the network (docs/architecture.md, "A request, from client to close group and back"):
- it finds an item's close group itself, by an iterative Kademlia lookup of the item's name
  (cached briefly), so no single node chooses whom it asks;
- a mutation goes to the closest member, which orders it with the group; if that member
  fails, the same signed request (same request id) goes to the next one — a replay is
  answered with the first outcome or refused by the version checks, never applied twice;
- an MD read asks every member for its own copy and accepts an answer only when a majority
  of the group that the answer names report the same accepted value and the same result;
- an IData answer is accepted only if its bytes hash to the name.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgpack
import trio

from node import errors as E
from node.keys import Keypair, PublicKey
from node.paxos import item_key
from node.peer import ClientEndpoint
from node.proofs import fingerprint, majority, named_voters, proves_ack
from node.requests import GetIData, MDataOp, Request
from node.routing import Contact, Lookup
from node.transport import Endpoint, MemoryNetwork, RpcClient, Unreachable
from node.wire import new_message
from node.xorname import XorName, closest, distance, sha3_256

from .api import DataClient

RETRYABLE = (E.RequestTimeout, E.NotReady, E.QuorumNotReached, E.ProtocolError, Unreachable)



class NetworkClient(DataClient):
    """A DataClient over TCP (or the in-memory network of the tests and the simulator)."""

    def __init__(
        self,
        contacts: Sequence[str],
        keys: Keypair | None = None,
        *,
        owner: PublicKey | None = None,
        replication: int = 5,
        timeout: float = 20.0,
        try_timeout: float = 4.0,
        network: MemoryNetwork | None = None,
        endpoint: ClientEndpoint | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        warm_links: int | None = None,
    ) -> None:
        super().__init__(keys, owner=owner, clock=clock)
        if not contacts:
            raise ValueError("a client needs at least one contact address")
        self.contacts = list(contacts)
        self.replication = replication
        # How many members may lie to a reader: one in a group of up to 7, as SAFE's groups of
        # 8 tolerated a minority of faulty nodes but clients met at most one liar per read.
        self.faulty = max(1, (replication - 1) // 4)
        self.timeout = timeout
        self.try_timeout = try_timeout
        self.rng = rng or random.Random()
        # The transport's handshake uses a key of its own, fresh each session: requests are
        # signed one by one with `keys`, and two clients sharing `keys` (two commands run at
        # once by one user) must not look like one peer whose replies could cross.
        # `endpoint` lets the simulator hand in its own message-level network endpoint.
        self.endpoint = endpoint or Endpoint(Keypair(), role="client", network=network)
        self.rpc = RpcClient(self.endpoint)
        # How many of the nodes learned at bootstrap to connect to at once (see `_warm_links`):
        # over TCP, as many as a small network has; none by default on an in-memory network
        # or the simulator's endpoint, whose links cost nothing to open on first use.
        if warm_links is None:
            warm_links = 2 * replication + 2 if network is None and endpoint is None else 0
        self.warm_links = warm_links
        self.nodes: dict[XorName, str] = {}
        self._groups: dict[bytes, tuple[float, list[Contact]]] = {}
        self._bad: dict[XorName, float] = {}
        self._complete_until = -math.inf  # until when the known nodes are taken as all of them
        self._quiet_lookups = 0
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "quorum_reads": 0, "lookups": 0, "unproven": 0}
        # An "ok" to an MD write counts only with the votes that prove it (`_proven`). Off only
        # for the simulator's breaks that make nodes lie to their clients on purpose.
        self.check_acks = True
        # Nodes that have answered us over a link that proved their key: the only voters an
        # "ok" may count (a key someone merely generated, or a contact a node told us of, is
        # neither).
        self._heard: set[XorName] = set()

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, contacts: Sequence[str], keys: Keypair | None = None, **kwargs: Any
    ) -> AsyncIterator[NetworkClient]:
        client = cls(contacts, keys, **kwargs)
        with E.single_errors():
            async with trio.open_nursery() as nursery:
                await nursery.start(client.endpoint.run)
                await nursery.start(client.rpc.run)
                try:
                    await client.bootstrap()
                    yield client
                finally:
                    await client.endpoint.aclose()
                    nursery.cancel_scope.cancel()

    async def bootstrap(self) -> None:
        """Learn some nodes from the contacts (any one answering is enough)."""
        learned = False
        for address in self.rng.sample(self.contacts, len(self.contacts)):
            try:
                reply = await self.rpc.request(
                    None, address, new_message("find_node", target=bytes(self.keys.name)), 5.0
                )
            except (*RETRYABLE, E.SafeError):
                continue
            self._learn(reply.get("contacts", []))
            net = reply.get("net")
            if isinstance(net, bytes) and 0 < len(net) <= 64:
                self.network_id = net
            learned = True
            if len(self.nodes) >= self.replication:
                break
        if not learned:
            raise E.RequestTimeout(f"none of the contacts answered: {', '.join(self.contacts)}")
        await self._warm_links()

    async def _warm_links(self) -> None:
        """Connect to the nodes just learned (up to `warm_links` of them), all at once.

        Every link starts with a handshake: a TCP connect, hello and auth each way, two
        signatures and two checks, up to a millisecond of CPU at each end. Made one by one on
        first use, they sit in the first requests' path, and a lookup round waits for the
        slowest of its three; made here in parallel, they are done before the first request.
        A node that cannot be reached now is only skipped: requests dial it again when they
        need it, as before. Nothing else changes: no request is sent, no node marked.
        """
        todo = [(n, a) for n, a in self.nodes.items() if not self.endpoint.is_connected(n)]
        if not todo or self.warm_links <= 0:
            return

        async def dial(name: XorName, address: str) -> None:
            with contextlib.suppress(*RETRYABLE, E.SafeError, ValueError):
                await self.endpoint.connect(address, name)

        with trio.move_on_after(self.try_timeout):
            async with trio.open_nursery() as nursery:
                for name, address in todo[: self.warm_links]:
                    nursery.start_soon(dial, name, address)

    def _learn(self, items: Any) -> list[Contact]:
        found = []
        for item in items if isinstance(items, list) else []:
            try:
                contact = Contact(XorName(item[0]), str(item[1]))
            except (ValueError, TypeError, IndexError):
                continue
            self.nodes[contact.name] = contact.address
            found.append(contact)
        return found

    # ----------------------------------------------------------------- finding groups

    async def find_group(self, name: bytes, *, fresh: bool = False) -> list[Contact]:
        """The close group of `name` (R nodes), found by an iterative lookup and cached.

        Once a lookup has shown this client the whole neighbourhood of the network (it knows
        every node that lookups keep returning), the group of a new name is computed from the
        known nodes, which is what a lookup would converge to in one round; a failed or
        refused request still triggers a real lookup (`fresh`).
        """
        now = trio.current_time()
        cached = self._groups.get(bytes(name))
        if cached and not fresh and now - cached[0] < 10.0:
            return cached[1]
        if not fresh and self._complete_until > now:
            known = sorted(self.nodes.items(), key=lambda item: distance(item[0], name))
            group = [Contact(n, a) for n, a in known[: self.replication] if self._bad.get(n, -math.inf) <= now]
            if len(group) == self.replication:
                self._groups[bytes(name)] = (now, group)
                return group
        self.stats["lookups"] += 1
        known_before = len(self.nodes)
        target = XorName(name)
        seeds = sorted((Contact(n, a) for n, a in self.nodes.items()), key=lambda c: c.name.distance(target))
        lookup = Lookup(target, seeds[:20], k=self.replication, alpha=3)
        pending = lookup.start()
        while not lookup.done:
            if not pending:
                break
            results: list[tuple[Contact, dict[str, Any] | None]] = []

            async def ask(contact: Contact, results: list[Any] = results) -> None:
                try:
                    reply = await self.rpc.request(
                        contact.name, contact.address, new_message("find_node", target=bytes(target)), 2.0)
                except (*RETRYABLE, E.SafeError):
                    reply = None
                else:
                    self._heard.add(contact.name)
                results.append((contact, reply))

            async with trio.open_nursery() as nursery:
                for contact in pending:
                    nursery.start_soon(ask, contact)
            pending = []
            for contact, reply in results:
                if reply is None:
                    pending.extend(lookup.on_failure(contact))
                else:
                    pending.extend(lookup.on_reply(contact, self._learn(reply.get("contacts", []))))
        group = lookup.result()[: self.replication] or seeds[: self.replication]
        self._groups[bytes(name)] = (now, group)
        # Lookups that keep finding no node we did not know mean we know the whole network
        # (a small one): trust the local view for a while instead of a lookup per name.
        self._quiet_lookups = self._quiet_lookups + 1 if len(self.nodes) == known_before else 0
        if self._quiet_lookups >= 3:
            self._complete_until = now + 10.0
        return group

    def _ordered(self, group: list[Contact]) -> list[Contact]:
        """`group` with the members marked bad (and not yet forgiven) moved to the end."""
        if not self._bad:
            return group  # nobody was ever marked: the order stands (what the sort would give)
        now = trio.current_time()
        return sorted(group, key=lambda c: self._bad.get(c.name, -math.inf) > now)

    def _mark_bad(self, contact: Contact) -> None:
        self._bad[contact.name] = trio.current_time() + 5.0

    # ----------------------------------------------------------------- sending

    async def _send(self, request: Request) -> Any:
        self.stats["requests"] += 1
        # A plain cancel scope, not trio.fail_after (a generator around one): this runs for
        # every request.
        with trio.move_on_after(self.timeout if self.timeout else math.inf):
            if request.op.MUTATES or isinstance(request.op, GetIData):
                return await self._through_group(request)
            return await self._quorum_read(request)
        raise E.RequestTimeout(f"{request.op.KIND} did not complete in {self.timeout} s")

    async def _through_group(self, request: Request) -> Any:
        """Send to the closest member; on failure, the same request to the next one."""
        wire = request.to_obj()
        last: Exception | None = None
        for attempt in range(3 * self.replication):
            group = self._ordered(await self.find_group(request.op.name, fresh=attempt >= self.replication))
            if not group:
                raise E.QuorumNotReached("no node of the close group is known")
            contact = group[attempt % len(group)]
            try:
                reply = await self.rpc.request(
                    contact.name, contact.address, new_message("request", req=wire), self.try_timeout
                )
                self._heard.add(contact.name)
                if request.op.MUTATES and not request.op.IDATA and not await self._proven_after_hearing(
                        request, reply.get("ack_proof")):
                    # An "ok" that no vote backs: the member may never have written it. Ask
                    # another; a retry of a write that did take effect is recognised (and proven).
                    self.stats["unproven"] += 1
                    last = E.ProtocolError(f"{contact.name.hex()[:8]} answered a write with an unproven ok")
                    self._mark_bad(contact)
                    continue
                return request.op.decode_result(reply.get("result"))
            except E.ClientError as exc:
                if isinstance(request.op, GetIData) and isinstance(exc, E.NetworkOther | E.NoSuchData):
                    last = exc  # a chunk that fails its hash, or a holder that lacks it: ask another
                    self._mark_bad(contact) if isinstance(exc, E.NetworkOther) else None
                    continue
                raise
            except (*RETRYABLE, ValueError, TypeError) as exc:
                last = exc
                self.stats["retries"] += 1
                self._mark_bad(contact)
                await trio.sleep(min(0.05 * (attempt + 1), 0.5))
        if isinstance(last, E.SafeError):
            raise last
        raise E.QuorumNotReached(f"no member of the close group could serve {request.op.KIND}: {last!r}")

    async def _proven_after_hearing(self, request: Request, proof: Any) -> bool:
        """`_proven`, after asking the voters near the name that we know of but have not
        heard from yet (a member we never needed to talk to) to answer us once. A made-up
        key has no node behind it to answer, at the address anyone told us of or at all."""
        if self._proven(request, proof):
            return True
        if not isinstance(proof, list) or len(proof) != 2:
            return False
        unheard = [Contact(name, self.nodes[name]) for name in named_voters(proof[1])
                   if name not in self._heard and name in self.nodes]
        if not unheard:
            return False

        async def hear(contact: Contact) -> None:
            with contextlib.suppress(*RETRYABLE, E.SafeError):
                await self.rpc.request(contact.name, contact.address,
                                       new_message("find_node", target=bytes(request.op.name)), 2.0)
                self._heard.add(contact.name)

        async with trio.open_nursery() as nursery:
            for contact in unheard:
                nursery.start_soon(hear, contact)
        return self._proven(request, proof)

    def _proven(self, request: Request, proof: Any) -> bool:
        """Does `proof` show that a majority of the MD's group took a value with this request
        in it (node/proofs.py, `proves_ack`)? A voter counts only if it has answered us
        itself (so it is a running node whose key its link proved, not a key made up for the
        occasion) and is as near the MD's name as the 4R nearest such nodes: four groups'
        worth, not two, since an MD's members lag the nodes nearest its name for a while
        (event-store seed 1 had honest voters ranked 11th among the nodes the client knew)."""
        op = request.op
        if not self.check_acks or not isinstance(op, MDataOp):
            return True
        name = op.name
        heard = self._heard
        radius = max((distance(n, name) for n in closest(name, heard, 4 * self.replication)), default=-1)
        return proves_ack(item_key(op.address), fingerprint(request.request_id, request.signing_bytes()), proof,
                          lambda voter: voter in heard and distance(voter, name) <= radius,
                          majority(self.replication))

    async def _quorum_read(self, request: Request) -> Any:
        """Ask each member for its copy; accept what a majority of the named group agree on."""
        self.stats["quorum_reads"] += 1
        wire = request.to_obj()
        for attempt in range(6):
            group = await self.find_group(request.op.name, fresh=attempt >= 2)
            answer = await self._collect_reads(group, wire, request)
            if answer is _ABSENT:
                # "Nothing here" from nodes that name no group proves little: they may not be
                # the group at all (an incomplete lookup). A member's consensus round, which
                # asks the wider ring before it concludes absence, decides instead.
                return await self._through_group(request)
            if answer is not None:
                ok, value = answer
                if ok:
                    return value
                raise value
            if attempt == 2:
                # No safe majority (a write was in flight, replicas lag, someone lies): have a
                # member run a consensus round, which writes the agreed value back to a majority.
                with contextlib.suppress(*RETRYABLE, E.ClientError):
                    await self._through_group(request)
            await trio.sleep(0.02 * (attempt + 1))
        raise E.QuorumNotReached("the close group did not agree on an answer")

    async def _collect_reads(self, group: list[Contact], wire: Any, request: Request) -> Any:
        """One round of reads. Returns (ok, value), _ABSENT, or None when nothing is safe.

        An answer is taken when members forming a majority of the group it names (and of the
        group it is moving from, during a move) report the
        same accepted ballot, digest and result — and no *newer* ballot is reported by more
        than `faulty` members. The second rule is what one lying member cannot beat: it can
        side with lagging replicas to give an old value a majority, but the members that hold
        the newer value still speak up, and then the client asks for a consensus round.
        """
        votes: dict[tuple[Any, ...], list[tuple[XorName, dict[str, Any]]]] = {}
        view = {c.name for c in group}
        answered = {"n": 0}
        decided: list[Any] = []
        done = trio.Event()

        def ballot(reply: dict[str, Any]) -> tuple[int, bytes]:
            acc = reply.get("acc")
            return (acc[0], acc[1]) if isinstance(acc, list) and len(acc) == 2 else (-1, b"")

        def decide(final: bool) -> None:
            waiting = 0 if final else len(group) - answered["n"]
            for voters in votes.values():
                reply = voters[0][1]
                members = [XorName(m) for m in reply.get("members", [])] or list(view)
                prev = [XorName(m) for m in reply.get("prev", [])]
                agreeing = {n for n, _ in voters}
                # Chosen means accepted by a majority of the group the value names, and of
                # the group it is moving from while that move is in progress.
                if any(sum(1 for n in g if n in agreeing) < majority(len(g)) for g in (members, prev) if g):
                    continue
                newer = max((len(v) for v in votes.values() if ballot(v[0][1]) > ballot(reply)), default=0)
                if newer + waiting > self.faulty:
                    continue  # a newer value may be out there: wait for it, or ask for a round
                if not reply.get("members") and not reply.get("digest"):
                    decided.append(_ABSENT)
                else:
                    decided.append(self._decode_read(reply, request))
                done.set()
                return

        async def ask(contact: Contact) -> None:
            try:
                reply = await self.rpc.request(
                    contact.name, contact.address, new_message("read", req=wire), self.try_timeout
                )
            except (*RETRYABLE, E.SafeError):
                reply = None
            else:
                self._heard.add(contact.name)
            answered["n"] += 1
            if reply is not None and reply.get("k") == "read_reply":
                body = msgpack.packb([reply.get("result"), reply.get("err")], use_bin_type=True)
                key = (repr(reply.get("acc")), reply.get("digest"), sha3_256(body))
                votes.setdefault(key, []).append((contact.name, reply))
            if not decided:
                decide(final=False)
            if answered["n"] == len(group):
                done.set()  # everyone answered and nothing is safe: the caller asks for a round

        async with trio.open_nursery() as nursery:
            for contact in group:
                nursery.start_soon(ask, contact)
            nursery.start_soon(_cancel_when, done, nursery.cancel_scope)
        if not decided:
            decide(final=True)
        return decided[0] if decided else None

    @staticmethod
    def _decode_read(reply: dict[str, Any], request: Request) -> tuple[bool, Any]:
        try:
            if "err" in reply:
                return False, E.error_from_wire(reply["err"])
            return True, request.op.decode_result(reply.get("result"))
        except (ValueError, TypeError, E.SafeError) as exc:
            return False, E.ProtocolError(f"undecodable answer: {exc!r:.80}")


_ABSENT = object()  # a quorum read that found nothing, to be confirmed by a consensus round


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
