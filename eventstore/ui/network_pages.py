"""The network pages: the nodes table (refreshed in place), kill / restart / add buttons,
and the XOR ring with where a chosen item's replicas sit.

On the mock network there are no nodes: the pages say so instead.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from node.clusterfile import ClusterError
from node.xorname import XorName

from .cluster_control import ClusterControl
from .context import UiContext
from .render import BadInput, describe, fragment, render, url
from .ring import layout, roles_from_locate
from .store_pages import guarded, see_other, ui_of

REFRESH_MS = 2000  # how often the nodes table refreshes itself


def _cluster(ui: UiContext) -> ClusterControl:
    if ui.cluster is None:
        raise ClusterError(f"there is no cluster: this UI runs on the {ui.source}")
    return ui.cluster


async def _nodes_fragment(ui: UiContext) -> str:
    cluster = _cluster(ui)
    try:
        rows = await cluster.nodes()
        problem = None
    except Exception as exc:
        rows, problem = [], describe(exc)[1]
    return fragment("_nodes.html", rows=rows, problem=problem, cluster=cluster,
                    operations=list(cluster.operations))


@guarded
async def network(request: Request) -> Response:
    ui = ui_of(request)
    if ui.cluster is None:
        return render(request, "network.html", nodes_html=None)
    return render(request, "network.html", nodes_html=await _nodes_fragment(ui), refresh_ms=REFRESH_MS,
                  replication=ui.cluster.replication)


async def nodes(request: Request) -> Response:
    ui = ui_of(request)
    if ui.cluster is None:
        return HTMLResponse("<p class='problem'>No cluster.</p>", status_code=404)
    return HTMLResponse(await _nodes_fragment(ui))


def _index(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise BadInput(f"a node index is a whole number, got {str(value)[:20]!r}") from None


def _back(notice: str) -> Response:
    return see_other(url("/network", notice=notice))


@guarded
async def kill(request: Request) -> Response:
    cluster = _cluster(ui_of(request))
    index = _index((await request.form()).get("index", ""))
    try:
        done = await cluster.kill(index)
        return _back(done[0].upper() + done[1:] + ".")
    except ClusterError as exc:
        return _back(f"Could not kill node {index}: {exc}")


@guarded
async def restart(request: Request) -> Response:
    ui = ui_of(request)
    cluster = _cluster(ui)
    index = _index((await request.form()).get("index", ""))
    try:
        op = cluster.restart(ui.nursery, index)
    except ClusterError as exc:
        return _back(f"Could not restart node {index}: {exc}")
    return _back(f"Restarting node {index} (operation {op.number}); it shows up once routing has converged.")


@guarded
async def add(request: Request) -> Response:
    ui = ui_of(request)
    try:
        op = _cluster(ui).add(ui.nursery)
    except ClusterError as exc:
        return _back(f"Could not add a node: {exc}")
    return _back(f"Adding a node (operation {op.number}); it shows up once it has joined.")


@guarded
async def ring(request: Request) -> Response:
    ui = ui_of(request)
    if ui.cluster is None:
        return render(request, "ring.html", picture=None, found=None, item=None, choice={})
    cluster = ui.cluster
    choice = {k: request.query_params.get(k, "") for k in ("name", "db", "stream", "segment", "what")}
    item, described = await _chosen(ui, choice)
    found = await cluster.locate(item) if item else None
    rows = await cluster.nodes()
    picture = layout(((r.index, r.id, r.alive and r.responding) for r in rows), item,
                     **(roles_from_locate(found) if found else {}))
    databases = await _databases_or_none(ui)
    return render(request, "ring.html", picture=picture, found=found, item=item, described=described,
                  choice=choice, databases=databases, replication=cluster.replication,
                  by_id={r.id: r for r in rows})


async def _chosen(ui: UiContext, choice: dict[str, str]) -> tuple[str | None, str]:
    """The item's 64-hex name and what it is, from the form: a name, or a database's
    stream segment or log segment (addresses only the store can derive)."""
    if choice["name"].strip():
        try:
            return XorName.from_hex(choice["name"]).hex(), "the name given"
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    if not choice["db"]:
        return None, ""
    try:
        segment = int(choice["segment"] or 0)
    except ValueError:
        raise BadInput("a segment is a whole number") from None
    if segment < 0:
        raise BadInput("a segment is 0 or more")
    db = await ui.database(choice["db"])
    if choice["stream"]:
        address = db.layout.stream_segment(choice["stream"], segment)
        what = f"segment {segment} of stream {choice['stream']} in database {db.name} (an MD)"
    else:
        address = db.layout.log_segment(segment)
        what = f"segment {segment} of the log of database {db.name} (an MD)"
    return address.name.hex(), what


async def _databases_or_none(ui: UiContext) -> list[str]:
    try:
        return await ui.store.databases()
    except Exception:
        return []


ROUTES = [
    Route("/network", network, methods=["GET"], name="network"),
    Route("/network/nodes", nodes, methods=["GET"], name="nodes"),
    Route("/network/kill", kill, methods=["POST"], name="kill"),
    Route("/network/restart", restart, methods=["POST"], name="restart"),
    Route("/network/add", add, methods=["POST"], name="add"),
    Route("/network/ring", ring, methods=["GET"], name="ring"),
]
