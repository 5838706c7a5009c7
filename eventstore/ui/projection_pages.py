"""The projections page: each projection's state, checkpoint and lag; rebuild."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .projections import rebuild, statuses
from .render import BadInput, db_path, render, url
from .store_pages import guarded, see_other, ui_of


@guarded
async def projections_page(request: Request) -> Response:
    ui = ui_of(request)
    db = await ui.database(request.path_params["db"])
    found = await statuses(db, ui.projections)
    return render(request, "projections.html", db=db, projections=found, operations=list(ui.rebuilds))


@guarded
async def rebuild_projection(request: Request) -> Response:
    ui = ui_of(request)
    db = await ui.database(request.path_params["db"])
    name = str((await request.form()).get("name", "")).strip()
    projection = ui.projections.get(name)
    if projection is None:
        raise BadInput(f"the UI does not have the code of projection {name!r}, so it cannot rebuild it "
                       "(start it with --projections MODULE:NAME)")
    op = ui.rebuilds.start(ui.nursery, f"rebuild {name} in {db.name}", partial(rebuild, db, projection))
    return see_other(url(db_path("/projections", db.name),
                         notice=f"Rebuilding {name} from the first event (operation {op.number})."))


ROUTES = [
    Route("/projections/{db:path}", projections_page, methods=["GET"], name="projections"),
    Route("/rebuild/{db:path}", rebuild_projection, methods=["POST"], name="rebuild"),
]
