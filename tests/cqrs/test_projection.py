"""Projections: folded by a local agent, saved back as a stream (each save one event, the
last one current), readable from any machine, resumable after a kill without counting an
event twice, safe with two agents at once, and rebuildable."""

from __future__ import annotations

import random

import trio
from es_testing_cqrs import kill_at_request

from eventstore.cqrs import (
    CommandHandler,
    Projection,
    ProjectionAgent,
    Repository,
    Snapshots,
    projection_history,
    read_projection,
)
from eventstore.events import EventData


def tally(state, event):
    """Every event's id (so a double count shows) and the sum of the `n`s."""
    state["seen"].append(str(event.id))
    state["total"] += event.data["n"]
    return state


def fresh_tally(name: str, categories=("item",)) -> Projection:
    return Projection(name, tally, initial={"seen": [], "total": 0}, categories=categories)


async def fill(db, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        await db.append(f"item@{i % 4}", [EventData("Counted", {"n": i})])


async def test_catch_up_saves_the_state_for_any_machine(db, make_store, autojump_clock):
    await fill(db, 10)
    agent = ProjectionAgent(db, [fresh_tally("tally")], save_every=4)
    states = await agent.catch_up()
    assert states["tally"].state["total"] == sum(range(10))
    # Another machine (another store) reads the saved state, without running anything.
    elsewhere = make_store().database("cqrs")
    current = await read_projection(elsewhere, "tally")
    assert current is not None and current.state == states["tally"].state
    items = await db.read_category("item")
    assert (current.events, current.checkpoint) == (10, items[-1].position)
    # Saves of 4, 4 and 2 events: each saved state one event, the current state the last.
    history = await projection_history(elsewhere, "tally")
    assert [h.events for h in history] == [4, 8, 10]
    assert [h.version for h in history] == [0, 1, 2]
    assert [len(h.state["seen"]) for h in history] == [4, 8, 10]
    # Nothing new: a catch-up saves nothing more.
    await agent.catch_up()
    assert len(await projection_history(db, "tally")) == 3
    await fill(db, 3, first=10)
    assert (await agent.catch_up())["tally"].events == 13


async def test_an_agent_follows_new_events(db, autojump_clock):
    agent = ProjectionAgent(db, [fresh_tally("live")], save_every=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await fill(db, 5)
        with trio.fail_after(30):
            while (current := await read_projection(db, "live")) is None or current.events < 5:
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert current.state["total"] == sum(range(5))


async def test_a_killed_agent_resumes_to_the_same_state_as_an_uninterrupted_run(db, make_store, autojump_clock):
    await fill(db, 60)
    reference = ProjectionAgent(db, [fresh_tally("reference")], save_every=5)
    await reference.catch_up()
    rng = random.Random(6)
    kills = 0
    # Several kill schedules, one projection each; a kill lands at a random request of the
    # run (a whole catch-up of this log is about 80 requests since reads go in bulk; it was
    # 200): before a request is sent, or after it took effect but before its reply was seen.
    for schedule in range(8):
        name = f"killed-{schedule}"
        for round_ in range(100):
            store = make_store()  # a new process each time: only the network remembers
            agent = ProjectionAgent(store.database("cqrs"), [fresh_tally(name)], save_every=3)
            with trio.CancelScope() as scope:
                kill_at_request(store, rng.randint(1, 90), scope, after_reply=round_ % 2 == 1)
                await agent.catch_up()
            if not scope.cancelled_caught:
                break
            kills += 1
        if schedule == 2:
            await fill(db, 8, first=60)  # the log grows between schedules too
    assert kills >= 10
    expected = (await reference.catch_up())["reference"]
    assert expected.state["total"] == sum(range(68)) and expected.events == 68
    for schedule in range(8):
        name = f"killed-{schedule}"
        killed = await ProjectionAgent(db, [fresh_tally(name)]).catch_up()
        killed_state = killed[name]
        assert killed_state.state["total"] == expected.state["total"]
        assert killed_state.state["seen"] == expected.state["seen"]  # same events, same order, none twice
        assert (killed_state.checkpoint, killed_state.events) == (expected.checkpoint, 68)
        # Every saved state on the way was sound: each one's events a prefix of the next one's.
        history = [h.state["seen"] for h in await projection_history(db, name)]
        for before, after in zip(history, history[1:], strict=False):
            assert after[: len(before)] == before


async def test_two_agents_at_once_count_each_event_once(db, make_store, autojump_clock):
    await fill(db, 30)
    agents = [ProjectionAgent(make_store().database("cqrs"), [fresh_tally("shared")], save_every=2)
              for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for agent in agents:
            nursery.start_soon(agent.catch_up)
    current = await read_projection(db, "shared")
    assert current is not None and current.events == 30
    assert sorted(current.state["seen"]) == sorted(str(e.id) for e in await db.read_category("item"))
    assert current.state["total"] == sum(range(30))


async def test_rebuild_starts_a_new_generation_and_keeps_the_old_states(db, autojump_clock):
    await fill(db, 6)
    agent = ProjectionAgent(db, [fresh_tally("evolving")])
    first = (await agent.catch_up())["evolving"]
    # The projection's code changes: count only even numbers now.
    def evens(state, event):
        return tally(state, event) if event.data["n"] % 2 == 0 else state

    changed = ProjectionAgent(db, [Projection("evolving", evens, initial={"seen": [], "total": 0},
                                              categories=["item"])])
    rebuilt = await changed.rebuild("evolving")
    assert (first.generation, rebuilt.generation) == (0, 1)
    assert rebuilt.state["total"] == 0 + 2 + 4 and rebuilt.events == 6
    history = await projection_history(db, "evolving")
    assert history[0].state["total"] == sum(range(6))  # the past state is still there
    assert history[1].checkpoint is None and history[1].state == {"seen": [], "total": 0}  # the reset
    assert history[-1].state == rebuilt.state


async def test_projections_skip_the_librarys_own_streams(db, autojump_clock):
    """A projection over every event must not see snapshots, projection states or
    process-manager steps - least of all its own saved states."""
    from domain_testing import Deposit, Open

    handler = CommandHandler(Repository(db, snapshots=Snapshots(db, every=2)))
    await handler.execute(Open("alice", "Alice"))
    for n in range(4):
        await handler.execute(Deposit("alice", n))

    def streams(state, event):
        state.setdefault(event.stream, 0)
        state[event.stream] += 1
        return state

    agent = ProjectionAgent(db, [Projection("everything", streams)], save_every=1)
    await agent.catch_up()
    state = (await agent.catch_up())["everything"].state  # a second pass sees its own saves in the log
    assert state == {"account@alice": 5}
