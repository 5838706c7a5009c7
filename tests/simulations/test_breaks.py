"""The checker can fail: each test-only break of the node's contract is caught within a few
seeds of a short run, the same seed without the break passes, and replaying the failing
seed reproduces its trace digest exactly."""

from __future__ import annotations

import pytest

from simulations.run import RunResult, run_sim
from simulations.scenarios import get_scenario
from simulations.simulator import Simulator

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


# ---------------------------------------------------------------------------- trust breaks
#
# Each switches off one defence against the attackers of the `byzantine` scenario
# (simulations.attackers): node messages from any peer, full MD values without proof, integers
# of any size. What each lets through is named by the integrity checks (simulations.integrity).
# The node code of today has none of these defences, so it behaves as if all three were on:
# these tests pass on it too; they keep passing once the defences exist and the break
# names switch them off.
TRUST_CASES = {
    # break: the anomalies of which at least one must be reported
    "trust_any_peer": {"unpaid-chunk"},  # an outsider's chunk_put stored
    "accept_unvalidated": {"forged-owner", "forged-entry", "forged-permissions", "md-from-nothing"},
    "unbounded_numbers": {"unbounded-ballot", "unencodable-record", "unreadable-store", "node-crash", "node-down"},
    # the stranger answers pings and never works, yet keeps its place in close groups: copies
    # wait for it to push them and MD moves for its vote
    "trust_idle_members": {"under-replicated", "misplaced", "forged-members"},
    # the member, its MD's coordinator, withholds moves and repairs; nobody else acts
    "trust_the_coordinator": {"misplaced", "divergent", "under-replicated"},
    # the member answers its MD's writes "ok" and drops them; the clients take its word
    "trust_the_ack": {"lost-write", "nonlinearizable"},
}


def _anomaly_kinds(result: RunResult) -> set[str]:
    return {a.kind for check in result.report.checks.values() for a in check.anomalies}


@pytest.mark.parametrize("brk", sorted(TRUST_CASES))
def test_a_trust_break_is_caught_by_the_attackers_and_its_replay_is_exact(brk: str) -> None:
    expected = TRUST_CASES[brk]
    scenario = get_scenario("byzantine").with_(**SMALL)
    for seed in range(1, 11):
        failing = run_sim(scenario, seed, breaks=(brk,), max_steps=STEPS)
        if _anomaly_kinds(failing) & expected:
            break
    else:
        pytest.fail(f"--break {brk} went unnoticed in byzantine seeds 1..10 (wanted one of {sorted(expected)})")
    assert not failing.valid
    assert f"--break {brk}" in failing.replay_command() and f"--seed {failing.seed}" in failing.replay_command()
    replay = run_sim(scenario, failing.seed, breaks=(brk,), max_steps=STEPS)
    assert replay.digest == failing.digest
    assert replay.failures() == failing.failures()
    defended = run_sim(scenario, failing.seed, max_steps=STEPS)  # the same attacks, defence on
    assert defended.valid, defended.report.summary()


def test_the_byzantine_scenario_with_its_attackers_is_valid() -> None:
    """...and the quiet stranger (answers pings, never works) ends banned by the nodes that
    gave it work, not counted in their groups (docs/security.md rule 10)."""
    banned: list[set[str]] = []

    def look(sim: Simulator, _workload: object) -> None:
        for node in sim.live():
            if node.core is not None:
                banned.append({bytes(n).hex()[:8] for n in node.core.standing.banned_names(sim.now)})

    result = run_sim(get_scenario("byzantine").with_(**SMALL), 1, max_steps=STEPS, inspect=look)
    assert result.valid, result.report.summary()
    strangers = {e.details["name"] for e in result.events
                 if e.what == "attacker" and e.details.get("role") == "stranger"}
    assert strangers and any(strangers <= names for names in banned)
