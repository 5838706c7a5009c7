"""A Byzantine node: the real node, behind an endpoint that lies in its replies.

`LyingEndpoint` wraps a node's `SimEndpoint`. The node itself runs unchanged; what it sends
is rewritten on the way out:

- ``forge``: MD read replies (``read_reply``) carry a value nobody wrote, one version ahead;
- ``stale``: an MD read reply is replaced by the first reply this node ever gave to the same
  read (same op, MD and key), so it reports an old version;
- ``chunks``: chunk bytes are flipped, in replies to other nodes (``chunk``) and to clients
  (``response`` carrying bytes, i.e. a GetIData answer).

The disk side of a Byzantine node (or plain bit rot) is `MemoryStore.corrupt`, applied by
the nemesis fault ``corrupt``. The protocol claims to survive all of this as long as a liar
cannot make a quorum on its own: clients check chunks by hash and take an MD answer only
when a majority of the group gives the same one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import msgpack

from node.wire import new_message

from .network import Delivery, SimEndpoint
from .simulator import SimNode

MODES = ("forge", "stale", "chunks")


class _PeekingInbox:
    """The node's inbox, passed through, remembering which read each request id asked."""

    def __init__(self, liar: LyingEndpoint) -> None:
        self._liar = liar
        self._inner = liar.inner.inbox

    async def receive(self) -> Delivery:
        return self._liar.saw(await self._inner.receive())

    def receive_nowait(self) -> Delivery:
        return self._liar.saw(self._inner.receive_nowait())


class LyingEndpoint:
    """A `SimEndpoint` whose outgoing replies are rewritten by `modes` (see the module doc)."""

    def __init__(self, inner: SimEndpoint, rng: random.Random, modes: Iterable[str], counts: dict[str, int]) -> None:
        unknown = set(modes) - set(MODES)
        if unknown:
            raise ValueError(f"unknown Byzantine modes {sorted(unknown)}; known: {', '.join(MODES)}")
        self.inner = inner
        self.rng = rng
        self.modes = frozenset(modes)
        self.counts = counts
        self.address = inner.address
        self.inbox = _PeekingInbox(self)
        self._reads: dict[bytes, bytes] = {}  # request message id -> what it read
        self._first: dict[bytes, dict[str, Any]] = {}  # what it read -> our first reply

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def saw(self, delivery: Delivery) -> Delivery:
        msg = delivery.msg
        if msg.get("k") == "read" and "re" not in msg:
            req = msg.get("req")
            if isinstance(req, dict):
                if len(self._reads) > 4096:
                    self._reads.clear()
                self._reads[msg["id"]] = msgpack.packb(req.get("op"), use_bin_type=True)
        return delivery

    def send_nowait(self, to_name: bytes | None, to_address: str | None, msg: dict[str, Any]) -> bool:
        kind = msg.get("k")
        if kind == "read_reply":
            msg = self._lie_about_read(msg)
        elif "chunks" in self.modes and kind == "chunk" and isinstance(msg.get("value"), bytes):
            msg = {**msg, "value": _flip(msg["value"], self.rng)}
            self.counts["corrupted_chunk_replies"] = self.counts.get("corrupted_chunk_replies", 0) + 1
        elif "chunks" in self.modes and kind == "response" and isinstance(msg.get("result"), bytes):
            msg = {**msg, "result": _flip(msg["result"], self.rng)}
            self.counts["corrupted_chunk_replies"] = self.counts.get("corrupted_chunk_replies", 0) + 1
        return self.inner.send_nowait(to_name, to_address, msg)

    def _lie_about_read(self, msg: dict[str, Any]) -> dict[str, Any]:
        what = self._reads.pop(msg.get("re", b""), None)
        if what is None:
            return msg
        first = self._first.setdefault(what, msg)
        if "stale" in self.modes and first is not msg and self.rng.random() < 0.5:
            self.counts["stale_replies"] = self.counts.get("stale_replies", 0) + 1
            stale = new_message("read_reply", **{k: v for k, v in first.items() if k not in ("v", "k", "id", "re")})
            stale["re"] = msg["re"]
            return stale
        result = msg.get("result")
        if "forge" in self.modes and isinstance(result, list) and len(result) == 2 and isinstance(result[1], int):
            self.counts["forged_replies"] = self.counts.get("forged_replies", 0) + 1
            return {**msg, "result": [b"forged:" + self.inner.label.encode(), result[1] + 1]}
        return msg


def _flip(value: bytes, rng: random.Random) -> bytes:
    if not value:
        return b"\x00"
    at = rng.randrange(len(value))
    return value[:at] + bytes([value[at] ^ 0x5A]) + value[at + 1 :]


def liar(rng: random.Random, modes: Iterable[str], counts: dict[str, int]) -> Any:
    """An endpoint wrapper for `Simulator.add_node(wrapper=...)` that makes the node lie."""
    chosen = tuple(modes)

    def wrap(node: SimNode, endpoint: SimEndpoint) -> LyingEndpoint:
        return LyingEndpoint(endpoint, rng, chosen, counts)

    return wrap
