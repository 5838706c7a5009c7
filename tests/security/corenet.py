"""A few real node cores wired together by hand, for attacking the core directly.

No transport and no trio: `CoreNet.deliver()` moves each core's output to its addressee until
nothing is left, and `advance()` runs the timers. An attacker is just a name (with or without
a keypair) that messages come from; what the cores answer it is collected in `inbox`.
"""

from __future__ import annotations

import random
import time
from typing import Any

from node.core import NodeConfig, NodeCore, Peer, Send
from node.data import Action, MutableData, PermissionSet, Value
from node.keys import Keypair
from node.paxos import item_key
from node.requests import MutateEntries, PutMData, Request
from node.store import MemoryStore
from node.wire import new_message
from node.xorname import XorName

TAG = 30_001


class CoreNet:
    def __init__(self, nodes: int = 6, *, seed: int = 1, config: NodeConfig | None = None) -> None:
        rng = random.Random(seed)
        self._queue: list[tuple[Any, Send]] = []
        self._injected: set[bytes] = set()
        # (sender, kind) pairs of messages held back (see `hold`), and the messages held.
        self._withheld: set[tuple[XorName, str]] = set()
        self._withheld_to: set[tuple[XorName, str, XorName]] = set()  # (sender, kind, addressee)
        self._held: list[tuple[Any, Send]] = []
        self.logs: list[tuple[float, int, str, dict[str, Any]]] = []
        self.config = config or NodeConfig()
        self.now = 0.0
        self.cores: list[NodeCore] = []
        self.inbox: dict[XorName, list[dict[str, Any]]] = {}
        for i in range(nodes):
            keys = Keypair.generate(rng)
            core = NodeCore(keys, MemoryStore(), self.config, rng=random.Random(rng.getrandbits(64)),
                            address=f"10.0.0.{i}:1", wall_offset=time.time(), log=self._logger(i))
            self.cores.append(core)
        self.by_name = {c.name: c for c in self.cores}
        self.by_address = {c.address: c for c in self.cores}
        boot = [self.cores[0].address]
        for core in self.cores:
            self._route(core, core.start(self.now, [] if core is self.cores[0] else boot))
            self.deliver()
        self.advance(5.0)

    def _logger(self, index: int) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.logs.append((round(self.now, 2), index, event, fields))
            del self.logs[:-200]
        return log

    # ------------------------------------------------------------------ moving messages

    def _route(self, sender: NodeCore | Peer, sends: list[Send]) -> None:
        for send in sends:
            self._queue.append((sender, send))

    def hold(self, sender: NodeCore, *kinds: str) -> None:
        """From now on messages of these kinds from `sender` (and the commits that would ride in
        its accepts, node/replication.py `flush`) are held back: still on their way, or never
        sent by a Byzantine node. `release` sends them."""
        self._withheld.update((sender.name, kind) for kind in kinds)

    def hold_to(self, sender: NodeCore, kind: str, *targets: NodeCore) -> None:
        """Messages of `kind` from `sender` to these `targets` only are held back (see `hold`)."""
        self._withheld_to.update((sender.name, kind, t.name) for t in targets)

    def release(self) -> None:
        self._withheld.clear()
        self._withheld_to.clear()
        self._queue.extend(self._held)
        self._held = []
        self.deliver()

    def deliver(self, limit: int = 200_000) -> None:
        queue = self._queue
        steps = 0
        while queue and steps < limit:
            steps += 1
            sender, send = queue.pop(0)
            if (self._withheld or self._withheld_to) and isinstance(sender, NodeCore):
                if ((sender.name, send.msg.get("k")) in self._withheld
                        or (sender.name, send.msg.get("k"), send.to) in self._withheld_to):
                    self._held.append((sender, send))
                    continue
                if (sender.name, "commit") in self._withheld and "commits" in send.msg:
                    riding = send.msg["commits"]
                    self._held.append((sender, Send(send.to, send.address, new_message("commit", items=riding))))
                    send = Send(send.to, send.address, {k: v for k, v in send.msg.items() if k != "commits"})
            if send.msg.get("re") in self._injected:
                # The answer to a message an attacker (or a test's client) sent: it goes to the
                # test, even when the attacker poses as a real node.
                self.inbox.setdefault(send.to, []).append(send.msg)
                continue
            target = self.by_name.get(send.to) if send.to is not None else self.by_address.get(send.address)
            if target is None:
                if send.to is not None:
                    self.inbox.setdefault(send.to, []).append(send.msg)
                continue
            if isinstance(sender, NodeCore):
                peer = Peer(sender.name, "node", sender.address)
            else:
                peer = sender
            self._route(target, target.handle(self.now, peer, send.msg))

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for core in self.cores:
                self._route(core, core.tick(self.now))
            self.deliver()

    def inject(self, core: NodeCore, peer: Peer, msg: dict[str, Any]) -> None:
        """A message from `peer` (an attacker, a client) arrives at `core`."""
        self._injected.add(msg["id"])
        self._route(core, core.handle(self.now, peer, msg))
        self.deliver()

    # ------------------------------------------------------------------ data

    def group(self, name: bytes, count: int = 5) -> list[NodeCore]:
        target = int.from_bytes(name, "big")
        return sorted(self.cores, key=lambda c: int.from_bytes(c.name, "big") ^ target)[:count]

    def client_request(self, op: Any, keys: Keypair, via: NodeCore | None = None) -> dict[str, Any]:
        """Send a signed request from a client to the closest member (or to `via`); return the
        answer."""
        network = self.cores[0].network_id
        request = Request.signed(op, keys, network=network, expires=int(time.time()) + 600)
        client = Peer(Keypair().name, "client")
        msg = new_message("request", req=request.to_obj())
        self.inject(via or self.group(op.address.name)[0], client, msg)
        for _ in range(40):
            answers = [m for m in self.inbox.get(client.name, []) if m.get("re") == msg["id"]]
            if answers:
                return answers[-1]
            self.advance(0.5)
        raise AssertionError(f"no answer to the request in 20 s; the cores logged {self.logs[-12:]}")

    def make_md(self, owner: Keypair, name: bytes = b"victim") -> MutableData:
        md = MutableData(XorName.hash_of(name), TAG, {b"k": Value(b"v0", 0)},
                         {owner.public: PermissionSet.allowing(Action.INSERT, Action.UPDATE)}, 0,
                         frozenset({owner.public}))
        answer = self.client_request(PutMData(md), owner)
        assert answer["k"] == "response", (answer, self.logs[-12:])
        return md

    def insert(self, md: MutableData, owner: Keypair, key: bytes, value: bytes) -> dict[str, Any]:
        from node.data import Ins

        return self.client_request(MutateEntries(md.address, {key: Ins(value)}), owner)

    def copies(self, md: MutableData) -> dict[XorName, Any]:
        """Each core's stored value of the MD (None where it holds none)."""
        key = item_key(md.address)
        out = {}
        for core in self.cores:
            record = core.replicator.records.get(key)
            out[core.name] = None if record is None or record.value is None else record.value
        return out
