"""`safenet es` verbs beyond append and read: delete, restructure, metadata, read-category,
subscribe, payloads from files and standard input, and persistent subscription groups, on a
mock network kept in a file."""

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

    def invoke(*args: str, input: bytes | None = None) -> tuple[int, str]:
        result = runner.invoke(es, [*args, "--mock", mock], input=input)
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    invoke.mock = mock  # type: ignore[attr-defined]
    assert invoke("db", "create", "shop")[0] == 0
    return invoke


def events(out: str) -> list[tuple[int, object]]:
    return [(e["version"], e["data"]) for e in json.loads(out)]


def test_payloads_from_a_file_and_from_stdin(run, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB of bytes, stored as they are
    assert run("append", "shop", "doc@1", "--type", "Blob", "--data", f"@{big}", "--bytes")[0] == 0
    (tmp_path / "doc.json").write_text('{"t": "from a file"}')
    assert run("append", "shop", "doc@1", "--type", "T", "--data", f"@{tmp_path / 'doc.json'}")[0] == 0
    code, out = run("append", "shop", "doc@1", "--type", "T", "--data", "-", "--json", input=b'{"t": "stdin"}')
    assert code == 0 and json.loads(out)["next_expected_version"] == 2
    code, out = run("read", "shop", "doc@1", "--json")
    read = json.loads(out)
    assert read[0]["data"]["base64"] and [e["data"] for e in read[1:]] == [{"t": "from a file"}, {"t": "stdin"}]
    assert run("append", "shop", "doc@1", "--type", "T", "--data", "@nope.json")[0] == 2
    assert run("append", "shop", "doc@1", "--type", "T", "--data", "-", "--metadata", "-", input=b"1")[0] == 2


def test_delete_restructure_metadata_and_category(run):
    for i in range(3):
        run("append", "shop", "doc@1", "--type", "T", "--data", json.dumps({"t": i}))
    run("append", "shop", "doc@2", "--type", "T", "--data", '{"t": "other"}')
    code, out = run("restructure", "shop", "doc@1", "1", "--data", '{"t": "one"}', "--json")
    assert code == 0 and json.loads(out)["next_expected_version"] == 3
    assert events(run("read", "shop", "doc@1", "--json")[1]) == [(0, {"t": 0}), (1, {"t": "one"}), (2, {"t": 2})]
    assert run("metadata", "set", "shop", "doc@1", "--max-count", "1")[0] == 0
    assert events(run("read", "shop", "doc@1", "--json")[1]) == [(2, {"t": 2})]
    code, out = run("metadata", "set", "shop", "doc@1", "--truncate-before", "1", "--custom", '{"o": 1}', "--json")
    assert json.loads(out)["max_count"] == 1 and json.loads(out)["truncate_before"] == 1
    code, out = run("metadata", "get", "shop", "doc@1", "--json")
    assert json.loads(out) == {"stream": "doc@1", "max_count": 1, "max_age": None, "truncate_before": 1,
                               "custom": {"o": 1}}
    assert "max_count: 1" in run("metadata", "get", "shop", "doc@1")[1]
    assert run("metadata", "set", "shop", "doc@1", "--clear")[0] == 0
    code, out = run("read-category", "shop", "doc", "--json")
    assert [(e["stream"], e["version"]) for e in json.loads(out)] == [
        ("doc@1", 0), ("doc@1", 1), ("doc@1", 2), ("doc@2", 0), ("doc@1", 3)]
    code, out = run("subscribe", "shop", "--category", "doc", "--count", "2", "--json")
    assert [json.loads(line)["version"] for line in out.splitlines()] == [0, 1]
    assert run("restructure", "shop", "doc@1", "9", "--data", "1")[0] == 2
    assert run("delete", "shop", "doc@1")[1] == "deleted doc@1\n"
    assert run("read", "shop", "doc@1")[0] == 4
    assert run("restructure", "shop", "doc@1", "2", "--data", "1")[0] == 4
    code, out = run("delete", "shop", "doc@2", "--hard", "--json")
    assert code == 0 and json.loads(out)["hard"] is True
    assert run("append", "shop", "doc@2", "--type", "T", "--data", "1")[0] == 4
    code, out = run("delete", "shop", "doc@2", "--json")
    assert code == 4 and out[-1] == "\n" and json.loads(out.strip().splitlines()[-1])["type"] == "StreamDeleted"


def test_persistent_groups(run):
    for i in range(4):
        run("append", "shop", f"order@{i % 2}", "--type", "Placed", "--data", json.dumps({"i": i}))
    assert run("persistent", "create", "shop", "$ce-order", "billing", "--from", "start", "--max-retry", "0")[0] == 0
    assert run("persistent", "create", "shop", "$ce-order", "billing")[0] == 3
    assert run("persistent", "info", "shop", "$ce-order", "nobody")[0] == 4
    assert run("persistent", "create", "shop", "$nope", "g")[0] == 2
    code, out = run("persistent", "consume", "shop", "$ce-order", "billing", "--count", "1", "--nack", "park",
                    "--reason", "bad", "--json")
    assert code == 0 and json.loads(out)["data"] == {"i": 0}
    code, out = run("persistent", "consume", "shop", "$ce-order", "billing", "--count", "3", "--json")
    assert [json.loads(line)["data"]["i"] for line in out.splitlines()] == [1, 2, 3]
    code, out = run("persistent", "parked", "shop", "$ce-order", "billing", "--json")
    assert [(p["data"], p["reason"]) for p in json.loads(out)] == [({"i": 0}, "bad")]
    code, out = run("persistent", "info", "shop", "$ce-order", "billing", "--json")
    info = json.loads(out)
    assert (info["parked"], info["in_flight"], info["acked"], info["lag"]) == (1, 0, 3, 0)
    assert "parked: 1" in run("persistent", "info", "shop", "$ce-order", "billing")[1]
    assert json.loads(run("persistent", "replay-parked", "shop", "$ce-order", "billing", "--json")[1])["replayed"] == 1
    code, out = run("persistent", "consume", "shop", "$ce-order", "billing", "--count", "1")
    assert code == 0 and '{"i": 0}' in out
    code, out = run("persistent", "list", "shop", "--json")
    assert [(g["stream"], g["group"], g["parked"]) for g in json.loads(out)] == [("$ce-order", "billing", 0)]
    assert run("persistent", "update", "shop", "$ce-order", "billing", "--message-timeout", "5")[0] == 0
    assert run("persistent", "delete", "shop", "$ce-order", "billing")[0] == 0
    assert json.loads(run("persistent", "list", "shop", "--json")[1]) == []


def test_system_projections_from_the_command_line(run):
    for i in range(4):
        run("append", "shop", f"order@{i % 2}", "--type", "Placed" if i % 3 else "Paid", "--data", json.dumps(i))
    result = CliRunner().invoke(es, ["read-category", "shop", "order", "--mock", run.mock])
    assert "scanned the log" in result.stderr
    code, out = run("projections", "run", "shop", "--once", "--json")
    assert code == 0 and json.loads(out)["links"] == 4 * 2 + 2  # $ce-, $et- each; $streams for 2 streams
    code, out = run("read", "shop", "$ce-order", "--resolve-links", "--json")
    assert [(e["stream"], e["data"]) for e in json.loads(out)] == [
        ("order@0", 0), ("order@1", 1), ("order@0", 2), ("order@1", 3)]
    assert json.loads(out)[0]["link"]["stream"] == "$ce-order"
    code, out = run("read", "shop", "$et-Paid", "--resolve-links", "--json")
    assert [e["data"] for e in json.loads(out)] == [0, 3]
    code, out = run("read", "shop", "$streams", "--json")
    assert [e["data"] for e in json.loads(out)] == ["0@order@0", "0@order@1"]
    result = CliRunner().invoke(es, ["read-category", "shop", "order", "--mock", run.mock])
    assert "links of $ce-order" in result.stderr and result.stdout.count("order@") == 4
