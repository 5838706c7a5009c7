"""Every `safenet` command, fed broken input, ends in one line and an exit code from the table.

The commands are found by walking the click tree from the root, so a command added later is
covered without touching this file. Each gets the broken inputs that apply to it: an unknown
option, a word where a number goes, bad arguments (names, indexes, files, scenarios), and a
cluster that is missing, not UTF-8, not JSON or lists no nodes; what every one must print is
`safenet: error: ...` on stderr (a JSON object with --json), never a traceback, and exit with
the code docs/cli.md gives. Most run in-process (click's CliRunner); a few run `safenet` as a
real process, and one lets a node die during `cluster up`.
"""

from __future__ import annotations

import builtins
import inspect
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from node import exitcodes
from node.cli import main

HEX = "ab" * 32
PREFIX = "safenet: error: "
ROOT = Path(__file__).resolve().parents[1]


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group, info_name="safenet")
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"`safenet {' '.join((*path, name))}` failed to load"
        if isinstance(command, click.Group):
            found += _walk(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = _walk(main)
IDS = [" ".join(path) for path, _ in COMMANDS]

# Arguments by name: a value that gets past the command's own checks, and a broken one.
GOOD = {"name": HEX, "new_owner": HEX, "index": "0", "database": "shop", "stream": "s@1",
        "category": "c", "key": "k", "value": "v", "app_id": "app", "scenario": "calm", "text": "t",
        "user": "anyone", "perms": "insert", "version": "0", "group": "g", "a": "0", "b": "1", "percent": "10",
        "ms": "10", "groups": "0", "address": "127.0.0.1:1"}
BAD = {"name": "zz", "new_owner": "not-a-key", "index": "-1", "scenario": "no-such-scenario",
       "user": "nobody", "perms": "fly", "file": "no-such-file"}
HEX_NAMES = {"data", "md", "cluster"}  # the groups whose NAME is 64 hex (elsewhere it is free text)
# Options a command requires, or needs to get as far as the cluster, by their parameter name.
GOOD_OPTIONS = {"event_type": ["--type", "T"], "data": ["--data", "1"], "output": ["--output", "out.bin"],
                "locator": ["--locator", "alice"], "password": ["--password", "pw"]}


def _bad(path: tuple[str, ...], param: click.Parameter) -> bool:
    return param.name in BAD and (param.name not in ("name", "new_owner") or path[0] in HEX_NAMES)


def _options(command: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def _arguments(command: click.Command, tmp: Path, broken: bool, path: tuple[str, ...] = ("",)) -> list[str]:
    values = []
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.name is not None
            if broken and _bad(path, param):
                values.append(BAD[param.name])
            elif param.name == "file":
                existing = tmp / "input.txt"
                existing.write_text("hello")
                values.append(str(existing))
            else:
                values.append(GOOD.get(param.name, "x"))
    return values


def _prompts(command: click.Command) -> list[str]:
    """Options a command requires, would prompt for (the runner has no terminal) or needs
    to get as far as the network."""
    return [value for p in command.params if isinstance(p, click.Option) and p.name in GOOD_OPTIONS
            for value in GOOD_OPTIONS[p.name]]


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"SAFENET_CLUSTER": None, "SAFENET_DEBUG": None, "SAFENET_CLIENT_KEY": str(tmp_path / "client.key"),
           "SAFENET_SESSION": str(tmp_path / "session"), "SAFENET_KDF": "fast", "SAFENET_PASSWORD": None}

    def run(args: list[str]) -> Result:
        return runner.invoke(main, args, env=env)

    return run


def assert_one_line_error(result: Result, code: int, *, as_json: bool = False) -> str:
    """The error contract: the exit code, the one line (or JSON object), no traceback."""
    where = f"exit {result.exit_code}, stdout {result.stdout!r}, stderr {result.stderr!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{where}: {result.exception!r} escaped")
    assert "Traceback" not in result.output, where
    assert result.exit_code == code, where
    lines = result.stderr.strip().splitlines()
    assert lines, where
    if as_json:
        error = json.loads(lines[-1])
        assert error["exit"] == code and error["error"], where
        return str(error["error"])
    errors = [line for line in lines if line.startswith(PREFIX)]
    assert len(errors) == 1 and lines[-1] == errors[0], where
    assert not any(line.startswith(("Error:", "Usage:")) for line in lines), where
    return errors[0]


# ----------------------------------------------------------------------------- every command


def test_the_walk_finds_every_group() -> None:
    groups = {path[0] for path, _ in COMMANDS}
    assert groups >= {"cluster", "node", "data", "md", "account", "es", "ui", "notebook", "chaos", "sim"}
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_an_unknown_option_is_a_usage_error(invoke, tmp_path, path, command) -> None:
    result = invoke([*path, *_arguments(command, tmp_path, broken=False), "--no-such-option"])
    assert "--no-such-option" in assert_one_line_error(result, exitcodes.USAGE)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_a_word_where_a_number_goes_is_a_usage_error(invoke, tmp_path, path, command) -> None:
    numeric = [p for p in command.params if isinstance(p, click.Option)
               and isinstance(p.type, click.types.IntParamType | click.types.FloatParamType)]
    if not numeric:
        pytest.skip("no numeric option")
    for option in numeric:
        result = invoke([*path, *_arguments(command, tmp_path, broken=False), option.opts[0], "many"])
        assert option.opts[0] in assert_one_line_error(result, exitcodes.USAGE)


def _groups(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group, info_name="safenet")
    found = [path]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += _groups(command, (*path, name))
    return found


@pytest.mark.parametrize("path", _groups(main), ids=lambda p: " ".join(("safenet", *p)))
def test_a_bare_group_shows_its_help(invoke, path) -> None:
    result = invoke(list(path))
    assert result.exit_code in (exitcodes.OK, exitcodes.USAGE) and "Traceback" not in result.output
    assert result.output.startswith("Usage: ") and PREFIX not in result.output


BROKEN_ARGUMENTS = [(p, c) for p, c in COMMANDS if any(isinstance(a, click.Argument) and _bad(p, a) for a in c.params)]


@pytest.mark.parametrize(("path", "command"), BROKEN_ARGUMENTS, ids=[" ".join(p) for p, _ in BROKEN_ARGUMENTS])
def test_bad_arguments_are_usage_errors(invoke, tmp_path, path, command) -> None:
    """A malformed name, a negative index, an unknown scenario, permission or user, a file
    that does not exist: refused before anything else happens, with exit code 2."""
    options = _options(command)
    where = ["--mock", str(tmp_path / "net.mock")] if "--mock" in options else (
        ["--cluster", str(tmp_path / "nowhere")] if "--cluster" in options else [])
    result = invoke([*path, *_arguments(command, tmp_path, broken=True, path=path), *where, *_prompts(command)])
    assert_one_line_error(result, exitcodes.USAGE)


def _cluster_file(tmp_path: Path, case: str) -> Path:
    directory = tmp_path / case
    directory.mkdir()
    content = {
        "not-utf8": b"\xff\xfe{\"nodes\": \x00}",
        "not-json": b"{\"nodes\": [",
        "no-nodes": json.dumps({"nodes": [], "replication": 3, "admin": HEX}).encode(),
        "wrong-shape": json.dumps({"nodes": [{"index": "zero"}], "replication": 3, "admin": HEX}).encode(),
    }.get(case)
    if content is not None:
        (directory / "cluster.json").write_bytes(content)
    return directory


CLUSTER_CASES = {"missing": exitcodes.NOT_FOUND, "not-utf8": exitcodes.USAGE, "not-json": exitcodes.USAGE,
                 "no-nodes": exitcodes.USAGE, "wrong-shape": exitcodes.USAGE}
# Where a command meets something else first, or a case is not broken for it.
CLUSTER_EXCEPTIONS: dict[tuple[str, ...], dict[str, int | None]] = {
    ("cluster", "up"): {"missing": None},  # no cluster yet: `up` makes one (not broken input)
    ("cluster", "down"): {"no-nodes": exitcodes.OK},  # stopping nothing is fine, and --purge must work
    ("chaos", "run"): dict.fromkeys(CLUSTER_CASES, exitcodes.USAGE),  # --cluster is for --mode cluster
}
NEEDS_LOGIN = {("account", "info"), ("account", "apps"), ("account", "authorise"), ("account", "revoke")}
WITH_CLUSTER = [(p, c) for p, c in COMMANDS if "--cluster" in _options(c)]


@pytest.mark.parametrize("case", sorted(CLUSTER_CASES))
@pytest.mark.parametrize(("path", "command"), WITH_CLUSTER, ids=[" ".join(p) for p, _ in WITH_CLUSTER])
def test_a_broken_cluster_is_one_line(invoke, tmp_path, path, command, case) -> None:
    code = CLUSTER_EXCEPTIONS.get(path, {}).get(case, CLUSTER_CASES[case])
    if path in NEEDS_LOGIN:
        code = exitcodes.FAILED  # "not logged in" comes before the cluster
    if code is None:
        pytest.skip(f"{case} is not broken input for `{' '.join(path)}`")
    directory = _cluster_file(tmp_path, case)
    args = [*path, *_arguments(command, tmp_path, broken=False), "--cluster", str(directory), *_prompts(command)]
    result = invoke(args)
    if code == exitcodes.OK:
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        return
    message = assert_one_line_error(result, code)
    if path in NEEDS_LOGIN:
        assert "not logged in" in message
    if "--json" in _options(command):  # the same failure, as a JSON object for scripts
        assert_one_line_error(invoke([*args, "--json"]), code, as_json=True)


WITH_MOCK = [(p, c) for p, c in COMMANDS if "--mock" in _options(c) and (*p,) not in NEEDS_LOGIN]


@pytest.mark.parametrize(("path", "command"), WITH_MOCK, ids=[" ".join(p) for p, _ in WITH_MOCK])
def test_a_mock_file_that_is_not_one_is_one_line(invoke, tmp_path, path, command) -> None:
    mock = tmp_path / "garbage.mock"
    mock.write_bytes(b"\x93this is not a mock network\xff" * 10)
    result = invoke([*path, *_arguments(command, tmp_path, broken=False), "--mock", str(mock), *_prompts(command)])
    assert "not a readable mock network" in assert_one_line_error(result, exitcodes.FAILED)


# ----------------------------------------------------------------------------- particular inputs


def test_bad_json_and_a_bad_stream_name_are_both_bad_input(invoke, tmp_path) -> None:
    mock = ["--mock", str(tmp_path / "net.mock")]
    assert invoke(["es", "db", "create", "shop", *mock]).exit_code == 0
    for broken in (["--data", "{not json"], ["--data", "1", "--metadata", "[1,"]):
        result = invoke(["es", "append", "shop", "s@1", "--type", "T", *broken, *mock])
        assert "not JSON" in assert_one_line_error(result, exitcodes.USAGE)
    result = invoke(["es", "append", "shop", "", "--type", "T", "--data", "1", *mock])
    assert "stream name" in assert_one_line_error(result, exitcodes.USAGE)


def test_refusals_share_one_code_and_not_found_another(invoke, tmp_path) -> None:
    mock = ["--mock", str(tmp_path / "net.mock")]
    assert invoke(["es", "db", "create", "shop", *mock]).exit_code == 0
    assert_one_line_error(invoke(["es", "db", "create", "shop", *mock]), exitcodes.REFUSED)
    result = invoke(["es", "append", "shop", "s@1", "--type", "T", "--data", "1", "--expected-version", "3",
                     *mock, "--json"])
    assert_one_line_error(result, exitcodes.REFUSED, as_json=True)
    assert json.loads(result.stderr)["actual"] == -1
    assert_one_line_error(invoke(["es", "read", "nope", "s@1", *mock]), exitcodes.NOT_FOUND)
    assert_one_line_error(invoke(["data", "get", HEX, *mock]), exitcodes.NOT_FOUND)
    name = invoke(["md", "create", *mock]).stdout.strip()
    assert invoke(["md", "insert", name, "k", "v", *mock]).exit_code == 0
    assert_one_line_error(invoke(["md", "insert", name, "k", "again", *mock]), exitcodes.REFUSED)


def test_data_takes_a_mock_network_too(invoke, tmp_path) -> None:
    mock = ["--mock", str(tmp_path / "net.mock")]
    (tmp_path / "in.txt").write_text("hello, mock")
    name = invoke(["data", "put", str(tmp_path / "in.txt"), *mock]).stdout.strip().splitlines()[-1]
    result = invoke(["data", "cat", name, *mock, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["content"] == "hello, mock"


def test_a_missing_cluster_file_names_where_it_looked(invoke, tmp_path) -> None:
    result = invoke(["data", "get", HEX])  # no --cluster, no $SAFENET_CLUSTER, no ./.safenet
    assert ".safenet/cluster.json" in assert_one_line_error(result, exitcodes.NOT_FOUND)


def test_a_node_dying_during_cluster_up_is_one_line(invoke, tmp_path, monkeypatch) -> None:
    """The node processes are started with this interpreter: swap it for one that dies at
    once, as a node would on a broken install, and `cluster up` must say which and why."""
    fake = tmp_path / "dying-python"
    fake.write_text("#!/bin/sh\necho 'fake node: cannot start' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(fake))
    result = invoke(["cluster", "up", "--nodes", "2", "--replication", "1", "--cluster", str(tmp_path / "c"),
                     "--timeout", "30"])
    message = assert_one_line_error(result, exitcodes.UNAVAILABLE)
    assert re.search(r"node \d exited during start-up: fake node: cannot start", message), message


# ----------------------------------------------------------------------------- real processes


def _safenet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("safenet")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "node.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFENET_")}
    env["SAFENET_CLIENT_KEY"] = str(cwd / "client.key")
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.mark.parametrize(("args", "code"), [
    (["data", "get", "zz"], exitcodes.USAGE),
    (["cluster", "status", "--cluster", "not-utf8"], exitcodes.USAGE),
    (["es", "db", "list", "--cluster", "no-nodes"], exitcodes.USAGE),
    (["notebook", "list", "--cluster", "missing"], exitcodes.NOT_FOUND),
    (["no-such-group"], exitcodes.USAGE),
], ids=["bad-name", "not-utf8", "no-nodes", "missing", "unknown-group"])
def test_as_a_real_process(tmp_path, args, code) -> None:
    for case in ("not-utf8", "no-nodes"):
        _cluster_file(tmp_path, case)
    result = _safenet(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(PREFIX) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# ----------------------------------------------------------------------------- the table itself


def test_every_error_the_table_names_exists() -> None:
    """The table matches errors by class name; a renamed class must not drop out silently."""
    import client.selfenc
    import eventstore.cqrs.errors
    import eventstore.errors
    import eventstore.notebook.domain
    import node.clusterfile
    import node.errors

    modules = [builtins, click.exceptions, node.errors, node.clusterfile, client.selfenc, eventstore.errors,
               eventstore.cqrs.errors, eventstore.notebook.domain]
    known = {name for module in modules for name, value in vars(module).items()
             if inspect.isclass(value) and issubclass(value, BaseException)}
    assert set(exitcodes.BY_ERROR) - known == set()


def test_docs_cli_md_lists_every_exit_code() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for code in exitcodes.MEANING:
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), f"exit code {code} is not in docs/cli.md"
