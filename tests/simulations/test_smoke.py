"""The CI-sized smoke set: short `mixed` runs, a routing-only run, the command line and the
reports. Long runs are commands (`safenet chaos run mixed --seeds 1..200`), not tests.

Three bugs the simulator found are pinned here by the seeds that found them (all fixed in
9343eb4): routing that stayed split after a partition healed (`partitions` seed 2), a liar
and two lagging replicas making a stale quorum read (`byzantine` seed 4), and an existing
MD read as absent from the wrong nodes after an incomplete lookup (`mixed-nopart` seed 6).
A fourth, anti-entropy that stalled for good: a member whose stale copy left itself out of
the members while every fresh copy named it the coordinator (`byzantine` seed 4, full length).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from simulations.cli import chaos, sim
from simulations.report import write_run_report
from simulations.routing_sim import run_routing
from simulations.run import run_sim
from simulations.scenarios import SCENARIOS, get_scenario

SHORT = {"nodes": 8, "duration": 12.0, "quiet": 10.0}


@pytest.mark.parametrize("seed", [2, 4, 8])  # seed 1 draws one fault since the digests changed (issue 18)
def test_short_mixed_runs_hold_every_invariant(seed: int) -> None:
    result = run_sim(get_scenario("mixed").with_(**SHORT), seed)
    assert result.valid, result.report.summary()
    assert sum(result.faults.values()) >= 2
    assert result.ops.get("update:ok", 0) > 0 and result.ops.get("read:ok", 0) > 0


def test_routing_recovers_after_a_partition() -> None:
    result = run_sim(get_scenario("partitions").with_(**SHORT), 2)
    assert result.report.checks["routing"].valid, result.report.checks["routing"].summary()


def test_a_liar_cannot_make_a_stale_read() -> None:
    result = run_sim(get_scenario("byzantine").with_(**SHORT), 4)
    assert result.report.checks["linearizable"].valid, result.report.checks["linearizable"].summary()


def test_a_stale_member_that_the_others_name_coordinator_is_repaired() -> None:
    # n4's copy of md1 (members without n4) is behind; the fresh copies name n4 the closest
    # live member. Before the fix each side waited for the other and n4 ended 1 version behind.
    result = run_sim(get_scenario("byzantine"), 4)
    assert result.report.checks["convergence"].valid, result.report.checks["convergence"].summary()


def test_an_existing_md_never_reads_as_absent() -> None:
    result = run_sim(get_scenario("mixed-nopart"), 6, driver="stepped")
    assert result.report.checks["md_presence"].valid, result.report.checks["md_presence"].summary()


def test_routing_only_lookups_find_the_exact_close_group() -> None:
    figures, hops = run_routing(600, 300, seed=2)
    assert figures.exact_share == 1.0
    assert figures.hops_median <= 3
    assert len(hops) == 300


def test_chaos_list_names_every_scenario_and_what_it_injects() -> None:
    out = CliRunner().invoke(chaos, ["list"]).output
    for name in SCENARIOS:
        assert name in out
    assert "partition-ring" in out and "ack_before_quorum" in out


def test_chaos_run_passes_and_reports(tmp_path) -> None:
    res = CliRunner().invoke(chaos, ["run", "calm", "--seed", "3", "--nodes", "6", "--duration", "6",
                                     "--quiet", "5", "--report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "VALID" in res.output
    folder = tmp_path / "seed-3"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["valid"] and summary["seed"] == 3
    for name in ("report.md", "history.jsonl", "chunks.jsonl", "timeline.png", "latency_cdf.png", "replicas.png",
                 "topology.png"):
        assert (folder / name).stat().st_size > 0, name


def test_chaos_run_fails_with_the_replay_command(tmp_path) -> None:
    res = CliRunner().invoke(chaos, ["run", "calm", "--seeds", "1..2", "--nodes", "6", "--duration", "6",
                                     "--quiet", "5", "--break", "skip_version_check", "--jobs", "1",
                                     "--report", str(tmp_path)])
    assert res.exit_code == 1
    assert "FAILED seed 1" in res.output
    assert ("replay: safenet chaos run calm --seed 1 --nodes 6 --duration 6 --mode sim --break skip_version_check "
            "--quiet 5") in res.output
    assert (tmp_path / "summary.md").exists() and (tmp_path / "seed-1" / "report.md").exists()


def test_sim_routing_command(tmp_path) -> None:
    res = CliRunner().invoke(sim, ["routing", "--nodes", "300", "--lookups", "100", "--report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "exact_share: 1.0" in res.output
    assert (tmp_path / "hops.png").exists() and json.loads((tmp_path / "routing.json").read_text())["nodes"] == 300


def test_a_report_of_a_failing_run_says_what_failed(tmp_path) -> None:
    result = run_sim(get_scenario("calm").with_(nodes=6, duration=6.0, quiet=5.0), 1, breaks=("skip_version_check",),
                     max_steps=50_000)
    text = write_run_report(result, tmp_path, plots=False).read_text()
    assert "INVALID" in text and "## What failed" in text and "conflicting" in text
    assert "--break skip_version_check" in text


def test_chaos_and_sim_report_json(tmp_path) -> None:
    listed = json.loads(CliRunner().invoke(chaos, ["list", "--json"]).stdout)
    assert [s["name"] for s in listed["scenarios"]] == list(SCENARIOS) and "ack_before_quorum" in listed["breaks"]
    res = CliRunner().invoke(chaos, ["run", "calm", "--seed", "3", "--nodes", "6", "--duration", "6", "--quiet", "5",
                                     "--json"])
    run = json.loads(res.stdout)
    assert res.exit_code == 0 and run["valid"] and run["seed"] == 3 and run["digest"]
    res = CliRunner().invoke(sim, ["routing", "--nodes", "300", "--lookups", "100", "--json"])
    routing = json.loads(res.stdout)
    assert res.exit_code == 0 and routing["exact_share"] == 1.0 and sum(routing["hops"].values()) == 100
