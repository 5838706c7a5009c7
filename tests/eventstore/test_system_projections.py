"""System projections on the mock: `$ce-<category>`, `$et-<type>` and `$streams` hold link
events to exactly the events of the category / type / first events, in log order, through an
agent killed at random points and restarted; reads resolve the links; category reads use
`$ce-` once the projection runs, and say when they scan the log instead."""

from __future__ import annotations

import random

import pytest
import trio

from client.mock import MockNetwork
from eventstore.api import END, EventData, EventStore
from eventstore.system_projections import LINK, SystemProjections
from node.keys import Keypair

KEYS = Keypair(b"\x0d" * 32)


def new_store(net: MockNetwork) -> EventStore:
    return EventStore(net.client(KEYS), clock=trio.current_time, pending_grace=0.5, poll_interval=0.05)


async def fill(db, rng: random.Random, n: int) -> None:
    for i in range(n):
        stream = f"{rng.choice(['order', 'cart', 'user'])}@{rng.randrange(4)}"
        await db.append(stream, [EventData(rng.choice(["Added", "Removed"]), {"i": i})
                                 for _ in range(rng.randint(1, 3))])


async def test_links_are_exactly_the_log_through_agents_killed_and_restarted(autojump_clock):
    net = MockNetwork(seed=5)
    rng = random.Random(5)
    db = await new_store(net).create_database("shop")
    await fill(db, rng, 25)
    net.set_delay(0.01)  # every request takes 10 ms of virtual time: the agents die mid-way
    cut_short = 0
    for _round in range(6):  # an agent cancelled at a random moment, then another process's
        agent = SystemProjections(new_store(net).database("shop"))
        with trio.move_on_after(rng.random() * 0.2) as scope:
            await agent.catch_up()
        cut_short += scope.cancelled_caught
        await fill(db, rng, 3)
    assert cut_short >= 3
    await SystemProjections(new_store(net).database("shop")).catch_up()
    net.set_delay(None)
    log = [e for e in await db.read_all() if not e.stream.startswith("$")]
    for category in ("order", "cart", "user"):
        expected = [(e.stream, e.version, e.position) for e in log if e.category == category]
        links = await db.read_stream(f"$ce-{category}", resolve_links=True)
        assert [(e.stream, e.version, e.position) for e in links] == expected, category
        assert all(e.link is not None and e.link.type == LINK for e in links)
        assert [e.data for e in links] == [e.data for e in log if e.category == category]
    for kind in ("Added", "Removed"):
        links = await db.read_stream(f"$et-{kind}", resolve_links=True)
        assert [e.id for e in links] == [e.id for e in log if e.type == kind]
    firsts = await db.read_stream("$streams", resolve_links=True)
    assert [e.stream for e in firsts] == [e.stream for e in log if e.version == 0]
    [raw] = await db.read_stream("$ce-order", END, backward=True, count=1)
    last = [e for e in log if e.category == "order"][-1]
    assert (raw.type, raw.data, raw.metadata["position"]) == (LINK, f"{last.version}@{last.stream}", last.position)


async def test_category_reads_use_the_links_once_the_projection_runs(autojump_clock):
    net = MockNetwork(seed=6)
    db = await new_store(net).create_database("shop")
    await fill(db, random.Random(6), 10)
    scanned = await db.read_category("order")
    assert "scanned the log" in db.last_category_read
    await SystemProjections(db).catch_up()
    await db.append("order@9", [EventData("Added", {"late": True})])  # after the checkpoint
    indexed = await db.read_category("order")
    assert "links of $ce-order" in db.last_category_read
    assert [e.id for e in indexed[:-1]] == [e.id for e in scanned] and indexed[-1].data == {"late": True}
    assert [e.position for e in await db.read_category("order", scanned[2].position, count=3)] == [
        e.position for e in scanned[2:5]]
    # Links to a hard-deleted stream's events are left out of a resolved read (not of the category read).
    await db.delete_stream("order@9", hard=True)
    await SystemProjections(db).catch_up()
    resolved = await db.read_stream("$ce-order", resolve_links=True)
    assert all(e.stream != "order@9" for e in resolved)
    assert any(e.stream == "order@9" for e in await db.read_category("order"))


@pytest.mark.parametrize("agents", [2])
async def test_racing_agents_link_each_event_once(autojump_clock, agents):
    net = MockNetwork(seed=7)
    db = await new_store(net).create_database("shop")
    await fill(db, random.Random(7), 20)
    async with trio.open_nursery() as nursery:
        for _ in range(agents):
            nursery.start_soon(SystemProjections(new_store(net).database("shop")).catch_up)
    log = [e for e in await db.read_all() if not e.stream.startswith("$")]
    for category in ("order", "cart", "user"):
        links = await db.read_stream(f"$ce-{category}", resolve_links=True)
        assert [e.id for e in links] == [e.id for e in log if e.category == category]
