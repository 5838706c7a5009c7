"""The chaos runner against real node processes: a small cluster, a short kill-restart run,
faults by SIGKILL and over the admin fault channel, and nothing acknowledged lost."""

from __future__ import annotations

import pytest
import trio

from simulations.cluster_chaos import run_cluster
from simulations.report import write_run_report
from simulations.scenarios import get_scenario


@pytest.mark.cluster
def test_kill_restart_against_a_process_cluster_loses_nothing(tmp_path) -> None:
    scenario = get_scenario("kill-restart").with_(
        faults={"kill": 1.0, "partition-one": 1.0, "loss": 0.5}, workload=get_scenario("calm").workload
    )
    result = trio.run(lambda: run_cluster(scenario, 1, nodes=5, duration=8.0, data_dir=tmp_path / "c", quiet=10.0,
                                          log=lambda _text: None))
    checks = result.report.checks
    for name in ("linearizable", "conflicting_acks", "lost_writes", "lost_chunks", "node_errors"):
        assert checks[name].valid, checks[name].summary()
    assert result.mode == "cluster" and result.ops.get("update:ok", 0) > 0
    # The report tells how to run it again in this mode, and counts the messages the nodes
    # themselves counted (the runner sees none of them).
    assert result.replay_command().startswith("safenet chaos run kill-restart --mode cluster --seed 1 --nodes 5")
    assert result.messages > 0 and result.kinds
    report = write_run_report(result, tmp_path / "report", plots=False).read_text()
    assert "--mode cluster --seed 1" in report and "--mode sim" not in report
    assert f"counted {result.messages} received" in report and "simulated" not in report
