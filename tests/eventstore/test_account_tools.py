"""`--account`: `safenet notebook`, `safenet es` and the UI act as the app `safenet-tools` of
the account logged in with `safenet account login` — authorised on first use, its key kept
in the account, so the same notebooks and databases on every machine the user logs in on,
and none of the tool's own key's."""

from __future__ import annotations

import json

import trio
from click.testing import CliRunner

from client.cli_md import account
from eventstore.cli import es
from eventstore.cli_kit import TOOLS_APP
from eventstore.notebook.cli import notebook
from eventstore.ui.app import open_context


def test_the_notebook_and_es_act_for_the_account_logged_in(tmp_path, monkeypatch):
    mock = str(tmp_path / "net.mock")
    laptop = {"SAFENET_SESSION": str(tmp_path / "laptop.session"), "SAFENET_KDF": "fast", "SAFENET_APP": None,
              "SAFENET_CLIENT_KEY": str(tmp_path / "laptop.key")}
    desktop = {**laptop, "SAFENET_SESSION": str(tmp_path / "desktop.session"),
               "SAFENET_CLIENT_KEY": str(tmp_path / "desktop.key")}
    runner = CliRunner()

    def run(group, env, *args: str) -> tuple[int, str]:
        result = runner.invoke(group, [*args, "--mock", mock], env=env)
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    code, out = run(notebook, laptop, "list", "--account")
    assert code == 1 and "not logged in" in out and len(out.strip().splitlines()) == 1
    assert run(account, laptop, "create", "--locator", "ann", "--password", "pw")[0] == 0
    assert run(notebook, laptop, "new", "ideas", "--account")[0] == 0
    assert run(notebook, laptop, "add", "ideas", "write the docs", "--account")[0] == 0
    code, out = run(account, laptop, "apps", "--json")
    assert [a["app_id"] for a in json.loads(out)] == [TOOLS_APP]  # authorised once, on first use
    assert run(notebook, laptop, "show", "ideas")[0] == 4  # the tool's own key has no such notebook

    assert run(account, desktop, "login", "--locator", "ann", "--password", "pw")[0] == 0  # another machine
    code, out = run(notebook, desktop, "show", "ideas", "--account", "--json")
    assert code == 0 and json.loads(out)["notes"] == ["write the docs"]
    assert run(notebook, desktop, "add", "ideas", "ship it", "--account")[0] == 0
    assert json.loads(run(es, desktop, "db", "list", "--json", "--account")[1]) == ["notebooks"]
    code, out = run(es, desktop, "db", "list", "--account", "--app", str(tmp_path / "x.grant"))
    assert code == 2
    code, out = run(account, laptop, "apps", "--json")
    assert len(json.loads(out)) == 1  # the desktop found the same app

    async def in_the_ui() -> list[str]:
        monkeypatch.setenv("SAFENET_SESSION", laptop["SAFENET_SESSION"])
        monkeypatch.setenv("SAFENET_KDF", "fast")
        async with trio.open_nursery() as nursery, open_context(None, mock, nursery, as_account=True) as ui:
            db = await ui.database("notebooks")
            names = [e.data["name"] for e in await db.read_all() if e.type == "NoteBookCreated"]
            assert "your account" in ui.source
            return [*await ui.store.databases(), *names]

    assert trio.run(in_the_ui) == ["notebooks", "ideas"]
