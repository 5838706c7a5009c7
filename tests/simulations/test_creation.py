"""An MD is created once, even by the two sides of a partition. Each side evicts the other
after a few seconds and then sees a full close group of its own; a side may conclude that
an MD does not exist only with a majority of the group as it was before the split (the
contacts it lost lately count, and cannot answer), so at most one side's creation can
succeed. The `forget_lost_members` break switches the rule off, and both sides create."""

from __future__ import annotations

import random

import pytest
import trio

from node import ANYONE, Action, MutableData, PermissionSet, Value, XorName
from node import errors as E
from node.accounts import account_address
from node.config import NodeConfig
from node.keys import Keypair
from simulations.determinism import run_seeded
from simulations.simulator import Simulator


async def _create_from_both_sides(seed: int, breaks: frozenset[str]) -> tuple[list[str], int]:
    """Split 12 nodes into halves, let each side evict the other, then let a client on each
    side, knowing only that side, create the same MD with its own first entry. What each
    creation got, and how many nodes of the MD's true close group the larger share holds."""
    outcome: list[str] = []
    rng = random.Random(seed)
    async with Simulator.open(seed, config=NodeConfig(breaks=breaks)) as sim:
        await sim.add_nodes(12)
        name = XorName.hash_of(f"created-twice:{seed}".encode())
        sides = [{n.slot for n in sim.nodes[:6]}, {n.slot for n in sim.nodes[6:]}]
        true_group = {n.slot for n in sim.close_group(name)}

        def keys_for(side: set[int]) -> Keypair:
            """A client whose account lives mostly on `side` (the charge for the put reads the
            account, and a read of an MD needs a majority of its group, as a creation does)."""
            while True:
                keys = Keypair.generate(rng)
                group = {n.slot for n in sim.close_group(account_address(keys.public).name)}
                if len(group & side) >= 3:
                    return keys

        clients = [keys_for(side) for side in sides]
        sim.network.blocked |= {(a, b) for a in sides[0] for b in sides[1]}
        sim.network.blocked |= {(b, a) for a in sides[0] for b in sides[1]}
        await trio.sleep(30)  # long past eviction (6.25 s for neighbours that share data)

        async def create(side: set[int], keys: Keypair, label: bytes) -> None:
            contacts = [n.address for n in sim.nodes if n.slot in side][:3]
            async with sim.client(keys, contacts=contacts, timeout=30.0) as client:
                md = MutableData(name, 15000, {b"first": Value(label, 0)},
                                 {ANYONE: PermissionSet.allowing(Action.INSERT)}, 0, frozenset({client.public_key}))
                try:
                    await client.put_mdata(md)
                    outcome.append("created")
                except E.SafeError as exc:
                    outcome.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create, sides[0], clients[0], b"left")
            nursery.start_soon(create, sides[1], clients[1], b"right")
        majority_side = max(len(true_group & side) for side in sides)
    return outcome, majority_side


def _run(seed: int, breaks: frozenset[str] = frozenset()) -> tuple[list[str], int]:
    result: list[tuple[list[str], int]] = []

    async def main() -> None:
        result.append(await _create_from_both_sides(seed, breaks))

    run_seeded(main, seed=seed)
    return result[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_two_sides_of_a_partition_do_not_both_create_an_md(seed: int) -> None:
    outcome, majority_side = _run(seed)
    assert outcome.count("created") <= 1, outcome
    if majority_side >= 3:  # the side holding a majority of the group as it was can create
        assert outcome.count("created") == 1, (outcome, majority_side)


def test_forgetting_lost_members_lets_both_sides_create() -> None:
    outcomes = {seed: _run(seed, frozenset({"forget_lost_members"}))[0] for seed in (1, 2, 3)}
    assert all(o.count("created") == 2 for o in outcomes.values()), outcomes
