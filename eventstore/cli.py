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
names another file. Databases belong to that key: keep it to keep them. With --account the
store acts as the app `safenet-tools` of the account logged in (`safenet account login`),
with --app GRANT as an app the account authorised; `es db add-writer` lets another key
append to a database of yours (docs/eventstore.md, "Writers").

Errors and exit codes are those of every `safenet` command (docs/cli.md): 3 for a wrong
expected version or a database that exists, 4 for no such database or stream (or a deleted
stream), 2 for bad input such as bad JSON or a stream name the store refuses.
"""

from __future__ import annotations

import json
from dataclasses import replace

import click

from node.clikit import (
    CONTEXT,
    SafenetGroup,
)

from .cli_kit import (
    as_owner,
    connection,
    echo_json,
    parse_expected,
    parse_key,
    parse_share,
    read_payload,
    share_text,
)
from .cli_persistent import persistent
from .database import Database
from .events import CORRECTION, END, EventData, RecordedEvent, StreamMetadata
from .store import EventStore
from .system_projections import CATEGORY_PREFIX, SystemProjections
from .writers import WriterChange


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
    """Create, list and share databases; choose who may append (add-writer, remove-writer)."""


@db_group.command(name="create")
@click.argument("name")
@click.option("--private", is_flag=True, help="Encrypt events, payloads and names.")
@connection
async def db_create(store: EventStore, as_json: bool, name: str, private: bool) -> None:
    """Create the database NAME."""
    db = await store.create_database(name, private=private)
    if as_json:
        click.echo(json.dumps({"name": name, "private": private, "id": db.info.id.hex() if db.info else None}))
    else:
        click.echo(f"created {'private ' if private else ''}database {name}")


@db_group.command(name="list")
@connection
async def db_list(store: EventStore, as_json: bool) -> None:
    """List your databases."""
    _names(await store.databases(), as_json)


@es.command()
@connection
async def whoami(store: EventStore, as_json: bool) -> None:
    """The key the store acts with (give it to a database's owner for `es db add-writer`),
    and the account it acts for."""
    key, owner = store.client.public_key.hex(), store.client.account_owner.hex()
    if as_json:
        echo_json({"key": key, "account": owner})
    else:
        click.echo(key if key == owner else f"{key} (an app of account {owner})")


def _writer_change(database: str, change: WriterChange, share: str | None, as_json: bool) -> None:
    if as_json:
        echo_json({"database": database, **change.to_json(), **({"share": share} if share else {})})
        return
    verb = "may append to" if change.added else "may no longer append to"
    click.echo(f"{change.key.hex()[:16]}.. {verb} {database}: {change.changed} of {change.mds} MDs changed")
    if change.held:
        click.echo(f"warning: {len(change.held)} MDs are held by a writer that never handed them over; "
                   "once it runs `safenet es db hand-over`, run this again", err=True)
    if share:
        click.echo(f"the writer records the database with: safenet es db join {share}")


@db_group.command(name="add-writer")
@click.argument("name")
@click.argument("key")
@connection
async def db_add_writer(store: EventStore, as_json: bool, name: str, key: str) -> None:
    """Let KEY (64 hex: what `es whoami` prints for the other app or account) append to NAME:
    Insert on every MD of the database, now and those made later. Only the database's owner
    can (for an app's database, its account: `safenet account login`). Prints the share the
    writer records the database with (`es db join`)."""
    writer = parse_key(key)
    db = await _open(store, name)
    async with as_owner(store, db) as owner:
        change = await db.add_writer(writer, owner=owner)
    assert db.info is not None
    _writer_change(name, change, share_text(db.info), as_json)


@db_group.command(name="remove-writer")
@click.argument("name")
@click.argument("key")
@connection
async def db_remove_writer(store: EventStore, as_json: bool, name: str, key: str) -> None:
    """Take away KEY's right to append to NAME (its appends are then refused, exit code 3)."""
    writer = parse_key(key)
    db = await _open(store, name)
    async with as_owner(store, db) as owner:
        change = await db.remove_writer(writer, owner=owner)
    _writer_change(name, change, None, as_json)


@db_group.command(name="hand-over")
@click.argument("name")
@connection
async def db_hand_over(store: EventStore, as_json: bool, name: str) -> None:
    """As a writer of NAME from another account: hand its owner every MD of NAME you made and
    still own (you were stopped between making one and handing it over)."""
    count = await (await _open(store, name)).hand_over()
    if as_json:
        echo_json({"database": name, "handed_over": count})
    else:
        click.echo(f"handed over {count} MD{'s' if count != 1 else ''} of {name}")


@db_group.command(name="writers")
@click.argument("name")
@connection
async def db_writers(store: EventStore, as_json: bool, name: str) -> None:
    """Who may append to NAME, and who owns it."""
    found = await (await _open(store, name)).writer_set()
    owner = None if found.owner is None else found.owner.hex()
    keys = sorted(k.hex() for k in found.keys)
    if as_json:
        echo_json({"database": name, "owner": owner, "writers": keys})
        return
    click.echo(f"owner: {owner or '(not recorded: a database older than writer sets)'}")
    for k in keys:
        click.echo(f"writer: {k}")


@db_group.command(name="share")
@click.argument("name")
@connection
async def db_share(store: EventStore, as_json: bool, name: str) -> None:
    """Print NAME's record as one line for another app's `es db join` (it may then read; it
    may append once added with `es db add-writer`). A private database's share holds its key."""
    db = await _open(store, name)
    assert db.info is not None
    text = share_text(db.info)
    if as_json:
        echo_json({"database": name, "share": text, "private": db.info.private})
    else:
        click.echo(text)


@db_group.command(name="join")
@click.argument("share")
@connection
async def db_join(store: EventStore, as_json: bool, share: str) -> None:
    """Record a database another app shared (SHARE, or @FILE) in this app's list."""
    info = parse_share(share)
    await store.add_database(info)
    if as_json:
        echo_json({"database": info.name, "id": info.id.hex()})
    else:
        click.echo(f"joined database {info.name}")


@es.command()
@click.argument("database")
@connection
async def categories(store: EventStore, as_json: bool, database: str) -> None:
    """List the categories of DATABASE."""
    _names(await (await _open(store, database)).categories(), as_json)


@es.command()
@click.argument("database")
@click.argument("category")
@connection
async def streams(store: EventStore, as_json: bool, database: str, category: str) -> None:
    """List the stream keys of CATEGORY (printed as they are fetched, a page at a time)."""
    db = await _open(store, database)
    if as_json:
        click.echo(json.dumps(await db.list_streams(category)))
        return
    async for name in db.streams(category):
        click.echo(name)


DATA_HELP = "The payload: JSON, @FILE (a file's contents) or - (standard input)."
BYTES_HELP = "Store the payload's bytes as they are, not as JSON."
METADATA_HELP = "The event's metadata: JSON, @FILE or -."


@es.command()
@click.argument("database")
@click.argument("stream")
@click.option("--type", "event_type", required=True, help="The event type.")
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--bytes", "as_bytes", is_flag=True, help=BYTES_HELP)
@click.option("--metadata", help=METADATA_HELP)
@click.option("--expected-version", default="any", show_default=True,
              help="A version, or any / no_stream / stream_exists.")
@connection
async def append(store: EventStore, as_json: bool, database: str, stream: str, event_type: str,
                 data: str, as_bytes: bool, metadata: str | None, expected_version: str) -> None:
    """Append one event to STREAM (exit code 3 on a wrong expected version)."""
    _one_stdin(data, metadata)
    event = EventData(event_type, read_payload(data, "--data", as_bytes),
                      None if metadata is None else read_payload(metadata, "--metadata", False))
    expected = parse_expected(expected_version)
    result = await (await _open(store, database)).append(stream, [event], expected_version=expected)
    _appended(stream, event, result.next_expected_version, result.log_position, as_json)


def _one_stdin(*values: str | None) -> None:
    if sum(1 for v in values if v == "-") > 1:
        raise click.UsageError("only one option can read standard input (-)")


def _appended(stream: str, event: EventData, version: int, log_position: int, as_json: bool) -> None:
    if as_json:
        echo_json({"stream": stream, "id": str(event.id), "next_expected_version": version,
                   "log_position": log_position})
    else:
        click.echo(f"{stream}#{version} at position {log_position}")


@es.command()
@click.argument("database")
@click.argument("stream")
@click.option("--from", "from_version", type=int, help="First version to read (default: the start, "
              "or the end with --backward).")
@click.option("--backward", is_flag=True, help="Newest first.")
@click.option("--count", type=click.IntRange(min=0), help="At most this many events.")
@click.option("--raw", is_flag=True, help="As written: restructure events shown, not applied.")
@click.option("--resolve-links", is_flag=True, help="Read link events ($ce-, $et-, $streams) as what they point at.")
@connection
async def read(store: EventStore, as_json: bool, database: str, stream: str, from_version: int | None,
               backward: bool, count: int | None, raw: bool, resolve_links: bool) -> None:
    """Read STREAM's events."""
    start = from_version if from_version is not None else (END if backward else 0)
    events = await (await _open(store, database)).read_stream(
        stream, start, backward=backward, count=count, resolve_corrections=not raw, resolve_links=resolve_links)
    _events(events, as_json)


@es.command()
@click.argument("database")
@click.argument("source", required=False)
@click.option("--category", help="Only this category's events (filtering the log).")
@click.option("--stream", help="Only this stream's events.")
@click.option("--from", "checkpoint", type=int,
              help="Start after this checkpoint (a log position; a version for a stream).")
@click.option("--new", "only_new", is_flag=True, help="Only events appended from now on.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@connection
async def tail(store: EventStore, as_json: bool, database: str, source: str | None, category: str | None,
               stream: str | None, checkpoint: int | None, only_new: bool, count: int | None) -> None:
    """Follow DATABASE's log, or SOURCE: a stream, `$ce-CATEGORY` (the category's events
    through the $by_category links, resolved; the log after them while the projection lags,
    which standard error says) or `$all`. With --json, one JSON object a line. Stop with Ctrl-C."""
    if sum(x is not None for x in (source, category, stream)) > 1:
        raise click.UsageError("give one of SOURCE, --category and --stream")
    linked: str | None = None
    if source is not None:
        if source.startswith(CATEGORY_PREFIX):
            linked = source[len(CATEGORY_PREFIX):]
            if not linked:
                raise click.BadParameter("$ce- needs a category", param_hint="SOURCE")
        elif source != "$all":
            stream = source
    db = await _open(store, database)
    if stream is not None:
        if only_new and checkpoint is None:
            checkpoint = await db.stream_version(stream)
        subscription = db.subscribe_to_stream(stream, checkpoint)
    else:
        if only_new and checkpoint is None:
            checkpoint = await db.log_end()
        if linked is not None:
            subscription = db.subscribe_to_category(linked, checkpoint, through_links=True)
        elif category:
            subscription = db.subscribe_to_category(category, checkpoint)
        else:
            subscription = db.subscribe_to_all(checkpoint)
    seen = 0
    reading = ""
    if not as_json:
        click.echo(HEADER)
    async for event in subscription:
        if subscription.reading != reading:
            reading = subscription.reading
            click.echo(f"subscribe: reading {reading}", err=True)
        click.echo(json.dumps(event.to_json()) if as_json else _line(event))
        seen += 1
        if count is not None and seen >= count:
            break


@es.command(name="log")
@click.argument("database")
@click.option("--from", "from_position", type=int, default=0, help="First log position (inclusive).")
@click.option("--count", type=click.IntRange(min=0), help="At most this many events.")
@connection
async def log_command(store: EventStore, as_json: bool, database: str, from_position: int,
                      count: int | None) -> None:
    """Read DATABASE's log: every event, in the order the database took them."""
    events = await (await _open(store, database)).read_all(from_position, count)
    _events(events, as_json)


# ----------------------------------------------------------------------------- deleting and correcting


@es.command()
@click.argument("database")
@click.argument("stream")
@click.option("--hard", is_flag=True, help="A tombstone: the name can never be used again.")
@click.option("--expected-version", default="any", show_default=True,
              help="A version, or any / stream_exists.")
@connection
async def delete(store: EventStore, as_json: bool, database: str, stream: str, hard: bool,
                 expected_version: str) -> None:
    """Delete STREAM: soft (hidden; a later append continues the numbering) or --hard."""
    result = await (await _open(store, database)).delete_stream(
        stream, parse_expected(expected_version), hard=hard)
    if as_json:
        echo_json({"stream": stream, "hard": hard, "log_position": result.log_position})
    else:
        click.echo(f"{'hard-' if hard else ''}deleted {stream}")


@es.command()
@click.argument("database")
@click.argument("stream")
@click.argument("version", type=click.IntRange(min=0))
@click.option("--data", required=True, help=DATA_HELP)
@click.option("--bytes", "as_bytes", is_flag=True, help=BYTES_HELP)
@click.option("--metadata", help=METADATA_HELP)
@click.option("--expected-version", default="any", show_default=True,
              help="The stream's version (the correction is appended after it).")
@connection
async def restructure(store: EventStore, as_json: bool, database: str, stream: str, version: int, data: str,
                      as_bytes: bool, metadata: str | None, expected_version: str) -> None:
    """Correct the payload of STREAM's event VERSION (a restructure event is appended;
    reads show the event with the new payload, `es read --raw` the history)."""
    _one_stdin(data, metadata)
    payload = read_payload(data, "--data", as_bytes)
    meta = None if metadata is None else read_payload(metadata, "--metadata", False)
    result = await (await _open(store, database)).restructure(
        stream, version, payload, metadata=meta, expected_version=parse_expected(expected_version))
    if as_json:
        echo_json({"stream": stream, "corrects": version, "type": CORRECTION,
                   "next_expected_version": result.next_expected_version, "log_position": result.log_position})
    else:
        click.echo(f"{stream}#{version} corrected by {stream}#{result.next_expected_version}")


@es.group(name="metadata")
def metadata_group() -> None:
    """Read and set a stream's metadata (max count, max age, truncate before, custom)."""


def _metadata_out(stream: str, meta: StreamMetadata, as_json: bool) -> None:
    if as_json:
        echo_json({"stream": stream, **meta.to_json()})
        return
    for name, value in meta.to_json().items():
        click.echo(f"{name}: {'-' if value is None else json.dumps(value)}")


@metadata_group.command(name="get")
@click.argument("database")
@click.argument("stream")
@connection
async def metadata_get(store: EventStore, as_json: bool, database: str, stream: str) -> None:
    """Print STREAM's metadata."""
    _metadata_out(stream, await (await _open(store, database)).get_stream_metadata(stream), as_json)


@metadata_group.command(name="set")
@click.argument("database")
@click.argument("stream")
@click.option("--max-count", type=click.IntRange(min=0), help="Keep the last N events (0: no limit).")
@click.option("--max-age", type=click.FloatRange(min=0), help="Hide events older than S seconds (0: no limit).")
@click.option("--truncate-before", type=click.IntRange(min=0), help="Hide versions below V.")
@click.option("--custom", help="The application's own metadata: JSON, @FILE or -.")
@click.option("--clear", is_flag=True, help="Start from empty metadata, not the current one.")
@connection
async def metadata_set(store: EventStore, as_json: bool, database: str, stream: str, max_count: int | None,
                       max_age: float | None, truncate_before: int | None, custom: str | None, clear: bool) -> None:
    """Change STREAM's metadata: the options given replace those values, the rest stay."""
    db = await _open(store, database)
    meta = StreamMetadata() if clear else await db.get_stream_metadata(stream)
    changes: dict[str, object] = {}
    if max_count is not None:
        changes["max_count"] = max_count or None
    if max_age is not None:
        changes["max_age"] = max_age or None
    if truncate_before is not None:
        changes["truncate_before"] = truncate_before
    if custom is not None:
        value = read_payload(custom, "--custom", False)
        if not isinstance(value, dict) and value is not None:
            raise click.BadParameter("a JSON object", param_hint="--custom")
        changes["custom"] = value
    meta = replace(meta, **changes)  # type: ignore[arg-type]
    await db.set_stream_metadata(stream, meta)
    _metadata_out(stream, meta, as_json)


@es.command(name="read-category")
@click.argument("database")
@click.argument("category")
@click.option("--from", "from_position", type=click.IntRange(min=0), default=0, help="First log position.")
@click.option("--count", type=click.IntRange(min=0), help="At most this many events.")
@connection
async def read_category(store: EventStore, as_json: bool, database: str, category: str, from_position: int,
                        count: int | None) -> None:
    """Every event of CATEGORY's streams, in log order (from $ce-CATEGORY once the system
    projections run; without --json, standard error says whether it read the links or scanned
    the log)."""
    db = await _open(store, database)
    found = await db.read_category(category, from_position, count)
    if not as_json:
        click.echo(f"read-category: {db.last_category_read}", err=True)
    _events(found, as_json)


@es.group(name="projections")
def projections_group() -> None:
    """The system projections: $by_category ($ce-), $by_event_type ($et-) and $streams."""


@projections_group.command(name="run")
@click.argument("database")
@click.option("--once", is_flag=True, help="Link what the log holds now, then stop.")
@connection
async def projections_run(store: EventStore, as_json: bool, database: str, once: bool) -> None:
    """Keep $ce-<category>, $et-<type> and $streams of DATABASE up to date (Ctrl-C stops;
    a killed agent loses nothing: the next one goes on where the link streams stand)."""
    agent = SystemProjections(await _open(store, database))
    if not once:
        await agent.run()
    linked = await agent.catch_up()
    if as_json:
        echo_json({"links": linked, "checkpoint": agent.checkpoint})
    else:
        click.echo(f"wrote {linked} link{'s' if linked != 1 else ''}; checkpoint {agent.checkpoint}")


es.add_command(tail, name="subscribe")
es.add_command(persistent)


from .grpc.cli import serve  # noqa: E402  (the gRPC gateway, docs/grpc.md; imports grpc only when run)

es.add_command(serve)
