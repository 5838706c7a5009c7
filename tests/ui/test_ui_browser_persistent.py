"""A persistent subscription's page in headless Chromium (`safenet ui --mock FILE`): the
group's consumers, its events in flight and parked, its lag, and replaying the parked events.
Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from ui_testing import needs_browser, run_ui, shot

from client.connect import FileMockNetwork
from eventstore.api import EventData, EventStore
from eventstore.persistent import NackAction, PersistentSettings
from node.keys import Keypair

pytestmark = [pytest.mark.browser, needs_browser]


@pytest.fixture(scope="module")
def group_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("ui-persistent")
    mock, key = tmp / "net.mock", tmp / "client.key"
    trio.run(_a_group_at_work, mock, key)
    with run_ui(tmp, "--mock", str(mock), name="ui-persistent") as server:
        yield server.url


async def _a_group_at_work(mock: pathlib.Path, key: pathlib.Path) -> None:
    """Another process of the app: 6 orders, a group on their category, one consumer that
    acks two, parks one and still holds one when it stops (killed: it gives nothing back)."""
    db = await EventStore(FileMockNetwork(mock).client(Keypair.load_or_create(key))).create_database("shop")
    for i in range(6):
        await db.append(f"order@{i % 2}", [EventData("Placed", {"i": i})])
    await db.persistent.create("$ce-order", "billing", PersistentSettings(start_from="start", message_timeout=3600))
    sub = db.persistent.subscribe("$ce-order", "billing", "worker", buffer_size=1)
    for n in range(4):
        message = await sub.__anext__()
        if n == 2:
            await sub.nack(NackAction.PARK, "sku 7 is unknown", message)
        elif n < 3:
            await sub.ack(message)


def test_a_persistent_subscription_page(page: Any, group_ui: str) -> None:
    from playwright.sync_api import expect

    page.goto(group_ui + "/")
    page.click("text=shop")
    page.click(".actions >> text=Persistent subscriptions")
    expect(page.locator("#groups tbody tr")).to_have_count(1)
    shot(page, "persistent-01-groups")
    page.click("#groups >> text=billing")
    expect(page.locator("h1")).to_contain_text("Group billing on $ce-order")
    expect(page.locator("#consumers tbody tr")).to_have_count(1)
    expect(page.locator("#consumers")).to_contain_text("worker-")
    expect(page.locator("#in-flight-count")).to_have_text("1")
    expect(page.locator("#parked-count")).to_have_text("1")
    expect(page.locator("#parked")).to_contain_text("sku 7 is unknown")
    expect(page.locator("#lag")).to_have_text("2")
    shot(page, "persistent-02-group")
    page.click("#replay-form button")
    expect(page.locator(".notice")).to_have_text("Replaying 1 parked event.")
    expect(page.locator("#parked-count")).to_have_text("0")
    expect(page.locator("#no-parked")).to_be_visible()
    shot(page, "persistent-03-replayed")
