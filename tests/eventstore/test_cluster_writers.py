"""A database's writers on a real 8-node cluster of processes: a key of its own (another
user, in the network's unregistered mode) is refused, is added and appends — concurrently
with the owner, the log and every stream staying consistent, its new MDs handed to the owner
— and is refused again once removed; and the same from the command line."""

from __future__ import annotations

import json
import os

import pytest
import trio
from click.testing import CliRunner
from es_testing import check_consistent, ev

from client.network import NetworkClient
from eventstore.api import EventStore
from eventstore.cli import es
from eventstore.errors import NotAWriter
from eventstore.writers import database_mds
from node.data import Action
from node.keys import Keypair
from node.rules import is_action_allowed

pytestmark = pytest.mark.cluster


async def test_a_writer_added_and_removed_on_the_cluster(healthy_cluster):
    addresses = healthy_cluster.addresses()
    alice, bob = Keypair(), Keypair()
    name = f"wr{os.getpid()}"
    async with NetworkClient.open(addresses, alice) as a_client, NetworkClient.open(addresses, bob) as b_client:
        a = await EventStore(a_client).create_database(name, stream_segment_size=4, log_segment_size=8)
        await a.append("cart@0", [ev(by="alice")])
        b = await EventStore(b_client).add_database(a.info)
        with pytest.raises(NotAWriter):
            await b.append("cart@0", [ev(by="bob")])
        change = await a.add_writer(bytes(bob.public))
        assert change.changed == change.mds > 0 and not change.held

        async def writer(db, who: str) -> None:
            for i in range(6):
                await db.append(f"cart@{i % 3}", [ev(by=who, i=i)])
                await db.append(f"{who}@{i}", [ev(by=who, i=i)])  # new streams: new MDs

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, a, "alice")
            nursery.start_soon(writer, b, "bob")
        log = await check_consistent(a)
        assert len(log) == 1 + 2 * 12
        for address in await database_mds(a):
            shell = await a_client.get_mdata_shell(address)
            assert set(shell.owners) == {alice.public}
            assert is_action_allowed(shell, bob.public, Action.INSERT)

        await a.remove_writer(bytes(bob.public))
        for stream in ("cart@0", "bob@0", "bob@99"):
            with pytest.raises(NotAWriter):
                await b.append(stream, [ev(by="bob")])
        await a.append("cart@0", [ev(by="alice")])
        assert len(await b.read_stream("cart@0")) == 1 + 2 * 2 + 1


def test_add_writer_and_remove_writer_from_the_command_line(healthy_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("SAFENET_APP", raising=False)
    runner = CliRunner()
    where = ["--cluster", str(healthy_cluster.lc.data_dir)]

    def run(who: str, *args: str) -> tuple[int, str]:
        result = runner.invoke(es, [*args, *where], env={"SAFENET_CLIENT_KEY": str(tmp_path / f"{who}.key")})
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    db = f"cw{os.getpid()}"
    assert run("alice", "db", "create", db)[0] == 0
    bob = json.loads(run("bob", "whoami", "--json")[1])["key"]
    assert run("bob", "db", "join", json.loads(run("alice", "db", "share", db, "--json")[1])["share"])[0] == 0
    code, out = run("bob", "append", db, "job@1", "--type", "Ran", "--data", "1")
    assert code == 3 and "not a writer" in out
    assert run("alice", "db", "add-writer", db, bob)[0] == 0
    assert run("bob", "append", db, "job@1", "--type", "Ran", "--data", "1")[0] == 0
    assert run("alice", "db", "remove-writer", db, bob)[0] == 0
    code, out = run("bob", "append", db, "job@2", "--type", "Ran", "--data", "2")
    assert code == 3 and "not a writer" in out
    assert [e["data"] for e in json.loads(run("alice", "log", db, "--json")[1])] == [1]
