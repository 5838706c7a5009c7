"""`safenet md` and `safenet account` end to end on a mock network file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from client.cli_md import account, md


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "client.key"))
    monkeypatch.setenv("SAFENET_SESSION", str(tmp_path / "session"))
    monkeypatch.setenv("SAFENET_KDF", "fast")
    monkeypatch.chdir(tmp_path)
    mock = str(tmp_path / "net.mock")
    runner = CliRunner()

    def invoke(group, *args, code=0, network=True):
        result = runner.invoke(group, [*args, "--mock", mock] if network else list(args))
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def test_md_create_write_read_and_conditional_versions(run):
    name = run(md, "create", "--anyone", "insert").strip()
    run(md, "insert", name, "k", "v1")
    run(md, "insert", name, "k", "again", code=3)  # the key exists
    assert json.loads(run(md, "update", name, "k", "v2", "--json"))["version"] == 1
    assert "wrong version" in run(md, "update", name, "k", "v3", "--version", "1", code=3)
    run(md, "delete", name, "k")
    data = json.loads(run(md, "get", name, "--json"))
    assert data["entries"]["k"] == {"value": "", "version": 2, "deleted": True}
    assert data["permissions"] == {"anyone": "insert"}
    run(md, "set-permissions", name, "anyone", "insert,-update")
    assert json.loads(run(md, "permissions", name, "--json")) == {"anyone": "insert,-update"}
    run(md, "change-owner", name, "00" * 32)
    assert "AccessDenied" in run(md, "change-owner", name, "11" * 32, code=3)  # refused (docs/cli.md)


def test_account_create_authorise_list_revoke(run):
    run(account, "create", "--locator", "alice", "--password", "pw")
    assert "not open" in run(account, "login", "--locator", "alice", "--password", "no", code=3)  # AccessDenied
    run(account, "login", "--locator", "alice", "--password", "pw")
    granted = json.loads(run(account, "authorise", "notes", "--container", "_documents:insert", "--json"))
    assert granted["containers"]["_documents"] == ["insert"]
    apps = json.loads(run(account, "apps", "--json"))
    assert [a["app_id"] for a in apps] == ["notes"]
    info = json.loads(run(account, "info", "--json"))
    assert info["apps"] == [granted["key"]] and info["done"] > 0
    run(account, "revoke", "notes")
    assert json.loads(run(account, "apps", "--json")) == []
    run(account, "logout", network=False)
    assert "not logged in" in run(account, "apps", code=1)
