"""Whole messages off a stream, within limits a hostile sender cannot stretch.

The frame format is `node.wire`'s (4-byte length, MessagePack body). This module is the
receiving edge of it for one connection, with the resource rules of the transport:

- **Frame limit.** A frame's declared length is checked against the connection's current
  limit as soon as its 4 prefix bytes are in, before any body byte is kept. Until the
  handshake completes the limit is small (`HANDSHAKE_MAX_FRAME`); a stranger cannot make us
  hold megabytes for a hello.
- **Stall deadline.** A frame must be complete within `frame_timeout` of its first byte, so
  a sender that stops (or drips) mid-frame is dropped instead of pinning its buffer.
- **Shared budget.** All connections of an endpoint draw the bytes of their unfinished
  frames from one `ReceiveBudget`. A frame bigger than `SMALL_READ` reserves its whole
  declared length as soon as its prefix is in; if the budget has no room for it, the
  connection stops reading (its sender waits on TCP) until room frees or the frame's
  deadline passes, and is then closed. Admitted frames always have the room to complete, so
  honest uploads that together exceed the budget take turns instead of starving each other,
  while stalled ones are dropped at their deadline. Reads reserve their size too; a
  connection between frames that finds the budget full reads only `SMALL_READ` bytes, so a
  small request is served however full the budget is, and that is all it can overdraw it
  by. Verified nodes are exempt from waiting (the routing table bounds their number).
"""

from __future__ import annotations

import math

import trio

from .errors import ProtocolError
from .wire import LENGTH_PREFIX, FrameTooLarge, Message, decode_body

RECV_CHUNK = 64 * 1024
# Hellos and auths are a few hundred bytes; a stranger gets no more than this per frame.
HANDSHAKE_MAX_FRAME = 64 * 1024
# Bytes of unfinished frames all connections together may hold (the per-connection cap is the
# frame limit).
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
# What a connection between frames reads while the budget is full (a small request fits).
SMALL_READ = 4096


class BufferBudgetExceeded(ProtocolError):
    """The endpoint's receive buffers are full; this connection's unfinished frame must go."""


class ReceiveBudget:
    """The bytes held in unfinished frames by all of an endpoint's connections."""

    def __init__(self, limit: int = DEFAULT_MAX_BUFFERED) -> None:
        if limit < 1:
            raise ValueError("the receive budget must be positive")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.refused = 0
        self._room = trio.lowlevel.ParkingLot()

    def has_room(self, size: int = 0) -> bool:
        return self.used + size <= self.limit

    def charge(self, delta: int) -> None:
        self.used += delta
        if delta > 0:
            self.peak = max(self.peak, self.used)
        elif self._room:
            self._room.unpark_all()

    async def wait_for_room(self, size: int, deadline: float) -> bool:
        """Wait until there is room for `size` more bytes (True) or `deadline` passes."""
        with trio.move_on_at(deadline):
            while not self.has_room(size):
                await self._room.park()
            return True
        return False


class FrameReader:
    """Whole messages off one stream, with the frame limit, stall deadline and budget."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        limit: int,
        frame_timeout: float,
        budget: ReceiveBudget | None = None,
    ) -> None:
        self.stream = stream
        self.limit = limit  # raised by the owner once the handshake is done
        self.frame_timeout = frame_timeout
        self.budget = budget if budget is not None else ReceiveBudget(1 << 62)
        self.exempt = False  # a verified node's connection may exceed the shared budget
        self._buf = bytearray()
        self._pos = 0  # start of the first byte not yet consumed
        self._held = 0  # what this reader has charged to the budget
        self._need = 0  # prefix + body of the frame at the head, once its prefix is in
        self._admitted = False  # whether the budget holds all of `_need` for it
        self._frame_deadline = math.inf
        self._error: ProtocolError | None = None

    @property
    def has_partial(self) -> bool:
        """True while part of a frame (prefix or body) is buffered."""
        return self._pos < len(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def take_buffered(self) -> bytes:
        """Hand over the bytes read but not consumed (between frames only): what the peer
        sent after the handshake's last frame belongs to the secure stream that follows."""
        if self._need:
            raise ProtocolError("a frame is half read; the stream cannot change hands now")
        data = bytes(self._buf[self._pos:])
        self._buf = bytearray()
        self._pos = 0
        self._charge()
        return data

    def release(self) -> None:
        """Give this reader's bytes back to the budget (the connection is closing)."""
        self._buf = bytearray()
        self._pos = 0
        self._need, self._admitted = 0, False
        self._charge()

    async def receive(self, idle_deadline: float = math.inf) -> tuple[Message, int] | None:
        """The next message and its frame size, or None at a clean end of stream.

        Raises trio.TooSlowError when `idle_deadline` passes between frames, ProtocolError for
        garbage, an oversized frame, a frame stalled past `frame_timeout`, a stream ending
        mid-frame, or (BufferBudgetExceeded) an unfinished frame the budget cannot hold.
        Once it has raised a ProtocolError the stream is out of sync: it raises again.
        """
        if self._error is not None:
            raise ProtocolError(f"stream already failed: {self._error}")
        try:
            return await self._receive(idle_deadline)
        except ProtocolError as exc:
            self._error = exc
            self.release()
            raise

    async def _receive(self, idle_deadline: float) -> tuple[Message, int] | None:
        while True:
            item = self._next_frame()
            if item is not None:
                return item
            partial_frame = self.has_partial
            if self._need > SMALL_READ and not self._admitted:
                await self._admit()
            size, reserved = RECV_CHUNK, 0
            if self._admitted:
                size = min(RECV_CHUNK, self._need - self.buffered)  # all of it reserved
            elif not self.exempt:
                if self.budget.has_room(RECV_CHUNK):
                    reserved = RECV_CHUNK  # what this read may add, held while it waits
                else:
                    size = SMALL_READ  # enough for a small request
                self.budget.charge(reserved)
            data: bytes | bytearray | None = None
            deadline = self._frame_deadline if partial_frame else idle_deadline
            try:
                if deadline == math.inf:
                    # No deadline (a client's connection between frames): no cancel scope to
                    # set up and tear down for every message.
                    data = await self.stream.receive_some(size)
                else:
                    with trio.move_on_at(deadline):
                        data = await self.stream.receive_some(size)
            finally:
                self.budget.charge(-reserved)
            if data is None:
                if partial_frame:
                    raise ProtocolError(f"frame stalled for over {self.frame_timeout}s")
                raise trio.TooSlowError
            if not data:
                if partial_frame:
                    raise ProtocolError("stream ended mid-frame (truncated frame)")
                return None
            if not partial_frame:
                # A frame begins with this chunk: its clock starts now. (One already under
                # way keeps its start, so dripping bytes does not buy time.)
                self._frame_deadline = trio.current_time() + self.frame_timeout
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data
            self._charge()

    async def _admit(self) -> None:
        """Reserve the whole head frame in the budget, waiting for room until its deadline."""
        more = self._need - self._held
        waited = self.exempt or self.budget.has_room(more)
        if not waited and more <= self.budget.limit:
            waited = await self.budget.wait_for_room(more, self._frame_deadline)
        if not waited:
            self.budget.refused += 1
            raise BufferBudgetExceeded(
                f"no room for a frame of {self._need} bytes in the receive buffers "
                f"({self.budget.used} of {self.budget.limit} bytes in unfinished frames)"
            )
        self._admitted = True
        self._charge()

    def _next_frame(self) -> tuple[Message, int] | None:
        """Take one whole frame off the buffer, checking its length as soon as it is known."""
        available = len(self._buf) - self._pos
        if available < LENGTH_PREFIX:
            return None
        start = self._pos
        length = int.from_bytes(self._buf[start : start + LENGTH_PREFIX], "big")
        if length > self.limit:
            raise FrameTooLarge(length, self.limit)
        if length == 0:
            raise ProtocolError("empty frame")
        end = start + LENGTH_PREFIX + length
        self._need = LENGTH_PREFIX + length
        if len(self._buf) < end:
            return None
        self._need, self._admitted = 0, False
        with memoryview(self._buf) as view, view[start + LENGTH_PREFIX : end] as body:
            msg = decode_body(body)  # type: ignore[arg-type]  # any buffer will do
        self._pos = end
        if self._pos == len(self._buf):
            self._buf = bytearray()
            self._pos = 0
        elif self.has_partial:
            # What is left began in the chunk that finished this frame: its clock starts now.
            self._frame_deadline = trio.current_time() + self.frame_timeout
        self._charge()
        return msg, LENGTH_PREFIX + length

    def _charge(self) -> None:
        held = len(self._buf) - self._pos
        if self._admitted:
            held = max(held, self._need)
        if held != self._held:
            self.budget.charge(held - self._held)
            self._held = held
