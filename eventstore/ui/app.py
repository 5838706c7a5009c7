"""`safenet ui`: the management web UI, served by hypercorn's trio worker.

    safenet ui --mock ./shop.mock              # the event store on a mock network in a file
    safenet ui --cluster ./.safenet --port 0   # a local cluster; 0 picks a free port
    safenet ui --projections eventstore.notebook.index:NOTEBOOK_INDEX   # may rebuild it

The app is Starlette with Jinja2 pages rendered on the server and one small script (live
tail, the nodes table refreshing itself). Everything runs in one trio run: the store's
client, the node tools, the web server and the background work of the buttons (node
restarts, projection rebuilds) share its nursery, so Ctrl-C (or SIGTERM) stops all of it.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import click
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from client.authenticator import AppGrant
from client.connect import connect
from node.clikit import CONTEXT, SafenetCommand, cluster_option, explained, mock_option
from node.clusterfile import ClusterError, resolve_cluster_file
from node.tools import open_tools

from ..cli_kit import account_option, app_option, identity, load_grant
from ..cqrs import Projection
from ..store import EventStore
from . import network_pages, persistent_pages, projection_pages, store_pages, tail
from .cluster_control import ClusterControl
from .context import UiContext
from .projections import load_projections
from .render import STATIC, describe, first_leaf, render

GRACEFUL_SECONDS = 2.0  # open live tails are cut after this on shutdown
TOOLS_TIMEOUT = 1.5  # a node that takes longer to answer `status` shows as silent


LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def create_app(ui: UiContext, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app over `ui`. `allowed_hosts` limits the Host header the app answers to:
    served on loopback it is the loopback names, so a web page whose name an attacker points
    at 127.0.0.1 (DNS rebinding) gets nothing from it."""
    middleware = [Middleware(SameOriginPosts)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    routes = [
        *store_pages.ROUTES,
        *tail.ROUTES,
        *projection_pages.ROUTES,
        *persistent_pages.ROUTES,
        *network_pages.ROUTES,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, middleware=middleware)
    app.state.ui = ui
    return app


class SameOriginPosts:
    """Refuse a POST that another site's page sent: a form on any web page can aim at
    127.0.0.1:8080/network/kill, and the browser would send it. Browsers name the sending
    page in the Origin header; it must be this server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            origin, host = headers.get(b"origin"), headers.get(b"host", b"")
            if origin is not None and urlsplit(origin.decode("latin-1")).netloc != host.decode("latin-1"):
                refused = PlainTextResponse("Refused: this form was sent from another site's page.", status_code=403)
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "No such page." if exc.status_code == 404 else f"{exc.status_code}: {exc.detail}"
    return render(request, "error.html", status=exc.status_code, error=message, status_code=exc.status_code)


@asynccontextmanager
async def open_context(cluster: str | None, mock: str | None, nursery: trio.Nursery,
                       projections: dict[str, Projection] | None = None, *,
                       grant: AppGrant | None = None, as_account: bool = False) -> AsyncIterator[UiContext]:
    """The store on the mock file or the cluster, and on a cluster its node tools. The store
    acts with the tool's key, or as an app of the user's account (`grant`, or with
    `as_account` the tools' app of the account logged in)."""
    async with AsyncExitStack() as stack:
        keys, owner = await identity(cluster, mock, grant, as_account)
        client = await stack.enter_async_context(connect(cluster, mock, keys, owner))
        control = None
        if mock is not None:
            source = f"mock network in {mock}"
        else:
            path = resolve_cluster_file(cluster)
            tools = await stack.enter_async_context(open_tools(timeout=TOOLS_TIMEOUT))
            control = ClusterControl(path, tools)
            source = f"cluster {path}"
        if keys is not None:
            source += f", as app key {keys.public.hex()[:12]}.. of your account"
        yield UiContext(EventStore(client), source, nursery, control, dict(projections or {}))


async def serve(*, host: str, port: int, cluster: str | None, mock: str | None,
                projections: dict[str, Projection] | None = None,
                announce: Callable[[str], None] = print,
                grant: AppGrant | None = None, as_account: bool = False) -> None:
    """Serve until SIGINT or SIGTERM."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through logging: warnings and errors
    async with trio.open_nursery() as nursery:
        async with open_context(cluster, mock, nursery, projections, grant=grant, as_account=as_account) as ui:
            app = create_app(ui, allowed_hosts=list(LOOPBACK_NAMES) if host in LOOPBACK_NAMES else None)

            stopped = trio.Event()

            async def run_server(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    # Starlette and hypercorn type the ASGI callable differently; it is the same thing.
                    await hypercorn_serve(app, config, shutdown_trigger=_signalled,  # type: ignore[arg-type]
                                          task_status=task_status)
                finally:
                    stopped.set()

            binds = await nursery.start(run_server)
            announce(f"safenet ui: serving {binds[0]}/ ({ui.source}); Ctrl-C stops")
            # Stay inside the client's context until the server has stopped; then end the
            # background operations still running (their threads are abandoned).
            await stopped.wait()
            nursery.cancel_scope.cancel()


async def _signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()  # a script (or a test) waits for this line to know the port


@click.command(name="ui", cls=SafenetCommand, context_settings=CONTEXT)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@cluster_option
@mock_option
@click.option("--projections", "projection_specs", multiple=True, metavar="MODULE:NAME",
              help="A Projection (or a list of them) whose code the UI may run to rebuild it. Repeatable.")
@app_option
@account_option
def ui(port: int, host: str, cluster: str | None, mock: str | None, projection_specs: tuple[str, ...],
       app_file: str | None, as_account: bool) -> None:
    """The management web UI: databases, streams, events, live tail, projections, nodes.
    With --account (or --app GRANT) it shows the databases of an app of your account."""
    if cluster is not None and mock is not None:
        raise click.UsageError("give --cluster or --mock, not both")
    grant = load_grant(app_file)
    if grant is not None and as_account:
        raise click.UsageError("give --app or --account, not both")
    try:
        projections = load_projections(projection_specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--projections") from None
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(partial(serve, host=host, port=port, cluster=cluster, mock=mock, projections=projections,
                         announce=_announce, grant=grant, as_account=as_account))
    except Exception as exc:  # the group reports it: one line, the exit code of docs/cli.md
        leaf = first_leaf(exc)
        if isinstance(leaf, click.ClickException | ClusterError):
            raise leaf from None
        if isinstance(leaf, OSError):
            raise explained(leaf, f"cannot serve on {host}:{port}: {leaf.strerror or leaf}") from None
        raise explained(leaf, describe(leaf)[1]) from None
