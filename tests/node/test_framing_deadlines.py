"""`FrameReader`'s two clocks, now that a read with no idle deadline sets no cancel scope.

A client's connections have no idle timeout, so between frames its reader waits without a
deadline (and without the cost of one per message). The stall deadline of a frame that has
begun must hold all the same, and a finite idle deadline must still end the wait.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from node.errors import ProtocolError
from node.framing import FrameReader
from node.wire import encode_frame, new_message

FRAME_TIMEOUT = 10.0


def reader_and_sender() -> tuple[FrameReader, trio.abc.SendStream]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    return FrameReader(receive, 64 * 1024, FRAME_TIMEOUT), send


async def test_with_no_idle_deadline_frames_arrive_whenever_they_come(autojump_clock) -> None:
    reader, send = reader_and_sender()
    frames = [encode_frame(new_message("m", n=n)) for n in range(3)]

    async def sender() -> None:
        for frame in frames:
            await trio.sleep(3600.0)  # an hour between frames: no deadline between them
            await send.send_all(frame)
        await send.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        got = []
        while (item := await reader.receive(math.inf)) is not None:
            got.append(item[0]["n"])
    assert got == [0, 1, 2]


async def test_a_begun_frame_still_stalls_out_when_there_is_no_idle_deadline(autojump_clock) -> None:
    reader, send = reader_and_sender()
    frame = encode_frame(new_message("m", pad=b"x" * 100))
    await send.send_all(frame[:40])  # part of a frame, then nothing
    start = trio.current_time()
    with pytest.raises(ProtocolError, match="stalled"):
        await reader.receive(math.inf)
    assert trio.current_time() - start == pytest.approx(FRAME_TIMEOUT)


async def test_a_finite_idle_deadline_still_ends_the_wait_between_frames(autojump_clock) -> None:
    reader, send = reader_and_sender()
    await send.send_all(encode_frame(new_message("m")))
    item = await reader.receive(trio.current_time() + 30.0)
    assert item is not None and item[0]["k"] == "m"
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await reader.receive(start + 30.0)
    assert trio.current_time() - start == pytest.approx(30.0)
    await send.send_all(encode_frame(new_message("later")))  # the reader is still usable
    item = await reader.receive(math.inf)
    assert item is not None and item[0]["k"] == "later"
