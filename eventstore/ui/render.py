"""Templates, filters, and turning errors into messages a page can show.

Every error a page meets — from the store, the network or the cluster — becomes a short
message on the page with a status code that fits; a traceback only ever goes to the log.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from node import errors as NE
from node.clusterfile import ClusterError
from node.clusterfile import human_bytes as _human_bytes
from node.transport import HandshakeError, Unreachable

from ..errors import (
    CorruptData,
    DatabaseExists,
    DatabaseNotFound,
    EventStoreError,
    InvalidEvent,
    PersistentSubscriptionExists,
    PersistentSubscriptionNotFound,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from ..events import ANY, NO_STREAM, STREAM_EXISTS, split_position

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class BadInput(Exception):
    """A form or query value the UI cannot use; shown as it is."""


# ----------------------------------------------------------------------------- filters


def pretty_json(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes, not JSON>\nbase64: {base64.b64encode(value[:4096]).decode()}" + (
            " …" if len(value) > 4096 else ""
        )
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def compact(value: Any, limit: int = 80) -> str:
    text = f"<{len(value)} bytes>" if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_bytes(n: int | None) -> str:
    return _human_bytes(n, none="–")


def when(value: datetime | float | None) -> str:
    if value is None:
        return "–"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def version_name(version: int) -> str:
    return {NO_STREAM: "no stream", ANY: "any", STREAM_EXISTS: "stream exists"}.get(version, str(version))


def position_text(pos: int) -> str:
    slot, index = split_position(pos)
    return f"{pos} (append {slot}, event {index})"


def url(path: str, **params: Any) -> str:
    """`path` with the query `params` (None values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    return f"{path}?{query}" if query else path


def db_path(prefix: str, db: str) -> str:
    """A page of database `db`: its name is the last part of the path, quoted, so any
    name (even one with '/') routes."""
    return f"{prefix}/{quote(db, safe='')}"


def make_environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pretty_json=pretty_json, compact=compact, human_bytes=human_bytes, when=when,
                       duration=duration, rate=rate, version_name=version_name, position_text=position_text)
    env.globals.update(url=url, db_path=db_path)
    return env


ENV = make_environment()


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    ctx = request.app.state.ui
    values.setdefault("notice", request.query_params.get("notice"))
    values.setdefault("error", None)
    html = ENV.get_template(template).render(request=request, ui=ctx, **values)
    return HTMLResponse(html, status_code=status)


def fragment(template: str, **values: Any) -> str:
    return ENV.get_template(template).render(**values)


# ----------------------------------------------------------------------------- errors


def describe(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, message) for an error a page met."""
    exc = first_leaf(exc)
    if isinstance(exc, WrongExpectedVersion):
        return 409, f"Wrong expected version: {exc}. Nothing was written."
    if isinstance(exc, DatabaseNotFound | StreamNotFound | PersistentSubscriptionNotFound):
        return 404, f"Not found: {exc}."
    if isinstance(exc, StreamDeleted):
        return 410, f"Deleted: {exc}."
    if isinstance(exc, DatabaseExists | PersistentSubscriptionExists):
        return 409, f"Exists: {exc}."
    if isinstance(exc, InvalidEvent | BadInput):
        return 400, f"Not accepted: {exc}"
    if isinstance(exc, CorruptData):
        return 502, f"The store found data it cannot read: {exc}"
    if isinstance(exc, EventStoreError):
        return 500, f"The event store failed: {exc}"
    if isinstance(exc, NE.NetworkError | Unreachable | HandshakeError):
        return 503, (f"The network did not answer ({type(exc).__name__}: {exc}). The outcome of a write "
                     "is unknown; retrying it with the same event ids is safe.")
    if isinstance(exc, NE.SafeError):
        return 502, f"The network refused the request ({type(exc).__name__}: {exc})."
    if isinstance(exc, ClusterError):
        return 503, f"Cluster: {exc}"
    if isinstance(exc, OSError):
        return 503, f"I/O error: {exc}"
    log.error("unexpected error on a page", exc_info=exc)
    return 500, f"Unexpected error ({type(exc).__name__}): {exc}"


def first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside trio's exception groups (the one worth telling)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def error_page(request: Request, exc: BaseException) -> HTMLResponse:
    status, message = describe(exc)
    return render(request, "error.html", status=status, error=message, status_code=status)
