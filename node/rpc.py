"""Request/response over an Endpoint, for the client library and tools (which have no core).

`RpcClient` matches each reply to its request (``reply["re"] == request["id"]``, from the
peer that was asked) and hands everything else to a bounded `unsolicited` channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .endpoint import Endpoint, Unreachable
from .errors import RequestTimeout
from .handshake import Incoming
from .keys import Keypair
from .peer import RpcEndpoint
from .wire import Message, raise_if_error
from .xorname import XorName


class _Pending:
    __slots__ = ("peer_name", "event", "reply", "lost")

    def __init__(self, peer_name: XorName) -> None:
        self.peer_name = peer_name
        self.event = trio.Event()
        self.reply: Message | None = None
        self.lost = False


class RpcClient:
    """Request/response on top of an Endpoint, for the client library and tools.

    `run` must be running: it consumes the endpoint's inbox, hands each reply to the request
    waiting for it (same id, same peer) and passes anything else to `unsolicited` (bounded;
    dropped when full).
    """

    def __init__(self, endpoint: RpcEndpoint, *, unsolicited_size: int = 256) -> None:
        self.endpoint = endpoint
        self._pending: dict[bytes, _Pending] = {}
        self._unsolicited_send, self.unsolicited = trio.open_memory_channel[Incoming](
            unsolicited_size
        )
        self.dropped_unsolicited = 0
        endpoint.on_disconnect.append(self._peer_lost)
        if isinstance(endpoint, Endpoint) and endpoint.on_arrival is None:
            # Replies go straight from the connection's reader to the waiting request, not
            # through the inbox and `run` (one task switch fewer per request).
            endpoint.on_arrival = self._take_reply

    def _peer_lost(self, name: XorName) -> None:
        for pending in self._pending.values():
            if pending.peer_name == name and pending.reply is None:
                pending.lost = True
                pending.event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async for incoming in self.endpoint.inbox:
                self._dispatch(incoming)
        finally:
            self._unsolicited_send.close()

    def _take_reply(self, incoming: Incoming) -> bool:
        """Hand `incoming` to the request waiting for it, if it is that request's reply."""
        re = incoming.msg.get("re")
        pending = self._pending.get(re) if isinstance(re, bytes) else None
        # Only the peer we asked may answer: another can't complete our request by echoing the id.
        if (
            pending is not None
            and pending.reply is None
            and pending.peer_name == incoming.peer.name
        ):
            pending.reply = incoming.msg
            pending.event.set()
            return True
        return False

    def _dispatch(self, incoming: Incoming) -> None:
        if self._take_reply(incoming):
            return
        try:
            self._unsolicited_send.send_nowait(incoming)
        except (trio.WouldBlock, trio.BrokenResourceError):
            self.dropped_unsolicited += 1

    async def request(
        self, to_name: bytes | None, to_address: str | None, msg: Message, timeout: float
    ) -> Message:
        """Send `msg` and return the reply whose ``re`` is ``msg["id"]``.

        `to_name` None connects to `to_address` and learns the name from the handshake.
        Raises RequestTimeout at the deadline (connecting included), the typed error of an
        ``error`` reply, or Unreachable / HandshakeError if the peer can't be reached.
        """
        msg_id = msg["id"]
        if msg_id in self._pending:
            raise ValueError("a request with this id is already in flight")
        reply: Message | None = None
        with trio.move_on_after(timeout):
            peer_name = await self._peer_name(to_name, to_address)
            pending = self._pending[msg_id] = _Pending(peer_name)
            try:
                await self.endpoint.send(peer_name, to_address, msg)
                await pending.event.wait()
                reply = pending.reply
            finally:
                del self._pending[msg_id]
            if pending.lost:
                raise Unreachable(f"the connection to {to_address} closed before it answered {msg['k']!r}")
        if reply is None:
            raise RequestTimeout(f"no reply to {msg['k']!r} from {to_address} within {timeout}s")
        raise_if_error(reply)
        return reply

    async def _peer_name(self, to_name: bytes | None, to_address: str | None) -> XorName:
        if to_name is not None and self.endpoint.is_connected(to_name):
            return XorName(to_name)
        if to_address is None:
            raise Unreachable("no connection to the peer and no address to dial")
        return (await self.endpoint.connect(to_address, to_name)).name


@asynccontextmanager
async def open_rpc_client(
    keys: Keypair | None = None, **endpoint_options: Any
) -> AsyncIterator[RpcClient]:
    """An RpcClient on a fresh client-role Endpoint, both running until the block exits."""
    endpoint_options.setdefault("role", "client")
    endpoint = Endpoint(keys if keys is not None else Keypair(), **endpoint_options)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run)
        rpc = RpcClient(endpoint)
        await nursery.start(rpc.run)
        try:
            yield rpc
        finally:
            nursery.cancel_scope.cancel()
