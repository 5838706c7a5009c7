"""Process managers: a transfer saga over accounts whose deposits are not idempotent by
nature, run to the end while being killed over and over, must move each amount exactly
once - every command it sends takes effect once."""

from __future__ import annotations

import random
from uuid import UUID

import trio
from domain_testing import Complete, Deposit, Open, RequestTransfer, Withdraw, transfer_saga
from es_testing_cqrs import effects_per_command, kill_at_request

from eventstore.cqrs import (
    CommandHandler,
    ProcessManager,
    ProcessRunner,
    Repository,
    process_stream,
)

TRANSFERS = ProcessManager("transfers", transfer_saga, commands=[Withdraw, Deposit, Complete],
                           categories=["transfer", "account"])


def runner_for(store) -> ProcessRunner:
    db = store.database("cqrs")
    return ProcessRunner(db, TRANSFERS, CommandHandler(Repository(db)))


async def setup_bank(db, transfers: int) -> int:
    handler = CommandHandler(Repository(db))
    await handler.execute(Open("a", "Ann"))
    await handler.execute(Open("b", "Bob"))
    await handler.execute(Deposit("a", 1000))
    for i in range(1, transfers + 1):
        await handler.execute(RequestTransfer(f"t{i}", "a", "b", i))
    return sum(range(1, transfers + 1))


async def balances(db) -> tuple[int, int]:
    from domain_testing import Account

    repository = Repository(db)
    return (await repository.get(Account, "a")).balance, (await repository.get(Account, "b")).balance


async def sent_commands(db) -> list[str]:
    """Every command id the saga recorded in a Step (each Step once)."""
    return [c["data"]["id"] for e in await db.read_stream(process_stream("transfers"))
            if e.type == "Step" for c in e.data["commands"]]


async def test_a_saga_runs_to_the_end(db, make_store, autojump_clock):
    moved = await setup_bank(db, 3)
    state = await runner_for(make_store()).catch_up()
    assert await balances(db) == (1000 - moved, moved)
    assert {t: s["step"] for t, s in state.items()} == {"t1": "done", "t2": "done", "t3": "done"}
    commands = await sent_commands(db)
    assert len(commands) == len(set(commands)) == 9  # withdraw, deposit, complete per transfer
    effects = await effects_per_command(db)
    assert all(effects[c] == 1 for c in map(UUID, commands))
    # Its state is in the network: another machine reads it without running anything.
    assert await runner_for(make_store()).current_state() == state


async def test_a_saga_killed_again_and_again_sends_each_command_to_effect_once(db, make_store, autojump_clock):
    moved = await setup_bank(db, 6)
    rng = random.Random(4)
    kills = 0
    for round_ in range(400):
        store = make_store()  # a new process: only the network remembers
        with trio.CancelScope() as scope:
            kill_at_request(store, rng.randint(5, 60), scope, after_reply=round_ % 2 == 0)
            await runner_for(store).catch_up()
        if not scope.cancelled_caught:
            break
        kills += 1
    assert kills >= 20
    assert await balances(db) == (1000 - moved, moved)  # every amount moved once
    commands = [UUID(c) for c in await sent_commands(db)]
    assert len(commands) == len(set(commands)) == 18
    effects = await effects_per_command(db)
    assert [effects[c] for c in commands] == [1] * 18
    state = await runner_for(make_store()).current_state()
    assert all(s["step"] == "done" for s in state.values()) and len(state) == 6


async def test_two_runners_at_once(db, make_store, autojump_clock):
    moved = await setup_bank(db, 4)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(runner_for(make_store()).catch_up)
    assert await balances(db) == (1000 - moved, moved)
    effects = await effects_per_command(db)
    commands = [UUID(c) for c in await sent_commands(db)]
    assert [effects[c] for c in commands] == [1] * 12


async def test_a_rejected_command_is_recorded_not_retried(db, make_store, autojump_clock):
    handler = CommandHandler(Repository(db))
    await handler.execute(Open("a", "Ann"))
    await handler.execute(Open("b", "Bob"))
    await handler.execute(RequestTransfer("big", "a", "b", 50))  # a has nothing
    state = await runner_for(make_store()).catch_up()
    assert state["big"]["step"] == "withdrawing"
    last = (await db.read_stream(process_stream("transfers")))[-1]
    assert last.type == "Dispatched"
    assert last.data["outcomes"][0]["outcome"] == "rejected" and "Overdrawn" in last.data["outcomes"][0]["detail"]
    assert await balances(db) == (0, 0)


async def test_a_runner_follows_new_events(db, make_store, autojump_clock):
    await setup_bank(db, 0)
    runner = runner_for(make_store())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run)
        await CommandHandler(Repository(db)).execute(RequestTransfer("t1", "a", "b", 7))
        with trio.fail_after(60):
            while await balances(db) != (993, 7):
                await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
