"""`safenet notebook`: the NoteBook example from the command line.

    safenet notebook demo                    # new notebook, a few notes, the rules, read back
    safenet notebook new groceries
    safenet notebook add groceries "milk"
    safenet notebook list                    # the notebook index, as saved in the network
    safenet notebook show groceries          # the notebook's own stream

Where the data lives: on the cluster found with `--cluster PATH`, then $SAFENET_CLUSTER,
then ./.safenet/cluster.json; or, with `--mock PATH`, on a mock network kept in one file.
Who you are: the key pair of `safenet es` (~/.safenet/client.key, or PATH.client.key next
to a mock file, or $SAFENET_CLIENT_KEY): notebooks belong to the key that made them. With
`--account`, the app `safenet-tools` of the account logged in with `safenet account login`
(authorised on first use): your own notebooks, the same on every machine you log in on; with
`--app GRANT`, an app your account authorised (`safenet account authorise APP --out GRANT`).

`new` and `add` bring the notebook index up to date after their change, so `list` - on
any machine - shows it. `agent` does that on its own (`--follow` keeps at it).

Errors and exit codes are those of every `safenet` command (docs/cli.md): 1 a demo check
failed, 3 a NoteBook rule said no (empty or too long a note, a bad or taken name), 4 no such
notebook (or no cluster), 5 the network did not answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from client.api import DataClient
from client.authenticator import AppGrant
from client.connect import FileMockNetwork, key_file
from eventstore.cli_kit import account_option, app_option, identity, load_grant
from eventstore.cqrs import CommandResult, ProjectionState
from eventstore.errors import EventStoreError
from eventstore.store import EventStore
from node import errors as E
from node.clikit import (
    CONTEXT,
    SafenetGroup,
    cluster_option,
    fail,
    json_option,
    mock_option,
    run_async,
)
from node.keys import Keypair

from .app import DATABASE, NoteBookApp
from .domain import InvalidNote, NoteBook

REFRESH_TIMEOUT = 60.0  # seconds for the index to catch up after a change

F = TypeVar("F", bound=Callable[..., Any])


# ----------------------------------------------------------------------------- connecting


@dataclass(frozen=True)
class Where:
    """What a command connected to, in words for the user."""

    description: str
    who: str  # the key acted with, in words
    flags: str  # the --mock / --cluster (and --account) of this invocation, to repeat in hints


@contextlib.asynccontextmanager
async def connect(cluster: str | None, mock: str | None, grant: AppGrant | None = None,
                  as_account: bool = False) -> AsyncIterator[tuple[DataClient, Where]]:
    """A client on the mock file or the cluster, acting with the stable client key, or as
    an app of the user's account (`grant`, or the tools' app with `as_account`)."""
    app_keys, owner = await identity(cluster, mock, grant, as_account)
    if app_keys is None:
        key_path = key_file(mock)
        keys = Keypair.load_or_create(key_path)
        who = f"client key {_home(key_path)}"
    else:
        keys = app_keys
        who = f"app key {keys.public.hex()[:16]}.. of account {owner.hex()[:16] if owner else '?'}.."
    extra = " --account" if as_account else ""
    if mock is not None:
        yield (FileMockNetwork(Path(mock)).client(keys, owner=owner),
               Where(f"the mock network in {mock}", who, f" --mock {mock}{extra}"))
        return
    from client.network import NetworkClient
    from node.clusterfile import load_cluster_file

    path, info = load_cluster_file(cluster)
    flags = (f" --cluster {cluster}" if cluster is not None else "") + extra
    # How many of them run is the launcher's business (`safenet cluster status`), not a client's.
    where = Where(f"the cluster at {path} ({len(info.nodes)} nodes)", who, flags)
    async with NetworkClient.open(info.addresses, keys, owner=owner, replication=info.replication) as client:
        yield client, where


def _explain(exc: BaseException) -> str | None:
    if isinstance(exc, E.RequestTimeout | E.QuorumNotReached):
        return f"the network did not answer in time ({exc}); is the cluster up? try `safenet cluster status`"
    return None


def _command(fn: F) -> F:
    """--cluster, --mock, --database and --json on a command; run its coroutine under trio
    with the app open. Errors go up to the group, which prints them as one line and exits
    with the code docs/cli.md gives them."""

    @json_option
    @click.option("--database", default=DATABASE, show_default=True, help="The event-store database to use.")
    @app_option
    @account_option
    @mock_option
    @cluster_option
    @wraps(fn)
    def command(cluster: str | None, mock: str | None, database: str, app_file: str | None, as_account: bool,
                as_json: bool, **kwargs: Any) -> None:
        grant = load_grant(app_file)
        if grant is not None and as_account:
            raise click.UsageError("give --app or --account, not both")

        async def main() -> None:
            async with connect(cluster, mock, grant, as_account) as (client, where):
                app = await NoteBookApp.open(EventStore(client), database)
                await fn(app, where, as_json, **kwargs)

        run_async(main, explain=_explain)

    return command  # type: ignore[return-value]


async def _refreshed(app: NoteBookApp) -> ProjectionState | None:
    """Bring the index up to date; None (with a warning) if the network is too slow - the
    change itself is saved either way, and the next refresh picks it up."""
    with trio.move_on_after(REFRESH_TIMEOUT):
        try:
            return await app.refresh()
        except (EventStoreError, E.NetworkError) as exc:
            click.echo(f"warning: the notebook index was not refreshed ({exc}); "
                       "`safenet notebook agent` will catch it up", err=True)
            return None
    click.echo("warning: the notebook index did not catch up in time; "
               "`safenet notebook agent` will catch it up", err=True)
    return None


def _result_json(result: CommandResult) -> dict[str, Any]:
    return {"stream": result.stream, "version": result.version, "changed": result.changed,
            "command_id": str(result.command_id), "position": result.position}


def _index_rows(index: ProjectionState | None) -> list[dict[str, Any]]:
    if index is None or not isinstance(index.state, dict):
        return []
    notebooks = index.state.get("notebooks", {})
    return [{"name": name, **entry} for name, entry in sorted(notebooks.items())]


def _index_json(index: ProjectionState | None) -> dict[str, Any]:
    if index is None:
        return {"notebooks": [], "saved": None}
    return {"notebooks": _index_rows(index), "saved": {
        "version": index.version, "checkpoint": index.checkpoint, "events": index.events,
        "generation": index.generation, "at": index.saved_at.isoformat()}}


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_notebook(notebook: NoteBook, indent: str = "", say: Callable[[str], None] = click.echo) -> None:
    say(f"{indent}{notebook.id}: {_count(len(notebook.notes), 'note')} (version {notebook.version})")
    for i, note in enumerate(notebook.notes, 1):
        say(f"{indent}  {i:>3}. {note}")


# ----------------------------------------------------------------------------- commands


@click.group(name="notebook", cls=SafenetGroup, context_settings=CONTEXT)
def notebook() -> None:
    """The NoteBook example: notebooks of short notes, as event streams on the network.

    \b
    safenet notebook demo                   try it all on the local cluster
    safenet notebook new groceries          create a notebook
    safenet notebook add groceries milk     add a note (1-99 characters; repeats are ignored)
    safenet notebook list                   the notebook index, as saved on the network
    safenet notebook show groceries         a notebook's notes
    """


@notebook.command()
@click.argument("name")
@_command
async def new(app: NoteBookApp, where: Where, as_json: bool, name: str) -> None:
    """Create the notebook NAME."""
    result = await app.new(name)
    await _refreshed(app)
    if as_json:
        click.echo(json.dumps(_result_json(result)))
    else:
        click.echo(f"created notebook {name}")


@notebook.command()
@click.argument("name")
@click.argument("text")
@_command
async def add(app: NoteBookApp, where: Where, as_json: bool, name: str, text: str) -> None:
    """Add the note TEXT to notebook NAME (a note the notebook holds already is ignored)."""
    result = await app.add(name, text)
    if result.changed or result.duplicate:
        await _refreshed(app)
    if as_json:
        click.echo(json.dumps(_result_json(result)))
    elif result.changed or result.duplicate:  # duplicate: our own save whose reply was lost
        click.echo(f"added to {name} (note {result.version})")
    else:
        click.echo(f"{name} already holds that note; ignored")


@notebook.command(name="list")
@click.option("--refresh", is_flag=True, help="Fold new events into the index first.")
@click.option("--history", is_flag=True, help="Every saved state of the index, oldest first.")
@_command
async def list_command(app: NoteBookApp, where: Where, as_json: bool, refresh: bool, history: bool) -> None:
    """List the notebooks, from the notebook index saved on the network."""
    if refresh:
        await _refreshed(app)
    if history:
        states = await app.index_history()
        if as_json:
            click.echo(json.dumps([_index_json(s) for s in states], indent=2))
            return
        for s in states:
            rows = _index_rows(s)
            notes = sum(r["notes"] for r in rows)
            click.echo(f"#{s.version:<4} {s.saved_at:%Y-%m-%d %H:%M:%S}  generation {s.generation}  "
                       f"{_count(len(rows), 'notebook')}, {_count(notes, 'note')}  (checkpoint {s.checkpoint})")
        return
    index = await app.index()
    if as_json:
        click.echo(json.dumps(_index_json(index), indent=2))
        return
    rows = _index_rows(index)
    if not rows:
        click.echo("no notebooks yet (create one with `safenet notebook new NAME`)")
        return
    width = max(8, *(len(r["name"]) for r in rows))
    click.echo(f"{'NOTEBOOK':<{width}}  NOTES  LAST NOTE")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['notes']:>5}  {r['last'] or ''}")
    assert index is not None
    click.echo(f"(the notebook index as saved {index.saved_at:%Y-%m-%d %H:%M:%S} UTC, "
               f"{_count(index.events, 'event')} folded)")


@notebook.command()
@click.argument("name")
@_command
async def show(app: NoteBookApp, where: Where, as_json: bool, name: str) -> None:
    """Show the notes of notebook NAME (read from its own stream)."""
    notebook = await app.show(name)
    if as_json:
        click.echo(json.dumps({"name": notebook.id, "version": notebook.version, "notes": notebook.notes}))
    else:
        _print_notebook(notebook)


@notebook.command()
@click.option("--follow", is_flag=True, help="Keep the index current until interrupted.")
@click.option("--rebuild", is_flag=True, help="Fold the whole log again, from scratch.")
@click.option("--save-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Save the index after this many events (and whenever the log is quiet).")
@_command
async def agent(app: NoteBookApp, where: Where, as_json: bool, follow: bool, rebuild: bool, save_every: int) -> None:
    """Run the projection agent: bring the notebook index saved on the network up to date."""
    app.agent.save_every = save_every
    index = await (app.rebuild_index() if rebuild else app.refresh())
    if as_json:
        click.echo(json.dumps(_index_json(index)))
    else:
        click.echo(f"notebook index up to date: {_count(len(_index_rows(index)), 'notebook')}, "
                   f"{_count(index.events, 'event')} (generation {index.generation})")
    if follow:
        click.echo("following the log; Ctrl-C to stop", err=True)
        await app.agent.run()


# ----------------------------------------------------------------------------- the demo


DEMO_NOTES = ("Buy milk", "Call the vault team about churn", "Write up the event store")


class _Checks:
    """The demo's expectations, printed as they are met (or not)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, label: str, detail: str) -> None:
        mark = click.style("ok", fg="green") if ok else click.style("FAILED", fg="red", bold=True)
        self.say(f"     {label:<44} {mark}  {detail}")
        if ok:
            self.passed += 1
        else:
            self.failed.append(label)


async def _expect_rejected(checks: _Checks, label: str, attempt: Awaitable[object]) -> None:
    try:
        await attempt
    except InvalidNote as exc:
        checks.check(True, label, f"rejected: {exc}")
    else:
        checks.check(False, label, "was accepted")


@notebook.command()
@click.option("--name", default=None, help="The demo notebook's name [default: demo-XXXX].")
@_command
async def demo(app: NoteBookApp, where: Where, as_json: bool, name: str | None) -> None:
    """Try the NoteBook end to end: create a notebook, add notes, see the rules at work,
    read it back, and project the notebook index into the network. Exit code 0 when every
    step did what it should."""
    name = name or f"demo-{secrets.token_hex(2)}"

    def say(line: str) -> None:  # with --json the story goes to stderr, the summary to stdout
        click.echo(line, err=as_json)

    checks = _Checks(say)
    say(f"NoteBook demo on {where.description}")
    say(f"  database {app.db.name!r}, {where.who}")

    say(f"\n1. create the notebook {name!r}")
    created = await app.new(name)
    checks.check(created.changed and created.version == 0, f"new {name}",
                 f"{created.stream}, version {created.version}")

    say(f"\n2. add {len(DEMO_NOTES)} notes")
    for text in DEMO_NOTES:
        result = await app.add(name, text)
        checks.check(result.changed, f"add {text!r}", f"version {result.version}")

    say("\n3. the NoteBook rules")
    again = await app.add(name, DEMO_NOTES[0])
    checks.check(not again.changed, f"add {DEMO_NOTES[0]!r} again", "ignored: a note is kept once")
    await _expect_rejected(checks, "add an empty note", app.add(name, "   "))
    await _expect_rejected(checks, "add a 120-character note", app.add(name, "x" * 120))

    say("\n4. read it back from its stream")
    notebook = await app.show(name)
    checks.check(notebook.notes == list(DEMO_NOTES), f"show {name}",
                 f"{len(notebook.notes)} notes, version {notebook.version}")
    _print_notebook(notebook, indent="       ", say=say)

    say("\n5. project the notebook index and save it to the network")
    index = await app.refresh()
    entry = dict((r["name"], r) for r in _index_rows(index)).get(name)
    checks.check(entry is not None and entry["notes"] == len(DEMO_NOTES), "notebook index",
                 f"projection@notebooks #{index.version}: {_count(len(_index_rows(index)), 'notebook')}, "
                 f"{_count(index.events, 'event')} folded")

    if as_json:
        click.echo(json.dumps({"notebook": name, "passed": checks.passed, "failed": checks.failed}))
    if checks.failed:
        fail(f"demo failed: {', '.join(checks.failed)}")
    flags = where.flags
    say(click.style(f"\nDemo passed: {checks.passed} checks ok.", fg="green", bold=True)
        + f" Next: safenet notebook list{flags}, safenet notebook show {name}{flags}")


def _home(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + os.sep) else text
