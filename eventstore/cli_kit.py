"""Plumbing shared by the `safenet es` commands: the connection, payload and JSON parsing,
and the one-line errors of the event store's own exceptions."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import msgpack
import trio

from client.api import DataClient
from client.authenticator import AppGrant
from client.cli_md import logged_in
from client.connect import connect
from node.clikit import CommandError, cluster_option, fail, json_option, leaf, mock_option
from node.exitcodes import NOT_FOUND, REFUSED
from node.keys import Keypair, PublicKey

from .database import Database, DatabaseInfo
from .errors import (
    CorruptData,
    MaximumSubscribersReached,
    NotTheOwner,
    PersistentSubscriptionExists,
    PersistentSubscriptionNotFound,
    WrongExpectedVersion,
)
from .events import ANY, NO_STREAM, STREAM_EXISTS
from .store import EventStore

F = TypeVar("F", bound=Callable[..., Any])
APP_ENV = "SAFENET_APP"
WHERE = "safenet.es.where"  # the click context's note of --cluster / --mock, for second clients
SHARE_PREFIX = "safenet-es-db:"

app_option = click.option(
    "--app", "app_file", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="GRANT",
    help="Act as an app your account authorised: the file `safenet account authorise APP --out GRANT` "
         f"wrote [default: ${APP_ENV}]. Without it, the tool's own key.")


TOOLS_APP = "safenet-tools"  # the app `--account` acts as: one for es, the NoteBook and the UI

account_option = click.option(
    "--account", "as_account", is_flag=True,
    help=f"Act as the app {TOOLS_APP!r} of the account logged in with `safenet account login` (authorised "
         "on first use): your databases, on any machine you log in on.")


async def account_grant(cluster: str | None, mock: str | None, app_id: str = TOOLS_APP) -> AppGrant:
    """The grant of `app_id` in the account logged in on this machine; the account
    authorises it the first time. Its key is kept in the account (SAFE's access container),
    so every machine the user logs in on acts as the same app, with the same databases."""
    auth = logged_in(cluster, mock)
    if auth is None:
        fail("not logged in: run `safenet account login` (or `account create`) first, or leave out --account")
    for grant in await auth.apps():
        if grant.app_id == app_id:
            return grant
    return await auth.authorise(app_id, {})


async def identity(cluster: str | None, mock: str | None, grant: AppGrant | None,
                   as_account: bool) -> tuple[Keypair | None, PublicKey | None]:
    """The keys a tool acts with and the account they act for: an app grant (`--app`), the
    tools' app of the account logged in (`--account`), or (None, None): the tool's own key."""
    if grant is not None and as_account:
        raise click.UsageError("give --app or --account, not both")
    if as_account:
        grant = await account_grant(cluster, mock)
    return (None, None) if grant is None else (grant.keys, grant.owner)


def load_grant(path: str | None) -> AppGrant | None:
    """The app grant the store acts as (`--app`, else $SAFENET_APP), or None."""
    path = path or os.environ.get(APP_ENV) or None
    if path is None:
        return None
    try:
        return AppGrant.from_bytes(Path(path).read_bytes())
    except FileNotFoundError:
        raise click.BadParameter(f"no such file: {path}", param_hint="--app") from None
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--app") from None
    except (ValueError, TypeError, KeyError, msgpack.ExtraData):
        raise click.BadParameter(f"{path} is not an app grant (see `safenet account authorise --out`)",
                                 param_hint="--app") from None


def connection(fn: F) -> F:
    """--cluster, --mock, --app and --json on a command; run its coroutine under trio with a
    connected store. The store's errors go up to the group, which prints them and exits
    with the code docs/cli.md gives them; a wrong expected version carries its versions
    into the --json form of the error."""

    @json_option
    @app_option
    @account_option
    @mock_option
    @cluster_option
    @wraps(fn)
    def command(cluster: str | None, mock: str | None, app_file: str | None, as_account: bool, as_json: bool,
                **kwargs: Any) -> None:
        grant = load_grant(app_file)
        if grant is not None and as_account:
            raise click.UsageError("give --app or --account, not both")
        click.get_current_context().meta[WHERE] = (cluster, mock)

        async def main() -> None:
            keys, owner = await identity(cluster, mock, grant, as_account)
            async with connect(cluster, mock, keys, owner) as client:
                await fn(EventStore(client), as_json, **kwargs)

        try:
            trio.run(main)
        except Exception as exc:  # a nursery may have wrapped it
            error = leaf(exc)
            if isinstance(error, WrongExpectedVersion):
                raise CommandError(str(error), REFUSED, kind=type(error).__name__,
                                   extra={"expected": error.expected, "actual": error.actual}) from None
            if isinstance(error, PersistentSubscriptionExists | MaximumSubscribersReached):
                raise CommandError(str(error), REFUSED, kind=type(error).__name__) from None
            if isinstance(error, PersistentSubscriptionNotFound):
                raise CommandError(str(error), NOT_FOUND, kind=type(error).__name__) from None
            raise

    return command  # type: ignore[return-value]


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=what) from None


def parse_expected(text: str) -> int:
    named = {"any": ANY, "no_stream": NO_STREAM, "no-stream": NO_STREAM,
             "stream_exists": STREAM_EXISTS, "stream-exists": STREAM_EXISTS}
    if text.lower() in named:
        return named[text.lower()]
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter("an int, any, no_stream or stream_exists", param_hint="--expected-version") from None
    if value < 0:
        raise click.BadParameter("a version is >= 0 (or say any / no_stream / stream_exists)",
                                 param_hint="--expected-version")
    return value


def read_payload(text: str, what: str, as_bytes: bool) -> Any:
    """A payload option: inline text, `@FILE` (the file's bytes) or `-` (standard input).
    JSON unless `as_bytes`, then the bytes as they are (a 10 MB file goes as it is)."""
    if text == "-":
        raw = sys.stdin.buffer.read()
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise click.BadParameter(f"no such file: {path}", param_hint=what) from None
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=what) from None
    else:
        raw = text.encode()
    if as_bytes:
        return raw
    try:
        return _parse_json(raw.decode(), what)
    except UnicodeDecodeError:
        raise click.BadParameter("not UTF-8 JSON (say --bytes to store the bytes as they are)",
                                 param_hint=what) from None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value))



@contextlib.asynccontextmanager
async def as_owner(store: EventStore, db: Database) -> AsyncIterator[DataClient]:
    """A client acting with the key of `db`'s owner: the store's own, or that of the account
    logged in on this machine (`safenet account login`) when the store acts as its app."""
    owner = (await db.writer_set()).owner
    if owner is None or owner == store.client.public_key:
        yield store.client
        return
    cluster, mock = click.get_current_context().meta[WHERE]
    auth = logged_in(cluster, mock)
    if auth is None or auth.public_key != owner:
        raise NotTheOwner(f"database {db.name!r} belongs to {owner.hex()[:16]}..; only that key changes its "
                          "writers (an app's database: log in to its account with `safenet account login`)")
    async with connect(cluster, mock, auth.secrets.keys) as client:
        yield client


def share_text(info: DatabaseInfo) -> str:
    """A database's record as one line another app records with `es db join`."""
    return SHARE_PREFIX + base64.urlsafe_b64encode(info.encode()).decode()


def parse_share(text: str) -> DatabaseInfo:
    text = text.strip()
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text().strip()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {text[1:]}: {exc.strerror or exc}", param_hint="SHARE") from None
    if not text.startswith(SHARE_PREFIX):
        raise click.BadParameter(f"a share starts with {SHARE_PREFIX} (see `safenet es db share`)",
                                 param_hint="SHARE")
    try:
        return DatabaseInfo.decode(base64.urlsafe_b64decode(text[len(SHARE_PREFIX):].encode()))
    except (binascii.Error, ValueError, CorruptData):
        raise click.BadParameter("this share does not decode", param_hint="SHARE") from None


def parse_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise click.BadParameter("a public key is 64 hex digits (see `safenet es whoami`)", param_hint="KEY")
    return key
