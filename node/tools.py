"""Talking to running nodes from outside: status, locate, fault rules, shutdown.

The cluster launcher, the tests and the web UI all need to ask a node process a few
questions without being a node themselves. `NodeTools` is that small client: one
client-role `Endpoint` with an `RpcClient`, a deadline on every call, and replies decoded
into plain values.

    async with open_tools(admin_keys) as tools:
        status = await tools.status("127.0.0.1:7000")
        where = await tools.locate("127.0.0.1:7000", name)
        await tools.set_fault("127.0.0.1:7000", {"loss": 0.1}, expect=node_name)

The admin operations (`set_fault`, `shutdown`) are only honoured when the tools run with the
cluster's admin key (the one each node was started with as `--admin-key`); any other key
gets `AccessDenied`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from . import errors as E
from .keys import Keypair
from .transport import Endpoint, HandshakeError, RpcClient, Unreachable
from .wire import new_message
from .xorname import XorName

DEFAULT_TIMEOUT = 5.0

# What "this node did not answer" looks like from here, whatever the cause: refused,
# reset, a failed handshake (a restarted process on the port), or silence.
UNANSWERED: tuple[type[BaseException], ...] = (
    E.RequestTimeout,
    Unreachable,
    HandshakeError,
    E.ProtocolError,
    OSError,
)


@dataclass(frozen=True)
class Located:
    """One node's answer to `locate`: the close group it sees for a name, and whether it
    holds a copy of an item of that name itself."""

    close_group: list[XorName]
    holds: bool


class NodeTools:
    """Request/response helpers over a running RpcClient (see `open_tools`)."""

    def __init__(self, rpc: RpcClient, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.rpc = rpc
        self.timeout = timeout

    async def request(
        self, address: str, kind: str, *, expect: bytes | None = None,
        timeout: float | None = None, **fields: Any,
    ) -> dict[str, Any]:
        """Send one message of `kind` to the node at `address`; return its reply.

        `expect` is the node's name when known: the handshake must then prove it, so a
        different process that took over the port is not mistaken for the node.
        Raises the reply's typed error, RequestTimeout, Unreachable or HandshakeError.
        """
        msg = new_message(kind, **fields)
        return await self.rpc.request(expect, address, msg, timeout or self.timeout)

    async def status(self, address: str, *, expect: bytes | None = None,
                     timeout: float | None = None) -> dict[str, Any]:
        """The node's `status` figures (core, transport counters and pid)."""
        reply = await self.request(address, "status", expect=expect, timeout=timeout)
        status = reply.get("status")
        if reply.get("k") != "status" or not isinstance(status, dict):
            raise E.ProtocolError(f"expected a status reply, got {reply.get('k')!r}")
        return status

    async def try_status(self, address: str, *, expect: bytes | None = None,
                         timeout: float | None = None) -> dict[str, Any] | None:
        """Like `status`, but None when the node does not answer."""
        try:
            return await self.status(address, expect=expect, timeout=timeout)
        except UNANSWERED:
            return None

    async def statuses(self, targets: Sequence[tuple[str, bytes | None]], *,
                       timeout: float | None = None) -> list[dict[str, Any] | None]:
        """`try_status` of many nodes at once, in the order given."""
        results: list[dict[str, Any] | None] = [None] * len(targets)

        async def one(i: int, address: str, expect: bytes | None) -> None:
            results[i] = await self.try_status(address, expect=expect, timeout=timeout)

        async with trio.open_nursery() as nursery:
            for i, (address, expect) in enumerate(targets):
                nursery.start_soon(one, i, address, expect)
        return results

    async def locate(self, address: str, name: bytes, *, expect: bytes | None = None,
                     timeout: float | None = None) -> Located:
        """The close group of `name` as the node at `address` sees it, and whether it holds
        an item of that name."""
        target = XorName(name)
        reply = await self.request(address, "locate", expect=expect, timeout=timeout,
                                   name=bytes(target))
        if reply.get("k") != "located":
            raise E.ProtocolError(f"expected a located reply, got {reply.get('k')!r}")
        try:
            group = [XorName(n) for n in reply["close_group"]]
            holds = bool(reply["holds"])
        except (KeyError, TypeError, ValueError) as exc:
            raise E.ProtocolError(f"malformed located reply: {exc}") from None
        return Located(group, holds)

    async def set_fault(self, address: str, rules: Mapping[str, Any], *,
                        expect: bytes | None = None) -> dict[str, Any]:
        """Replace the node's fault rules (loss, delay, block_out, block_in, seed); return
        the rules now in force. Needs the admin key."""
        reply = await self.request(address, "admin", expect=expect, op="fault", rules=dict(rules))
        return dict(reply.get("rules") or {})

    async def shutdown(self, address: str, *, expect: bytes | None = None,
                       timeout: float = 2.0) -> bool:
        """Ask the node to stop. True if it acknowledged; False if no acknowledgement came
        within `timeout` (the node cancels itself at once, so it is often lost). Needs the
        admin key: AccessDenied otherwise. Watch the process to know when it has gone."""
        try:
            await self.request(address, "admin", expect=expect, timeout=timeout, op="shutdown")
        except UNANSWERED:
            return False
        return True


@asynccontextmanager
async def open_tools(keys: Keypair | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                     **endpoint_options: Any) -> AsyncIterator[NodeTools]:
    """`NodeTools` on a fresh client endpoint that runs until the block exits.

    Pass the cluster's admin keypair to be allowed the admin operations; without one a
    throw-away key is used, which is enough for `status` and `locate`.
    """
    endpoint = Endpoint(keys if keys is not None else Keypair(), role="client", **endpoint_options)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run)
        rpc = RpcClient(endpoint)
        await nursery.start(rpc.run)
        try:
            yield NodeTools(rpc, timeout=timeout)
        finally:
            await endpoint.aclose()
            nursery.cancel_scope.cancel()
