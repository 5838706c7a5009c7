"""The NoteBook on a real cluster: eight `safenet node run` processes on loopback, the
`safenet notebook` commands against them, and the node closest to the notebook's stream
SIGKILLed midway."""

from __future__ import annotations

import json

import pytest
import trio
from click.testing import CliRunner

from client.network import NetworkClient
from eventstore.api import EventStore
from eventstore.notebook import NoteBookApp
from eventstore.notebook.cli import notebook
from node.keys import Keypair

pytestmark = pytest.mark.cluster


def test_the_notebook_survives_a_node_killed_midway(healthy_cluster, tmp_path, monkeypatch):
    key_path = tmp_path / "client.key"
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(key_path))
    cluster = str(healthy_cluster.lc.file)
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(notebook, [*args, "--cluster", cluster], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    run("new", "trip")
    for note in ("passport", "tickets", "charger"):
        run("add", "trip", note)

    async def holder() -> int:
        """The node whose id is closest to the notebook's stream segment."""
        info = healthy_cluster.info()
        async with NetworkClient.open(info.addresses, Keypair.load_or_create(key_path),
                                      replication=info.replication) as client:
            app = await NoteBookApp.open(EventStore(client))
            target = int.from_bytes(app.db.layout.stream_segment("NoteBook@trip", 0).name, "big")
        return min(info.nodes, key=lambda n: int.from_bytes(n.name, "big") ^ target).index

    victim = trio.run(holder)
    assert healthy_cluster.lc.kill(victim)

    run("add", "trip", "sunscreen")
    assert "already holds" in run("add", "trip", "tickets").output
    shown = json.loads(run("show", "trip", "--json").output)
    assert shown["notes"] == ["passport", "tickets", "charger", "sunscreen"]
    listed = json.loads(run("list", "--json").output)
    assert {n["name"]: n["notes"] for n in listed["notebooks"]}["trip"] == 4
    demo = run("demo")
    assert "Demo passed: 9 checks ok." in demo.output
