"""The Db Manager pages: databases -> categories -> stream keys -> stream -> event, and
appending an event.

Names travel safely: a database's name is the (quoted) last part of the path, and a stream's
name a query parameter, so any name the store accepts has a page.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..database import Database
from ..errors import StreamNotFound, WrongExpectedVersion
from ..events import ANY, END, NO_STREAM, STREAM_EXISTS, EventData, category_of
from .context import UiContext
from .render import BadInput, db_path, describe, error_page, render, url

STREAM_PAGE = 20  # events a stream page shows
STREAMS_PAGE = 50  # stream keys a stream-key page shows
MAX_PAGE = 200

Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Any error the handler meets becomes a page with a message, not a traceback."""

    @wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return error_page(request, exc)

    return run


def ui_of(request: Request) -> UiContext:
    return request.app.state.ui  # type: ignore[no-any-return]


def see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def int_param(request: Request, name: str, default: int | None = None, *, low: int | None = None,
              high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} is a whole number, got {raw[:40]!r}") from None
    if low is not None and value < low or high is not None and value > high:
        raise BadInput(f"{name} is out of range: {value}")
    return value


def required(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    if not value:
        raise BadInput(f"the page needs a {name!r} parameter")
    return value


def parse_expected(text: str) -> int:
    """An expected version as the append form takes it: a version, or a name."""
    named = {"any": ANY, "no_stream": NO_STREAM, "no-stream": NO_STREAM, "no stream": NO_STREAM,
             "stream_exists": STREAM_EXISTS, "stream-exists": STREAM_EXISTS, "stream exists": STREAM_EXISTS}
    cleaned = text.strip().lower()
    if cleaned in named:
        return named[cleaned]
    try:
        value = int(cleaned)
    except ValueError:
        raise BadInput("the expected version is a version (0, 1, …), any, no_stream or stream_exists") from None
    if value < 0:
        raise BadInput("a version is 0 or more (or say any / no_stream / stream_exists)")
    return value


def parse_json(text: str, what: str, *, optional: bool = False) -> Any:
    if optional and not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"the {what} is not JSON: {exc}") from None


def parse_uuid(text: str, what: str) -> uuid.UUID | None:
    if not text.strip():
        return None
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise BadInput(f"the {what} is not a UUID: {text[:60]!r}") from None


# ----------------------------------------------------------------------------- databases


@guarded
async def databases(request: Request) -> Response:
    names = await ui_of(request).store.databases()
    return render(request, "databases.html", names=names)


@guarded
async def create_database(request: Request) -> Response:
    form = await request.form()
    name = str(form.get("name", "")).strip()
    private = form.get("private") == "on"
    try:
        await ui_of(request).store.create_database(name, private=private)
    except Exception as exc:
        status, message = describe(exc)
        names = await _names_or_empty(request)
        return render(request, "databases.html", status=status, names=names, error=message, form_name=name)
    return see_other(url(db_path("/categories", name), notice=f"Created database {name}."))


async def _names_or_empty(request: Request) -> list[str]:
    try:
        return await ui_of(request).store.databases()
    except Exception:
        return []


@guarded
async def categories(request: Request) -> Response:
    name = request.path_params["db"]
    db = await ui_of(request).database(name)
    found = await db.categories()
    return render(request, "categories.html", db=db, info=db.info, categories=found)


# ----------------------------------------------------------------------------- stream keys


@guarded
async def stream_keys(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    category = required(request, "category")
    query = request.query_params.get("q", "").strip()
    page = int_param(request, "page", 1, low=1) or 1
    skip = (page - 1) * STREAMS_PAGE
    shown: list[str] = []
    matched = 0
    more = False
    # The index is read a segment at a time and the reading stops once the page is full
    # and one more match proves there is a next page.
    async for key in db.streams(category):
        if query and query.lower() not in key.lower():
            continue
        matched += 1
        if matched <= skip:
            continue
        if len(shown) == STREAMS_PAGE:
            more = True
            break
        shown.append(key)
    return render(request, "streams.html", db=db, category=category, keys=shown, query=query, page=page,
                  more=more, first_number=skip + 1)


# ----------------------------------------------------------------------------- a stream


@guarded
async def stream(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    name = required(request, "stream")
    size = int_param(request, "size", STREAM_PAGE, low=1, high=MAX_PAGE) or STREAM_PAGE
    before = int_param(request, "before", None, low=0)
    version = await db.stream_version(name)
    if version == NO_STREAM:
        raise StreamNotFound(name)
    start = END if before is None or before >= version else before
    events = await db.read_stream(name, start, backward=True, count=size)
    newest = events[0].version if events else None
    oldest = events[-1].version if events else None
    older = oldest - 1 if oldest is not None and oldest > 0 else None
    at_newest = start == END
    newer = None if at_newest or newest is None else min(version, newest + size)
    meta = await db.get_stream_metadata(name)
    has_meta = any(v is not None for v in meta.to_json().values())
    return render(request, "stream.html", db=db, stream=name, category=category_of(name), version=version,
                  events=events, size=None if size == STREAM_PAGE else size, older=older, newer=newer,
                  at_newest=at_newest, metadata=meta.to_json() if has_meta else None)


# ----------------------------------------------------------------------------- an event


@guarded
async def event(request: Request) -> Response:
    ui = ui_of(request)
    db = await ui.database(request.path_params["db"])
    name = required(request, "stream")
    version = int_param(request, "version", None, low=0)
    if version is None:
        raise BadInput("the page needs a 'version' parameter")
    found = await db.read_stream(name, version, count=1)
    if not found or found[0].version != version:
        # A restructure event is hidden from ordinary reads (it is applied instead): read
        # the history as written to show it.
        found = await db.read_stream(name, version, count=1, resolve_corrections=False)
    if not found or found[0].version != version:
        raise BadInput(f"stream {name!r} shows no event at version {version} (truncated, expired or beyond its end)")
    shown = found[0]
    last = await db.stream_version(name)
    return render(request, "event.html", db=db, event=shown, stream=name, last_version=last,
                  segment=_segment_of(db, version), cluster=ui.cluster is not None)


def _segment_of(db: Database, version: int) -> int:
    """Which stream MD (segment) of its stream holds `version`."""
    return version // db.info.stream_segment_size if db.info else 0


@guarded
async def event_by_id(request: Request) -> Response:
    ui = ui_of(request)
    db = await ui.database(request.path_params["db"])
    event_id = parse_uuid(required(request, "id"), "event id")
    assert event_id is not None
    where = await ui.lookups.of(db).find(event_id)
    if where is None:
        return render(request, "not_an_event.html", status=404, db=db, event_id=event_id,
                      why=request.query_params.get("via", "event"))
    return see_other(url(db_path("/event", db.name), stream=where.stream, version=where.version))


@guarded
async def correlation(request: Request) -> Response:
    ui = ui_of(request)
    db = await ui.database(request.path_params["db"])
    correlation_id = parse_uuid(required(request, "id"), "correlation id")
    assert correlation_id is not None
    index = ui.lookups.of(db)
    members = await index.correlated(correlation_id)
    origin = index.by_id.get(correlation_id)
    if origin is not None and origin not in members:
        # The event whose id the conversation carries began it, whatever its own ids say.
        members = sorted([origin, *members], key=lambda w: w.position)
    return render(request, "correlation.html", db=db, correlation_id=correlation_id, members=members,
                  origin=origin)


# ----------------------------------------------------------------------------- appending


@guarded
async def append_form(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    name = request.query_params.get("stream", "")
    expected = "no_stream"
    if name:
        version = await db.stream_version(name)
        expected = "no_stream" if version == NO_STREAM else str(version)
    values = {"stream": name, "type": "", "data": "{}", "metadata": "", "expected": expected,
              "causation": "", "correlation": ""}
    return render(request, "append.html", db=db, values=values)


@guarded
async def append(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    form = await request.form()
    values = _form_values(form)
    try:
        event = EventData(
            values["type"].strip(),
            parse_json(values["data"], "payload"),
            parse_json(values["metadata"], "metadata", optional=True),
            causation_id=parse_uuid(values["causation"], "causation id"),
            correlation_id=parse_uuid(values["correlation"], "correlation id"),
        )
        expected = parse_expected(values["expected"])
        stream_name = values["stream"].strip()
        result = await db.append(stream_name, [event], expected_version=expected)
    except Exception as exc:
        status, message = describe(exc)
        actual = exc.actual if isinstance(exc, WrongExpectedVersion) else None
        return render(request, "append.html", status=status, db=db, values=values, error=message,
                      actual=actual)
    notice = (f"Appended {event.type} to {stream_name} as version {result.next_expected_version} "
              f"(log position {result.log_position}).")
    return see_other(url(db_path("/stream", db.name), stream=stream_name, notice=notice))


def _form_values(form: FormData) -> dict[str, str]:
    keys = ("stream", "type", "data", "metadata", "expected", "causation", "correlation")
    return {k: str(form.get(k, "")) for k in keys}


ROUTES = [
    Route("/", databases, methods=["GET"], name="databases"),
    Route("/databases", create_database, methods=["POST"], name="create_database"),
    Route("/categories/{db:path}", categories, methods=["GET"], name="categories"),
    Route("/streams/{db:path}", stream_keys, methods=["GET"], name="streams"),
    Route("/stream/{db:path}", stream, methods=["GET"], name="stream"),
    Route("/event/{db:path}", event, methods=["GET"], name="event"),
    Route("/event-by-id/{db:path}", event_by_id, methods=["GET"], name="event_by_id"),
    Route("/correlation/{db:path}", correlation, methods=["GET"], name="correlation"),
    Route("/append/{db:path}", append_form, methods=["GET"], name="append_form"),
    Route("/append/{db:path}", append, methods=["POST"], name="append"),
]
