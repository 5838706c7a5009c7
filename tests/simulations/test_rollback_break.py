"""The `rollback` attacker of the `byzantine` scenario finds the break `adopt_any_certified`.

The member attacker replays genuine certificates of older values of its MD (simulations/
attackers.py), also the moment a newer value reaches it, racing that value's commit. With the
break, acceptors take any certified value whatever its count of rounds and whether or not it
descends from their copy, and acknowledged writes are lost; with the defence (node/acceptor.py,
`Acceptor.descends`, docs/security.md "No going back") the same seed is valid.
"""

from __future__ import annotations

import pytest

from simulations.run import run_sim
from simulations.scenarios import get_scenario

SMALL = {"nodes": 8, "duration": 12.0, "quiet": 10.0}
STEPS = 100_000
HARM = {"lost-write", "nonlinearizable", "non-monotonic-read", "divergent"}


def test_a_replayed_old_certificate_is_caught_without_the_defence_and_its_replay_is_exact() -> None:
    scenario = get_scenario("byzantine").with_(**SMALL)
    for seed in range(1, 11):
        failing = run_sim(scenario, seed, breaks=("adopt_any_certified",), max_steps=STEPS)
        kinds = {a.kind for check in failing.report.checks.values() for a in check.anomalies}
        if kinds & HARM:
            break
    else:
        pytest.fail("--break adopt_any_certified went unnoticed in byzantine seeds 1..10")
    assert not failing.valid
    assert "--break adopt_any_certified" in failing.replay_command()
    replay = run_sim(scenario, failing.seed, breaks=("adopt_any_certified",), max_steps=STEPS)
    assert replay.digest == failing.digest
    assert replay.failures() == failing.failures()
    defended = run_sim(scenario, failing.seed, max_steps=STEPS)  # the same attacks, defence on
    assert defended.valid, defended.report.summary()
    # The member did replay certificates in the defended run, and members refused them (status
    # 2: nothing they may take). (A member that still holds the replayed value itself takes it:
    # that changes nothing.)
    replies = {k: v for k, v in defended.byzantine.items() if k.startswith("attack:rollback:")}
    assert replies.get("attack:rollback:sent", 0) > 0 and replies.get("attack:rollback:accepted=2", 0) > 0, replies
