"""Seed sweeps: through a local Dask cluster a sweep reaches the verdicts and trace digests the
local worker pool does, streams them into a directory, and a re-run skips what is done."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from simulations.cli import chaos

SHORT = ["--nodes", "5", "--duration", "2", "--quiet", "2"]


def _run(*args: str) -> dict:
    res = CliRunner().invoke(chaos, ["run", "kill-restart", *SHORT, *args, "--json"])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def test_a_dask_sweep_matches_the_local_pool_and_skips_done_seeds(tmp_path) -> None:
    pytest.importorskip("distributed")
    pool = _run("--seeds", "1..20", "-j", "2")
    results = tmp_path / "sweep"
    swept = _run("--seeds", "1..20", "-j", "2", "--dask", "local", "--results", str(results))
    assert swept["ran"] == 20 and swept["runs"] == 20 and swept["missing"] == 0
    assert swept["verdicts"] == {str(r["seed"]): r["status"] for r in pool["runs"]}
    assert swept["digests"] == {str(r["seed"]): r["digest"] for r in pool["runs"]}
    assert len({r["digest"] for r in pool["runs"]}) == 20
    # Streamed: a file per seed; the summary names each failing seed with its replay.
    assert len(list(results.glob("seeds/*/seed-*.json"))) == 20
    assert (results / "outcomes.png").stat().st_size > 0
    assert sorted(int(s) for s in swept["replays"]) == swept["failed"] == pool["failed"]
    # A re-run with five more seeds runs only those five (in this process: no cluster needed).
    again = _run("--seeds", "1..25", "-j", "1", "--results", str(results))
    assert again["ran"] == 5 and again["runs"] == 25
    assert {k: again["digests"][k] for k in swept["digests"]} == swept["digests"]


def test_a_results_directory_of_another_sweep_is_refused(tmp_path) -> None:
    results = tmp_path / "sweep"
    _run("--seed", "1", "--results", str(results))
    res = CliRunner().invoke(chaos, ["run", "calm", "--seed", "1", *SHORT, "--results", str(results)])
    assert res.exit_code != 0 and "holds another sweep" in res.output
    assert "Traceback" not in res.output
