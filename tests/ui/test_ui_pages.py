"""The UI's pages in-process on an in-memory mock network, through httpx: no browser, fast."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlencode

import httpx
import pytest
import trio

from client.mock import MockNetwork
from eventstore.api import NO_STREAM, EventData, EventStore, RecordedEvent
from eventstore.cqrs import Projection, ProjectionAgent
from eventstore.ui import UiContext, create_app
from node.keys import Keypair


class Ui:
    def __init__(self, net: MockNetwork, store: EventStore, app: object, http: httpx.AsyncClient) -> None:
        self.net, self.store, self.app, self.http = net, store, app, http


@pytest.fixture
async def ui(nursery: trio.Nursery) -> AsyncIterator[Ui]:
    net = MockNetwork(seed=1)
    store = EventStore(net.client(Keypair(b"\x07" * 32)), pending_grace=1.0, poll_interval=0.05)
    app = create_app(UiContext(store, "mock network in memory", nursery))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://ui") as http:
        yield Ui(net, store, app, http)


def alert(html: str) -> str:
    found = re.search(r'role="alert">(.*?)</div>', html, re.S)
    return "" if found is None else found.group(1).replace("&#39;", "'")


def no_traceback(html: str) -> None:
    assert "Traceback" not in html and 'File "' not in html


async def test_create_a_database_and_list_it(ui: Ui) -> None:
    page = await ui.http.get("/")
    assert page.status_code == 200 and "No databases yet" in page.text
    made = await ui.http.post("/databases", data={"name": "shop"})
    assert made.status_code == 303
    assert made.headers["location"].startswith("/categories/shop?notice=")
    page = await ui.http.get(made.headers["location"])
    assert "Created database shop." in page.text and "No events yet" in page.text
    assert "shop" in (await ui.http.get("/")).text
    again = await ui.http.post("/databases", data={"name": "shop"})
    assert again.status_code == 409 and "already exists" in alert(again.text)
    bad = await ui.http.post("/databases", data={"name": "a@b"})
    assert bad.status_code == 400 and "no '@'" in alert(bad.text)


async def test_append_then_the_stream_newest_first_in_pages(ui: Ui) -> None:
    await ui.store.create_database("shop")
    first = await ui.http.post("/append/shop", data={
        "stream": "order@1", "type": "Placed", "data": '{"sku": 7}', "expected": "no_stream"})
    assert first.status_code == 303 and "version+0" in first.headers["location"]
    for n in range(1, 25):
        done = await ui.http.post("/append/shop", data={
            "stream": "order@1", "type": f"Step{n}", "data": str(n), "expected": str(n - 1)})
        assert done.status_code == 303, alert(done.text)
    page = await ui.http.get("/stream/shop", params={"stream": "order@1"})
    versions = [int(v) for v in re.findall(r'data-version="(\d+)"', page.text)]
    assert versions == list(range(24, 4, -1))  # newest first, 20 a page
    older = re.search(r'href="([^"]+)" id="older"', page.text)
    assert older is not None
    page = await ui.http.get(older.group(1).replace("&amp;", "&"))
    assert [int(v) for v in re.findall(r'data-version="(\d+)"', page.text)] == [4, 3, 2, 1, 0]
    assert 'id="older"' not in page.text and 'id="newer"' in page.text


async def test_a_wrong_expected_version_is_a_message_and_writes_nothing(ui: Ui) -> None:
    db = await ui.store.create_database("shop")
    await db.append("order@1", [EventData("Placed", {})], expected_version=NO_STREAM)
    await db.append("order@1", [EventData("Paid", {})])
    form = {"stream": "order@1", "type": "Late", "data": "{}", "expected": "0"}
    page = await ui.http.post("/append/shop", data=form)
    assert page.status_code == 409
    assert alert(page.text) == ("Wrong expected version: stream 'order@1': expected version 0, actual 1. "
                                "Nothing was written.")
    assert 'id="actual-version"' in page.text and 'value="Late"' in page.text  # the form keeps its values
    assert await db.stream_version("order@1") == 1
    form_page = await ui.http.get("/append/shop", params={"stream": "order@1"})
    assert 'id="expected" name="expected" value="1"' in form_page.text  # prefilled with the current version


@pytest.mark.parametrize(("field", "value", "says"), [
    ("data", "{not json", "payload is not JSON"),
    ("metadata", "[1,", "metadata is not JSON"),
    ("expected", "-3", "a version is 0 or more"),
    ("expected", "soon", "the expected version is a version"),
    ("causation", "nope", "causation id is not a UUID"),
    ("type", "", "an event type is a non-empty string"),
    ("stream", "$system", "belong to the store"),
])
async def test_bad_append_input_is_a_message(ui: Ui, field: str, value: str, says: str) -> None:
    await ui.store.create_database("shop")
    form = {"stream": "order@1", "type": "Placed", "data": "{}", "expected": "any", field: value}
    page = await ui.http.post("/append/shop", data=form)
    assert page.status_code == 400 and says in alert(page.text)
    no_traceback(page.text)


async def test_the_event_page_and_its_causation_and_correlation_links(ui: Ui) -> None:
    db = await ui.store.create_database("shop")
    cause = EventData("Placed", {"sku": 7, "lines": [{"item": "pen", "qty": 2}]}, metadata={"by": "ann"})
    await db.append("order@1", [cause])
    effect = EventData("Reserved", {"sku": 7}, causation_id=cause.id, correlation_id=cause.id)
    await db.append("stock@7", [effect])
    command = uuid.uuid4()
    await db.append("stock@7", [EventData("Picked", {}, causation_id=command, correlation_id=cause.id)])

    page = await ui.http.get("/event/shop", params={"stream": "stock@7", "version": 0})
    assert page.status_code == 200
    assert str(effect.id) in page.text and "Reserved" in page.text
    cause_page = await ui.http.get("/event/shop", params={"stream": "order@1", "version": 0})
    assert '"lines": [\n    {\n      "item": "pen"' in cause_page.text.replace("&#34;", '"')  # pretty JSON
    assert '"by": "ann"' in cause_page.text.replace("&#34;", '"')

    link = re.search(r'id="causation-link" href="([^"]+)"', page.text)
    assert link is not None
    followed = await ui.http.get(link.group(1).replace("&amp;", "&"))
    assert followed.status_code == 303
    assert followed.headers["location"] == "/event/shop?" + urlencode({"stream": "order@1", "version": 0})

    picked = await ui.http.get("/event/shop", params={"stream": "stock@7", "version": 1})
    link = re.search(r'id="causation-link" href="([^"]+)"', picked.text)
    assert link is not None
    not_found = await ui.http.get(link.group(1).replace("&amp;", "&"))
    assert not_found.status_code == 404 and "names the <em>command</em>" in not_found.text

    link = re.search(r'id="correlation-link" href="([^"]+)"', picked.text)
    assert link is not None
    conversation = await ui.http.get(link.group(1).replace("&amp;", "&"))
    assert conversation.status_code == 200
    assert 'id="origin-link"' in conversation.text  # the event whose id the correlation id is
    assert conversation.text.count("/event/shop?stream=stock%407") == 2


async def test_stream_keys_are_paged_and_searchable(ui: Ui) -> None:
    db = await ui.store.create_database("shop", partitions=2)
    async with trio.open_nursery() as nursery:
        for n in range(60):
            nursery.start_soon(db.append, f"order@{n}", [EventData("Placed", n)])
    page = await ui.http.get("/streams/shop", params={"category": "order"})
    first = re.findall(r">(order@\d+)</a>", page.text)
    assert len(first) == 50 and 'id="next-page"' in page.text
    page2 = await ui.http.get("/streams/shop", params={"category": "order", "page": 2})
    second = re.findall(r">(order@\d+)</a>", page2.text)
    assert len(second) == 10 and not set(first) & set(second)
    assert set(first) | set(second) == {f"order@{n}" for n in range(60)}
    found = await ui.http.get("/streams/shop", params={"category": "order", "q": "@5"})
    assert sorted(re.findall(r">(order@\d+)</a>", found.text)) == sorted(
        ["order@5", *(f"order@{n}" for n in range(50, 60))])


async def test_network_trouble_is_a_message_not_a_traceback(ui: Ui) -> None:
    await ui.store.create_database("shop")
    ui.net.disconnect()
    page = await ui.http.get("/categories/shop")
    assert page.status_code == 503 and "The network did not answer" in alert(page.text)
    no_traceback(page.text)
    form = {"stream": "order@1", "type": "Placed", "data": "{}", "expected": "any"}
    page = await ui.http.post("/append/shop", data=form)
    assert page.status_code == 503 and "retrying it with the same event ids is safe" in alert(page.text)
    ui.net.reconnect()
    assert (await ui.http.get("/categories/shop")).status_code == 200


async def test_missing_things_are_messages(ui: Ui) -> None:
    page = await ui.http.get("/categories/nowhere")
    assert page.status_code == 404 and alert(page.text) == "Not found: database 'nowhere' not found."
    await ui.store.create_database("shop")
    page = await ui.http.get("/stream/shop", params={"stream": "order@404"})
    assert page.status_code == 404 and "stream 'order@404' not found" in alert(page.text)
    page = await ui.http.get("/stream/shop")
    assert page.status_code == 400 and "needs a 'stream' parameter" in alert(page.text)
    page = await ui.http.get("/stream/shop", params={"stream": "order@1", "before": "x"})
    assert page.status_code == 400
    page = await ui.http.get("/no/such/page")
    assert page.status_code == 404 and alert(page.text) == "No such page."


async def test_names_with_slashes_and_spaces_have_pages(ui: Ui) -> None:
    db = await ui.store.create_database("north/west shop")
    await db.append("order@a/1 b", [EventData("Placed", {"x": 1})])
    base = "/categories/" + quote("north/west shop", safe="")
    page = await ui.http.get(base)
    assert page.status_code == 200 and ">order</a>" in page.text
    page = await ui.http.get("/stream/" + quote("north/west shop", safe=""), params={"stream": "order@a/1 b"})
    assert page.status_code == 200 and "Placed" in page.text


async def test_the_network_pages_say_there_is_no_cluster(ui: Ui) -> None:
    for path in ("/network", "/network/ring"):
        page = await ui.http.get(path)
        assert page.status_code == 200 and "There is no cluster." in page.text
    killed = await ui.http.post("/network/kill", data={"index": "0"})
    assert killed.status_code == 503 and "there is no cluster" in alert(killed.text)


def count_orders(state: dict[str, int], event: RecordedEvent) -> dict[str, int]:
    state["orders"] = state.get("orders", 0) + 1
    state["total"] = state.get("total", 0) + int(event.data["total"])  # type: ignore[index]
    return state


async def test_the_projections_page_shows_state_checkpoint_and_lag_and_rebuilds(ui: Ui) -> None:
    db = await ui.store.create_database("shop")
    page = await ui.http.get("/projections/shop")
    assert page.status_code == 200 and 'id="no-projections"' in page.text
    totals = Projection("totals", count_orders, initial={}, categories=["order"])
    other = Projection("others", lambda state, event: state, initial={"n": 0})
    await db.append("order@1", [EventData("Placed", {"total": 5})])
    placed = await db.append("order@2", [EventData("Placed", {"total": 7})])
    await ProjectionAgent(db, [totals, other]).catch_up()
    await db.append("order@3", [EventData("Placed", {"total": 1})])
    await db.append("customer@1", [EventData("Registered", {})])  # not a category totals folds

    ui.app.state.ui.projections["totals"] = totals  # the UI was given this one's code only
    page = await ui.http.get("/projections/shop")
    row = page.text[page.text.index('id="projection-totals"'):page.text.index('id="projection-totals"') + 2500]
    assert f">{placed.log_position}<" in row  # its checkpoint
    assert ">1 event<" in row  # order@3 (customer@1 is not its category)
    assert "&#34;total&#34;: 12" in row and "folds order" in row
    others = page.text[page.text.index('id="projection-others"'):]
    assert ">2 events<" in others[:1500]  # it folds everything: order@3 and customer@1
    assert 'data-action="rebuild" disabled' in others[:1500] and 'id="rebuild-unavailable"' in page.text

    refused = await ui.http.post("/rebuild/shop", data={"name": "others"})
    assert refused.status_code == 400 and "cannot rebuild it" in alert(refused.text)
    started = await ui.http.post("/rebuild/shop", data={"name": "totals"})
    assert started.status_code == 303 and "Rebuilding+totals" in started.headers["location"]
    with trio.fail_after(10):
        while next(iter(ui.app.state.ui.rebuilds)).outcome == "running":
            await trio.sleep(0.02)
    op = next(iter(ui.app.state.ui.rebuilds))
    assert op.outcome == "done" and "generation 1, 3 events folded" in op.message, op.message
    page = await ui.http.get("/projections/shop")
    row = page.text[page.text.index('id="projection-totals"'):page.text.index('id="projection-totals"') + 2500]
    assert ">0 events<" in row and "&#34;total&#34;: 13" in row
    assert "rebuild totals in shop" in page.text and 'data-outcome="done"' in page.text


async def _first_sse(app: object, path: str, query: dict[str, str],
                     after_connect: Callable[[], Awaitable[object]]) -> str:
    """Call the ASGI app for an event stream; return what it sent up to its first event."""
    sent: list[str] = []
    got = trio.Event()
    gone = trio.Event()

    async def receive() -> dict[str, str]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            sent.append(bytes(message.get("body", b"")).decode())  # type: ignore[arg-type]
            if "event: " in "".join(sent):
                got.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": urlencode(query).encode(), "headers": [], "server": ("ui", 80), "client": ("t", 1)}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, receive, send)  # type: ignore[arg-type]
        with trio.fail_after(10):
            while ": following" not in "".join(sent) and not got.is_set():
                await trio.sleep(0.01)
            await after_connect()
            await got.wait()
        gone.set()
    return "".join(sent)


@pytest.mark.parametrize("target", ["stream", "log"])
async def test_the_live_tail_sends_a_new_event(ui: Ui, target: str) -> None:
    db = await ui.store.create_database("shop")
    await db.append("order@1", [EventData("Placed", {})])
    query = {"stream": "order@1", "after": "0"} if target == "stream" else {"after": str(await db.log_end())}
    sent = await _first_sse(ui.app, "/tail-events/shop", query,
                            lambda: db.append("order@1", [EventData("Shipped", {"by": "post"})]))
    event = sent[sent.index("event: append"):]
    data = json.loads(event.split("data: ", 1)[1].split("\n", 1)[0])
    assert data["type"] == "Shipped" and ">Shipped</a>" in data["html"]
    checkpoint = 1 if target == "stream" else 1000  # a version, or a log position
    assert f"id: {checkpoint}\nevent: append\n" in sent and data["checkpoint"] == checkpoint


async def test_the_live_tail_of_a_missing_database_says_so_and_stops(ui: Ui) -> None:
    sent = await _first_sse(ui.app, "/tail-events/nowhere", {}, trio.lowlevel.checkpoint)
    problem = json.loads(sent.split("event: problem\ndata: ", 1)[1].split("\n", 1)[0])
    assert problem == {"message": "Not found: database 'nowhere' not found.", "fatal": True}


async def test_a_form_sent_from_another_site_is_refused(ui: Ui) -> None:
    refused = await ui.http.post("/databases", data={"name": "evil"}, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "another site" in refused.text
    assert await ui.store.databases() == []
    made = await ui.http.post("/databases", data={"name": "mine"}, headers={"Origin": "http://ui"})
    assert made.status_code == 303 and await ui.store.databases() == ["mine"]


async def test_served_on_loopback_it_answers_only_to_loopback_names(ui: Ui) -> None:
    app = create_app(ui.app.state.ui, allowed_hosts=["127.0.0.1", "localhost"])
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as http:
        assert (await http.get("/")).status_code == 200
        rebound = await http.get("/", headers={"Host": "evil.example:8080"})
        assert rebound.status_code == 400


async def test_persistent_subscription_pages(ui: Ui) -> None:
    from eventstore.persistent import NackAction, PersistentSettings

    db = await ui.store.create_database("shop")
    page = await ui.http.get("/persistent/shop")
    assert page.status_code == 200 and "No persistent subscription group" in page.text
    await db.append("job@1", [EventData("Run", {"n": 1}), EventData("Run", {"n": 2})])
    await db.persistent.create("job@1", "workers", PersistentSettings(start_from="start"))
    async with db.persistent.subscribe("job@1", "workers", "w", buffer_size=1) as sub:
        message = await sub.__anext__()
        await sub.nack(NackAction.PARK, "<b>bad</b>", message)
    page = await ui.http.get("/persistent/shop")
    assert "workers" in page.text and "job@1" in page.text
    page = await ui.http.get("/persistent-group/shop", params={"stream": "job@1", "group": "workers"})
    no_traceback(page.text)
    assert page.status_code == 200 and "&lt;b&gt;bad&lt;/b&gt;" in page.text and 'id="parked-count">1<' in page.text
    missing = await ui.http.get("/persistent-group/shop", params={"stream": "job@1", "group": "nobody"})
    assert missing.status_code in (400, 404) and "not found" in alert(missing.text)
    replayed = await ui.http.post("/persistent-replay/shop", data={"stream": "job@1", "group": "workers"},
                                  headers={"origin": "http://ui"})
    assert replayed.status_code == 303 and "Replaying+1" in replayed.headers["location"]
