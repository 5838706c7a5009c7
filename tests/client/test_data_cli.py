"""The command line end to end, as a user runs it: `safenet cluster ...` and `safenet data ...`
as separate processes against a small real cluster (4 nodes, R = 3) in a temporary dir.

The cluster is started by `safenet cluster up` itself, once for the module; the teardown
stops it (and SIGKILLs anything left) however the tests went.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from node.cli import main
from node.cluster import LocalCluster

pytestmark = pytest.mark.cluster

HEX64 = re.compile(r"^[0-9a-f]{64}$")
NODES, R = 4, 3
COMMAND_TIMEOUT = 180.0


def safenet_command() -> list[str]:
    script = Path(sys.executable).with_name("safenet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "node.cli"]


def safenet(*args: str, check: bool = True, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `safenet ARGS` (text output); with `check`, fail on a non-zero exit."""
    environment = {k: v for k, v in os.environ.items() if k != "SAFENET_CLUSTER"}
    environment.update(env or {})
    result = subprocess.run([*safenet_command(), *args], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, env=environment, cwd=cwd)
    if check and result.returncode != 0:
        pytest.fail(f"safenet {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def brute_force_group(name: str, ids: list[str], count: int) -> list[str]:
    t = int(name, 16)
    return sorted(ids, key=lambda i: int(i, 16) ^ t)[:count]


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("cli") / "net"
    try:
        result = safenet("cluster", "up", "--nodes", str(NODES), "--replication", str(R),
                         "--data-dir", str(data_dir))
        assert "started in" in result.stdout
        yield data_dir
    finally:
        if (data_dir / "cluster.json").exists():
            safenet("cluster", "down", "--data-dir", str(data_dir), check=False)
            LocalCluster(data_dir).kill_everything()


def status_json(cluster_dir: Path) -> dict:
    return json.loads(safenet("cluster", "status", "--json", "--data-dir", str(cluster_dir)).stdout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A user error: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 or lines[-1].startswith("Error:"), result.stderr
    return lines[-1]


# ------------------------------------------------------------------------------ the tests


def test_help_is_there_for_every_command() -> None:
    runner = CliRunner()  # in-process: --help needs no cluster, and this saves 15 start-ups

    def help_of(*args: str) -> str:
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
        return result.output

    assert "cluster" in help_of() and "data" in help_of()
    for sub in ("up", "status", "down", "kill", "stop", "start", "add", "logs", "locate"):
        assert "--data-dir" in help_of("cluster", sub)
    for sub in ("put", "get", "cat"):
        out = help_of("data", sub)
        assert "--cluster" in out and "--json" in out


def test_up_writes_the_cluster_file_and_status_json_keeps_its_contract(cluster_dir: Path) -> None:
    info = json.loads((cluster_dir / "cluster.json").read_text())
    assert info["replication"] == R and HEX64.match(info["admin"])
    assert [n["index"] for n in info["nodes"]] == list(range(NODES))
    status = status_json(cluster_dir)
    assert len(status["nodes"]) == NODES
    for i, node in enumerate(status["nodes"]):
        assert node["index"] == i and HEX64.match(node["id"])
        assert re.match(r"^127\.0\.0\.1:\d+$", node["address"])
        assert isinstance(node["pid"], int) and node["alive"] is True
        assert node["ready"] is True and node["contacts"] == NODES - 1
        for key in ("chunks", "mds", "bytes", "uptime", "msgs_in", "msgs_out"):
            assert key in node
    # The text table has a row per node.
    table = safenet("cluster", "status", "--data-dir", str(cluster_dir)).stdout.splitlines()
    assert len(table) == NODES + 1


def test_a_3_mib_file_round_trips_and_locate_finds_its_data_map(cluster_dir: Path, tmp_path: Path) -> None:
    original = tmp_path / "three.bin"
    original.write_bytes(os.urandom(3 * 1024 * 1024))
    cluster_file = str(cluster_dir / "cluster.json")
    put = safenet("data", "put", str(original), "--cluster", cluster_file)
    name = put.stdout.strip().splitlines()[-1]
    assert HEX64.match(name), put.stdout

    copy = tmp_path / "copy.bin"
    got = safenet("data", "get", name, "-o", str(copy), "--cluster", str(cluster_dir), "--json")
    assert json.loads(got.stdout)["size"] == original.stat().st_size
    assert copy.read_bytes() == original.read_bytes()
    assert not (tmp_path / "copy.bin.part").exists()

    located = json.loads(safenet("cluster", "locate", name, "--json", "--data-dir", str(cluster_dir)).stdout)
    ids = [n["id"] for n in status_json(cluster_dir)["nodes"] if n["alive"]]
    assert located["name"] == name
    assert located["close_group"] == brute_force_group(name, ids, R)
    assert sorted(located["holders"]) == sorted(located["close_group"])


def test_clients_find_the_cluster_by_option_variable_or_working_dir(cluster_dir: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("hello, SAFE\n")
    cluster_file = str(cluster_dir / "cluster.json")
    name = safenet("data", "put", str(small), "--cluster", cluster_file).stdout.strip().splitlines()[-1]
    expected = {"name": name, "size": 12, "encoding": "utf-8", "content": "hello, SAFE\n"}
    assert safenet("data", "cat", name, env={"SAFENET_CLUSTER": cluster_file}).stdout == "hello, SAFE\n"
    workdir = tmp_path / "work"
    shutil.copytree(cluster_dir, workdir / ".safenet", ignore=shutil.ignore_patterns("node-*"))
    assert json.loads(safenet("data", "cat", name, "--json", cwd=workdir).stdout) == expected
    # The option wins over the variable.
    bogus = {"SAFENET_CLUSTER": str(tmp_path / "nowhere.json")}
    assert safenet("data", "cat", name, "--cluster", cluster_file, env=bogus).stdout == "hello, SAFE\n"


def test_a_killed_node_does_not_lose_the_file_and_start_brings_it_back(cluster_dir: Path, tmp_path: Path) -> None:
    original = tmp_path / "f.bin"
    original.write_bytes(os.urandom(200_000))
    name = safenet("data", "put", str(original), "--cluster", str(cluster_dir)).stdout.split()[-1]
    located = json.loads(safenet("cluster", "locate", name, "--json", "--data-dir", str(cluster_dir)).stdout)
    nodes = status_json(cluster_dir)["nodes"]
    victim = next(n for n in nodes if n["id"] == located["close_group"][0])

    assert "killed node" in safenet("cluster", "kill", str(victim["index"]), "--data-dir", str(cluster_dir)).stdout
    after = status_json(cluster_dir)["nodes"][victim["index"]]
    assert after["alive"] is False and after["pid"] is None
    assert not psutil.pid_exists(victim["pid"]) or psutil.Process(victim["pid"]).status() == psutil.STATUS_ZOMBIE

    copy = tmp_path / "copy.bin"
    safenet("data", "get", name, "-o", str(copy), "--cluster", str(cluster_dir))
    assert copy.read_bytes() == original.read_bytes()

    safenet("cluster", "start", str(victim["index"]), "--data-dir", str(cluster_dir))
    back = status_json(cluster_dir)["nodes"][victim["index"]]
    assert back["alive"] and back["ready"] and back["address"] == victim["address"]
    assert back["id"] == victim["id"] and back["pid"] != victim["pid"]


def test_stop_add_and_logs(cluster_dir: Path) -> None:
    d = ["--data-dir", str(cluster_dir)]
    assert "stopped node 1" in safenet("cluster", "stop", "1", *d).stdout
    assert status_json(cluster_dir)["nodes"][1]["alive"] is False
    assert "not running" in safenet("cluster", "stop", "1", *d).stderr
    restarted = safenet("cluster", "up", *d)  # `up` on an existing cluster restarts the stopped
    assert "restarted" in restarted.stdout
    assert status_json(cluster_dir)["nodes"][1]["alive"] is True

    added = safenet("cluster", "add", "--nodes", "1", *d)
    assert f"added node {NODES}" in added.stdout
    status = status_json(cluster_dir)
    assert len(status["nodes"]) == NODES + 1
    assert all(n["alive"] and n["contacts"] == NODES for n in status["nodes"])

    log = safenet("cluster", "logs", str(NODES), *d).stdout.splitlines()
    events = [json.loads(line) for line in log]
    assert events[0]["event"] == "started" and all(e["node"] == status["nodes"][NODES]["id"] for e in events)
    # Node 1 was stopped and started again, so its log has more than two lines whatever the timing.
    tail = safenet("cluster", "logs", "1", "-n", "2", *d).stdout.splitlines()
    whole = safenet("cluster", "logs", "1", *d).stdout.splitlines()
    events = [json.loads(line)["event"] for line in whole]
    assert events.count("started") >= 2 and "stopped" in events  # other tests may restart it too
    assert len(tail) == 2 and whole.index(tail[0]) + 1 == whole.index(tail[1]) >= 2


def test_cluster_commands_report_json_and_take_cluster_for_data_dir(cluster_dir: Path) -> None:
    d = ["--cluster", str(cluster_dir / "cluster.json")]  # the file or its dir, like every client

    def run(*args: str) -> dict:
        return json.loads(safenet("cluster", *args, *d, "--json").stdout)

    assert run("kill", "2") == {"index": 2, "killed": True}
    assert run("kill", "2") == {"index": 2, "killed": False}  # already down: said, not an error
    assert run("start", "2") == {"index": 2, "started": True}
    assert run("stop", "2") == {"index": 2, "stopped": True}
    up = run("up")
    assert up["action"] == "restarted" and up["cluster"] == str(cluster_dir / "cluster.json")
    assert all(n["alive"] and n["ready"] for n in up["nodes"])
    added = run("add", "--nodes", "1")["added"]
    assert len(added) == 1 and HEX64.match(added[0]["id"]) and added[0]["index"] == len(up["nodes"])
    assert len(run("status")["nodes"]) == len(up["nodes"]) + 1


def test_bad_input_gets_one_line_and_a_non_zero_exit(cluster_dir: Path, tmp_path: Path) -> None:
    d = ["--data-dir", str(cluster_dir)]
    assert "no node 42" in one_line_error(safenet("cluster", "kill", "42", *d, check=False))
    assert "no node 42" in one_line_error(safenet("cluster", "logs", "42", *d, check=False))
    assert "64 hex" in one_line_error(safenet("cluster", "locate", "xyz", *d, check=False))
    none = str(tmp_path / "none")
    assert "no cluster" in one_line_error(safenet("cluster", "status", "--data-dir", none, check=False))
    assert "no cluster" in one_line_error(safenet("data", "get", "ab" * 32, "--cluster", none, check=False))
    assert "64 hex" in one_line_error(safenet("data", "cat", "nothex", "--cluster", str(cluster_dir), check=False))
    missing = one_line_error(
        safenet("data", "get", "ab" * 32, "-o", str(tmp_path / "x"), "--cluster", str(cluster_dir), check=False)
    )
    assert "no such data" in missing
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_down_stops_every_process(cluster_dir: Path) -> None:
    pids = [n["pid"] for n in status_json(cluster_dir)["nodes"] if n["alive"]]
    assert pids
    result = safenet("cluster", "down", "--data-dir", str(cluster_dir))
    assert f"stopped {len(pids)} node(s)" in result.stdout
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(n["alive"] for n in status_json(cluster_dir)["nodes"])
    # The data stays: `up` brings the same nodes back.
    safenet("cluster", "up", "--data-dir", str(cluster_dir))
    assert all(n["alive"] for n in status_json(cluster_dir)["nodes"])
