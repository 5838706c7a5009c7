"""`safenet es --app GRANT`: the event store acts as an app the account authorised (the file
`safenet account authorise APP --out GRANT` writes), its databases in that app's container;
once the account revokes the app, its appends are refused."""

from __future__ import annotations

import json

import trio
from click.testing import CliRunner

from client.authenticator import Authenticator, KdfCost
from client.connect import connect
from eventstore.cli import es


def test_an_authorised_app_and_its_revocation(tmp_path, monkeypatch):
    monkeypatch.delenv("SAFENET_CLIENT_KEY", raising=False)
    monkeypatch.delenv("SAFENET_APP", raising=False)
    mock = str(tmp_path / "net.mock")

    def factory(keys=None, owner=None):
        return connect(None, mock, keys, owner)

    async def authorise() -> Authenticator:
        auth = await Authenticator.create_account(factory, "ann", "pw", cost=KdfCost.fast())
        grant = await auth.authorise("shop-app", {})
        (tmp_path / "shop.grant").write_bytes(grant.to_bytes())
        return auth

    auth = trio.run(authorise)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(es, [*args, "--mock", mock])
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    grant = ["--app", str(tmp_path / "shop.grant")]
    assert run("db", "create", "shop", *grant)[0] == 0
    assert run("append", "shop", "order@1", "--type", "Placed", "--data", "1", *grant)[0] == 0
    assert json.loads(run("db", "list", "--json", *grant)[1]) == ["shop"]
    assert json.loads(run("db", "list", "--json")[1]) == []  # the tool's own key: another container
    monkeypatch.setenv("SAFENET_APP", str(tmp_path / "shop.grant"))
    assert json.loads(run("read", "shop", "order@1", "--json")[1])[0]["data"] == 1
    trio.run(auth.revoke, "shop-app")
    code, out = run("append", "shop", "order@1", "--type", "Placed", "--data", "2")
    assert code == 3 and "not authorised" in out and len(out.strip().splitlines()) == 1
    assert json.loads(run("read", "shop", "order@1", "--json")[1])[0]["data"] == 1  # reads stay open
    (tmp_path / "bad.grant").write_bytes(b"\x00not a grant")
    code, out = run("db", "list", "--app", str(tmp_path / "bad.grant"))
    assert code == 2 and "not an app grant" in out
