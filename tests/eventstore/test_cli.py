"""`safenet es` on a mock network kept in a file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from eventstore.cli import es


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv("SAFENET_CLIENT_KEY", raising=False)
    mock = str(tmp_path / "net.mock")
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(es, [*args, "--mock", mock], catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


def test_a_session(run, tmp_path):
    assert run("db", "create", "shop") == (0, "created database shop\n")
    assert run("db", "list", "--json") == (0, '["shop"]\n')
    code, out = run("append", "shop", "order@1", "--type", "Placed", "--data", '{"sku": 7}',
                    "--expected-version", "no_stream", "--json")
    assert code == 0 and json.loads(out)["next_expected_version"] == 0
    code, out = run("append", "shop", "order@1", "--type", "Paid", "--data", "12", "--metadata", '{"by": "ann"}',
                    "--expected-version", "0")
    assert code == 0
    code, out = run("append", "shop", "order@1", "--type", "Late", "--data", "1", "--expected-version", "0")
    assert code == 3 and "actual 1" in out
    code, out = run("append", "shop", "order@1", "--type", "Late", "--data", "1", "--expected-version", "0", "--json")
    assert code == 3 and json.loads(out.strip())["actual"] == 1
    code, out = run("read", "shop", "order@1", "--json")
    events = json.loads(out)
    assert code == 0 and [(e["version"], e["type"], e["data"]) for e in events] == [(0, "Placed", {"sku": 7}),
                                                                                   (1, "Paid", 12)]
    assert set(events[1]) >= {"stream", "version", "id", "type", "data", "metadata", "timestamp", "position"}
    assert events[1]["metadata"] == {"by": "ann"}
    code, out = run("read", "shop", "order@1", "--json", "--backward", "--count", "1")
    assert [e["version"] for e in json.loads(out)] == [1]
    code, out = run("read", "shop", "order@1", "--from", "1")
    assert code == 0 and "order@1#1  Paid  12" in out
    assert run("categories", "shop") == (0, "order\n")
    assert run("streams", "shop", "order", "--json") == (0, '["order@1"]\n')
    code, out = run("tail", "shop", "--count", "2", "--json")
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["Placed", "Paid"]
    code, out = run("tail", "shop", "--stream", "order@1", "--from", "0", "--count", "1", "--json")
    assert json.loads(out)["version"] == 1
    code, out = run("log", "shop", "--json")
    assert len(json.loads(out)) == 2
    assert (tmp_path / "net.mock.client.key").exists()  # the key lives next to the mock file


def test_errors_have_exit_codes(run):
    assert run("read", "nope", "s@1")[0] == 4
    run("db", "create", "shop")
    assert run("read", "shop", "s@1")[0] == 4
    assert run("db", "create", "shop")[0] == 3  # DatabaseExists: refused (docs/cli.md)
    assert run("append", "shop", "s@1", "--type", "T", "--data", "{not json")[0] == 2
    assert run("append", "shop", "s@1", "--type", "T", "--data", "1", "--expected-version", "-7")[0] == 2
    assert run("tail", "shop", "--stream", "a@1", "--category", "a")[0] == 2


def test_private_databases_and_another_key(run, tmp_path, monkeypatch):
    assert run("db", "create", "vault", "--private")[0] == 0
    run("append", "vault", "s@1", "--type", "T", "--data", '"hush"')
    assert b"hush" not in (tmp_path / "net.mock").read_bytes()
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "other.key"))
    assert run("db", "list", "--json") == (0, "[]\n")  # another key: another app container
