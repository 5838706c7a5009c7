"""The connection half of `Endpoint`: accept and dial, handshake, dial-back, read, admit.

`Endpoint` (node/endpoint.py) is one class written in two files: there the lifecycle, the
public API and the send path; here everything about connections, as the mixin
`ConnectionSide`:

- **Admission.** Every accepted connection counts against caps on connections in all, per
  source address and still in their handshake. At a cap the connection that has been silent
  longest (for the handshake cap: the oldest handshake) is closed to make room, never a
  verified node's; if there is none to close, the new one is refused. So a flood of idle or
  stalled connections costs a bounded number of descriptors, and a newcomer still gets in.
- **Handshake** (node/handshake.py), under a small frame limit and a deadline; after it
  the connection runs inside a `SecureStream` (node/securelink.py): encrypted, every byte
  authenticated, replayed or altered records refused and the connection closed.
- **Dial-back.** A peer that claims to be a node is checked before it counts as one: this
  end opens a *probe* connection to the address the peer claimed and requires the same key to
  answer there. A connection we dialled ourselves proves its address already. Proven
  addresses are remembered (bounded), so reconnecting nodes are not probed again. Until the
  check is done the connection is not read at all (its sender waits on TCP), so nothing is
  ever delivered as "maybe a node"; if the check fails the peer is a client.
- **Read loop**, idle timeout and the shared receive budget (node/framing.py).
- **Bookkeeping**: one `_Link` per peer; duplicate connections settle on one (see
  node/endpoint.py).

Why one module of about 620 lines: accepting, dialling, the dial-back and the read loop
share each connection's state; framing, the handshake and the encrypted link are already
their own modules.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from .errors import NetworkError, ProtocolError, SafeError, error_from_wire
from .framing import FrameReader, ReceiveBudget
from .handshake import (
    HANDSHAKE_KINDS,
    NONCE_LEN,
    HandshakeError,
    Incoming,
    Peer,
    auth_payload,
    check_auth,
    check_hello,
    hello_fields,
    peer_key,
)
from .keys import Keypair
from .securelink import Ephemeral, secure_stream
from .wire import Message, check_version, encode_frame, new_message
from .xorname import XorName

if TYPE_CHECKING:
    from .fault_rules import FaultHook
    from .memnet import MemoryNetwork

log = logging.getLogger(__name__)

# How long a connection that lost the duplicate-connection tie may live to drain.
RETIRE_LINGER = 10.0
# Kinds are chosen by peers; cap the per-kind stats table so a peer can't grow it for ever.
MAX_STAT_KINDS = 128
OTHER_KIND = "<other>"
# Messages a reader hands over at most before it lets other tasks run (it also yields
# whenever it waits for the socket or for room in the inbox).
READ_BURST = 64
# Names whose listen address a dial proved; enough for any routing table, bounded for floods.
MAX_PROVEN = 4096

# Admission defaults, sized for a small box running a 16-node loopback cluster and its
# clients: all of them come from 127.0.0.1, so the per-source cap is generous and the caps on
# all connections and on handshakes in progress do the real work.
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 256
DEFAULT_MAX_HANDSHAKING = 128

STREAM_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,
)
# What a connection may fail with; anything else is a bug and should be loud.
CONN_ERRORS: tuple[type[BaseException], ...] = (ProtocolError, *STREAM_ERRORS)


class Unreachable(NetworkError):
    """Could not open a connection to an address (refused, unroutable, or timed out)."""


class _Retired(Exception):
    """The connection lost a duplicate-connection tie: write on the winner instead."""


class _Connection:
    """One stream to a peer, from dial or accept until closed."""

    def __init__(
        self, stream: trio.abc.Stream, dialled: bool, reader: FrameReader, source: str | None
    ) -> None:
        self.stream = stream
        self.dialled = dialled
        self.reader = reader
        self.source = source  # the remote host of an accepted TCP connection
        self.peer: Peer | None = None
        self.write_lock = trio.Lock()
        self.scope = trio.CancelScope()  # cancelled to close the connection
        self.retired = False
        self.closed = False
        self.handshaking = True  # until registered (the dial-back included)
        self.opened_at = self.last_activity = trio.current_time()

    def __repr__(self) -> str:
        who = self.peer.name.short() if self.peer else "?"
        return f"<conn {'to' if self.dialled else 'from'} {who}>"

    @property
    def evictable(self) -> bool:
        """Admission may close it to make room: anything but a verified node's connection."""
        return not self.dialled and (self.peer is None or not self.peer.verified_node)


class _Link:
    """Everything an endpoint knows about one peer: its connections and its send queue."""

    def __init__(self, name: XorName, queue_size: int) -> None:
        self.name = name
        self.peer: Peer | None = None
        self.address: str | None = None
        self.conns: set[_Connection] = set()
        self.primary: _Connection | None = None
        self.send_ch, self.recv_ch = trio.open_memory_channel[tuple[str, bytes]](queue_size)
        self.writer_running = False
        self.idle_scope: trio.CancelScope | None = None

    def live_primary(self) -> _Connection | None:
        conn = self.primary
        return conn if conn is not None and not conn.closed else None

    def queue_empty(self) -> bool:
        return self.send_ch.statistics().current_buffer_used == 0


def stream_source(stream: trio.abc.Stream) -> str | None:
    """The remote host of a TCP stream (None for an in-memory one)."""
    sock = getattr(stream, "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else None
    except OSError:
        return None


class ConnectionSide:
    """Endpoint's connection methods (a mixin: `Endpoint` sets every attribute below)."""

    keys: Keypair
    name: XorName
    role: str
    address: str | None
    max_frame: int
    handshake_max_frame: int
    connect_timeout: float
    handshake_timeout: float
    idle_timeout: float | None
    frame_timeout: float
    write_timeout: float
    queue_size: int
    max_connections: int
    max_connections_per_source: int
    max_handshaking: int
    fault: FaultHook | None
    on_disconnect: list[Callable[[XorName], None]]
    on_arrival: Callable[[Incoming], bool] | None
    _network: MemoryNetwork | None
    _nursery: trio.Nursery | None
    _inbox_send: trio.MemorySendChannel[Incoming]
    _links: dict[XorName, _Link]
    _dial_failed: dict[XorName, float]
    _conns: set[_Connection]
    _proven: dict[XorName, str]
    _budget: ReceiveBudget
    _counters: Counter[str]
    _frames: dict[str, Counter[str]]
    _bytes: dict[str, Counter[str]]

    if TYPE_CHECKING:

        def _require_running(self) -> trio.Nursery: ...

        async def _write_frame(
            self,
            conn: _Connection,
            kind: str | list[tuple[str, int]],
            frame: bytes,
            timeout: float,
            *,
            data: bool = False,
        ) -> None: ...

        async def _send_error(
            self, conn: _Connection, re_msg: Message | None, exc: SafeError
        ) -> None: ...

    # ------------------------------------------------------------ opening connections

    async def _open_stream(self, address: str) -> trio.abc.Stream:
        try:
            with trio.fail_after(self.connect_timeout):
                if self._network is not None:
                    return await self._network.dial(address)
                host, port = parse_address(address)
                return await trio.open_tcp_stream(host, port)
        except (OSError, ValueError, trio.TooSlowError) as exc:
            raise Unreachable(f"cannot connect to {address}: {exc!r}") from None

    async def _dial(self, nursery: trio.Nursery, address: str, expected: XorName | None) -> Peer:
        stream = await self._open_stream(address)
        try:
            conn: _Connection = await nursery.start(
                partial(
                    self._run_connection, stream, dialled=True, expected=expected, address=address
                )
            )
        except HandshakeError:
            raise
        except CONN_ERRORS as exc:
            raise HandshakeError(f"handshake with {address} failed: {exc!r}") from None
        assert conn.peer is not None
        return conn.peer

    def accept_stream(self, stream: trio.abc.Stream) -> None:
        """Serve an inbound stream that did not come through a listener (the in-memory network)."""
        if self._nursery is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{self!r} is not running")
        try:
            self._nursery.start_soon(self._accept, stream)
        except RuntimeError:  # its nursery is closing: the endpoint crashed or is stopping
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{self!r} is shutting down") from None

    async def _accept(self, stream: trio.abc.Stream) -> None:
        try:
            await self._run_connection(stream, dialled=False, expected=None)
        except CONN_ERRORS as exc:
            log.info("event=accept_failed error=%r", exc)

    # ------------------------------------------------------------------- admission

    def _admit(self, conn: _Connection) -> bool:
        """Make room for an accepted connection under the caps, or refuse it (False)."""
        handshaking = [c for c in self._conns if c.handshaking and not c.dialled]
        if len(handshaking) >= self.max_handshaking:
            self._evict(min(handshaking, key=lambda c: c.opened_at), "handshakes")
        if len(self._conns) >= self.max_connections and not self._evict_idlest(
            self._conns, "connections"
        ):
            return False
        if conn.source is not None:
            same = [c for c in self._conns if c.source == conn.source]
            if len(same) >= self.max_connections_per_source and not self._evict_idlest(
                same, "per_source"
            ):
                return False
        return True

    def _evict_idlest(self, conns: Any, cap: str) -> bool:
        candidates = [c for c in conns if c.evictable and not c.closed]
        if not candidates:
            return False
        self._evict(min(candidates, key=lambda c: c.last_activity), cap)
        return True

    def _evict(self, conn: _Connection, cap: str) -> None:
        self._counters[f"evicted_{cap}"] += 1
        self._conns.discard(conn)  # at once, so the next admission sees the room
        self._kill(conn)

    # ------------------------------------------------------------- one connection

    async def _run_connection(
        self,
        stream: trio.abc.Stream,
        *,
        dialled: bool,
        expected: XorName | None,
        address: str | None = None,
        task_status: trio.TaskStatus[_Connection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handshake and dial-back, then read until the connection ends. Errors before
        `started` (the handshake's) propagate to the dialler; later ones only close this
        connection. `address` is where we dialled (None for an accepted connection)."""
        reader = FrameReader(stream, self.handshake_max_frame, self.frame_timeout, self._budget)
        source = None if dialled else stream_source(stream)
        conn = _Connection(stream, dialled, reader, source)
        if not dialled and not self._admit(conn):
            self._counters["refused_in"] += 1
            reader.release()
            await trio.aclose_forcefully(stream)
            return
        self._conns.add(conn)
        try:
            with conn.scope:
                peer = await self._open(conn, expected, address)
                if peer is None:  # a probe, answered
                    return
                conn.peer, conn.handshaking = peer, False
                reader.limit = self.max_frame
                reader.exempt = peer.verified_node
                self._register(conn)
                task_status.started(conn)
                try:
                    await self._read_loop(conn)
                except STREAM_ERRORS as exc:
                    log.info("event=conn_lost peer=%s error=%r", peer.name.short(), exc)
            if conn.peer is None and dialled:
                raise HandshakeError("the connection closed during the handshake")
        finally:
            self._conns.discard(conn)
            reader.release()
            self._unregister(conn)
            await trio.aclose_forcefully(stream)

    async def _open(
        self, conn: _Connection, expected: XorName | None, address: str | None
    ) -> Peer | None:
        """The checked peer of a new connection; None when it was a probe we answered."""
        try:
            with trio.fail_after(self.handshake_timeout):
                peer, probe = await self._handshake(conn, expected, probe=False)
            if probe:
                self._counters["probes_answered"] += 1
                # The prober hangs up once it has our auth; don't wait on it for long.
                with trio.move_on_after(self.handshake_timeout):
                    await conn.reader.receive()
                return None
            if address is not None and peer.claimed_address == address:
                self._prove(peer.name, address)
            return await self._verify(peer)
        except BaseException as exc:
            if isinstance(exc, ProtocolError | trio.TooSlowError):
                self._counters["handshake_failures"] += 1
            if isinstance(exc, ProtocolError):
                await self._send_error(conn, None, exc)
            if isinstance(exc, trio.TooSlowError):
                raise HandshakeError(f"no handshake within {self.handshake_timeout}s") from None
            raise

    async def _handshake(
        self, conn: _Connection, expected: XorName | None, *, probe: bool
    ) -> tuple[Peer, bool]:
        """Prove both keys; returns the peer (a client until verified) and whether the peer
        came to probe us. Probes are left out of the per-kind frame counters."""
        counts: list[tuple[str, str, int]] = []
        nonce = os.urandom(NONCE_LEN)
        eph = Ephemeral()
        advertised = self.address if self.role == "node" else None
        fields = hello_fields(self.role, self.keys.public, nonce, advertised, probe=probe, eph=eph.public)
        hello = encode_frame(new_message("hello", **fields), self.max_frame)
        await self._write_frame(conn, [], hello, math.inf)
        counts.append(("out", "hello", len(hello)))
        msg = await self._handshake_receive(conn, "hello", counts)
        checked = check_hello(msg, self.name, expected)
        peer = checked.peer
        payload = auth_payload(
            checked.nonce, self.keys.public, peer_key(peer), self.role, advertised,
            eph.public, checked.eph,
        )
        auth = encode_frame(new_message("auth", sig=self.keys.sign(payload)), self.max_frame)
        await self._write_frame(conn, [], auth, math.inf)
        counts.append(("out", "auth", len(auth)))
        check_auth(await self._handshake_receive(conn, "auth", counts), peer, nonce, self.keys.public,
                   eph.public, checked.eph)
        if not (probe or checked.probe):
            for direction, kind, size in counts:
                self._count(direction, kind, size)
            self._secure(conn, eph, ((nonce, bytes(self.keys.public), eph.public),
                                     (checked.nonce, bytes(peer_key(peer)), checked.eph)))
        return peer, checked.probe

    @staticmethod
    def _secure(conn: _Connection, eph: Ephemeral,
                ends: tuple[tuple[bytes, bytes, bytes], tuple[bytes, bytes, bytes]]) -> None:
        """From here on the connection's bytes are sealed (node/securelink.py). `ends` is
        (ours, theirs): each (nonce, long-term key, ephemeral key)."""
        ours, theirs = ends
        secure = secure_stream(conn.stream, eph, ours, theirs, dialled=conn.dialled,
                               initial=conn.reader.take_buffered())
        conn.stream = secure
        conn.reader.stream = secure

    async def _handshake_receive(
        self, conn: _Connection, kind: str, counts: list[tuple[str, str, int]]
    ) -> Message:
        item = await conn.reader.receive()
        if item is None:
            raise HandshakeError(f"peer closed the connection before its {kind!r}")
        msg, size = item
        counts.append(("in", msg["k"], size))
        if msg["k"] == "error":
            raise HandshakeError(f"peer refused the handshake: {error_from_wire(msg.get('err'))}")
        check_version(msg)
        if msg["k"] != kind:
            raise HandshakeError(f"expected {kind!r} in the handshake, got {msg['k']!r:.40}")
        return msg

    # ------------------------------------------------------------------ dial-back

    def _prove(self, name: XorName, address: str) -> None:
        """Remember that `name` answered at `address` on a connection we dialled."""
        self._proven.pop(name, None)
        if len(self._proven) >= MAX_PROVEN:
            del self._proven[next(iter(self._proven))]
        self._proven[name] = address

    async def _verify(self, peer: Peer) -> Peer:
        """`peer` as a verified node if its claim holds, else as the client it is."""
        address = peer.claimed_address
        if peer.claimed_role != "node" or address is None:
            return peer
        if self._proven.get(peer.name) != address:
            if not await self._probe(peer.name, address):
                self._counters["unverified_nodes"] += 1
                log.info("event=node_unverified peer=%s addr=%.60s", peer.name.short(), address)
                return peer
            self._prove(peer.name, address)
        return peer.as_verified_node()

    async def _probe(self, name: XorName, address: str) -> bool:
        """Dial `address` and require `name`'s key to answer there (the handshake signs our
        fresh nonce); then hang up."""
        self._counters["probes_sent"] += 1
        try:
            stream = await self._open_stream(address)
        except Unreachable:
            return False
        reader = FrameReader(stream, self.handshake_max_frame, self.frame_timeout, self._budget)
        conn = _Connection(stream, True, reader, None)
        try:
            with trio.fail_after(self.handshake_timeout):
                await self._handshake(conn, name, probe=True)
            return True
        except CONN_ERRORS as exc:  # TooSlowError among them
            log.info("event=probe_failed peer=%s error=%r", name.short(), exc)
            return False
        finally:
            reader.release()
            await trio.aclose_forcefully(stream)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self, conn: _Connection) -> None:
        assert conn.peer is not None
        delivered = 0
        while True:
            try:
                item = await conn.reader.receive(self._idle_deadline(conn))
            except trio.TooSlowError:
                if self._idle_deadline(conn) <= trio.current_time():
                    self._counters["closed_idle"] += 1
                    log.info("event=conn_idle peer=%s", conn.peer.name.short())
                    return
                continue  # we wrote meanwhile, so the connection isn't idle
            except ProtocolError as exc:
                self._counters["protocol_errors"] += 1
                log.info("event=protocol_error peer=%s error=%s", conn.peer.name.short(), exc)
                await self._send_error(conn, None, exc)
                return
            if item is None:
                return
            msg, size = item
            conn.last_activity = trio.current_time()
            await self._deliver(conn, msg, size)
            delivered += 1
            if delivered % READ_BURST == 0:
                # Frames already buffered are handed over without a task switch; a peer
                # sending a stream of tiny ones still lets other tasks run this often.
                await trio.lowlevel.checkpoint()

    def _idle_deadline(self, conn: _Connection) -> float:
        if self.idle_timeout is None:
            return math.inf
        return conn.last_activity + self.idle_timeout

    async def _deliver(self, conn: _Connection, msg: Message, size: int) -> None:
        assert conn.peer is not None
        self._count("in", msg["k"], size)
        try:
            check_version(msg)
            if msg["k"] in HANDSHAKE_KINDS:
                raise ProtocolError(f"unexpected {msg['k']!r} after the handshake")
        except ProtocolError as exc:
            # Answered with a typed error; the connection itself is still in sync.
            self._counters["rejected_in"] += 1
            await self._send_error(conn, msg, exc)
            return
        if self.fault is not None and not self.fault.inbound(conn.peer.name, msg):
            self._counters["dropped_fault_in"] += 1
            return
        incoming = Incoming(conn.peer, msg)
        if self.on_arrival is not None and self.on_arrival(incoming):
            return  # taken at once (a reply a waiting request was matched to)
        try:
            # No task switch per message while the inbox has room (the reader yields when
            # it next waits for the socket); when full, wait for room as before.
            self._inbox_send.send_nowait(incoming)
        except trio.WouldBlock:
            await self._inbox_send.send(incoming)

    # ---------------------------------------------------- connection bookkeeping

    def _link(self, name: XorName) -> _Link:
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = _Link(name, self.queue_size)
        return link

    def _find_connection(self, address: str, expected: XorName | None) -> Peer | None:
        if expected is not None:
            link = self._links.get(expected)
            conn = link.live_primary() if link is not None else None
            return conn.peer if conn is not None else None
        for link in self._links.values():
            conn = link.live_primary()
            if (
                conn is not None
                and conn.peer is not None
                and address in (link.address, conn.peer.address)
            ):
                return conn.peer
        return None

    def _rank(self, conn: _Connection) -> int:
        """1 for a connection dialled by the smaller of the two names: both ends agree."""
        assert conn.peer is not None
        dialler = self.name if conn.dialled else conn.peer.name
        return 1 if dialler == min(self.name, conn.peer.name) else 0

    def _register(self, conn: _Connection) -> None:
        assert conn.peer is not None
        link = self._link(conn.peer.name)
        link.peer = conn.peer
        if link.address is None and conn.peer.address is not None:
            link.address = conn.peer.address
        link.conns.add(conn)
        self._dial_failed.pop(conn.peer.name, None)
        self._counters["connections_opened"] += 1
        current = link.live_primary()
        if current is None:
            link.primary = conn
            return
        # Equal rank means the same side dialled twice (e.g. it restarted): newest wins.
        if self._rank(conn) >= self._rank(current):
            link.primary, loser = conn, current
        else:
            loser = conn
        self._retire(loser, tie=self._rank(conn) == self._rank(current))

    def _retire(self, conn: _Connection, *, tie: bool) -> None:
        conn.retired = True
        self._counters["connections_retired"] += 1
        conn.scope.deadline = trio.current_time() + RETIRE_LINGER
        if conn.dialled:
            self._require_running().start_soon(self._half_close, conn)
        elif tie:
            self._kill(conn)
        # else the peer dialled it and, by the same rule, half-closes it itself.

    async def _half_close(self, conn: _Connection) -> None:
        """Stop writing on a retired connection once any frame in progress is out; the
        reader stays until the peer, seeing our EOF, closes its side."""
        try:
            with trio.fail_after(self.write_timeout):
                async with conn.write_lock:
                    if isinstance(conn.stream, trio.abc.HalfCloseableStream):
                        await conn.stream.send_eof()
                    else:
                        self._kill(conn)
        except STREAM_ERRORS:
            self._kill(conn)

    def _kill(self, conn: _Connection) -> None:
        conn.scope.cancel()
        if conn.peer is not None:
            self._unregister(conn)

    def _unregister(self, conn: _Connection) -> None:
        if conn.closed or conn.peer is None:
            return
        conn.closed = True
        self._counters["connections_closed"] += 1
        link = self._links.get(conn.peer.name)
        if link is None:
            return
        link.conns.discard(conn)
        if link.primary is conn:
            link.primary = None
        if link.primary is None and link.idle_scope is not None:
            link.idle_scope.cancel()
        if not any(not c.closed for c in link.conns):
            for callback in list(self.on_disconnect):
                callback(conn.peer.name)
        self._maybe_forget(link)

    def _maybe_forget(self, link: _Link) -> None:
        if link.writer_running or link.conns or not link.queue_empty():
            return
        if self._links.get(link.name) is link:
            del self._links[link.name]

    def _count(self, direction: str, kind: str, size: int) -> None:
        frames = self._frames[direction]
        if kind not in frames and len(frames) >= MAX_STAT_KINDS:
            kind = OTHER_KIND
        frames[kind] += 1
        self._bytes[direction][kind] += size


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)
