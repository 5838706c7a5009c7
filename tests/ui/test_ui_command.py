"""`safenet ui` refuses what it cannot serve with one line, not a traceback."""

from __future__ import annotations

from click.testing import CliRunner

from eventstore.ui import ui


def test_no_cluster_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SAFENET_CLUSTER", raising=False)
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "client.key"))
    result = CliRunner().invoke(ui, ["--cluster", str(tmp_path / "nowhere"), "--port", "0"])
    assert result.exit_code == 4  # not found (docs/cli.md)
    assert result.output.startswith("safenet: error: no cluster at ") and "Traceback" not in result.output


def test_cluster_and_mock_together_are_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(ui, ["--cluster", str(tmp_path), "--mock", str(tmp_path / "m")])
    assert result.exit_code == 2 and "give --cluster or --mock, not both" in result.output


def test_projections_are_named_module_colon_name(tmp_path) -> None:
    result = CliRunner().invoke(ui, ["--mock", str(tmp_path / "m"), "--projections", "eventstore.cqrs:nothing"])
    assert result.exit_code == 2 and "has no attribute 'nothing'" in result.output
    result = CliRunner().invoke(ui, ["--mock", str(tmp_path / "m"), "--projections", "eventstore.cqrs:Projection"])
    assert result.exit_code == 2 and "is not a Projection" in result.output


def test_account_without_a_login_is_one_line(tmp_path) -> None:
    env = {"SAFENET_SESSION": str(tmp_path / "no-session"), "SAFENET_APP": None}
    result = CliRunner().invoke(ui, ["--mock", str(tmp_path / "m"), "--port", "0", "--account"], env=env)
    assert result.exit_code == 1 and "not logged in" in result.output and "Traceback" not in result.output
    (tmp_path / "app.grant").write_bytes(b"")
    result = CliRunner().invoke(ui, ["--mock", str(tmp_path / "m"), "--account", "--app", str(tmp_path / "app.grant")],
                                env=env)
    assert result.exit_code == 2
