"""Scenarios you write: a TOML scenario file runs (with the machine faults: clock skew and
drift, slow and full disks), its replay names the file, and a broken file is one line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from simulations.cli import chaos
from simulations.scenario_file import ScenarioError, load, parse_faults

TOML = """
base = "kill-restart"
summary = "machines misbehave"
nodes = 6
duration = 12.0
quiet = 8.0
[faults]
kill = 1.0
clock-skew = 1.0
clock-drift = 1.0
slow-disk = 1.0
disk-full = 0.5
[nemesis]
interval = 1.0
duration = [1.0, 4.0]
[workload]
processes = 2
"""


def test_a_toml_scenario_runs_and_its_replay_names_the_file(tmp_path) -> None:
    path = tmp_path / "machines.toml"
    path.write_text(TOML)
    scenario = load(str(path))
    assert scenario.nodes == 6 and scenario.nemesis.duration == (1.0, 4.0) and scenario.workload.processes == 2
    res = CliRunner().invoke(chaos, ["run", str(path), "--seed", "3", "--json"])
    assert res.exit_code in (0, 1), res.output
    run = json.loads(res.stdout)
    assert run["scenario"] == str(path) and run["nodes"] == 6
    assert {"clock-skew", "clock-drift", "slow-disk"} <= set(run["faults"]), run["faults"]
    assert run["replay"].startswith(f"safenet chaos run {path} --seed 3")
    # --faults on top of the file: the replay says so.
    res = CliRunner().invoke(chaos, ["run", str(path), "--seed", "3", "--faults", "kill=2,pause", "--json"])
    assert set(json.loads(res.stdout)["faults"]) <= {"kill", "pause"}
    assert "--faults kill=2,pause" in json.loads(res.stdout)["replay"]


def test_broken_fault_lists_and_files_are_one_line_errors(tmp_path) -> None:
    for text in ("kill,meteor", "kill=x", "kill=0"):
        try:
            parse_faults(text)
        except ScenarioError:
            continue
        raise AssertionError(f"{text!r} was accepted")
    bad = tmp_path / "bad.toml"
    for content in ("nodes = 'many'", "[nemesis]\nintervall = 2", "faults = 3", "base = 'nowhere'", "nodes = [",
                    "[workload]\nes_follower_life = [9, 2]", "[workload]\nes_follower_life = 'long'"):
        bad.write_text(content)
        res = CliRunner().invoke(chaos, ["run", str(bad), "--seed", "1"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output
    res = CliRunner().invoke(chaos, ["run", "calm", "--faults", "kill,meteor"])
    assert res.exit_code == 2 and "meteor" in res.output
