"""`safenet es`: the event store from the command line.

    safenet es db create shop --mock ./shop.mock
    safenet es append shop order@42 --type Placed --data '{"sku": 7}' --expected-version no_stream --mock ./shop.mock
    safenet es read shop order@42 --json --mock ./shop.mock
    safenet es tail shop --category order --mock ./shop.mock

Where the data lives: `--mock PATH` keeps a whole mock network in one file (no cluster
needed; several commands may use it at once, each request takes a lock on it); otherwise a
cluster is found with `--cluster PATH`, then $SAFENET_CLUSTER, then ./.safenet/cluster.json.

Who you are: the store acts with a key pair kept in a file, made on first use — next to the
mock file (`PATH.client.key`) with --mock, else `~/.safenet/client.key`; $SAFENET_CLIENT_KEY
names another file. Databases belong to that key: keep it to keep them.

Errors and exit codes are those of every `safenet` command (docs/cli.md): 3 for a wrong
expected version or a database that exists, 4 for no such database or stream (or a deleted
stream), 2 for bad input such as bad JSON or a stream name the store refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import trio

from client.connect import connect
from node.clikit import (
    CONTEXT,
    CommandError,
    SafenetGroup,
    cluster_option,
    json_option,
    leaf,
    mock_option,
)
from node.exitcodes import REFUSED

from .database import Database
from .errors import WrongExpectedVersion
from .events import ANY, END, NO_STREAM, STREAM_EXISTS, EventData, RecordedEvent
from .store import EventStore

F = TypeVar("F", bound=Callable[..., Any])


# ----------------------------------------------------------------------------- plumbing


def _connection(fn: F) -> F:
    """--cluster, --mock and --json on a command; run its coroutine under trio with a
    connected store. The store's errors go up to the group, which prints them and exits
    with the code docs/cli.md gives them; a wrong expected version carries its versions
    into the --json form of the error."""

    @json_option
    @mock_option
    @cluster_option
    @wraps(fn)
    def command(cluster: str | None, mock: str | None, as_json: bool, **kwargs: Any) -> None:
        async def main() -> None:
            async with connect(cluster, mock) as client:
                await fn(EventStore(client), as_json, **kwargs)

        try:
            trio.run(main)
        except Exception as exc:  # a nursery may have wrapped it
            error = leaf(exc)
            if isinstance(error, WrongExpectedVersion):
                raise CommandError(str(error), REFUSED, kind=type(error).__name__,
                                   extra={"expected": error.expected, "actual": error.actual}) from None
            raise

    return command  # type: ignore[return-value]


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=what) from None


def _parse_expected(text: str) -> int:
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


def _names(names: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(names))
    for name in [] if as_json else names:
        click.echo(name)


HEADER = f"{'POSITION':>10}  STREAM#VERSION  TYPE  DATA"


def _line(event: RecordedEvent) -> str:
    data = event.data if not isinstance(event.data, bytes) else f"<{len(event.data)} bytes>"
    text = data if isinstance(data, str) else json.dumps(data)
    return f"{event.position:>10}  {event.stream}#{event.version}  {event.type}  {text}"


def _events(events: list[RecordedEvent], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([e.to_json() for e in events], indent=2))
        return
    click.echo(HEADER)
    for event in events:
        click.echo(_line(event))


async def _open(store: EventStore, name: str) -> Database:
    return await store.database(name).open()


# ----------------------------------------------------------------------------- commands


@click.group(name="es", cls=SafenetGroup, context_settings=CONTEXT)
def es() -> None:
    """The event store: databases, categories, streams and events on SAFE data."""


@es.group(name="db")
def db_group() -> None:
    """Create and list databases."""


@db_group.command(name="create")
@click.argument("name")
@click.option("--private", is_flag=True, help="Encrypt events, payloads and names.")
@_connection
async def db_create(store: EventStore, as_json: bool, name: str, private: bool) -> None:
    """Create the database NAME."""
    db = await store.create_database(name, private=private)
    if as_json:
        click.echo(json.dumps({"name": name, "private": private, "id": db.info.id.hex() if db.info else None}))
    else:
        click.echo(f"created {'private ' if private else ''}database {name}")


@db_group.command(name="list")
@_connection
async def db_list(store: EventStore, as_json: bool) -> None:
    """List your databases."""
    _names(await store.databases(), as_json)


@es.command()
@click.argument("database")
@_connection
async def categories(store: EventStore, as_json: bool, database: str) -> None:
    """List the categories of DATABASE."""
    _names(await (await _open(store, database)).categories(), as_json)


@es.command()
@click.argument("database")
@click.argument("category")
@_connection
async def streams(store: EventStore, as_json: bool, database: str, category: str) -> None:
    """List the stream keys of CATEGORY (printed as they are fetched, a page at a time)."""
    db = await _open(store, database)
    if as_json:
        click.echo(json.dumps(await db.list_streams(category)))
        return
    async for name in db.streams(category):
        click.echo(name)


@es.command()
@click.argument("database")
@click.argument("stream")
@click.option("--type", "event_type", required=True, help="The event type.")
@click.option("--data", required=True, help="The event's payload, as JSON.")
@click.option("--metadata", help="The event's metadata, as JSON.")
@click.option("--expected-version", default="any", show_default=True,
              help="A version, or any / no_stream / stream_exists.")
@_connection
async def append(store: EventStore, as_json: bool, database: str, stream: str, event_type: str,
                 data: str, metadata: str | None, expected_version: str) -> None:
    """Append one event to STREAM (exit code 3 on a wrong expected version)."""
    event = EventData(event_type, _parse_json(data, "--data"),
                      None if metadata is None else _parse_json(metadata, "--metadata"))
    expected = _parse_expected(expected_version)
    result = await (await _open(store, database)).append(stream, [event], expected_version=expected)
    if as_json:
        click.echo(json.dumps({"stream": stream, "id": str(event.id),
                               "next_expected_version": result.next_expected_version,
                               "log_position": result.log_position}))
    else:
        click.echo(f"{stream}#{result.next_expected_version} at position {result.log_position}")


@es.command()
@click.argument("database")
@click.argument("stream")
@click.option("--from", "from_version", type=int, help="First version to read (default: the start, "
              "or the end with --backward).")
@click.option("--backward", is_flag=True, help="Newest first.")
@click.option("--count", type=click.IntRange(min=0), help="At most this many events.")
@click.option("--raw", is_flag=True, help="As written: restructure events shown, not applied.")
@_connection
async def read(store: EventStore, as_json: bool, database: str, stream: str, from_version: int | None,
               backward: bool, count: int | None, raw: bool) -> None:
    """Read STREAM's events."""
    start = from_version if from_version is not None else (END if backward else 0)
    events = await (await _open(store, database)).read_stream(
        stream, start, backward=backward, count=count, resolve_corrections=not raw)
    _events(events, as_json)


@es.command()
@click.argument("database")
@click.option("--category", help="Only this category's events.")
@click.option("--stream", help="Only this stream's events.")
@click.option("--from", "checkpoint", type=int,
              help="Start after this checkpoint (a log position; a version with --stream).")
@click.option("--new", "only_new", is_flag=True, help="Only events appended from now on.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@_connection
async def tail(store: EventStore, as_json: bool, database: str, category: str | None, stream: str | None,
               checkpoint: int | None, only_new: bool, count: int | None) -> None:
    """Follow DATABASE's log (or a category, or a stream): what is there, then what comes.
    With --json, one JSON object a line. Stop with Ctrl-C."""
    if category and stream:
        raise click.UsageError("give --category or --stream, not both")
    db = await _open(store, database)
    if stream is not None:
        if only_new and checkpoint is None:
            checkpoint = await db.stream_version(stream)
        subscription = db.subscribe_to_stream(stream, checkpoint)
    else:
        if only_new and checkpoint is None:
            checkpoint = await db.log_end()
        subscription = (db.subscribe_to_category(category, checkpoint) if category
                        else db.subscribe_to_all(checkpoint))
    seen = 0
    if not as_json:
        click.echo(HEADER)
    async for event in subscription:
        click.echo(json.dumps(event.to_json()) if as_json else _line(event))
        seen += 1
        if count is not None and seen >= count:
            break


@es.command(name="log")
@click.argument("database")
@click.option("--from", "from_position", type=int, default=0, help="First log position (inclusive).")
@click.option("--count", type=click.IntRange(min=0), help="At most this many events.")
@_connection
async def log_command(store: EventStore, as_json: bool, database: str, from_position: int,
                      count: int | None) -> None:
    """Read DATABASE's log: every event, in the order the database took them."""
    events = await (await _open(store, database)).read_all(from_position, count)
    _events(events, as_json)



from .grpc.cli import serve  # noqa: E402  (the gRPC gateway, docs/grpc.md; imports grpc only when run)

es.add_command(serve)
