"""The trio driver of a node core: the edge where messages, time and the disk meet it.

`NodeHost` pumps an endpoint's inbox into a `NodeCore`, fires its timers, and sends what
it returns. The same host runs a node over TCP in a real process and over the simulator's
in-memory network under a virtual clock; only the endpoint and the store differ.

One rule makes acknowledgements honest: after a batch of messages is handled, the store is
synced *before* any message produced by that batch leaves (group commit). So whatever a
reply acknowledges is durable when the peer receives it.

On a real `Endpoint` a client's read (an IData get, an MD member read, a lookup) that
finds the host idle (its loop parked on an empty inbox) does not wait for the loop: the
connection's reader hands it over (`Endpoint.on_arrival`) and it is handled there and then
as a batch of one, group commit included. Whatever arrives while the loop is busy queues in
the inbox as before, so the order holds; everything that may write (nodes' messages, a
client's mutation) always goes through the inbox, so that a burst of it from several peers
stays one batch: one commit, one write per peer.

The host itself answers two client messages the core does not know: `status` (the core's
figures plus the transport's) and `admin` (fault rules for chaos runs, shutdown), the
latter only from the cluster's admin key.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from .core import NodeCore, Send
from .endpoint import Endpoint
from .errors import SafeError
from .ops import GetIData
from .peer import Arrival, FaultHook, HostEndpoint, Peer
from .wire import reply_to

MAX_BATCH = 128


class NodeHost:
    """Runs one NodeCore on an endpoint until cancelled."""

    def __init__(
        self,
        core: NodeCore,
        endpoint: HostEndpoint,
        *,
        admin_name: bytes | None = None,
        fault: FaultHook | None = None,
        on_shutdown: Callable[[], None] | None = None,
        strict: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.wall_clock = wall_clock
        # strict: let a bug in the core take the host down (tests and the simulator want to
        # see it); otherwise log it and keep serving, as a production node must.
        self.strict = strict
        self.core = core
        self.endpoint = endpoint
        self.admin_name = admin_name
        self.fault = fault
        self.on_shutdown = on_shutdown
        self.stopped = trio.Event()
        self._waiting: trio.CancelScope | None = None  # the loop's wait for the inbox, while parked
        self._failure: BaseException | None = None  # a strict host's error in `_arrived`
        self._holding: Callable[[], contextlib.AbstractContextManager[Any]] | None = getattr(
            endpoint, "holding", None)

    async def run(self, bootstrap: list[str] = (), *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[assignment]
        core = self.core
        core.wall_offset = self.wall_clock() - trio.current_time()
        self._emit(core.start(trio.current_time(), list(bootstrap)))
        task_status.started()
        inbox = self.endpoint.inbox
        endpoint = self.endpoint
        inline = endpoint if isinstance(endpoint, Endpoint) and endpoint.on_arrival is None else None
        if inline is not None:
            inline.on_arrival = partial(self._arrived, inline.inbox)
        try:
            await self._loop(inbox)
        finally:
            if inline is not None:
                inline.on_arrival = None
        if self.on_shutdown is not None:
            await trio.sleep(0.2)  # let the writers send the shutdown reply before we go
            self.on_shutdown()

    async def _loop(self, inbox: Any) -> None:
        core = self.core
        while not self.stopped.is_set():
            batch = []
            deadline = core.next_deadline()
            with trio.move_on_at(deadline if math.isfinite(deadline) else math.inf) as self._waiting:
                try:
                    batch.append(await inbox.receive())
                finally:
                    self._waiting = None
            if self._failure is not None:
                raise self._failure
            while batch and len(batch) < MAX_BATCH:
                try:
                    batch.append(inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            now = trio.current_time()
            core.wall_offset = self.wall_clock() - now  # the core knows the time of day only through us
            out: list[Send] = []
            for incoming in batch:
                out.extend(self._guarded(self._handle, now, incoming))
            out.extend(self._guarded(core.tick, now))
            self._emit(out)
            # No checkpoint here: `inbox.receive` above always yields, so each batch lets the
            # other tasks run once, and an idle node wakes once per message, not twice.

    def _arrived(self, inbox: trio.MemoryReceiveChannel[Any], incoming: Arrival) -> bool:
        """A message from a connection's reader, before it goes to the inbox (the
        endpoint's `on_arrival`). While the loop is parked on an empty inbox, a client's
        read (`_read_only`) is handled here and now, as a batch of one, in the reader's
        task: the same steps the loop would take one task switch later. Otherwise (anything
        else, a batch being handled, or the loop handed a message and about to run) False:
        it queues behind."""
        scope = self._waiting
        if scope is None or self.stopped.is_set() or not _read_only(incoming):
            # What may write (nodes' messages: consensus rounds, hand-offs; a client's
            # mutation, which starts a round) keeps going through the inbox, where a burst
            # from several peers is one batch: one commit, one write per peer.
            return False
        stats = inbox.statistics()
        if stats.current_buffer_used or stats.tasks_waiting_receive != 1:
            return False
        core = self.core
        now = trio.current_time()
        core.wall_offset = self.wall_clock() - now
        try:
            out = self._guarded(self._handle, now, incoming)
            out.extend(self._guarded(core.tick, now))
            self._emit(out)
        except Exception as exc:  # only a strict host lets one out of `_guarded`: the loop raises it
            self._failure = exc
            scope.cancel()
            return True
        if self.stopped.is_set():
            scope.cancel()  # an admin shutdown: the loop ends
        else:
            # Timers the message set (a request's expiry) may be due before the loop's wait ends.
            scope.deadline = min(scope.deadline, core.next_deadline())
        return True

    def _guarded(self, fn: Callable[..., list[Send]], *args: Any) -> list[Send]:
        try:
            return fn(*args)
        except Exception as exc:
            if self.strict:
                raise
            self.core.log("internal_error", error=repr(exc), trace=traceback.format_exc(limit=8))
            return self.core.take_output()  # whatever the core queued before it failed still goes

    def _handle(self, now: float, incoming: Arrival) -> list[Send]:
        peer = incoming.peer
        msg = incoming.msg
        kind = msg.get("k")
        if kind == "status" and "re" not in msg:
            status = self.core.status()
            status["transport"] = self.endpoint.stats()
            status["pid"] = os.getpid()
            return [Send(peer.name, peer.address, reply_to(msg, "status", status=status))]
        if kind == "admin" and "re" not in msg:
            return [self._admin(peer, msg)]
        return self.core.handle(now, peer, msg)

    def _admin(self, peer: Peer, msg: dict[str, Any]) -> Send:
        if self.admin_name is None or peer.name != self.admin_name:
            return Send(peer.name, peer.address,
                        reply_to(msg, "error", err={"code": -100, "msg": "admin key required"}))
        op = msg.get("op")
        if op == "fault" and self.fault is not None:
            try:
                self.fault.configure(msg.get("rules") or {})
            except (ValueError, TypeError) as exc:
                return Send(peer.name, None, reply_to(msg, "error", err={"code": -112, "msg": str(exc)}))
            return Send(peer.name, None, reply_to(msg, "admin_ok", rules=self.fault.config()))
        if op == "shutdown":
            self.stopped.set()  # the loop ends after this reply is handed to the endpoint
            return Send(peer.name, None, reply_to(msg, "admin_ok"))
        return Send(peer.name, None, reply_to(msg, "error", err={"code": -112, "msg": f"unknown admin op {op!r}"}))

    def _emit(self, out: list[Send]) -> None:
        # Group commit: everything the batch wrote is durable before anything it says leaves.
        self.core.store.sync()
        # A real Endpoint writes the batch's frames when the loop below is done, in this task
        # (no wake-up of its flusher); the simulator's endpoint has no `holding`.
        if self._holding is None:
            self._send_all(out)
        else:
            with self._holding():
                self._send_all(out)

    def _send_all(self, out: list[Send]) -> None:
        for send in out:
            try:
                self.endpoint.send_nowait(send.to, send.address, send.msg)
            except SafeError as exc:
                # A message the core made but the wire cannot carry (a bug, or a number a
                # peer planted): dropped and logged; the node serves on.
                if self.strict:
                    raise
                self.core.log("unsendable", kind=send.msg.get("k"), error=repr(exc)[:200])


# Client messages that write nothing where they are handled: an IData get (answered from the
# store, or by asking the other holders), an MD member read, a lookup, the status.
_READ_KINDS = frozenset({"read", "find_node", "status"})


def _read_only(incoming: Arrival) -> bool:
    msg = incoming.msg
    if incoming.peer.role != "client" or "re" in msg:
        return False
    kind = msg.get("k")
    if kind in _READ_KINDS:
        return True
    req = msg.get("req") if kind == "request" else None
    op = req.get("op") if isinstance(req, dict) else None
    return isinstance(op, list) and len(op) == 2 and op[0] == GetIData.KIND
