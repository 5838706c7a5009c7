"""Live tail: a stream, a category or the whole database log, newest first, as it grows.

The page is rendered with the latest events; its script then opens a server-sent-events
connection that follows a catch-up subscription from the page's checkpoint, so no event
is missed or shown twice between the two. Each event arrives as a table row rendered by
the same template as the page's own rows. A dropped connection reconnects with the last
event id it saw (the browser sends it as Last-Event-ID) and resumes after it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..database import Database
from ..errors import DatabaseNotFound, InvalidEvent, StreamDeleted, StreamNotFound
from ..events import END, NO_STREAM, RecordedEvent, position, split_position
from ..subscriptions import Subscription
from .context import TAIL_KEEP, TAIL_ROWS
from .render import BadInput, db_path, describe, fragment, render, url
from .store_pages import guarded, int_param, ui_of

RECONNECT_MS = 2000
CATEGORY_LOOKBACK = 10 * TAIL_ROWS  # appends of the log searched for a category's recent events

# Errors after which reconnecting cannot help: the page says so and stops.
FATAL = (DatabaseNotFound, StreamNotFound, StreamDeleted, InvalidEvent, BadInput)


@guarded
async def tail_page(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    stream = request.query_params.get("stream") or None
    category = request.query_params.get("category") or None
    if stream and category:
        raise BadInput("tail a stream or a category, not both")
    events, checkpoint = await _latest(db, stream, category)
    source = url(db_path("/tail-events", db.name), stream=stream, category=category, after=checkpoint)
    return render(request, "tail.html", db=db, stream=stream, category=category, events=events,
                  checkpoint=checkpoint, source=source, keep=TAIL_KEEP)


async def _latest(db: Database, stream: str | None, category: str | None) -> tuple[list[RecordedEvent], int]:
    """The newest events (newest first) and the checkpoint to follow from."""
    if stream is not None:
        version = await db.stream_version(stream)
        if version == NO_STREAM:
            return [], NO_STREAM
        return await db.read_stream(stream, END, backward=True, count=TAIL_ROWS), version
    end = await db.log_end()
    tip = split_position(end + 1)[0]
    lookback = CATEGORY_LOOKBACK if category else TAIL_ROWS
    start = position(max(0, tip - lookback), 0)
    found = await (db.read_category(category, start) if category else db.read_all(start))
    checkpoint = max(end, found[-1].position) if found else end
    return list(reversed(found[-TAIL_ROWS:])), checkpoint


def _subscription(db: Database, stream: str | None, category: str | None, after: int) -> Subscription:
    # -1 is "nothing seen yet" for both kinds of checkpoint: a version and a log position.
    start = None if after < 0 else after
    if stream is not None:
        return db.subscribe_to_stream(stream, start)
    if category is not None:
        return db.subscribe_to_category(category, start)
    return db.subscribe_to_all(start)


async def tail_events(request: Request) -> Response:
    stream = request.query_params.get("stream") or None
    category = request.query_params.get("category") or None

    async def body() -> AsyncIterator[str]:
        yield f"retry: {RECONNECT_MS}\n\n"
        try:
            after = _checkpoint(request)
            db = await ui_of(request).database(request.path_params["db"])
            subscription = _subscription(db, stream, category, after)
            yield ": following\n\n"
            async for event in subscription:
                row = fragment("_event_row.html", event=event, db=db, show_stream=stream is None)
                data = json.dumps({"html": row, "checkpoint": subscription.checkpoint, "type": event.type})
                yield f"id: {subscription.checkpoint}\nevent: append\ndata: {data}\n\n"
            yield _problem("the stream ended (it was deleted)", fatal=True)
        except Exception as exc:
            yield _problem(describe(exc)[1], fatal=isinstance(exc, FATAL))

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _checkpoint(request: Request) -> int:
    """Where to follow from: after the last event the browser saw (it sends Last-Event-ID
    when it reconnects), else after the page's own checkpoint."""
    last_seen = request.headers.get("last-event-id", "")
    if last_seen:
        try:
            return int(last_seen)
        except ValueError:
            raise BadInput(f"Last-Event-ID {last_seen[:40]!r} is not a checkpoint") from None
    after = int_param(request, "after", -1, low=-1)
    return -1 if after is None else after


def _problem(message: str, *, fatal: bool) -> str:
    return f"event: problem\ndata: {json.dumps({'message': message, 'fatal': fatal})}\n\n"


ROUTES = [
    Route("/tail/{db:path}", tail_page, methods=["GET"], name="tail"),
    Route("/tail-events/{db:path}", tail_events, methods=["GET"], name="tail_events"),
]
