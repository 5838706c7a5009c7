"""`chaos run app`: users' apps run in the simulator under faults, and the checks judge them.

Each run is short (8 virtual seconds of faults); the 20-seed runs are commands in
docs/app-chaos.md, not tests."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from simulations.app_chaos import APP_SCENARIO, run_app_sim
from simulations.app_spec import load_app
from simulations.cli import chaos

SHORT = APP_SCENARIO.with_(duration=8.0, quiet=5.0)


def run(spec: str, seed: int):
    return run_app_sim(load_app(spec), seed, app_spec=spec, scenario=SHORT)


def test_the_bank_keeps_its_promises_while_its_saga_is_killed():
    result = run("examples.bank:app", 1)
    assert result.valid, result.failures()
    assert result.counts["command:ok"] >= 10
    assert result.counts["runner:transfers:killed"] >= 1  # the saga died mid-way and went on
    assert result.report.checks["process_managers"].stats["commands_issued"] >= 20
    assert result.report.checks["projections"].stats["saves_checked"] >= 1
    assert set(result.report.checks) >= {"exactly_once", "projections", "process_managers",
                                         "invariant:money_is_conserved"}


def test_the_buggy_bank_is_caught_and_its_replay_fails_the_same_way():
    """Its handler runs a command again when the saga resends it after a restart: money is
    withdrawn twice. The run names the invariant and shows the slice; the replay printed
    for it (run here through the CLI) fails the same way, with the same digest."""
    result = run("examples.buggy_bank:app", 2)
    assert not result.valid
    broken = result.report.checks["invariant:money_is_conserved"]
    assert broken.status == "invalid"
    text = str(broken.anomalies[0])
    assert "money_is_conserved" in text and "the slice that breaks it" in text
    assert "applied-twice" in {a.kind for a in result.report.checks["process_managers"].anomalies}
    replay = result.replay_command()
    assert replay.startswith("safenet chaos run app --app examples.buggy_bank:app --seed 2 ")
    args = replay.split()[2:] + ["--quiet", "5", "--json"]
    out = CliRunner().invoke(chaos, args)
    assert out.exit_code == 1, out.output
    again = json.loads(out.output)
    assert again["digest"] == result.digest
    assert again["failures"] == result.failures()
    assert again["checks"]["invariant:money_is_conserved"]["anomalies"] == [str(a) for a in broken.anomalies]


def test_the_notebook_and_its_index_survive():
    result = run("examples.notebook:app", 1)
    assert result.valid, result.failures()
    assert result.counts["command:ok"] >= 10
    assert result.final is not None and result.final.projections["notebooks"]["notebooks"]


def test_an_eventsourcing_application_runs_through_the_persistence_module():
    result = run("examples.es_bank:app", 1)
    assert result.valid, result.failures()
    assert result.counts["command:ok"] >= 5
    stored = result.final.extra["stored"]
    assert len(stored) >= 4 + 2 * 5  # four accounts opened, two events per transfer
    assert sum(result.final.extra["state"].values()) == 400


@pytest.mark.parametrize(("args", "message"), [
    (["run", "app"], "needs --app"),
    (["run", "app", "--app", "examples.nosuch:app"], "cannot import"),
    (["run", "app", "--app", "examples.bank"], "module:name"),
    (["run", "app", "--app", "examples.bank:nothing"], "has no"),
    (["run", "calm", "--app", "examples.bank:app"], "are for `chaos run app`"),
])
def test_bad_app_arguments_are_one_line_errors(args, message):
    out = CliRunner().invoke(chaos, args)
    assert out.exit_code == 2
    assert message in out.output
    assert "Traceback" not in out.output
