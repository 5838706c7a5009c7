"""SecureStream reading straight from its socket: what arrives, when it yields, how it fails."""

from __future__ import annotations

import pytest
import trio

from node.securelink import RECV_CHUNK, LinkTampered, SecureStream

GUARD = 10.0
KEY_AB, KEY_BA = bytes(range(32)), bytes(range(32, 64))


def pair() -> tuple[SecureStream, SecureStream, trio.socket.SocketType]:
    left, right = trio.socket.socketpair()
    a = SecureStream(trio.SocketStream(left), KEY_AB, KEY_BA)
    b = SecureStream(trio.SocketStream(right), KEY_BA, KEY_AB)
    return a, b, right


class Steps(trio.abc.Instrument):
    """Counts the steps of one task (each is a yield it made and came back from)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task, self.n = task, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.n += 1


async def test_bytes_already_there_are_read_without_a_task_switch() -> None:
    a, b, _ = pair()
    assert a.send_now(b"hello")
    await trio.sleep(0.01)  # delivered to b's socket
    steps = Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        assert await b.receive_some() == b"hello"
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.n == 0
    await a.aclose()
    await b.aclose()


async def test_a_read_that_fills_the_chunk_yields_and_the_bytes_all_arrive_in_order() -> None:
    a, b, _ = pair()
    big = bytes(range(256)) * (RECV_CHUNK // 64)  # 4 chunks' worth
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(big):
            got.extend(await b.receive_some())

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await a.send_all(big)
        assert bytes(got) == big
        # Now with the bytes waiting in full: the reader reads a whole chunk and yields.
        await a.send_all(big[: 2 * RECV_CHUNK])
        await trio.sleep(0.01)
        steps = Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        try:
            await b.receive_some()
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.n >= 1  # once per full chunk read (a record spans more than one)
    await a.aclose()
    await b.aclose()


async def test_end_of_stream_closed_socket_and_a_cut_record() -> None:
    a, b, _ = pair()
    await a.send_eof()
    with trio.fail_after(GUARD):
        assert await b.receive_some() == b""
    await b.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await b.receive_some()
    await a.aclose()

    a, b, raw_b = pair()
    sealed = a.sealer.seal(b"a record cut short")
    left = a.inner.socket  # type: ignore[attr-defined]
    await left.send(sealed[:-3])
    left.shutdown(trio.socket.SHUT_WR)
    with trio.fail_after(GUARD), pytest.raises(LinkTampered):
        await b.receive_some()
    await a.aclose()
    await b.aclose()


async def test_a_reader_waiting_is_woken_when_its_socket_is_closed() -> None:
    a, b, _ = pair()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def reader() -> None:
                try:
                    await b.receive_some()
                except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                    failed.append(exc)

            nursery.start_soon(reader)
            await trio.sleep(0.01)
            await b.aclose()
    assert failed
    await a.aclose()
