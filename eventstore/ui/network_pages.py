"""The network pages: the nodes table (refreshed in place), kill / restart / add buttons,
the fault controls (partition, isolate, pause / resume, loss, delay, clog, heal: the same as
`safenet cluster fault`) with a view of which links are cut, and the XOR ring with where a
chosen item's replicas sit.

On the mock network there are no nodes: the pages say so instead.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from node.cluster_faults import ClusterFaults, FaultState, parse_group
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
    state = ClusterFaults(cluster.lc).load()
    return fragment("_nodes.html", rows=rows, problem=problem, cluster=cluster,
                    operations=list(cluster.operations), faults=state, paused=state.paused,
                    links=_links(state, [r.index for r in rows]))


def _links(state: FaultState, indexes: list[int]) -> list[tuple[int, list[tuple[int, str]]]]:
    """The link view: for each node, each other node and how A's messages to B fare: "cut",
    "clogged" or "ok" (a node's own cell is "self")."""
    clogged = {(a, b) for a, b in state.clogs} | {(b, a) for a, b in state.clogs}
    return [(a, [(b, "self" if a == b else "cut" if (a, b) in state.cuts else
                  "clogged" if (a, b) in clogged else "ok") for b in indexes]) for a in indexes]


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


# ----------------------------------------------------------------------------- faults


async def _fault(request: Request, what: str, change: Any) -> Response:
    """Run `change(ClusterFaults)` in a worker thread (the launcher blocks on its file lock
    while a restart holds it) and come back to the page with what it did."""
    cluster = _cluster(ui_of(request))
    if not cluster.controllable:
        return _back(f"Could not {what}: this cluster was not launched from this machine's data dir.")
    faults = ClusterFaults(cluster.lc)

    def run() -> Any:
        outcome = change(faults)
        return trio.run(lambda: outcome) if hasattr(outcome, "__await__") else outcome

    try:
        result = await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except ClusterError as exc:
        return _back(f"Could not {what}: {exc}")
    if isinstance(result, dict):
        late = result.get("unanswered")
        summary = "; ".join(result.get("summary") or []) or "none"
        extra = f" Node(s) {', '.join(map(str, late))} did not answer." if late else ""
        return _back(f"{what[0].upper()}{what[1:]}: done. Faults in force: {summary}.{extra}")
    return _back(f"{what[0].upper()}{what[1:]}: " + ("done." if result else "nothing to do."))


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v).strip() for k, v in (await request.form()).items()}


def _number(value: str, what: str, default: float | None = None) -> float:
    if value == "" and default is not None:
        return default
    try:
        return float(value)
    except ValueError:
        raise BadInput(f"{what} is a number, got {value[:20]!r}") from None


def _nodes(value: str) -> list[int] | None:
    return parse_group(value) if value else None


@guarded
async def fault_partition(request: Request) -> Response:
    form = await _form(request)
    sides = [parse_group(side) for side in form.get("sides", "").split()]
    one_way = form.get("one_way") in ("on", "1", "true")
    if not sides:
        raise BadInput("name the sides, like 0,1,2 3,4,5")
    return await _fault(request, "partition " + " | ".join(form["sides"].split()),
                        lambda f: f.partition(sides, one_way=one_way))


@guarded
async def fault_isolate(request: Request) -> Response:
    index = _index((await _form(request)).get("index", ""))
    return await _fault(request, f"isolate node {index}", lambda f: f.isolate(index))


@guarded
async def fault_pause(request: Request) -> Response:
    index = _index((await _form(request)).get("index", ""))
    return await _fault(request, f"pause node {index}", lambda f: f.pause(index))


@guarded
async def fault_resume(request: Request) -> Response:
    index = _index((await _form(request)).get("index", ""))
    return await _fault(request, f"resume node {index}", lambda f: f.resume(index))


@guarded
async def fault_loss(request: Request) -> Response:
    form = await _form(request)
    percent = _number(form.get("percent", ""), "loss")
    nodes = _nodes(form.get("nodes", ""))
    return await _fault(request, f"loss {percent:g}%", lambda f: f.loss(percent, nodes))


@guarded
async def fault_delay(request: Request) -> Response:
    form = await _form(request)
    ms = _number(form.get("ms", ""), "delay")
    jitter = _number(form.get("jitter", ""), "jitter", 0.0)
    nodes = _nodes(form.get("nodes", ""))
    return await _fault(request, f"delay {ms:g} ms", lambda f: f.delay(ms, jitter, nodes))


@guarded
async def fault_clog(request: Request) -> Response:
    form = await _form(request)
    a, b = _index(form.get("a", "")), _index(form.get("b", ""))
    seconds = _number(form.get("seconds", ""), "seconds", 5.0)
    return await _fault(request, f"clog link {a}-{b}", lambda f: f.clog(a, b, seconds))


@guarded
async def fault_heal(request: Request) -> Response:
    return await _fault(request, "heal", partial(ClusterFaults.heal))


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
    Route("/network/fault/partition", fault_partition, methods=["POST"], name="fault_partition"),
    Route("/network/fault/isolate", fault_isolate, methods=["POST"], name="fault_isolate"),
    Route("/network/fault/pause", fault_pause, methods=["POST"], name="fault_pause"),
    Route("/network/fault/resume", fault_resume, methods=["POST"], name="fault_resume"),
    Route("/network/fault/loss", fault_loss, methods=["POST"], name="fault_loss"),
    Route("/network/fault/delay", fault_delay, methods=["POST"], name="fault_delay"),
    Route("/network/fault/clog", fault_clog, methods=["POST"], name="fault_clog"),
    Route("/network/fault/heal", fault_heal, methods=["POST"], name="fault_heal"),
]
