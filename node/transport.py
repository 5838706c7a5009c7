"""Authenticated message transport between peers named by their keys (trio).

The node core is sans-IO: it emits "send message M to peer P" and consumes "message M
arrived from peer P", and matches requests to responses itself (it owns the timers). This
module is the edge that turns that into TCP:

- `Endpoint` listens (role "node"), dials on demand, proves both keys in a handshake on every
  new connection, keeps one long-lived connection per peer pair, and gives each peer a bounded
  send queue with one writer task. Every connection's reader pushes `Incoming(peer, msg)`
  into one shared `inbox`.
- `RpcClient` matches replies to requests (``reply["re"] == request["id"]``) for the client
  library and tools, which have no core of their own.
- `FaultRules` is the chaos hook: partitions (asymmetric too), loss and delay, from a seeded
  RNG, changeable at run time.
- `MemoryNetwork` replaces loopback TCP with in-memory streams, so tests (and anything else
  running under `trio.testing.MockClock`) get the same endpoint with virtual time.

Handshake, on every connection and within `handshake_timeout`: both sides send ``hello``
{role, pk, name, nonce (32 random bytes), addr (listen address, nodes only)}; then each sends
``auth`` {sig} signing `auth_payload` (domain tag, the *peer's* nonce, own pk, peer pk, own
role and address). Each side checks name == SHA3-256(pk), the signature, and, when it dialled
a known name, that it reached that name. Any failure closes the connection.

Traffic after the handshake is authenticated but NOT encrypted: the frames are plain
MessagePack on the socket. (PyNaCl boxes would slot in after ``auth``; not done yet.)

Duplicate connections: if both peers dial each other at once, both keep the connection dialled
by the smaller name (`_rank`) and stop writing on the other; the side that dialled the loser
half-closes it once its last frame is out, so nothing already written is lost, and the peer
closes it on that EOF.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import msgpack
import trio
import trio.testing

from .errors import NetworkError, ProtocolError, RequestTimeout, SafeError, error_from_wire
from .keys import PUBLIC_KEY_LEN, Keypair, PublicKey
from .wire import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    Message,
    UnsupportedVersion,
    check_version,
    encode_frame,
    error_message,
    new_message,
    raise_if_error,
)
from .xorname import XOR_NAME_LEN, XorName

COALESCE_FRAMES = 64  # at most this many queued frames in one write
COALESCE_BYTES = 256 * 1024  # and about this many bytes

log = logging.getLogger(__name__)

ROLES = ("node", "client")
HANDSHAKE_DOMAIN = b"safenet-handshake-v1"
NONCE_LEN = 32
MAX_ADDRESS_LEN = 256
RECV_CHUNK = 64 * 1024
# Error frames are a courtesy to a misbehaving peer; never wait long for one to go out.
ERROR_WRITE_TIMEOUT = 1.0
# After failing to reach a peer, drop messages for it for this long instead of redialling for
# every one of them.
REDIAL_BACKOFF = 0.5
# How long a connection that lost the duplicate-connection tie may live to drain.
RETIRE_LINGER = 10.0
MAX_DELAYED = 10_000
MAX_DIAL_FAILURES = 4096
# Kinds are chosen by peers; cap the per-kind stats table so a peer can't grow it for ever.
MAX_STAT_KINDS = 128
OTHER_KIND = "<other>"

_HANDSHAKE_KINDS = frozenset({"hello", "auth"})
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,
)
# What a connection may fail with; anything else is a bug and should be loud.
_CONN_ERRORS: tuple[type[BaseException], ...] = (ProtocolError, *_STREAM_ERRORS)
_COUNTERS = (
    "connections_opened",
    "connections_closed",
    "connections_retired",
    "handshake_failures",
    "protocol_errors",
    "rejected_in",
    "dropped_fault_in",
    "dropped_fault_out",
    "dropped_queue_full",
    "dropped_no_route",
    "dropped_unreachable",
    "dropped_write_failed",
    "delayed_out",
)


class HandshakeError(ProtocolError):
    """A connection's handshake failed: wrong peer, bad key or signature, bad or late hello."""


class Unreachable(NetworkError):
    """Could not open a connection to an address (refused, unroutable, or timed out)."""


class _Retired(Exception):
    """The connection lost a duplicate-connection tie: write on the winner instead."""


@dataclass(frozen=True)
class Peer:
    """The far end of a verified connection. `address` is where it listens (nodes only)."""

    name: XorName
    public_key: PublicKey
    address: str | None
    role: str  # "node" | "client"


@dataclass(frozen=True)
class Incoming:
    """One message that arrived from a verified peer."""

    peer: Peer
    msg: Message


def auth_payload(
    verifier_nonce: bytes,
    signer_pk: bytes,
    verifier_pk: bytes,
    signer_role: str,
    signer_address: str | None,
) -> bytes:
    """What a handshake ``auth`` signs: fresh for this connection (the verifier's nonce),
    bound to both keys, and covering the signer's claimed role and listen address."""
    claims = msgpack.packb([signer_role, signer_address], use_bin_type=True)
    return HANDSHAKE_DOMAIN + verifier_nonce + signer_pk + verifier_pk + claims


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)


# ------------------------------------------------------------------------------- faults


class FaultHook(Protocol):
    """What an Endpoint asks before sending and after receiving each message."""

    def outbound(self, to_name: XorName, msg: Message) -> float | None:
        """None drops the message; otherwise a delay in seconds (0 = now)."""

    def inbound(self, from_name: XorName, msg: Message) -> bool:
        """False drops the message."""


class FaultRules:
    """A seeded FaultHook: blocked peers, loss probability, uniform delay.

    `block_out` drops everything we send to those names, `block_in` everything we receive from
    them; blocking one without the other gives an asymmetric partition. `loss` applies to
    outbound messages only, so a message crossing two faulty endpoints isn't lost twice over.
    Delays are drawn uniformly from `delay` = (low, high) seconds; distinct delays reorder.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        rng: random.Random | None = None,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        block_out: Iterable[bytes] = (),
        block_in: Iterable[bytes] = (),
    ) -> None:
        self.rng = rng if rng is not None else random.Random(seed)
        self.loss = _check_probability(loss)
        self.delay = _check_delay(delay)
        self.block_out: set[XorName] = {XorName(n) for n in block_out}
        self.block_in: set[XorName] = {XorName(n) for n in block_in}

    def outbound(self, to_name: XorName, msg: Message) -> float | None:
        if to_name in self.block_out:
            return None
        if self.loss and self.rng.random() < self.loss:
            return None
        low, high = self.delay
        if high <= 0:
            return 0.0
        return self.rng.uniform(low, high)

    def inbound(self, from_name: XorName, msg: Message) -> bool:
        return from_name not in self.block_in

    def block(self, name: bytes, *, outbound: bool = True, inbound: bool = True) -> None:
        if outbound:
            self.block_out.add(XorName(name))
        if inbound:
            self.block_in.add(XorName(name))

    def heal(self) -> None:
        """Lift every partition (loss and delay stay as they are)."""
        self.block_out.clear()
        self.block_in.clear()

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply an admin message's settings; keys: loss, delay [low, high], block_out,
        block_in (lists of names as bytes or hex), seed. All are checked before any applies."""
        unknown = set(config) - {"loss", "delay", "block_out", "block_in", "seed"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        loss = _check_probability(config.get("loss", self.loss))
        delay = _check_delay(config.get("delay", self.delay))
        block_out = _names(config["block_out"]) if "block_out" in config else self.block_out
        block_in = _names(config["block_in"]) if "block_in" in config else self.block_in
        seed = config.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.loss, self.delay = loss, delay
        self.block_out, self.block_in = set(block_out), set(block_in)
        if seed is not None:
            self.rng.seed(seed)

    def config(self) -> dict[str, Any]:
        """The current settings, in the shape `configure` takes."""
        return {
            "loss": self.loss,
            "delay": list(self.delay),
            "block_out": sorted(n.hex() for n in self.block_out),
            "block_in": sorted(n.hex() for n in self.block_in),
        }


def _check_probability(value: Any) -> float:
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"loss is a probability in [0, 1], got {value!r}")
    return float(value)


def _check_delay(value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"delay is [low, high] seconds, got {value!r}") from None
    if not 0.0 <= low <= high or math.isinf(high):
        raise ValueError(f"delay needs 0 <= low <= high < inf, got {value!r}")
    return low, high


def _names(values: Any) -> set[XorName]:
    if not isinstance(values, list | tuple | set | frozenset):
        raise ValueError(f"a list of names, got {values!r:.60}")
    names: set[XorName] = set()
    for value in values:
        # Only bytes or hex: XorName(an int) would try to allocate that many bytes.
        if isinstance(value, str):
            names.add(XorName.from_hex(value))
        elif isinstance(value, bytes):
            names.add(XorName(value))
        else:
            raise ValueError(f"a name is 32 bytes or 64 hex digits, got {value!r:.60}")
    return names


# ------------------------------------------------------------------------ memory network


class MemoryNetwork:
    """An in-process stand-in for loopback TCP: endpoints built with ``network=`` bind an
    address ``mem:N`` and dial each other over `trio.testing.memory_stream_pair`.

    Nothing touches the OS, so it runs under `trio.testing.MockClock` deterministically.
    `dial` is public: a test can open a raw stream to an endpoint with it.
    """

    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._next_port = 1

    def bind(self, endpoint: Endpoint) -> str:
        address = f"mem:{self._next_port}"
        self._next_port += 1
        self._endpoints[address] = endpoint
        return address

    def unbind(self, address: str) -> None:
        self._endpoints.pop(address, None)

    async def dial(self, address: str) -> trio.abc.HalfCloseableStream:
        await trio.lowlevel.checkpoint()
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {address}")
        ours, theirs = trio.testing.memory_stream_pair()
        endpoint._accept_soon(theirs)
        return ours


# ------------------------------------------------------------------------- connections


class _FrameReader:
    """Whole messages off one stream, with the mid-frame stall deadline enforced."""

    def __init__(self, stream: trio.abc.Stream, max_frame: int, frame_timeout: float) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_frame)
        self.frame_timeout = frame_timeout
        self._ready: list[tuple[Message, int]] = []
        self._frame_deadline = math.inf

    async def receive(self, idle_deadline: float = math.inf) -> tuple[Message, int] | None:
        """The next message and its frame size, or None at a clean end of stream.

        Raises trio.TooSlowError when `idle_deadline` passes between frames, ProtocolError for
        garbage, a frame stalled past `frame_timeout`, or a stream ending mid-frame.
        """
        while not self._ready:
            if self.decoder.error is not None:
                self.decoder.feed(b"")  # raises the error found after the last good frame
            partial_frame = self.decoder.has_partial
            data: bytes | bytearray | None = None
            with trio.move_on_at(self._frame_deadline if partial_frame else idle_deadline):
                data = await self.stream.receive_some(RECV_CHUNK)
            if data is None:
                if partial_frame:
                    raise ProtocolError(f"frame stalled for over {self.frame_timeout}s")
                raise trio.TooSlowError
            if not data:
                if partial_frame:
                    raise ProtocolError("stream ended mid-frame (truncated frame)")
                return None
            self._ready = self.decoder.feed_frames(data)
            # A frame left incomplete by this chunk began in it (unless it was already
            # under way and nothing completed): its clock starts now.
            if self.decoder.has_partial and (self._ready or not partial_frame):
                self._frame_deadline = trio.current_time() + self.frame_timeout
        return self._ready.pop(0)


class _Connection:
    """One stream to a peer, from dial or accept until closed."""

    def __init__(self, stream: trio.abc.Stream, dialled: bool, reader: _FrameReader) -> None:
        self.stream = stream
        self.dialled = dialled
        self.reader = reader
        self.peer: Peer | None = None
        self.write_lock = trio.Lock()
        self.scope = trio.CancelScope()  # cancelled to close the connection
        self.retired = False
        self.closed = False
        self.last_activity = trio.current_time()

    def __repr__(self) -> str:
        who = self.peer.name.short() if self.peer else "?"
        return f"<conn {'to' if self.dialled else 'from'} {who}>"


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


# ----------------------------------------------------------------------------- endpoint


class Endpoint:
    """One node's or client's end of the network. Run it with `run` inside a nursery."""

    def __init__(
        self,
        keys: Keypair,
        *,
        role: str = "node",
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
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
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role is one of {ROLES}, got {role!r}")
        self.keys = keys
        self.name: XorName = keys.name
        self.role = role
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.fault = fault
        self.frame_timeout = frame_timeout
        self.write_timeout = write_timeout
        self.send_timeout = send_timeout
        self.queue_size = queue_size
        self.address: str | None = None
        self._network = network
        self._inbox_send, self.inbox = trio.open_memory_channel[Incoming](inbox_size)
        # Called with a peer's name when its last connection closes (RpcClient fails the
        # requests waiting on that peer at once instead of at their deadlines).
        self.on_disconnect: list[Callable[[XorName], None]] = []
        self._links: dict[XorName, _Link] = {}
        self._dial_locks: dict[str, trio.Lock] = {}
        self._dial_failed: dict[XorName, float] = {}  # when dialling each last failed
        self._nursery: trio.Nursery | None = None
        self._started = False
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._delayed = 0
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
                if self.role == "node":
                    self.address = await self._listen(nursery)
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
        with trio.move_on_after(self.send_timeout):
            await link.send_ch.send((kind, frame))
            self._ensure_writer(link)
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
        self._ensure_writer(link)
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

    def _ensure_writer(self, link: _Link) -> None:
        if not link.writer_running:
            link.writer_running = True
            self._require_running().start_soon(self._writer, link)

    async def _writer(self, link: _Link) -> None:
        """The one task writing to a peer: drains its queue, dialling when needed."""
        try:
            while (item := await self._next_outgoing(link)) is not None:
                # Everything already queued for this peer goes out in one write: one syscall
                # and one scheduling hop for a burst of frames instead of one per frame.
                batch, size = [item], len(item[1])
                while len(batch) < COALESCE_FRAMES and size < COALESCE_BYTES:
                    try:
                        more = link.recv_ch.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(more)
                    size += len(more[1])
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
            except _STREAM_ERRORS as exc:
                self._counters["dropped_write_failed"] += len(batch)
                log.info("event=write_failed peer=%s error=%r", link.name.short(), exc)
                self._kill(conn)
                return
        self._counters["dropped_write_failed"] += len(batch)

    async def _next_outgoing(self, link: _Link) -> tuple[str, bytes] | None:
        """The next queued frame; None once the queue is empty and the peer has no connection
        (the writer then ends, so departed peers leave no task behind)."""
        while True:
            try:
                return link.recv_ch.receive_nowait()
            except trio.WouldBlock:
                pass
            if link.live_primary() is None:
                return None
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
            self._count("out", k, size)

    async def _send_error(self, conn: _Connection, re_msg: Message | None, exc: SafeError) -> None:
        """Best effort: tell the peer why, without waiting on it for long."""
        if re_msg is None and isinstance(exc, UnsupportedVersion):
            re_msg = {"id": exc.msg_id}
        frame = encode_frame(error_message(re_msg, exc), self.max_frame)
        with suppress(*_STREAM_ERRORS):
            await self._write_frame(conn, "error", frame, ERROR_WRITE_TIMEOUT)

    # ------------------------------------------------------------ connections

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
                partial(self._run_connection, stream, dialled=True, expected=expected)
            )
        except HandshakeError:
            raise
        except _CONN_ERRORS as exc:
            raise HandshakeError(f"handshake with {address} failed: {exc!r}") from None
        assert conn.peer is not None
        return conn.peer

    def _accept_soon(self, stream: trio.abc.Stream) -> None:
        """Serve an inbound stream (MemoryNetwork's accept)."""
        if self._nursery is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{self!r} is not running")
        try:
            self._nursery.start_soon(self._accept, stream)
        except RuntimeError:  # its nursery is closing: the endpoint crashed or is stopping
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{self!r} is shutting down") from None

    async def _accept(self, stream: trio.abc.Stream) -> None:
        try:
            await self._run_connection(stream, dialled=False, expected=None)
        except _CONN_ERRORS as exc:
            log.info("event=accept_failed error=%r", exc)

    async def _run_connection(
        self,
        stream: trio.abc.Stream,
        *,
        dialled: bool,
        expected: XorName | None,
        task_status: trio.TaskStatus[_Connection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handshake, then read until the connection ends. Errors before `started` (the
        handshake's) propagate to the dialler; later ones only close this connection."""
        conn = _Connection(
            stream, dialled, _FrameReader(stream, self.max_frame, self.frame_timeout)
        )
        try:
            conn.peer = await self._handshake(conn, expected)
        except BaseException as exc:
            if isinstance(exc, ProtocolError | trio.TooSlowError):
                self._counters["handshake_failures"] += 1
            if isinstance(exc, ProtocolError):
                await self._send_error(conn, None, exc)
            await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.TooSlowError):
                raise HandshakeError(f"no handshake within {self.handshake_timeout}s") from None
            raise
        self._register(conn)
        task_status.started(conn)
        try:
            with conn.scope:
                await self._read_loop(conn)
        except _STREAM_ERRORS as exc:
            log.info("event=conn_lost peer=%s error=%r", conn.peer.name.short(), exc)
        finally:
            self._unregister(conn)
            await trio.aclose_forcefully(stream)

    async def _handshake(self, conn: _Connection, expected: XorName | None) -> Peer:
        with trio.fail_after(self.handshake_timeout):
            nonce = os.urandom(NONCE_LEN)
            advertised = self.address if self.role == "node" else None
            hello = new_message(
                "hello",
                role=self.role,
                pk=bytes(self.keys.public),
                name=bytes(self.name),
                nonce=nonce,
                addr=advertised,
            )
            await self._write_frame(conn, "hello", encode_frame(hello, self.max_frame), math.inf)
            peer, their_nonce = self._check_hello(
                await self._handshake_receive(conn, "hello"), expected
            )
            payload = auth_payload(
                their_nonce, self.keys.public, peer.public_key, self.role, advertised
            )
            auth = new_message("auth", sig=self.keys.sign(payload))
            await self._write_frame(conn, "auth", encode_frame(auth, self.max_frame), math.inf)
            self._check_auth(await self._handshake_receive(conn, "auth"), peer, nonce)
        return peer

    async def _handshake_receive(self, conn: _Connection, kind: str) -> Message:
        item = await conn.reader.receive()
        if item is None:
            raise HandshakeError(f"peer closed the connection before its {kind!r}")
        msg, size = item
        self._count("in", msg["k"], size)
        if msg["k"] == "error":
            raise HandshakeError(f"peer refused the handshake: {error_from_wire(msg.get('err'))}")
        check_version(msg)
        if msg["k"] != kind:
            raise HandshakeError(f"expected {kind!r} in the handshake, got {msg['k']!r:.40}")
        return msg

    def _check_hello(self, msg: Message, expected: XorName | None) -> tuple[Peer, bytes]:
        role, pk, name = msg.get("role"), msg.get("pk"), msg.get("name")
        nonce, addr = msg.get("nonce"), msg.get("addr")
        if role not in ROLES:
            raise HandshakeError(f"hello: unknown role {role!r:.40}")
        if not (isinstance(pk, bytes) and len(pk) == PUBLIC_KEY_LEN):
            raise HandshakeError("hello: 'pk' is not a public key")
        if not (isinstance(name, bytes) and len(name) == XOR_NAME_LEN):
            raise HandshakeError("hello: 'name' is not a name")
        if not (isinstance(nonce, bytes) and len(nonce) == NONCE_LEN):
            raise HandshakeError(f"hello: 'nonce' is not {NONCE_LEN} bytes")
        if addr is not None and not (isinstance(addr, str) and len(addr) <= MAX_ADDRESS_LEN):
            raise HandshakeError("hello: 'addr' is not an address")
        if role == "client" and addr is not None:
            raise HandshakeError("hello: clients do not listen, yet one sent an address")
        public = PublicKey(pk)
        if public.name != name:
            raise HandshakeError("hello: the name is not the hash of the public key")
        peer_name = XorName(name)
        if peer_name == self.name:
            raise HandshakeError("connected to itself")
        if expected is not None and peer_name != expected:
            raise HandshakeError(f"expected peer {expected.short()}, reached {peer_name.short()}")
        return Peer(peer_name, public, addr, role), nonce

    def _check_auth(self, msg: Message, peer: Peer, our_nonce: bytes) -> None:
        sig = msg.get("sig")
        payload = auth_payload(
            our_nonce, peer.public_key, self.keys.public, peer.role, peer.address
        )
        if not isinstance(sig, bytes) or not peer.public_key.verify(payload, sig):
            raise HandshakeError(f"bad handshake signature from {peer.name.short()}")

    async def _read_loop(self, conn: _Connection) -> None:
        assert conn.peer is not None
        while True:
            try:
                item = await conn.reader.receive(self._idle_deadline(conn))
            except trio.TooSlowError:
                if self._idle_deadline(conn) <= trio.current_time():
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

    def _idle_deadline(self, conn: _Connection) -> float:
        if self.idle_timeout is None:
            return math.inf
        return conn.last_activity + self.idle_timeout

    async def _deliver(self, conn: _Connection, msg: Message, size: int) -> None:
        assert conn.peer is not None
        self._count("in", msg["k"], size)
        try:
            check_version(msg)
            if msg["k"] in _HANDSHAKE_KINDS:
                raise ProtocolError(f"unexpected {msg['k']!r} after the handshake")
        except ProtocolError as exc:
            # Answered with a typed error; the connection itself is still in sync.
            self._counters["rejected_in"] += 1
            await self._send_error(conn, msg, exc)
            return
        if self.fault is not None and not self.fault.inbound(conn.peer.name, msg):
            self._counters["dropped_fault_in"] += 1
            return
        await self._inbox_send.send(Incoming(conn.peer, msg))

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
        except _STREAM_ERRORS:
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


# ---------------------------------------------------------------------------- RPC helper


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

    def __init__(self, endpoint: Endpoint, *, unsolicited_size: int = 256) -> None:
        self.endpoint = endpoint
        self._pending: dict[bytes, _Pending] = {}
        self._unsolicited_send, self.unsolicited = trio.open_memory_channel[Incoming](
            unsolicited_size
        )
        self.dropped_unsolicited = 0
        endpoint.on_disconnect.append(self._peer_lost)

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

    def _dispatch(self, incoming: Incoming) -> None:
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
