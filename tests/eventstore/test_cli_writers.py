"""`safenet es db add-writer / remove-writer / writers / share / join` and `es whoami` on a
mock network kept in a file: two users with keys of their own, then an app's database whose
writers its account changes (through the session `safenet account login` keeps)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from client.cli_md import account
from eventstore.cli import es


def test_a_second_key_appends_while_it_is_a_writer(tmp_path, monkeypatch):
    monkeypatch.delenv("SAFENET_APP", raising=False)
    mock = str(tmp_path / "net.mock")
    runner = CliRunner()

    def run(who: str, *args: str) -> tuple[int, str]:
        result = runner.invoke(es, [*args, "--mock", mock], env={"SAFENET_CLIENT_KEY": str(tmp_path / f"{who}.key")})
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    assert run("alice", "db", "create", "shop")[0] == 0
    assert run("alice", "append", "shop", "order@1", "--type", "Placed", "--data", "1")[0] == 0
    bob = json.loads(run("bob", "whoami", "--json")[1])["key"]
    alice = json.loads(run("alice", "whoami", "--json")[1])["key"]
    share = json.loads(run("alice", "db", "share", "shop", "--json")[1])["share"]
    assert run("bob", "db", "join", share)[0] == 0
    assert json.loads(run("bob", "db", "list", "--json")[1]) == ["shop"]
    assert json.loads(run("bob", "read", "shop", "order@1", "--json")[1])[0]["data"] == 1

    code, out = run("bob", "append", "shop", "order@1", "--type", "Placed", "--data", "2")
    assert code == 3 and "not a writer" in out and len(out.strip().splitlines()) == 1
    code, out = run("bob", "append", "shop", "order@2", "--type", "Placed", "--data", "2", "--json")
    assert code == 3 and json.loads(out)["type"] == "NotAWriter"

    code, out = run("alice", "db", "add-writer", "shop", bob, "--json")
    assert code == 0, out
    change = json.loads(out)
    assert change["writer"] and change["changed"] == change["mds"] > 0 and change["share"] == share
    assert run("bob", "append", "shop", "order@1", "--type", "Placed", "--data", "2")[0] == 0
    assert run("bob", "append", "shop", "order@2", "--type", "Placed", "--data", "3")[0] == 0
    assert run("alice", "append", "shop", "order@2", "--type", "Paid", "--data", "4",
               "--expected-version", "0")[0] == 0
    writers = json.loads(run("alice", "db", "writers", "shop", "--json")[1])
    assert writers["owner"] == alice and sorted(writers["writers"]) == sorted([alice, bob])
    code, out = run("bob", "db", "add-writer", "shop", bob)
    assert code == 3 and "only that key changes its writers" in out

    assert run("alice", "db", "remove-writer", "shop", bob)[0] == 0
    code, out = run("bob", "append", "shop", "order@1", "--type", "Placed", "--data", "5")
    assert code == 3 and "not a writer" in out
    log = json.loads(run("alice", "log", "shop", "--json")[1])
    assert [e["data"] for e in log] == [1, 2, 3, 4]

    assert run("alice", "db", "add-writer", "shop", "12ab")[0] == 2
    assert run("bob", "db", "join", "nonsense")[0] == 2
    assert run("alice", "db", "add-writer", "nosuch", bob)[0] == 4


def test_an_apps_database_takes_writers_from_its_account(tmp_path, monkeypatch):
    mock = str(tmp_path / "net.mock")
    env = {"SAFENET_SESSION": str(tmp_path / "session"), "SAFENET_KDF": "fast", "SAFENET_APP": None,
           "SAFENET_CLIENT_KEY": str(tmp_path / "tool.key")}
    runner = CliRunner()

    def run(group, *args: str, **extra: str) -> tuple[int, str]:
        result = runner.invoke(group, [*args, "--mock", mock], env={**env, **extra})
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    assert run(account, "create", "--locator", "ann", "--password", "pw")[0] == 0
    grant = str(tmp_path / "shop.grant")
    assert run(account, "authorise", "shop-app", "--out", grant)[0] == 0
    assert run(es, "db", "create", "shop", "--app", grant)[0] == 0
    helper = json.loads(run(es, "whoami", "--json", SAFENET_CLIENT_KEY=str(tmp_path / "helper.key"))[1])["key"]
    code, out = run(es, "db", "add-writer", "shop", helper, "--app", grant, SAFENET_SESSION=str(tmp_path / "none"))
    assert code == 3 and "safenet account login" in out  # the app alone cannot
    assert run(es, "db", "add-writer", "shop", helper, "--app", grant)[0] == 0  # its account can
    share = json.loads(run(es, "db", "share", "shop", "--json", "--app", grant)[1])["share"]
    helper_env = {"SAFENET_CLIENT_KEY": str(tmp_path / "helper.key")}
    assert run(es, "db", "join", share, **helper_env)[0] == 0
    assert run(es, "append", "shop", "job@1", "--type", "Ran", "--data", "1", **helper_env)[0] == 0
    assert run(es, "append", "shop", "job@1", "--type", "Ran", "--data", "2", "--app", grant)[0] == 0
    log = json.loads(run(es, "log", "shop", "--json", "--app", grant)[1])
    assert [e["data"] for e in log] == [1, 2]
