"""A cluster chaos run ended by SIGTERM (`timeout`, a CI job cancelled) stops the cluster it
started. Its node processes run in sessions of their own, so only the runner can stop them:
a run that died on the signal used to leave all of them running.

A real `safenet chaos run --mode cluster` in a subprocess, with its cluster in the test's
temp dir (free ports), signalled once its faults have begun; whatever happens, the test
kills what is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.launcher import LocalCluster


def _pids(directory: Path) -> list[int]:
    try:
        info = json.loads((directory / "cluster.json").read_text())
    except (OSError, ValueError):
        return []
    return [int(n["pid"]) for n in info.get("nodes", []) if n.get("pid")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (it holds no port, runs no code).
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.cluster
def test_sigterm_stops_the_cluster_the_run_started(tmp_path) -> None:
    directory = tmp_path / "cluster"
    safenet = Path(sys.executable).with_name("safenet")
    run = subprocess.Popen(
        [str(safenet), "chaos", "run", "pause", "--mode", "cluster", "--nodes", "5", "--duration", "120",
         "--cluster", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            started = _pids(directory)
            if len(started) == 5 and all(_alive(p) for p in started):
                break
            time.sleep(0.2)
        assert len(started) == 5, "the run did not start its cluster"
        time.sleep(2.0)  # into the run: clients and faults at work
        run.send_signal(signal.SIGTERM)
        _out, err = run.communicate(timeout=90)
        assert run.returncode == 130, err
        lines = [line for line in err.splitlines() if line.startswith("safenet: error:")]
        assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "was stopped" in lines[0], err
        assert "Traceback" not in err
        left = [p for p in started if _alive(p)]
        assert not left, f"node processes left running after SIGTERM: {left}"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        LocalCluster(directory).kill_everything()
