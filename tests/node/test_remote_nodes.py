"""Nodes on "other machines": `node run --listen --advertise` and `cluster add-remote`.

A node started by hand (as on a second machine) listens on one address and advertises
another name for it (`localhost:P` for `127.0.0.1:P`, as a LAN name would be for a LAN
address), joins the launcher's cluster through `--bootstrap`, and is recorded in
cluster.json as remote. The cluster's nodes must reach it at the advertised address (their
dial-back checks it), a client whose only contact is the remote node must store and read
through it, the launcher must refuse to signal it, and `cluster down` must leave it running.
All on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from client.network import NetworkClient
from node.cli import main
from node.keys import Keypair
from node.launcher import LocalCluster, probe_port
from node.tools import open_tools

pytestmark = pytest.mark.cluster


def cli(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return json.loads(result.stdout if code == 0 else result.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster_and_remote(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, str, subprocess.Popen]]:
    tmp = tmp_path_factory.mktemp("remote")
    lc = LocalCluster(tmp / "cluster")
    remote = None
    try:
        trio.run(partial(lc.up, 3, replication=3, timeout=120.0))
        info = lc.load()
        port = probe_port({e.port for e in info.nodes})
        advertised = f"localhost:{port}"
        with open(tmp / "remote.err", "wb") as err:
            remote = subprocess.Popen(
                [sys.executable, "-m", "node.cli", "node", "run", "--data-dir", str(tmp / "remote"),
                 "--listen", f"127.0.0.1:{port}", "--advertise", advertised,
                 "--bootstrap", info.nodes[0].address, "--replication", "3", "--admin-key", info.admin],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        yield lc, advertised, remote
    finally:
        if remote is not None:
            remote.kill()
            remote.wait(10)
        try:
            lc.down(timeout=5.0)
        finally:
            lc.kill_everything()


async def wait_for(check: Any, timeout: float = 60.0) -> None:
    deadline = trio.current_time() + timeout
    while not await check():
        assert trio.current_time() < deadline, "not reached in time"
        await trio.sleep(0.25)


def test_a_node_on_another_host_joins_is_recorded_and_serves_clients(cluster_and_remote) -> None:
    lc, advertised, remote = cluster_and_remote
    where = str(lc.data_dir)

    async def answers() -> bool:
        async with open_tools(timeout=2.0) as tools:
            status = await tools.try_status(advertised)
        return status is not None and status.get("ready") is True

    trio.run(wait_for, answers)
    added = cli("cluster", "add-remote", advertised, "--cluster", where)["added"]
    assert added["index"] == 3 and added["remote"] is True and added["address"] == advertised
    assert "already" in cli("cluster", "add-remote", advertised, "--cluster", where, code=2)["error"]

    status = cli("cluster", "status", "--cluster", where)
    node = status["nodes"][3]
    assert node["remote"] and node["alive"] and node["responding"] and node["pid"] is None

    async def everyone_knows_everyone() -> bool:
        async with open_tools(timeout=2.0) as tools:
            statuses = await tools.statuses([(e.address, e.name) for e in lc.load().nodes])
        return all(s is not None and s["contacts"] == 3 for s in statuses)

    trio.run(wait_for, everyone_knows_everyone)

    async def through_the_remote() -> None:
        # Its only contact is the remote node, at the address it advertised.
        async with NetworkClient.open([advertised], Keypair(), replication=3) as client:
            name = await client.put_idata(b"stored through a node on another host")
            assert await client.get_idata(name) == b"stored through a node on another host"

    trio.run(through_the_remote)

    # Never signalled from here.
    assert "another machine" in cli("cluster", "kill", "3", "--cluster", where, code=2)["error"]
    assert "another machine" in cli("cluster", "fault", "pause", "3", "--cluster", where, code=2)["error"]
    stopped = cli("cluster", "down", "--cluster", where)["stopped"]
    assert sorted(stopped) == [0, 1, 2]
    time.sleep(0.2)
    assert remote.poll() is None, "cluster down stopped a node it does not run"


def test_listen_and_advertise_are_checked_before_anything_starts(tmp_path) -> None:
    def refused(*args: str) -> str:
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert not (tmp_path / "n").exists()  # nothing was started or made
        return result.stderr

    d = str(tmp_path / "n")
    assert "needs --advertise" in refused("node", "run", "--data-dir", d, "--listen", "0.0.0.0:7000")
    assert "wildcard" in refused("node", "run", "--data-dir", d, "--listen", "0.0.0.0:7000",
                                 "--advertise", "0.0.0.0:7000")
    assert "host:port" in refused("node", "run", "--data-dir", d, "--listen", "nowhere")
    assert "fixed port" in refused("node", "run", "--data-dir", d, "--advertise", "localhost:7000")
    assert "not an address of this machine" in cli("cluster", "up", "--cluster", d, "--host", "192.0.2.1",
                                                    code=2)["error"]
