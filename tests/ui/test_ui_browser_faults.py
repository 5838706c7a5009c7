"""The network page's fault controls on a real cluster, in headless Chromium: cut a
partition, see the link view mark exactly the cut links, pause and resume a node from its
row, heal, and see every link open again. Screenshots: test-artifacts/ui/26-*.png to 29-*.png.

Its own 4-node cluster (R = 3), so no other test sees the partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
from ui_testing import UiServer, needs_browser, run_ui, shot

from node.launcher import FAULTS_FILE, LocalCluster

pytestmark = [pytest.mark.browser, pytest.mark.cluster, needs_browser]

NODES = 4


@pytest.fixture(scope="module")
def faults_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UiServer, LocalCluster]]:
    tmp = tmp_path_factory.mktemp("ui-faults")
    lc = LocalCluster(tmp / "cluster")
    try:
        trio.run(partial(lc.up, NODES, replication=3, timeout=120.0))
        with run_ui(tmp, "--cluster", str(lc.data_dir), name="ui-faults") as server:
            yield server, lc
    finally:
        try:
            lc.down(timeout=10.0)
        finally:
            lc.kill_everything()


def link(page: Any, a: int, b: int) -> Any:
    return page.locator(f'#links td[data-link="{a}-{b}"]')


def test_cut_and_heal_a_partition_from_the_network_page(page: Any, faults_ui: tuple[UiServer, LocalCluster]) -> None:
    from playwright.sync_api import expect

    server, lc = faults_ui
    page.goto(server.url + "/network")
    for a in range(NODES):
        for b in range(NODES):
            if a != b:
                expect(link(page, a, b)).to_have_attribute("data-state", "ok")
    expect(page.locator("#fault-list")).to_contain_text("None")
    shot(page, "26-network-faults-none")

    page.fill("#sides", "0,1 2,3")
    page.click("#partition-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Partition 0,1 | 2,3: done")
    for a, b in ((0, 2), (2, 0), (1, 3), (3, 1), (0, 3), (2, 1)):
        expect(link(page, a, b)).to_have_attribute("data-state", "cut")
    for a, b in ((0, 1), (1, 0), (2, 3), (3, 2)):
        expect(link(page, a, b)).to_have_attribute("data-state", "ok")
    expect(page.locator("#fault-list")).to_contain_text("partition 0,1 | 2,3")
    assert (lc.data_dir / FAULTS_FILE).exists()
    shot(page, "27-network-partitioned")

    page.locator("#node-3 button[data-action=pause]").click()
    expect(page.locator(".notice")).to_contain_text("Pause node 3: done")
    expect(page.locator("#node-3")).to_have_attribute("data-state", "paused")
    shot(page, "28-network-node-paused")

    page.click("#heal")
    expect(page.locator(".notice")).to_contain_text("Heal: done. Faults in force: none.")
    for a, b in ((0, 2), (2, 0), (1, 3), (3, 1)):
        expect(link(page, a, b)).to_have_attribute("data-state", "ok")
    expect(page.locator("#node-3")).to_have_attribute("data-state", "up")
    expect(page.locator("#fault-list")).to_contain_text("None")
    shot(page, "29-network-healed")


def test_a_bad_partition_is_a_notice_not_an_error_page(page: Any, faults_ui: tuple[UiServer, LocalCluster]) -> None:
    from playwright.sync_api import expect

    server, _ = faults_ui
    page.goto(server.url + "/network")
    page.fill("#sides", "0,1 1,2")
    page.click("#partition-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("node 1 is on two sides")
    expect(page.locator('#links td[data-state="cut"]')).to_have_count(0)
