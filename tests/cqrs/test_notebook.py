"""The NoteBook example end to end: its rules, the app on the mock network, the
`safenet notebook` commands (through click, on a mock file), and the app on eight real
node cores with the node holding the notebook crashed midway."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from client.localnet import LocalNetwork
from eventstore.api import EventStore
from eventstore.cqrs import projection_history, read_projection
from eventstore.notebook import (
    InvalidName,
    InvalidNote,
    NoSuchNoteBook,
    NoteBookApp,
    NoteBookExists,
)
from eventstore.notebook.cli import notebook
from node.keys import Keypair

KEYS = Keypair(b"\x0c" * 32)


# ----------------------------------------------------------------------------- the rules


async def test_the_original_rules(db, autojump_clock):
    app = NoteBookApp(db)
    await app.new("groceries")
    with pytest.raises(NoteBookExists):
        await app.new("groceries")
    for bad in ("", "   ", "x" * 100, "y" * 250):
        with pytest.raises(InvalidNote):
            await app.add("groceries", bad)
    assert (await app.add("groceries", "x" * 99)).changed  # shorter than 100: fine
    assert (await app.add("groceries", "milk")).changed
    duplicate = await app.add("groceries", "milk")
    assert not duplicate.changed and not duplicate.duplicate  # ignored, not an error
    with pytest.raises(NoSuchNoteBook):
        await app.add("nowhere", "milk")
    with pytest.raises(NoSuchNoteBook):
        await app.show("nowhere")
    for bad_name in ("", "  ", "n" * 65, "tab\there"):
        with pytest.raises(InvalidName):
            await app.new(bad_name)
    notebook = await app.show("groceries")
    assert (notebook.notes, notebook.version) == (["x" * 99, "milk"], 2)


async def test_the_index_is_read_from_the_network_by_another_machine(make_store, autojump_clock):
    app = await NoteBookApp.open(make_store(), snapshot_every=3)
    await app.new("groceries")
    await app.new("ideas")
    for note in ("milk", "eggs", "bread", "tea"):
        await app.add("groceries", note)
    await app.add("ideas", "a saga")
    await app.refresh()
    elsewhere = await NoteBookApp.open(make_store())  # nothing shared in memory
    index = await elsewhere.index()
    assert index is not None
    assert {name: e["notes"] for name, e in index.state["notebooks"].items()} == {"groceries": 4, "ideas": 1}
    assert index.state["notebooks"]["groceries"]["last"] == "tea"
    assert (await elsewhere.show("groceries")).notes == ["milk", "eggs", "bread", "tea"]  # via a snapshot
    assert len(await elsewhere.index_history()) == 1
    await app.add("ideas", "a projection")
    assert (await elsewhere.refresh()).state["notebooks"]["ideas"]["notes"] == 2
    assert [h.events for h in await elsewhere.index_history()] == [7, 8]


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "client.key"))
    mock = str(tmp_path / "net.mock")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(notebook, [*args, "--mock", mock], catch_exceptions=False)

    return run


def test_the_commands_on_a_mock_file(cli):
    result = cli("new", "groceries")
    assert (result.exit_code, result.output) == (0, "created notebook groceries\n")
    assert cli("add", "groceries", "milk").output == "added to groceries (note 1)\n"
    assert cli("add", "groceries", "eggs").exit_code == 0
    again = cli("add", "groceries", "milk")
    assert (again.exit_code, again.output) == (0, "groceries already holds that note; ignored\n")
    empty = cli("add", "groceries", "")
    assert empty.exit_code == 3 and "must not be empty" in empty.output
    long = cli("add", "groceries", "z" * 100)
    assert long.exit_code == 3 and "shorter than 100" in long.output
    missing = cli("add", "nowhere", "milk")
    assert missing.exit_code == 4 and "no notebook 'nowhere'" in missing.output
    assert cli("new", "groceries").exit_code == 3
    shown = cli("show", "groceries")
    assert shown.output.splitlines() == ["groceries: 2 notes (version 2)", "    1. milk", "    2. eggs"]
    listed = cli("list")
    assert listed.exit_code == 0
    assert listed.output.splitlines()[:2] == ["NOTEBOOK   NOTES  LAST NOTE", "groceries      2  eggs"]
    as_json = json.loads(cli("list", "--json").output)
    assert as_json["notebooks"] == [{"name": "groceries", "notes": 2, "last": "eggs",
                                     "created": as_json["notebooks"][0]["created"]}]
    assert as_json["saved"]["events"] == 3
    history = cli("list", "--history").output.splitlines()
    assert len(history) == 3 and "1 notebook, 2 notes" in history[-1]  # new, add, add: a save each
    assert json.loads(cli("show", "groceries", "--json").output)["notes"] == ["milk", "eggs"]
    agent = cli("agent", "--rebuild")
    assert agent.exit_code == 0 and "generation 1" in agent.output


def test_the_demo_passes_and_says_so(cli):
    result = cli("demo", "--name", "first")
    assert result.exit_code == 0, result.output
    assert "Demo passed: 9 checks ok." in result.output
    assert "FAILED" not in result.output
    again = cli("demo", "--json")  # a second run on the same network: a new notebook
    assert again.exit_code == 0
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["passed"] == 9 and summary["failed"] == []
    assert "first" in cli("list").output and summary["notebook"] in cli("list").output


def test_the_demo_fails_loudly_when_a_step_does_not_hold(cli):
    assert cli("new", "taken").exit_code == 0
    result = cli("demo", "--name", "taken")
    assert result.exit_code == 3 and "already exists" in result.output


def test_no_cluster_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAFENET_CLUSTER", raising=False)
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "client.key"))
    result = CliRunner().invoke(notebook, ["list"])
    assert result.exit_code == 4 and "safenet cluster up" in result.output  # not found (docs/cli.md)


# ----------------------------------------------------------------------------- real node cores


async def test_on_real_node_cores_with_the_notebooks_node_crashed_midway(autojump_clock):
    async with LocalNetwork.start(nodes=8, seed=9) as net:
        async with net.client(KEYS) as client:
            app = await NoteBookApp.open(EventStore(client, pending_grace=1.0, poll_interval=0.1), snapshot_every=4)
            await app.new("groceries")
            for note in ("milk", "eggs", "bread"):
                assert (await app.add("groceries", note)).changed
            await app.refresh()
            # Crash the node closest to the notebook's stream: it holds it, and leads its group.
            segment = app.db.layout.stream_segment("NoteBook@groceries", 0)
            victim = net.close_group(segment.name)[0]
            await net.crash(victim)
            for note in ("tea", "jam", "milk"):
                await app.add("groceries", note)
            await app.new("ideas")
            await app.add("ideas", "crash-proof notes")
            index = await app.refresh()
            assert (await app.show("groceries")).notes == ["milk", "eggs", "bread", "tea", "jam"]
        # Another machine, while the node is still down, then after it comes back.
        for restart in (False, True):
            if restart:
                await net.restart(victim)
            async with net.client(KEYS) as other:
                elsewhere = await NoteBookApp.open(EventStore(other, pending_grace=1.0, poll_interval=0.1))
                current = await read_projection(elsewhere.db, "notebooks")
                assert current is not None and current.state == index.state
                assert {n: e["notes"] for n, e in current.state["notebooks"].items()} == {"groceries": 5, "ideas": 1}
                assert (await elsewhere.show("groceries")).notes == ["milk", "eggs", "bread", "tea", "jam"]
                assert len(await projection_history(elsewhere.db, "notebooks")) == 2
