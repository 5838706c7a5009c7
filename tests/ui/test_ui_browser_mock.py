"""`safenet ui --mock FILE` driven in headless Chromium: create a database, append events
(one with a stale expected version), browse down to one event and follow its links, watch
live tails receive events appended by another process. Screenshots go to test-artifacts/ui/.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
from ui_projections import SPEC, TITLES
from ui_testing import UiServer, needs_browser, run_ui, shot

from client.connect import FileMockNetwork
from eventstore.api import EventData, EventStore
from eventstore.cqrs import ProjectionAgent
from node.keys import Keypair

pytestmark = [pytest.mark.browser, needs_browser]


class MockUi:
    """The UI server on a mock file, and a second writer on the same file (another
    process of the same app, as `safenet es` would be)."""

    def __init__(self, server: UiServer, mock: pathlib.Path, key: pathlib.Path) -> None:
        self.server, self.mock, self.key = server, mock, key
        self.url = server.url

    def outside(self, fn: Callable[[EventStore], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            client = FileMockNetwork(self.mock).client(Keypair.load_or_create(self.key))
            return await fn(EventStore(client))

        return trio.run(main)


@pytest.fixture(scope="module")
def mock_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUi]:
    tmp = tmp_path_factory.mktemp("ui-mock")
    with run_ui(tmp, "--mock", str(tmp / "net.mock"), "--projections", SPEC, name="ui-mock") as server:
        yield MockUi(server, tmp / "net.mock", tmp / "client.key")


def test_create_append_and_browse_to_one_event(page: Any, mock_ui: MockUi) -> None:
    from playwright.sync_api import expect

    page.goto(mock_ui.url + "/")
    expect(page.locator("#no-databases")).to_be_visible()
    shot(page, "01-databases-empty")

    page.fill("#name", "shop")
    page.click("#create-database button[type=submit]")
    expect(page.locator(".notice")).to_have_text("Created database shop.")
    expect(page.locator("#no-categories")).to_be_visible()
    shot(page, "02-database-new")

    page.click(".actions >> text=Append an event")
    page.fill("#stream", "order@1")
    page.fill("#type", "OrderPlaced")
    page.fill("#data", json.dumps({"sku": 7, "lines": [{"item": "pen", "qty": 2}]}))
    page.fill("#metadata", json.dumps({"user": "ann"}))
    page.fill("#expected", "no_stream")
    shot(page, "03-append-form")
    page.click("#append-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Appended OrderPlaced to order@1 as version 0")
    expect(page.locator("#events tbody tr")).to_have_count(1)

    page.click("#events >> text=OrderPlaced")
    expect(page.locator("h1")).to_contain_text("OrderPlaced")
    placed_id = page.locator("#event-id").inner_text().strip()

    page.click("text=Append to this stream")
    expect(page.locator("#expected")).to_have_value("0")  # the stream's version, ready for the next append
    page.fill("#type", "OrderPaid")
    page.fill("#data", json.dumps({"amount": 12.5, "currency": "EUR"}))
    page.fill("#causation", placed_id)
    page.fill("#correlation", placed_id)
    page.click("#append-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("as version 1")
    expect(page.locator("#events tbody tr")).to_have_count(2)

    # A writer that still believes the stream is at version 0 is refused, and told why.
    page.goto(mock_ui.url + "/append/shop?stream=order%401")
    page.fill("#type", "OrderCancelled")
    page.fill("#expected", "0")
    page.click("#append-form button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("Wrong expected version")
    expect(page.locator("[role=alert]")).to_contain_text("expected version 0, actual 1")
    expect(page.locator("#actual-version")).to_contain_text("version 1")
    expect(page.locator("#type")).to_have_value("OrderCancelled")
    shot(page, "04-append-wrong-expected-version")

    # Down the Db Manager's chain: databases -> categories -> stream keys -> stream -> event.
    page.goto(mock_ui.url + "/")
    shot(page, "05-databases")
    page.click("#databases >> text=shop")
    expect(page.locator("#categories")).to_contain_text("order")
    shot(page, "06-categories")
    page.click("#categories >> text=order")
    expect(page.locator("#stream-keys")).to_contain_text("order@1")
    shot(page, "07-stream-keys")
    page.click("#stream-keys >> text=order@1")
    expect(page.locator("#events tbody tr")).to_have_count(2)
    expect(page.locator("#events tbody tr").first).to_contain_text("OrderPaid")  # newest first
    shot(page, "08-stream")
    page.click("#events >> text=OrderPaid")
    expect(page.locator("#payload")).to_contain_text('"amount": 12.5,\n  "currency": "EUR"')
    expect(page.locator("#causation-link")).to_have_text(placed_id)
    shot(page, "09-event")

    page.click("#causation-link")
    expect(page.locator("#event-id")).to_have_text(placed_id)
    expect(page.locator("#metadata")).to_contain_text('"user": "ann"')
    page.go_back()
    page.click("#correlation-link")
    expect(page.locator("#correlated tbody tr")).to_have_count(2)
    expect(page.locator("#origin-link")).to_contain_text("OrderPlaced")
    shot(page, "10-correlation")


def test_the_live_tails_receive_new_events(page: Any, mock_ui: MockUi) -> None:
    from playwright.sync_api import expect

    async def seed(store: EventStore) -> None:
        db = await store.create_database("live")
        await db.append("sensor@1", [EventData("Reading", {"celsius": 20.5})])

    mock_ui.outside(seed)

    def append(stream: str, type_: str, data: Any) -> None:
        async def write(store: EventStore) -> None:
            await store.database("live").append(stream, [EventData(type_, data)])

        mock_ui.outside(write)

    page.goto(mock_ui.url + "/tail/live?stream=sensor%401")
    expect(page.locator("#tail-status")).to_have_class(re.compile(r"\bon\b"))
    expect(page.locator("#tail-rows tr")).to_have_count(1)
    append("sensor@1", "Reading", {"celsius": 21.25})
    expect(page.locator("#tail-rows tr").first).to_contain_text("21.25")
    expect(page.locator("#tail-count")).to_have_text("1")
    expect(page.locator("#tail-rows tr")).to_have_count(2)
    shot(page, "11-live-tail-stream")

    page.goto(mock_ui.url + "/tail/live")
    expect(page.locator("#tail-status")).to_have_class(re.compile(r"\bon\b"))
    append("alarm@1", "Raised", {"level": "high"})
    expect(page.locator("#tail-rows tr").first).to_contain_text("alarm@1")
    expect(page.locator("#tail-rows tr").first).to_contain_text("Raised")
    # Paused, the page holds what comes and shows it on resume.
    page.click("#tail-pause")
    append("alarm@1", "Cleared", {})
    expect(page.locator("#tail-count")).to_have_text("2")
    expect(page.locator("#tail-rows tr").first).to_contain_text("Raised")
    page.click("#tail-pause")
    expect(page.locator("#tail-rows tr").first).to_contain_text("Cleared")
    shot(page, "12-live-tail-log")


def test_projections_and_the_network_pages_on_the_mock(page: Any, mock_ui: MockUi) -> None:
    from playwright.sync_api import expect

    async def seed(store: EventStore) -> None:
        db = await store.create_database("books")
        await db.append("book@1", [EventData("Added", {"title": "Dune"})])
        await ProjectionAgent(db, [TITLES]).catch_up()  # the app's agent, saving its state
        await db.append("book@2", [EventData("Added", {"title": "Emma"})])

    mock_ui.outside(seed)
    page.goto(mock_ui.url + "/projections/books")
    row = page.locator("#projection-titles")
    expect(row).to_contain_text("1 event")  # book@2 came after the checkpoint
    expect(page.locator("#projections")).to_contain_text('"Dune"')
    shot(page, "13-projections")
    row.locator("button[data-action=rebuild]").click()
    expect(page.locator(".notice")).to_contain_text("Rebuilding titles")
    # The page reloads itself while the rebuild runs.
    expect(page.locator("#operations li").first).to_have_attribute("data-outcome", "done")
    expect(page.locator("#projection-titles")).to_contain_text("0 events")
    expect(page.locator("#projections")).to_contain_text('"Emma"')
    shot(page, "14-projections-rebuilt")

    page.goto(mock_ui.url + "/network")
    expect(page.locator("#no-cluster")).to_contain_text("There is no cluster.")
    shot(page, "15-network-on-the-mock")
    page.goto(mock_ui.url + "/network/ring")
    expect(page.locator("#no-cluster")).to_be_visible()
