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
  frames from one `ReceiveBudget`. A connection that needs more while the budget is spent is
  closed (unless it is exempt: a verified node, whose number the routing table bounds). A
  frame that arrives whole in one read never needs the budget, so small requests are served
  however full it is.
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
DEFAULT_MAX_BUFFERED = 32 * 1024 * 1024


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
        self._frame_deadline = math.inf
        self._error: ProtocolError | None = None

    @property
    def has_partial(self) -> bool:
        """True while part of a frame (prefix or body) is buffered."""
        return self._pos < len(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def release(self) -> None:
        """Give this reader's bytes back to the budget (the connection is closing)."""
        self._buf = bytearray()
        self._pos = 0
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
            if partial_frame and self.budget.used > self.budget.limit and not self.exempt:
                self.budget.refused += 1
                raise BufferBudgetExceeded(
                    f"receive buffers full ({self.budget.used} bytes held in unfinished frames)"
                )
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
            if not partial_frame:
                # A frame begins with this chunk: its clock starts now. (One already under
                # way keeps its start, so dripping bytes does not buy time.)
                self._frame_deadline = trio.current_time() + self.frame_timeout
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data
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
        if len(self._buf) < end:
            return None
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
        self.budget.used += held - self._held
        self._held = held
        self.budget.peak = max(self.budget.peak, self.budget.used)
