"""`safenet ui --cluster DIR` on a real cluster of node processes, driven in headless
Chromium: the event store over the network, the XOR ring with an item's replicas, and the
buttons that kill, restart and add nodes, with their effect seen in the nodes table.

The test starts its own small cluster (4 nodes, R = 3) rather than reusing the session's
`cluster8`: adding a node would change that cluster for every later test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
from ui_testing import UiServer, needs_browser, run_ui, shot

from node.cluster import LocalCluster

pytestmark = [pytest.mark.browser, pytest.mark.cluster, needs_browser]

NODES = 4
REPLICATION = 3
CLUSTER_TIMEOUT = 120.0
CONVERGE_MS = 90_000  # a restarted or added node is shown once routing has converged


@pytest.fixture(scope="module")
def cluster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp = tmp_path_factory.mktemp("ui-cluster")
    lc = LocalCluster(tmp / "cluster")
    try:
        trio.run(partial(lc.up, NODES, replication=REPLICATION, timeout=CLUSTER_TIMEOUT))
        with run_ui(tmp, "--cluster", str(lc.data_dir), name="ui-cluster") as server:
            yield server
    finally:
        # Nodes the UI restarted or added are in cluster.json too, so this stops them all.
        try:
            lc.down(timeout=10.0)
        finally:
            lc.kill_everything()


def node_row(page: Any, index: int) -> Any:
    return page.locator(f"#node-{index}")


def test_the_store_and_the_ring_on_a_real_cluster(page: Any, cluster_ui: UiServer) -> None:
    from playwright.sync_api import expect

    page.goto(cluster_ui.url + "/")
    page.fill("#name", "ledger")
    page.click("#create-database button[type=submit]")
    expect(page.locator(".notice")).to_have_text("Created database ledger.")
    page.click(".actions >> text=Append an event")
    page.fill("#stream", "account@1")
    page.fill("#type", "Opened")
    page.fill("#data", json.dumps({"owner": "ann", "balance": 0}))
    page.fill("#expected", "no_stream")
    page.click("#append-form button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("as version 0")
    expect(page.locator("#events tbody tr")).to_have_count(1)
    shot(page, "20-stream-on-a-cluster")

    page.click("text=Where are this stream's replicas?")
    expect(page.locator("#located")).to_contain_text(f"of {REPLICATION} close-group members hold a copy")
    members = page.locator("#ring g.ring-node[data-role=holder], #ring g.ring-node[data-role=member]")
    expect(members).to_have_count(REPLICATION)
    expect(page.locator("#ring-item")).to_have_count(1)
    assert re.search(r"[23] of 3 close-group members hold a copy", page.locator("#located").inner_text())
    shot(page, "21-xor-ring")


def test_kill_restart_and_add_nodes_from_the_network_page(page: Any, cluster_ui: UiServer) -> None:
    from playwright.sync_api import expect

    page.goto(cluster_ui.url + "/network")
    for index in range(NODES):
        expect(node_row(page, index)).to_have_attribute("data-state", "up")
    shot(page, "22-network")

    node_row(page, 1).locator("button[data-action=kill]").click()
    expect(page.locator(".notice")).to_have_text("Node 1 killed (SIGKILL).")
    expect(node_row(page, 1)).to_have_attribute("data-state", "down")
    expect(node_row(page, 1)).to_contain_text("down")
    expect(node_row(page, 0)).to_have_attribute("data-state", "up")
    shot(page, "23-network-node-killed")

    node_row(page, 1).locator("button[data-action=restart]").click()
    expect(page.locator(".notice")).to_contain_text("Restarting node 1")
    expect(node_row(page, 1)).to_have_attribute("data-state", "up", timeout=CONVERGE_MS)
    expect(page.locator("#operations li").first).to_have_attribute("data-outcome", "done", timeout=CONVERGE_MS)
    shot(page, "24-network-node-restarted")

    page.click("#add-node")
    expect(page.locator(".notice")).to_contain_text("Adding a node")
    expect(node_row(page, NODES)).to_have_attribute("data-state", "up", timeout=CONVERGE_MS)
    expect(page.locator("#operations li").first).to_contain_text(f"node {NODES} joined")
    shot(page, "25-network-node-added")
