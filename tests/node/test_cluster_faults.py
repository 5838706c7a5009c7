"""`safenet cluster fault ...` against real node processes: partitions (both ways and one
way), isolation, pause/resume by signals, loss, delay, clogged links, heal, and what
`cluster status` and `fault status` report. Each node is asked for the rules it enforces,
and the partition is checked to drop real traffic (the nodes' own counters).

One small cluster of its own (5 nodes, R = 3) for the module, so the partitions here never
disturb the shared session cluster; every test heals in a `finally`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from node.cli import main
from node.launcher import FAULTS_FILE, LocalCluster
from node.tools import open_tools

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def lc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("faults"))
    try:
        trio.run(partial(cluster.up, 5, replication=3, timeout=120.0))
        yield cluster
    finally:
        try:
            cluster.down(timeout=5.0)
        finally:
            cluster.kill_everything()


def cli(lc: LocalCluster, *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, ["cluster", *args, "--cluster", str(lc.data_dir), "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return json.loads(result.stdout if code == 0 else result.stderr.strip().splitlines()[-1])


@pytest.fixture
def healed(lc: LocalCluster) -> Iterator[LocalCluster]:
    try:
        yield lc
    finally:
        cli(lc, "fault", "heal")


def node_rules(status: dict[str, Any]) -> dict[int, tuple[list[int], list[int]]]:
    return {n["index"]: (n["blocked_out"], n["blocked_in"]) for n in status["nodes"]}


def dropped(lc: LocalCluster, index: int) -> int:
    async def ask() -> int:
        entry = lc.node(lc.load(), index)
        async with open_tools(timeout=3.0) as tools:
            status = await tools.status(entry.address, expect=entry.name)
        return int(status["transport"]["dropped_fault_out"])

    return trio.run(ask)


def test_a_partition_cuts_every_link_between_the_sides_and_heal_lifts_it(healed: LocalCluster) -> None:
    lc = healed
    before = dropped(lc, 0)
    out = cli(lc, "fault", "partition", "0,1", "2,3,4")
    assert out["applied"] == [0, 1, 2, 3, 4] and out["unanswered"] == []
    assert len(out["faults"]["cuts"]) == 2 * 2 * 3
    status = cli(lc, "fault", "status")
    assert all(n["in_force"] for n in status["nodes"])
    rules = node_rules(status)
    assert rules[0] == ([2, 3, 4], [2, 3, 4]) and rules[1] == ([2, 3, 4], [2, 3, 4])
    assert rules[3] == ([0, 1], [0, 1])
    # Real traffic is dropped: the nodes ping each other, and node 0's pings to 2-4 go nowhere.
    deadline = time.monotonic() + 20
    while dropped(lc, 0) == before:
        assert time.monotonic() < deadline, "node 0 dropped nothing in 20 s of partition"
        time.sleep(0.1)
    shown = cli(lc, "status")
    assert shown["faults"]["summary"] == ["partition 0,1 | 2,3,4"]
    assert (lc.data_dir / FAULTS_FILE).exists()

    healed_out = cli(lc, "fault", "heal")
    assert healed_out["summary"] == [] and healed_out["applied"] == [0, 1, 2, 3, 4]
    assert all(out == ([], []) for out in node_rules(cli(lc, "fault", "status")).values())
    assert cli(lc, "status")["faults"]["summary"] == []
    assert not (lc.data_dir / FAULTS_FILE).exists()


def test_one_way_partition_and_isolate(healed: LocalCluster) -> None:
    lc = healed
    cli(lc, "fault", "partition", "--one-way", "0", "1,2,3,4")
    rules = node_rules(cli(lc, "fault", "status"))
    assert rules[0] == ([1, 2, 3, 4], [])
    assert rules[2] == ([], [0])
    # A new partition replaces the old one.
    cli(lc, "fault", "isolate", "4")
    rules = node_rules(cli(lc, "fault", "status"))
    assert rules[4] == ([0, 1, 2, 3], [0, 1, 2, 3])
    assert rules[0] == ([4], [4])


def test_pause_freezes_the_process_and_resume_thaws_it(healed: LocalCluster) -> None:
    lc = healed
    assert cli(lc, "fault", "pause", "2") == {"index": 2, "paused": True}
    assert cli(lc, "fault", "pause", "2") == {"index": 2, "paused": False}  # already: not an error
    node = next(n for n in cli(lc, "status")["nodes"] if n["index"] == 2)
    assert node["alive"] and node["paused"] and not node["responding"]
    assert cli(lc, "fault", "resume", "2") == {"index": 2, "resumed": True}
    node = next(n for n in cli(lc, "status")["nodes"] if n["index"] == 2)
    assert node["responding"] and not node["paused"]
    # heal resumes paused nodes too.
    cli(lc, "fault", "pause", "3")
    cli(lc, "fault", "heal")
    node = next(n for n in cli(lc, "status")["nodes"] if n["index"] == 3)
    assert node["responding"] and not node["paused"]


def test_loss_delay_and_clog_are_in_force_on_the_nodes_named(healed: LocalCluster) -> None:
    lc = healed
    cli(lc, "fault", "loss", "5", "--nodes", "1,3")
    cli(lc, "fault", "delay", "40", "--jitter", "10")
    out = cli(lc, "fault", "clog", "0", "4", "--seconds", "2")
    assert out["faults"]["loss"] == {"1": 0.05, "3": 0.05}
    assert out["faults"]["delay"]["2"] == [0.03, 0.05]
    assert out["faults"]["clogs"] == [[0, 4, 2.0]]
    assert out["summary"] == ["link 0-4 clogged (2 s a message)", "loss 5% on nodes 1,3",
                              "delay 30-50 ms on nodes 0,1,2,3,4"]
    status = cli(lc, "fault", "status")
    assert [n["in_force"] for n in status["nodes"]] == [True] * 5
    cli(lc, "fault", "loss", "0")
    assert "loss" not in " ".join(cli(lc, "fault", "status")["summary"])


def test_bad_requests_are_one_line_errors(healed: LocalCluster) -> None:
    lc = healed
    assert "two sides" in cli(lc, "fault", "partition", "0,1", "1,2", code=2)["error"]
    assert "no node 9" in cli(lc, "fault", "isolate", "9", code=4)["error"]
    assert "node indexes" in cli(lc, "fault", "partition", "a,b", code=2)["error"]
    assert "two sides" in cli(lc, "fault", "partition", "0,1,2,3,4", code=2)["error"]
    assert "different" in cli(lc, "fault", "clog", "1", "1", code=2)["error"]
    assert cli(lc, "fault", "status")["summary"] == []  # nothing half-applied
