"""`safenet es persistent`: persistent subscription groups from the command line.

    safenet es persistent create shop '$ce-order' billing --from start --message-timeout 10
    safenet es persistent consume shop '$ce-order' billing --count 5        # prints and acks
    safenet es persistent consume shop '$ce-order' billing --nack park --reason "bad sku"
    safenet es persistent info shop '$ce-order' billing --json
    safenet es persistent parked shop '$ce-order' billing
    safenet es persistent replay-parked shop '$ce-order' billing

STREAM is a stream name, `$ce-<category>` or `$all` (quote the `$` in a shell).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .cli_kit import connection, echo_json
from .events import RecordedEvent
from .persistent import GroupInfo, NackAction, PersistentSettings
from .persistent_model import STRATEGIES
from .store import EventStore


def _start(text: str) -> Any:
    if text in ("start", "end"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter("start, end, or a version / log position", param_hint="--from") from None
    if value < 0:
        raise click.BadParameter("a version or position is >= 0", param_hint="--from")
    return value


def _settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--from", "start_from", default="end", show_default=True,
                     help="Where a new group starts: start, end, or a version / log position."),
        click.option("--message-timeout", type=click.FloatRange(min=0.001), default=30.0, show_default=True,
                     help="Seconds a consumer holds an event before another may take it."),
        click.option("--max-retry", type=click.IntRange(min=0), default=10, show_default=True,
                     help="Hand-outs of an event before it is parked."),
        click.option("--live-buffer", type=click.IntRange(min=1), default=500, show_default=True),
        click.option("--read-batch", type=click.IntRange(min=1), default=20, show_default=True),
        click.option("--history-buffer", type=click.IntRange(min=1), default=500, show_default=True),
        click.option("--max-subscribers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Live consumers allowed (0: any number)."),
        click.option("--strategy", type=click.Choice(list(STRATEGIES)), default="RoundRobin",
                     show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(start_from: str, message_timeout: float, max_retry: int, live_buffer: int, read_batch: int,
              history_buffer: int, max_subscribers: int, strategy: str) -> PersistentSettings:
    return PersistentSettings(
        start_from=_start(start_from), message_timeout=message_timeout, max_retry_count=max_retry,
        live_buffer_size=live_buffer, read_batch_size=read_batch, history_buffer_size=history_buffer,
        max_subscriber_count=max_subscribers, consumer_strategy=strategy)


def info_json(info: GroupInfo) -> dict[str, Any]:
    return {
        "stream": info.stream, "group": info.group, "status": info.status, "settings": info.settings.to_json(),
        "consumers": [{"name": c.name, "in_flight": c.in_flight, "acked": c.acked, "nacked": c.nacked,
                       "last_seen": c.last_seen} for c in info.consumers],
        "in_flight": info.in_flight, "parked": info.parked, "replaying": info.replaying,
        "delivered": info.delivered, "acked": info.acked, "last_checkpoint": info.last_checkpoint,
        "last_known": info.last_known, "lag": info.lag,
    }


def _event_line(event: RecordedEvent, retries: int | None = None) -> str:
    data = event.data if not isinstance(event.data, bytes) else f"<{len(event.data)} bytes>"
    text = data if isinstance(data, str) else json.dumps(data)
    extra = "" if not retries else f"  (retry {retries})"
    return f"{event.position:>10}  {event.stream}#{event.version}  {event.type}  {text}{extra}"


@click.group(name="persistent")
def persistent() -> None:
    """Persistent subscription groups: competing consumers, ack / nack, parked events."""


@persistent.command()
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@_settings_options
@connection
async def create(store: EventStore, as_json: bool, database: str, stream: str, group: str, **options: Any) -> None:
    """Create GROUP on STREAM (a stream, $ce-<category> or $all)."""
    db = await store.database(database).open()
    await db.persistent.create(stream, group, _settings(**options))
    echo_json({"stream": stream, "group": group, "created": True}) if as_json else click.echo(
        f"created group {group} on {stream}")


@persistent.command()
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@_settings_options
@connection
async def update(store: EventStore, as_json: bool, database: str, stream: str, group: str, **options: Any) -> None:
    """Change GROUP's settings (its position and state stay; consumers reconnect)."""
    db = await store.database(database).open()
    await db.persistent.update(stream, group, _settings(**options))
    echo_json({"stream": stream, "group": group, "updated": True}) if as_json else click.echo(
        f"updated group {group} on {stream}")


@persistent.command()
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@connection
async def delete(store: EventStore, as_json: bool, database: str, stream: str, group: str) -> None:
    """Delete GROUP (its ledger and parked events go with it)."""
    db = await store.database(database).open()
    await db.persistent.delete(stream, group)
    echo_json({"stream": stream, "group": group, "deleted": True}) if as_json else click.echo(
        f"deleted group {group} on {stream}")


@persistent.command(name="list")
@click.argument("database")
@click.option("--stream", help="Only this stream's groups.")
@connection
async def list_groups(store: EventStore, as_json: bool, database: str, stream: str | None) -> None:
    """List the groups of DATABASE with their state."""
    db = await store.database(database).open()
    found = await db.persistent.list(stream)
    if as_json:
        echo_json([info_json(i) for i in found])
        return
    click.echo(f"{'STREAM':<24} {'GROUP':<16} {'STATUS':<6} {'CONSUMERS':>9} {'IN FLIGHT':>9} {'PARKED':>6} "
               f"{'LAG':>6}")
    for i in found:
        click.echo(f"{i.stream:<24} {i.group:<16} {i.status:<6} {len(i.consumers):>9} {i.in_flight:>9} "
                   f"{i.parked:>6} {i.lag:>6}")


@persistent.command()
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@connection
async def info(store: EventStore, as_json: bool, database: str, stream: str, group: str) -> None:
    """GROUP's settings, consumers, events in flight, parked events and lag."""
    db = await store.database(database).open()
    found = info_json(await db.persistent.info(stream, group))
    if as_json:
        echo_json(found)
        return
    for key, value in found.items():
        if key == "consumers":
            click.echo(f"consumers: {len(value)}")
            for c in value:
                click.echo(f"  {c['name']}: {c['in_flight']} in flight, {c['acked']} acked, {c['nacked']} nacked")
        elif key == "settings":
            click.echo("settings: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            click.echo(f"{key}: {'-' if value is None else value}")


@persistent.command()
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@connection
async def parked(store: EventStore, as_json: bool, database: str, stream: str, group: str) -> None:
    """GROUP's parked events (not yet replayed), oldest first."""
    db = await store.database(database).open()
    found = await db.persistent.parked(stream, group)
    if as_json:
        echo_json([{**p.event.to_json(), "reason": p.reason, "retry_count": p.retry_count} for p in found])
        return
    for p in found:
        click.echo(f"{_event_line(p.event)}  parked: {p.reason}")


@persistent.command(name="replay-parked")
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@click.option("--stop-at", type=click.IntRange(min=0), help="Replay only the first N parked events.")
@connection
async def replay_parked(store: EventStore, as_json: bool, database: str, stream: str, group: str,
                        stop_at: int | None) -> None:
    """Deliver GROUP's parked events again (before new ones)."""
    db = await store.database(database).open()
    n = await db.persistent.replay_parked(stream, group, stop_at)
    echo_json({"stream": stream, "group": group, "replayed": n}) if as_json else click.echo(
        f"replaying {n} parked event{'s' if n != 1 else ''}")


@persistent.command()
@click.argument("database")
@click.argument("stream")
@click.argument("group")
@click.option("--name", default="cli", show_default=True, help="The consumer's name.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--nack", type=click.Choice([a.value for a in NackAction if a is not NackAction.UNKNOWN]),
              help="Nack every event with this action instead of acking it.")
@click.option("--reason", default="nacked from the command line", show_default=True)
@click.option("--buffer", "buffer_size", type=click.IntRange(min=1), default=10, show_default=True,
              help="Events held at once.")
@connection
async def consume(store: EventStore, as_json: bool, database: str, stream: str, group: str, name: str,
                  count: int | None, nack: str | None, reason: str, buffer_size: int) -> None:
    """Join GROUP as a consumer: print each event and ack it (or --nack it). With --json,
    one JSON object a line. Stop with Ctrl-C, or after --count events."""
    db = await store.database(database).open()
    seen = 0
    async with db.persistent.subscribe(stream, group, name, buffer_size=min(buffer_size, count or buffer_size)) as sub:
        async for message in sub:
            if as_json:
                echo_json({**message.event.to_json(), "retry_count": message.retry_count})
            else:
                click.echo(_event_line(message.event, message.retry_count))
            if nack is None:
                await sub.ack(message)
            else:
                await sub.nack(NackAction(nack), reason, message)
            seen += 1
            if count is not None and seen >= count:
                break
