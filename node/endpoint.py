"""An authenticated message endpoint between peers named by their keys (trio).

The node core is sans-IO: it emits "send message M to peer P" and consumes "message M
arrived from peer P", and matches requests to responses itself (it owns the timers).
`Endpoint` is the edge that turns that into TCP (or `MemoryNetwork` streams in tests):

- It listens (role "node"), dials on demand, proves both keys in a handshake on every new
  connection (node/handshake.py), checks a self-declared node's address by dialling back,
  keeps one long-lived connection per peer pair, and gives each peer a bounded send queue.
  Every connection's reader pushes `Incoming(peer, msg)` into one shared `inbox`.
- Sending costs no task switch per frame. One *flusher* task writes the queued frames of
  every peer whose connection is a TCP socket, straight to the socket and without waiting
  (`SecureStream.send_now`), once the task that queued them yields: all of one peer's
  frames in one write (sealed records of up to 64 KiB), the peers in the order their first
  frame was queued (so a node's reply to a client leaves before the commits it queued after
  it). A peer gets its own *writer* task only when the flusher cannot finish: no connection
  yet (the writer dials), a socket whose buffer is full (the writer waits for room, up to
  `write_timeout`, then drops the connection), or a stream that is not a socket (the
  in-memory network). Two callers skip even the flusher's task switch: the node host
  queues a batch's messages inside `holding()` and writes them itself at its end, and
  `send` (a client's request, after which the caller waits anyway) writes at once.
- A connection's reader offers each message to `on_arrival` before the inbox: RpcClient
  takes the replies its requests wait for there, and an idle node host handles the message
  on the spot (node/host.py), so a request costs a node one task step, not three.
- Resources are bounded against hostile peers. The limits are constructor options:

  ==========================  =======  ===================================================
  option                      default  what it bounds
  ==========================  =======  ===================================================
  handshake_max_frame         64 KiB   a frame until the handshake (and dial-back) is done
  max_frame                   3 MiB    a frame after it; so also one connection's buffer
  max_buffered                16 MiB   unfinished frames of all connections together
  max_connections             1024     accepted connections, handshaking or not
  max_connections_per_source  256      accepted connections from one source address
  max_handshaking             128      accepted connections still in their handshake
  handshake_timeout           5 s      hello + auth (the dial-back gets as long again)
  frame_timeout               10 s     from a frame's first byte to its last
  idle_timeout                None     a connection with no traffic either way (the node
                                       process sets 60 s; node links ping, so stay up)
  ==========================  =======  ===================================================

  What happens at each cap is described in node/connections.py and node/framing.py.

Traffic after the handshake is encrypted and authenticated (node/securelink.py).

Duplicate connections: if both peers dial each other at once, both keep the connection dialled
by the smaller name (`_rank`) and stop writing on the other; the side that dialled the loser
half-closes it once its last frame is out, so nothing already written is lost, and the peer
closes it on that EOF.

Why one module of about 670 lines: the public API, the send queues, the flusher and the
writers share each link's state; the connection half is already its own module
(node/connections.py), as are framing and the encrypted link.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any

import trio

from .connections import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
    DEFAULT_MAX_HANDSHAKING,
    STREAM_ERRORS,
    ConnectionSide,
    Unreachable,
    _Connection,
    _Link,
    _Retired,
)
from .errors import NetworkError, RequestTimeout, SafeError
from .fault_rules import FaultHook
from .framing import DEFAULT_MAX_BUFFERED, HANDSHAKE_MAX_FRAME, ReceiveBudget
from .handshake import ROLES, Incoming, Peer
from .keys import Keypair
from .memnet import MemoryNetwork
from .securelink import SecureStream
from .wire import (
    DEFAULT_MAX_FRAME,
    Message,
    UnsupportedVersion,
    encode_frame,
    error_message,
)
from .xorname import XorName

COALESCE_FRAMES = 64  # at most this many queued frames in one write
COALESCE_BYTES = 256 * 1024  # and about this many bytes
# A writer with nothing to write but the bytes a socket did not take at once.
_FLUSH: tuple[str, bytes] = ("", b"")

log = logging.getLogger(__name__)

# Error frames are a courtesy to a misbehaving peer; never wait long for one to go out.
ERROR_WRITE_TIMEOUT = 1.0
# After failing to reach a peer, drop messages for it for this long instead of redialling for
# every one of them.
REDIAL_BACKOFF = 0.5
MAX_DELAYED = 10_000
MAX_DIAL_FAILURES = 4096

_COUNTERS = (
    "connections_opened",
    "connections_closed",
    "connections_retired",
    "handshake_failures",
    "protocol_errors",
    "rejected_in",
    "refused_in",
    "evicted_connections",
    "evicted_per_source",
    "evicted_handshakes",
    "closed_idle",
    "probes_sent",
    "probes_answered",
    "unverified_nodes",
    "dropped_fault_in",
    "dropped_fault_out",
    "dropped_queue_full",
    "dropped_no_route",
    "dropped_unreachable",
    "dropped_write_failed",
    "delayed_out",
    "socket_full",
)


class Endpoint(ConnectionSide):
    """One node's or client's end of the network. Run it with `run` inside a nursery."""

    def __init__(
        self,
        keys: Keypair,
        *,
        role: str = "node",
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        handshake_max_frame: int = HANDSHAKE_MAX_FRAME,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        max_handshaking: int = DEFAULT_MAX_HANDSHAKING,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        idle_timeout: float | None = None,
        fault: FaultHook | None = None,
        frame_timeout: float = 10.0,
        write_timeout: float = 10.0,
        send_timeout: float = 5.0,
        queue_size: int = 256,
        inbox_size: int = 1024,
        network: MemoryNetwork | None = None,
        advertise: str | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role is one of {ROLES}, got {role!r}")
        for option, value in (
            ("max_connections", max_connections),
            ("max_connections_per_source", max_connections_per_source),
            ("max_handshaking", max_handshaking),
            ("handshake_max_frame", handshake_max_frame),
        ):
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value!r}")
        self.keys = keys
        self.name: XorName = keys.name
        self.role = role
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.max_frame = max_frame
        self.handshake_max_frame = handshake_max_frame
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source
        self.max_handshaking = max_handshaking
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.fault = fault
        self.frame_timeout = frame_timeout
        self.write_timeout = write_timeout
        self.send_timeout = send_timeout
        self.queue_size = queue_size
        self.address: str | None = None
        self.advertise = advertise  # the address peers are told, when not the one listened on
        self._network = network
        self._inbox_send, self.inbox = trio.open_memory_channel[Incoming](inbox_size)
        # Called with a peer's name when its last connection closes (RpcClient fails the
        # requests waiting on that peer at once instead of at their deadlines).
        self.on_disconnect: list[Callable[[XorName], None]] = []
        # Called by a connection's reader with each message before it goes to the inbox; a
        # True return means it was taken (RpcClient hands a reply straight to the request
        # waiting for it, one task switch instead of two). Must not block or raise.
        self.on_arrival: Callable[[Incoming], bool] | None = None
        self._links: dict[XorName, _Link] = {}
        self._conns: set[_Connection] = set()  # every open connection, handshaking or not
        self._proven: dict[XorName, str] = {}  # listen addresses our own dials proved
        self._budget = ReceiveBudget(max_buffered)
        self._dial_locks: dict[str, trio.Lock] = {}
        self._dial_failed: dict[XorName, float] = {}  # when dialling each last failed
        self._nursery: trio.Nursery | None = None
        self._started = False
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._delayed = 0
        # Links with frames queued for the flusher, in the order they were first queued.
        self._dirty: dict[_Link, None] = {}
        self._flush_lot = trio.lowlevel.ParkingLot()
        self._holding = 0  # inside `holding()`: frames wait for its end, not for the flusher
        self._hold = _Holding(self)
        self._counters: Counter[str] = Counter(dict.fromkeys(_COUNTERS, 0))
        self._frames: dict[str, Counter[str]] = {"in": Counter(), "out": Counter()}
        self._bytes: dict[str, Counter[str]] = {"in": Counter(), "out": Counter()}

    def __repr__(self) -> str:
        return f"<Endpoint {self.role} {self.name.short()} at {self.address}>"

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled or `aclose`d; ``task_status.started(address)`` (None for a
        client, which does not listen)."""
        if self._started:
            raise RuntimeError("an Endpoint runs only once")
        self._started = True
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._flusher)
                if self.role == "node":
                    listening = await self._listen(nursery)
                    self.address = self.advertise or listening
                task_status.started(self.address)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            if self._network is not None and self.address is not None:
                self._network.unbind(self.address)
            self._inbox_send.close()
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop serving: every connection and task of this endpoint ends; the inbox closes."""
        self._stop.set()
        if self._started:
            await self._stopped.wait()
        else:
            self._inbox_send.close()
            await trio.lowlevel.checkpoint()

    async def _listen(self, nursery: trio.Nursery) -> str:
        if self._network is not None:
            return self._network.bind(self)
        listeners = await trio.open_tcp_listeners(self.listen_port, host=self.listen_host)
        await nursery.start(
            partial(trio.serve_listeners, self._accept, listeners, handler_nursery=nursery)
        )
        host, port = listeners[0].socket.getsockname()[:2]
        return f"{host}:{port}"

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"{self!r} is not running")
        return self._nursery

    # ---------------------------------------------------------------- public API

    def send_nowait(self, to_name: bytes | None, to_address: str | None, msg: Message) -> bool:
        """Queue `msg` for `to_name`, dialling `to_address` if no connection exists.

        Returns False when the message was dropped at once: the peer's queue is full, or
        there is neither a connection nor an address. True means queued (or taken by the fault
        hook, which is indistinguishable from loss on the wire). Delivery is not confirmed:
        protocols above tolerate loss. Raises ProtocolError if `msg` can't be encoded.

        `to_name` None sends to whoever the handshake at `to_address` proves to be (a
        bootstrap contact whose name isn't known yet); the connecting happens in the
        background, so a failure there is only counted (``dropped_unreachable``).
        """
        nursery = self._require_running()
        if to_name is None:
            return self._send_by_address(nursery, to_address, msg)
        name, kind, frame, delay = self._prepare(to_name, msg)
        if delay is None:
            return True
        if delay > 0:
            return self._send_later(nursery, delay, name, to_address, kind, frame)
        return self._enqueue(name, to_address, kind, frame)

    async def send(self, to_name: bytes, to_address: str | None, msg: Message) -> None:
        """Like `send_nowait`, but waits up to `send_timeout` for room in the peer's queue.

        Raises RequestTimeout if the queue stayed full, Unreachable if there is no route.
        """
        nursery = self._require_running()
        name, kind, frame, delay = self._prepare(to_name, msg)
        if delay is None:
            return
        if delay > 0:
            self._send_later(nursery, delay, name, to_address, kind, frame)
            return
        link = self._link_for_send(name, to_address)
        if link is None:
            raise Unreachable(f"no connection to {name.short()} and no address for it")
        try:
            link.send_ch.send_nowait((kind, frame))
        except trio.WouldBlock:
            pass
        else:
            # Room in the queue: written now if the socket takes it (no task switch; the
            # caller is about to wait for the answer anyway), else by the link's writer.
            self._kick(link, now=True)
            return
        with trio.move_on_after(self.send_timeout):
            await link.send_ch.send((kind, frame))
            self._kick(link)
            return
        self._counters["dropped_queue_full"] += 1
        raise RequestTimeout(f"send queue to {name.short()} stayed full for {self.send_timeout}s")

    async def connect(self, address: str, expected_name: bytes | None = None) -> Peer:
        """A verified connection to whoever listens at `address` (reused if one is open).

        With `expected_name`, the handshake must prove the peer is that name. Raises
        Unreachable or HandshakeError.
        """
        nursery = self._require_running()
        expected = None if expected_name is None else XorName(expected_name)
        if expected == self.name:
            raise ValueError("an endpoint does not connect to itself")
        existing = self._find_connection(address, expected)
        if existing is not None:
            return existing
        lock = self._dial_locks.setdefault(address, trio.Lock())
        try:
            async with lock:
                # Another task may have connected while we waited for the lock.
                existing = self._find_connection(address, expected)
                if existing is not None:
                    return existing
                return await self._dial(nursery, address, expected)
        finally:
            stats = lock.statistics()
            if not stats.locked and not stats.tasks_waiting:
                self._dial_locks.pop(address, None)

    def connected_peers(self) -> list[Peer]:
        """Peers with an open, verified connection (in either direction)."""
        return [
            conn.peer
            for link in self._links.values()
            if (conn := link.live_primary()) is not None and conn.peer is not None
        ]

    def is_connected(self, name: bytes) -> bool:
        link = self._links.get(XorName(name))
        return link is not None and link.live_primary() is not None

    def stats(self) -> dict[str, Any]:
        """Counters for observability: frames/bytes per kind in and out, drops, connections."""
        per_kind = {
            direction: {
                kind: {
                    "frames": self._frames[direction][kind],
                    "bytes": self._bytes[direction][kind],
                }
                for kind in sorted(self._frames[direction])
            }
            for direction in ("in", "out")
        }
        return {
            **per_kind,
            **self._counters,
            "connections": sum(len(link.conns) for link in self._links.values()),
            "connections_all": len(self._conns),
            "buffered": self._budget.used,
            "buffered_peak": self._budget.peak,
            "refused_buffer_full": self._budget.refused,
            "peers": len(self.connected_peers()),
        }

    # ---------------------------------------------------------------- send path

    def _prepare(self, to_name: bytes, msg: Message) -> tuple[XorName, str, bytes, float | None]:
        """Encode now (so the caller sees a bad message) and ask the fault hook."""
        name = XorName(to_name)
        if name == self.name:
            raise ValueError("an endpoint does not send to itself")
        frame = encode_frame(msg, self.max_frame)
        delay: float | None = 0.0
        if self.fault is not None:
            delay = self.fault.outbound(name, msg)
            if delay is None:
                self._counters["dropped_fault_out"] += 1
        return name, msg["k"], frame, delay

    def _send_later(
        self,
        nursery: trio.Nursery,
        delay: float,
        name: XorName,
        address: str | None,
        kind: str,
        frame: bytes,
    ) -> bool:
        if self._delayed >= MAX_DELAYED:
            self._counters["dropped_queue_full"] += 1
            return False
        self._delayed += 1
        self._counters["delayed_out"] += 1
        nursery.start_soon(self._deliver_later, delay, name, address, kind, frame)
        return True

    async def _deliver_later(
        self, delay: float, name: XorName, address: str | None, kind: str, frame: bytes
    ) -> None:
        # Its own task, so a delayed message holds up neither its peer's queue nor others'.
        try:
            await trio.sleep(delay)
            self._enqueue(name, address, kind, frame)
        finally:
            self._delayed -= 1

    def _send_by_address(self, nursery: trio.Nursery, address: str | None, msg: Message) -> bool:
        if address is None:
            raise ValueError("a message needs a peer name or an address")
        encode_frame(msg, self.max_frame)  # a bad message fails in the caller, not later
        if self._delayed >= MAX_DELAYED:
            self._counters["dropped_queue_full"] += 1
            return False
        self._delayed += 1
        nursery.start_soon(self._connect_then_send, address, msg)
        return True

    async def _connect_then_send(self, address: str, msg: Message) -> None:
        try:
            try:
                peer = await self.connect(address)
            except (NetworkError, ValueError) as exc:
                self._counters["dropped_unreachable"] += 1
                log.info("event=dial_failed address=%s error=%r", address, exc)
                return
            name, kind, frame, delay = self._prepare(peer.name, msg)
            if delay is None:
                return
            if delay > 0:
                await trio.sleep(delay)
            self._enqueue(name, address, kind, frame)
        finally:
            self._delayed -= 1

    def _enqueue(self, name: XorName, address: str | None, kind: str, frame: bytes) -> bool:
        link = self._link_for_send(name, address)
        if link is None:
            return False
        try:
            link.send_ch.send_nowait((kind, frame))
        except trio.WouldBlock:
            self._counters["dropped_queue_full"] += 1
            return False
        self._kick(link)
        return True

    def _link_for_send(self, name: XorName, address: str | None) -> _Link | None:
        link = self._links.get(name)
        if link is None and address is None:
            self._counters["dropped_no_route"] += 1
            return None
        if link is None:
            link = self._link(name)
        if address is not None:
            link.address = address
        if link.live_primary() is None and not self._may_dial(link):
            # e.g. a client that has gone: we can only answer over its own connection.
            self._counters["dropped_no_route"] += 1
            self._maybe_forget(link)
            return None
        return link

    def _may_dial(self, link: _Link) -> bool:
        return link.address is not None and (link.peer is None or link.peer.role == "node")

    def _kick(self, link: _Link, *, now: bool = False) -> None:
        """Frames were queued for `link`: have them written. A link with a writer task
        (dialling, or a socket that was full) leaves it to the writer; one whose connection
        is an encrypted TCP socket goes to the flusher, which writes every such link's queue
        once the current task yields, in the order the links were first queued, without a
        task switch per link (inside `holding()`, at its end instead, with no task switch at
        all; with `now`, at once); any other (the in-memory network) gets a writer."""
        if link.writer_running:
            return
        conn = link.live_primary()
        if conn is not None and _direct(conn):
            if now and not self._holding and link not in self._dirty:
                self._flush(link)
                return
            if not self._dirty and not self._holding:
                self._flush_lot.unpark_all()
            self._dirty[link] = None
        else:
            self._ensure_writer(link)

    def holding(self) -> _Holding:
        """Frames queued inside the block are written at its end by the calling task, all of
        a peer's in one write, the peers in the order they were first queued: what the
        flusher would do once the caller yields, without waking the flusher. The node host
        sends a batch's messages this way. (A plain context manager object, not a generator:
        the host enters it for every message it handles.)"""
        return self._hold

    def _flush_dirty(self) -> None:
        while self._dirty:
            links = list(self._dirty)
            self._dirty.clear()
            for link in links:
                self._flush(link)

    def _ensure_writer(self, link: _Link) -> None:
        if not link.writer_running:
            link.writer_running = True
            self._require_running().start_soon(self._writer, link)

    async def _flusher(self) -> None:
        """The one task that writes queued frames straight to the sockets (see `_kick`)."""
        while True:
            if not self._holding:
                self._flush_dirty()
            await self._flush_lot.park()

    def _flush(self, link: _Link) -> None:
        """Write what is queued for `link` now; anything that cannot go at once (a full
        socket, a lock held by another write, no connection) is handed to a writer task."""
        if link.writer_running:
            return
        conn = link.live_primary()
        if conn is None or not _direct(conn) or conn.retired or conn.write_lock.locked():
            self._ensure_writer(link)
            return
        stream = conn.stream
        assert isinstance(stream, SecureStream)
        drained = False
        while not drained and (batch := _take_batch(link)):
            # A batch below both limits emptied the queue (nothing can be queued while this
            # runs): no second look, which would only find it empty.
            drained = len(batch) < COALESCE_FRAMES and sum(len(f) for _, f in batch) < COALESCE_BYTES
            try:
                done = stream.send_now(batch[0][1] if len(batch) == 1 else b"".join(f for _, f in batch))
            except OSError as exc:
                self._counters["dropped_write_failed"] += len(batch)
                log.info("event=write_failed peer=%s error=%r", link.name.short(), exc)
                self._kill(conn)
                if not link.queue_empty():
                    self._ensure_writer(link)
                return
            conn.last_activity = trio.current_time()
            for kind, frame in batch:
                self._count("out", kind, len(frame))
            if not done:
                # The socket is full: a writer waits for room, sends the rest, then the queue.
                self._counters["socket_full"] += 1
                self._ensure_writer(link)
                return

    async def _writer(self, link: _Link) -> None:
        """The task writing to a peer while the flusher cannot: drains its queue, dialling
        when needed, waiting for room in a full socket."""
        try:
            while (item := await self._next_outgoing(link)) is not None:
                # Everything already queued for this peer goes out in one write: one syscall
                # and one scheduling hop for a burst of frames instead of one per frame.
                batch = [item, *_take_batch(link, 1, len(item[1]))]
                await self._write_to(link, batch)
        finally:
            link.writer_running = False
            link.idle_scope = None
            self._maybe_forget(link)

    def _note_dial_failure(self, name: XorName) -> None:
        now = trio.current_time()
        if len(self._dial_failed) >= MAX_DIAL_FAILURES:
            # Keep the table bounded: forget failures whose backoff has run out.
            self._dial_failed = {
                n: t for n, t in self._dial_failed.items() if now - t < REDIAL_BACKOFF
            }
        self._dial_failed[name] = now

    async def _write_to(self, link: _Link, batch: list[tuple[str, bytes]]) -> None:
        # A second try only when the connection lost a duplicate-connection tie while we
        # waited for its lock; the winner is then the primary.
        for _ in range(2):
            conn = await self._route(link)
            if conn is None:
                self._drop_backlog(link, len(batch))
                return
            try:
                frame = batch[0][1] if len(batch) == 1 else b"".join(f for _, f in batch)
                await self._write_frame(conn, [(k, len(f)) for k, f in batch], frame, self.write_timeout, data=True)
                return
            except _Retired:
                continue
            except STREAM_ERRORS as exc:
                self._counters["dropped_write_failed"] += len(batch)
                log.info("event=write_failed peer=%s error=%r", link.name.short(), exc)
                self._kill(conn)
                return
        self._counters["dropped_write_failed"] += len(batch)

    async def _next_outgoing(self, link: _Link) -> tuple[str, bytes] | None:
        """The next queued frame; None once the queue is empty and the peer has no connection
        (the writer then ends, so departed peers leave no task behind), or has one the
        flusher can write to (after the bytes its socket had no room for are out)."""
        while True:
            try:
                return link.recv_ch.receive_nowait()
            except trio.WouldBlock:
                pass
            conn = link.live_primary()
            if conn is None:
                return None
            if _direct(conn):
                assert isinstance(conn.stream, SecureStream)
                return _FLUSH if conn.stream.unsent else None
            # Cancelled by _unregister when the last connection goes.
            with trio.CancelScope() as link.idle_scope:
                return await link.recv_ch.receive()

    def _drop_backlog(self, link: _Link, taken: int = 1) -> None:
        """The peer can't be reached: the `taken` frames in hand and what is queued for it
        go (it would only wait)."""
        dropped = taken
        while True:
            try:
                link.recv_ch.receive_nowait()
            except trio.WouldBlock:
                break
            dropped += 1
        self._counters["dropped_unreachable"] += dropped

    async def _route(self, link: _Link) -> _Connection | None:
        conn = link.live_primary()
        if conn is not None:
            return conn
        if not self._may_dial(link) or link.address is None:
            return None
        if trio.current_time() - self._dial_failed.get(link.name, -math.inf) < REDIAL_BACKOFF:
            return None
        try:
            await self.connect(link.address, link.name)
        except (NetworkError, ValueError) as exc:
            self._note_dial_failure(link.name)
            log.info(
                "event=dial_failed peer=%s address=%s error=%r",
                link.name.short(),
                link.address,
                exc,
            )
            return None
        return link.live_primary()

    async def _write_frame(
        self, conn: _Connection, kind: str | list[tuple[str, int]], frame: bytes, timeout: float,
        *, data: bool = False,
    ) -> None:
        """Write whole frames (one, or several back to back, with their kinds and sizes for
        the counters); `data` frames refuse a connection retired meanwhile."""
        with trio.fail_after(timeout):
            async with conn.write_lock:
                if data and conn.retired:
                    raise _Retired
                await conn.stream.send_all(frame)
        conn.last_activity = trio.current_time()
        for k, size in [(kind, len(frame))] if isinstance(kind, str) else kind:
            if k:  # not the flush of bytes a socket left over (counted when sealed)
                self._count("out", k, size)

    async def _send_error(self, conn: _Connection, re_msg: Message | None, exc: SafeError) -> None:
        """Best effort: tell the peer why, without waiting on it for long."""
        if re_msg is None and isinstance(exc, UnsupportedVersion):
            re_msg = {"id": exc.msg_id}
        frame = encode_frame(error_message(re_msg, exc), self.max_frame)
        with suppress(*STREAM_ERRORS):
            await self._write_frame(conn, "error", frame, ERROR_WRITE_TIMEOUT)


class _Holding:
    """`Endpoint.holding()`'s block (re-entrant: only the outermost exit writes)."""

    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def __enter__(self) -> None:
        self._endpoint._holding += 1

    def __exit__(self, *exc_info: object) -> None:
        endpoint = self._endpoint
        endpoint._holding -= 1
        if not endpoint._holding:
            endpoint._flush_dirty()


def _direct(conn: _Connection) -> bool:
    """Whether the flusher can write to `conn` without waiting (an encrypted TCP socket)."""
    stream = conn.stream
    return isinstance(stream, SecureStream) and stream.can_send_now


def _take_batch(link: _Link, taken: int = 0, size: int = 0) -> list[tuple[str, bytes]]:
    """Frames queued for `link`, up to the coalescing limits (counting `taken` frames of
    `size` bytes already in hand)."""
    batch: list[tuple[str, bytes]] = []
    while taken + len(batch) < COALESCE_FRAMES and size < COALESCE_BYTES:
        try:
            item = link.recv_ch.receive_nowait()
        except trio.WouldBlock:
            break
        batch.append(item)
        size += len(item[1])
    return batch
