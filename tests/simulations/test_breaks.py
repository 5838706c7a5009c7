"""The checker can fail: each test-only break of the node's contract is caught within a few
seeds of a short run, the same seed without the break passes, and replaying the failing
seed reproduces its trace digest exactly."""

from __future__ import annotations

import pytest

from simulations.run import RunResult, run_sim
from simulations.scenarios import get_scenario

CASES = {
    # break: (scenario that exposes it, what the checker must report)
    "skip_version_check": ("calm", {"conflicting_acks", "linearizable"}),
    "ack_before_quorum": ("kill-restart", {"linearizable", "lost_writes", "conflicting_acks"}),
    "no_anti_entropy": ("disk-loss", {"placement", "convergence", "lost_writes", "lost_chunks"}),
}
SMALL = {"nodes": 8, "duration": 12.0, "quiet": 10.0}
STEPS = 100_000  # a broken history can make the linearizability search long; the other checks suffice


def _first_failure(scenario_name: str, brk: str, seeds: range) -> RunResult:
    scenario = get_scenario(scenario_name).with_(**SMALL)
    for seed in seeds:
        result = run_sim(scenario, seed, breaks=(brk,), max_steps=STEPS)
        if not result.valid:
            return result
    pytest.fail(f"--break {brk} went unnoticed in {scenario_name} seeds {seeds.start}..{seeds.stop - 1}")


@pytest.mark.parametrize("brk", sorted(CASES))
def test_a_break_is_caught_and_its_replay_is_exact(brk: str) -> None:
    scenario_name, expected = CASES[brk]
    failing = _first_failure(scenario_name, brk, range(1, 7))
    failed_checks = {name for name, check in failing.report.checks.items() if not check.valid}
    assert failed_checks & expected, failing.report.summary()
    assert f"--break {brk}" in failing.replay_command() and f"--seed {failing.seed}" in failing.replay_command()

    replay = run_sim(get_scenario(scenario_name).with_(**SMALL), failing.seed, breaks=(brk,), max_steps=STEPS)
    assert replay.digest == failing.digest
    assert replay.failures() == failing.failures()

    honest = run_sim(get_scenario(scenario_name).with_(**SMALL), failing.seed)
    assert honest.valid, honest.report.summary()
