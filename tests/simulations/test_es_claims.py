"""The database log's group commit when waiting writers are cancelled.

Found by `safenet chaos run eventstore --seed 2`: a writer cancelled while a log write that
carried its intent was in flight took itself out of the queue, and the flush then removed
its batch from the queue by count, dropping the next writer's claim too. That writer's
append never finished (it kept leading empty flushes), and the run never ended.
"""

from __future__ import annotations

import random

import trio

from client.mock import MockNetwork
from eventstore.api import EventStore
from node.keys import Keypair


async def test_cancelled_claims_never_strand_the_others(autojump_clock):
    """Writers claim log slots at random moments, a third of them cancelled at random while
    they wait or lead; every writer not cancelled gets a slot of its own, holding its value."""
    for seed in range(12):
        await _claims_with_cancellations(seed)


async def _claims_with_cancellations(seed: int) -> None:
    rng = random.Random(seed)
    net = MockNetwork(seed=seed)
    net.set_delay(lambda _request: rng.choice([0.002, 0.005, 0.01]))
    db = await EventStore(net.client(Keypair(b"\x07" * 32)), pending_grace=1.0).create_database("shop")
    await db.log.claim(b"warm")  # the tip is known from here on: each flush is one insert
    slots: dict[bytes, int] = {}
    stuck: list[bytes] = []

    async def claim(value: bytes, at: float, cancel_after: float | None) -> None:
        await trio.sleep(at)
        with trio.move_on_after(cancel_after if cancel_after is not None else 10.0) as scope:
            slots[value] = await db.log.claim(value)
        if scope.cancelled_caught and cancel_after is None:
            stuck.append(value)

    async with trio.open_nursery() as nursery:
        for k in range(24):
            cancel = rng.uniform(0.0, 0.03) if rng.random() < 0.35 else None
            nursery.start_soon(claim, b"w%d" % k, rng.uniform(0.0, 0.1), cancel)
    assert not stuck, f"seed {seed}: claims never served: {stuck}"
    assert len(set(slots.values())) == len(slots), f"seed {seed}: two claims got one slot"
    for value, slot in slots.items():
        assert await db.log.at(slot) == value
