"""Shrinking: a break's failing seed shrinks to fewer faults and a shorter attack that still
fail, and the printed replay command reproduces the shrunk run's digest exactly. Leaving
faults out keeps the others as they were."""

from __future__ import annotations

import json
import shlex

from click.testing import CliRunner

from simulations.cli import chaos
from simulations.faults import NemesisConfig
from simulations.run import run_sim
from simulations.scenarios import get_scenario

SIZE = ["--nodes", "8", "--duration", "24", "--quiet", "10"]
BREAK = ["--break", "ack_before_quorum"]


def test_a_failing_seed_shrinks_and_its_replay_is_exact() -> None:
    res = CliRunner().invoke(chaos, ["shrink", "kill-restart", "--seed", "2", *SIZE, *BREAK, "--json"])
    assert res.exit_code == 0, res.output
    shrunk = json.loads(res.stdout)
    before, after = shrunk["original"], shrunk["shrunk"]
    assert before["failures"] and after["failures"]
    assert after["faults"] < before["faults"] and after["duration"] <= before["duration"]
    failed = {f.split(":")[0] for f in after["failures"]}
    assert failed <= {f.split(":")[0] for f in before["failures"]}  # the same bug, not another
    assert "--keep-faults" in after["replay"] and "--break ack_before_quorum" in after["replay"]

    replay = shlex.split(after["replay"])
    assert replay[:3] == ["safenet", "chaos", "run"]
    res = CliRunner().invoke(chaos, [*replay[2:], "--json"])
    again = json.loads(res.stdout)
    assert res.exit_code == 1 and again["digest"] == after["digest"] and again["failures"] == after["failures"]


def test_keeping_every_fault_that_took_effect_is_the_same_run() -> None:
    scenario = get_scenario("links").with_(nodes=6, duration=10.0, quiet=6.0, nemesis=NemesisConfig(interval=1.0))
    whole = run_sim(scenario, 2)
    numbers = [i for i, _, _ in whole.injected]
    assert len(numbers) >= 3
    assert run_sim(scenario, 2, keep_faults=frozenset(numbers)).digest == whole.digest
    # Without the first fault, the others keep their number, time and kind.
    rest = run_sim(scenario, 2, keep_faults=frozenset(numbers[1:]))
    assert [(i, t, f) for i, t, f in rest.injected] == [x for x in whole.injected if x[0] != numbers[0]]
