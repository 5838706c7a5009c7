"""The XOR-ring geometry and the nodes table's figures, without a network."""

from __future__ import annotations

import math

import pytest

from eventstore.ui.cluster_control import ClusterControl
from eventstore.ui.ring import (
    ITEM_RADIUS,
    LABEL_RADIUS,
    RADIUS,
    SIZE,
    STAGGER,
    fraction,
    layout,
    roles_from_locate,
)
from node.cluster import NodeEntry, NodeReport


def name_at(value: float) -> str:
    return (int(value * 2**256) % 2**256).to_bytes(32, "big").hex()


def test_a_name_sits_at_its_fraction_of_the_address_space_clockwise_from_the_top() -> None:
    assert fraction(bytes(32)) == 0
    assert fraction(bytes.fromhex(name_at(0.5))) == pytest.approx(0.5)
    ring = layout([(0, name_at(0.0), True), (1, name_at(0.25), True), (2, name_at(0.5), False)])
    c = SIZE / 2
    top, right, bottom = (n.at for n in ring.nodes)
    assert (top.x, top.y) == pytest.approx((c, c - RADIUS))
    assert (right.x, right.y) == pytest.approx((c + RADIUS, c))
    assert (bottom.x, bottom.y) == pytest.approx((c, c + RADIUS))
    assert [n.alive for n in ring.nodes] == [True, True, False]
    assert ring.item is None and all(n.role == "" and n.distance_bits is None for n in ring.nodes)


def test_the_item_and_the_roles_of_its_close_group() -> None:
    ids = [name_at(f) for f in (0.1, 0.3, 0.6, 0.9)]
    item = name_at(0.31)
    found = {"name": item, "close_group": ids[1:3], "holders": [ids[1]], "others": [ids[3]], "asked": 1}
    ring = layout([(i, n, True) for i, n in enumerate(ids)], item, **roles_from_locate(found))
    assert [n.role for n in ring.nodes] == ["", "holder", "member", "stray"]
    assert ring.item is not None and ring.item.name == item
    angle = 2 * math.pi * 0.31
    assert ring.item.at.x == pytest.approx(SIZE / 2 + ITEM_RADIUS * math.sin(angle), abs=0.01)
    bits = [n.distance_bits or 0 for n in ring.nodes]
    assert bits[1] > max(bits[0], bits[3])  # 0.3 shares more leading bits with 0.31 than 0.1 or 0.9


def test_nodes_with_nearly_equal_ids_are_staggered_not_stacked() -> None:
    ring = layout([(0, name_at(0.5), True), (1, name_at(0.501), True), (2, name_at(0.502), True)])
    radii = [math.dist((n.at.x, n.at.y), (SIZE / 2, SIZE / 2)) for n in ring.nodes]
    labels = [math.dist((n.label_at.x, n.label_at.y), (SIZE / 2, SIZE / 2)) for n in ring.nodes]
    assert radii == pytest.approx([RADIUS, RADIUS - STAGGER, RADIUS - 2 * STAGGER], abs=0.01)
    assert labels == pytest.approx([LABEL_RADIUS, LABEL_RADIUS + STAGGER, LABEL_RADIUS + 2 * STAGGER], abs=0.01)


def test_message_rates_come_from_two_looks_and_survive_a_restart(tmp_path) -> None:
    control = ClusterControl(tmp_path / "cluster.json", tools=None)  # type: ignore[arg-type]
    entry = NodeEntry(0, "ab" * 32, "127.0.0.1:1", 42, str(tmp_path / "node-0"))

    def look(at: float, msgs_in: int, msgs_out: int, uptime: float) -> object:
        status = {"ready": True, "contacts": 3, "chunks": 2, "mds": 5, "bytes": 900, "uptime": uptime,
                  "msgs_in": {"find_node": msgs_in}, "msgs_out": {"find_node": msgs_out}}
        return control._row(NodeReport(entry, True, status), at)

    first = look(100.0, 50, 40, 10.0)
    assert (first.rate_in, first.rate_out) == (5.0, 4.0)  # the average since the node started
    assert first.items == 7 and first.state == "up"
    second = look(102.0, 70, 44, 12.0)
    assert (second.rate_in, second.rate_out) == (10.0, 2.0)  # between the two looks
    restarted = look(104.0, 6, 3, 2.0)  # counters began again
    assert (restarted.rate_in, restarted.rate_out) == (3.0, 1.5)
    down = control._row(NodeReport(entry, False, None), 106.0)
    assert down.state == "down" and down.items is None and down.rate_in is None and down.pid is None
    assert not control.controllable  # no admin.key beside the file: no buttons
