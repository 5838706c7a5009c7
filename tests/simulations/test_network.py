"""The simulator's message network: copies, link faults, partitions, clogs, pauses, crashes."""

from __future__ import annotations

import random

import pytest
import trio

from node.errors import ProtocolError
from node.keys import Keypair
from node.wire import new_message
from simulations.network import LinkModel, SimEndpoint, SimNetwork
from simulations.trace import Trace


def _net(link: LinkModel | None = None) -> SimNetwork:
    return SimNetwork(random.Random(1), Trace(), link or LinkModel())


def _node(net: SimNetwork, slot: int) -> SimEndpoint:
    keys = Keypair.generate(random.Random(slot))
    return SimEndpoint(net, keys.name, "node", f"sim:{slot}", slot, f"n{slot}")


async def _drain(endpoint: SimEndpoint) -> list[dict]:
    got = []
    while True:
        try:
            got.append(endpoint.inbox.receive_nowait().msg)
        except trio.WouldBlock:
            return got


@pytest.fixture
async def pair(nursery):
    net = _net()
    await nursery.start(net.run)
    a, b = _node(net, 0), _node(net, 1)
    await nursery.start(a.run)
    await nursery.start(b.run)
    return net, a, b


async def test_a_message_arrives_as_a_copy_after_the_delay_floor(autojump_clock, pair) -> None:
    net, a, b = pair
    msg = new_message("ping", payload=[1, 2])
    sent_at = trio.current_time()
    assert a.send_nowait(b.name, None, msg)
    msg["payload"].append(3)  # the sender keeps no hold on what it sent
    delivery = await b.inbox.receive()
    assert delivery.msg["payload"] == [1, 2]
    assert delivery.peer.name == a.name and delivery.peer.address == "sim:0"
    assert trio.current_time() - sent_at >= net.link.delay_min


async def test_what_the_wire_cannot_carry_is_refused(autojump_clock, pair) -> None:
    _, a, b = pair
    with pytest.raises(ProtocolError):
        a.send_nowait(b.name, None, new_message("ping", bad={1, 2}))


async def test_links_are_fifo_unless_reordering_is_on(autojump_clock, pair) -> None:
    net, a, b = pair
    for i in range(50):
        a.send_nowait(b.name, None, new_message("n", i=i))
    await trio.sleep(5)
    assert [m["i"] for m in await _drain(b)] == list(range(50))
    net.link = net.link.with_(reorder=0.5)
    for i in range(50):
        a.send_nowait(b.name, None, new_message("n", i=i))
    await trio.sleep(5)
    got = [m["i"] for m in await _drain(b)]
    assert sorted(got) == list(range(50)) and got != list(range(50))


async def test_loss_and_duplication(autojump_clock, pair) -> None:
    net, a, b = pair
    net.link = net.link.with_(loss=1.0)
    a.send_nowait(b.name, None, new_message("lost"))
    net.link = net.link.with_(loss=0.0, duplicate=1.0)
    a.send_nowait(b.name, None, new_message("twice"))
    await trio.sleep(2)
    assert [m["k"] for m in await _drain(b)] == ["twice", "twice"]
    assert net.trace.drops["loss"] == 1


async def test_an_asymmetric_partition_blocks_one_direction(autojump_clock, pair) -> None:
    net, a, b = pair
    net.blocked.add((0, 1))
    a.send_nowait(b.name, None, new_message("a-to-b"))
    b.send_nowait(a.name, None, new_message("b-to-a"))
    await trio.sleep(2)
    assert await _drain(b) == []
    assert [m["k"] for m in await _drain(a)] == ["b-to-a"]


async def test_a_clogged_path_holds_messages_then_releases_them_in_order(autojump_clock, pair) -> None:
    net, a, b = pair
    net.clog(0, 1)
    for i in range(5):
        a.send_nowait(b.name, None, new_message("n", i=i))
    await trio.sleep(10)
    assert await _drain(b) == []
    net.unclog(0, 1)
    await trio.sleep(1)
    assert [m["i"] for m in await _drain(b)] == list(range(5))


async def test_a_paused_endpoint_reads_nothing_until_resumed(autojump_clock, pair) -> None:
    _, a, b = pair
    b.pause()
    got = []

    async def reader() -> None:
        got.append(await b.inbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        a.send_nowait(b.name, None, new_message("held"))
        with trio.move_on_after(30):  # a deadline around it must not wake a stopped process
            await trio.sleep(60)
        assert got == []
        b.resume()
    assert got[0].msg["k"] == "held"


async def test_nothing_reaches_a_crashed_endpoint_and_clients_notice(autojump_clock, pair) -> None:
    net, a, b = pair
    client = SimEndpoint(net, Keypair.generate(random.Random(9)).name, "client", None, -1, "c1")
    lost = []
    client.on_disconnect.append(lost.append)
    peer = await client.connect("sim:1", b.name)
    assert peer.name == b.name and client.is_connected(b.name)
    a.send_nowait(b.name, None, new_message("late"))
    b.close()
    assert lost == [b.name] and not client.is_connected(b.name)
    assert not a.send_nowait(b.name, None, new_message("after"))
    await trio.sleep(1)
    assert net.trace.drops["down"] == 1 and net.trace.drops["no-route"] == 1
