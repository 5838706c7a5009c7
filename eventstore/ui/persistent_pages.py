"""Persistent subscription pages: every group of a database, and a page per group with its
settings, consumers, the events in flight, the parked events and the lag; replay parked."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .render import BadInput, db_path, render, url
from .store_pages import guarded, required, see_other, ui_of


@guarded
async def groups_page(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    groups = await db.persistent.list()
    return render(request, "persistent.html", db=db, groups=groups)


@guarded
async def group_page(request: Request) -> Response:
    ui = ui_of(request)
    db = await ui.database(request.path_params["db"])
    stream, group = required(request, "stream"), required(request, "group")
    info = await db.persistent.info(stream, group)
    in_flight = await db.persistent.in_flight(stream, group)
    parked = await db.persistent.parked(stream, group)
    return render(request, "persistent_group.html", db=db, info=info, in_flight=in_flight, parked=parked,
                  now=db.store.clock())


@guarded
async def replay_parked(request: Request) -> Response:
    db = await ui_of(request).database(request.path_params["db"])
    form = await request.form()
    stream, group = str(form.get("stream", "")), str(form.get("group", ""))
    if not stream or not group:
        raise BadInput("replaying needs the group's stream and name")
    n = await db.persistent.replay_parked(stream, group)
    return see_other(url(db_path("/persistent-group", db.name), stream=stream, group=group,
                         notice=f"Replaying {n} parked event{'s' if n != 1 else ''}."))


ROUTES = [
    Route("/persistent/{db:path}", groups_page, methods=["GET"], name="persistent"),
    Route("/persistent-group/{db:path}", group_page, methods=["GET"], name="persistent_group"),
    Route("/persistent-replay/{db:path}", replay_parked, methods=["POST"], name="persistent_replay"),
]
