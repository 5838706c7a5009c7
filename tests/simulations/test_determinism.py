"""The seed decides everything: trio's task order (through the one private hook, wrapped in
`simulations.determinism`), and so a whole simulated run's trace digest."""

from __future__ import annotations

import os
import subprocess
import sys

import trio
import trio.testing

from simulations.determinism import run_seeded, seeded_scheduling, sub_rng
from simulations.run import run_sim
from simulations.scenarios import get_scenario

SMALL = {"nodes": 6, "duration": 8.0, "quiet": 6.0}


def _wake_order(seed: int) -> list[int]:
    """Twelve tasks woken at the same virtual instant: the order they run in."""
    order: list[int] = []

    async def sleeper(i: int) -> None:
        await trio.sleep(1.0)
        order.append(i)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(sleeper, i)

    run_seeded(main, seed=seed)
    return order


def test_same_seed_same_task_order_and_different_seeds_differ() -> None:
    assert _wake_order(1) == _wake_order(1)
    orders = {tuple(_wake_order(seed)) for seed in range(1, 6)}
    assert len(orders) > 1  # the seed really chooses the order


def test_the_hook_is_restored_after_the_block() -> None:
    run_module = trio._core._run
    flag, state = run_module._ALLOW_DETERMINISTIC_SCHEDULING, run_module._r.getstate()
    with seeded_scheduling(7):
        assert run_module._ALLOW_DETERMINISTIC_SCHEDULING is True
    assert flag == run_module._ALLOW_DETERMINISTIC_SCHEDULING
    assert run_module._r.getstate() == state


def test_sub_rngs_are_independent_streams_of_one_seed() -> None:
    assert sub_rng(3, "links").random() == sub_rng(3, "links").random()
    assert sub_rng(3, "links").random() != sub_rng(3, "faults").random()


def test_a_run_replays_to_the_same_trace_digest() -> None:
    scenario = get_scenario("mixed").with_(**SMALL)
    first = run_sim(scenario, 11)
    again = run_sim(scenario, 11)
    other = run_sim(scenario, 12)
    assert first.digest == again.digest
    assert first.messages == again.messages and first.faults == again.faults
    assert [op.describe() for op in first.history.ops()] == [op.describe() for op in again.history.ops()]
    assert other.digest != first.digest


def test_the_digest_does_not_depend_on_hash_randomisation() -> None:
    """Set iteration order changes with PYTHONHASHSEED; a run must not depend on it."""
    code = (
        "from simulations.run import run_sim; from simulations.scenarios import get_scenario; "
        "print(run_sim(get_scenario('kill-restart').with_(nodes=6, duration=6.0, quiet=4.0), 5).digest)"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_the_host_driver_is_deterministic_too() -> None:
    # The stepped driver is the default (the tests above); the NodeHost one must replay as well.
    scenario = get_scenario("kill-restart").with_(**SMALL)
    assert run_sim(scenario, 3, driver="host").digest == run_sim(scenario, 3, driver="host").digest
