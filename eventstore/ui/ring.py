"""The XOR-ring picture: where nodes and an item sit in the 256-bit address space.

Pure geometry, no I/O: names in, SVG coordinates out. A name's angle is its place in the
address space read as a fraction of 2**256, clockwise from the top, as MaidSafe's testnet
visualisers drew it. Closeness on the network is XOR distance, not arc length, so an item's
close group is not always the arc of nodes nearest to it on the circle; the page says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from node.xorname import XOR_NAME_BITS, XorName

SIZE = 560  # the SVG's width and height, in user units
RADIUS = 210
LABEL_RADIUS = 240
CROWDED = 0.025  # nodes closer than this fraction of the circle are drawn staggered
STAGGER = 18  # how far a crowded node's dot moves in, and its label out
ITEM_RADIUS = RADIUS - 40  # the item is drawn inside the circle, so it never hides a node


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class RingNode:
    """A node as the picture draws it. `role` says how it relates to the chosen item:
    "holder" (in the close group, holds a copy), "member" (in the close group, no copy
    yet), "stray" (outside the group, still holds a copy) or "" (unrelated)."""

    index: int
    name: str  # 64 hex
    alive: bool
    role: str
    at: Point
    label_at: Point
    distance_bits: int | None  # leading bits shared with the item's name, if one is chosen


@dataclass(frozen=True)
class RingItem:
    name: str
    at: Point


@dataclass(frozen=True)
class Ring:
    size: int
    centre: Point
    radius: float
    nodes: list[RingNode]
    item: RingItem | None


def fraction(name: bytes) -> float:
    """The name's place in the address space, in [0, 1)."""
    return int(XorName(name)) / 2**XOR_NAME_BITS


def on_circle(name: bytes, radius: float, centre: Point) -> Point:
    angle = 2 * math.pi * fraction(name)
    return Point(round(centre.x + radius * math.sin(angle), 2), round(centre.y - radius * math.cos(angle), 2))


def layout(
    nodes: Iterable[tuple[int, str, bool]],
    item: str | None = None,
    *,
    close_group: Iterable[str] = (),
    holders: Iterable[str] = (),
    strays: Iterable[str] = (),
) -> Ring:
    """The picture of `nodes` (index, 64-hex id, alive) and, given one, the item `item`
    (64-hex name) with its close group, the members that hold it, and strays."""
    centre = Point(SIZE / 2, SIZE / 2)
    group, holding, stray = set(close_group), set(holders), set(strays)
    target = XorName.from_hex(item) if item else None
    drawn = []
    previous: float | None = None
    depth = 0
    # Nodes whose ids nearly coincide would hide each other: walk them in address order
    # and draw each crowded one a step further in (its dot) and out (its label).
    for index, name, alive in sorted(nodes, key=lambda n: fraction(XorName.from_hex(n[1]))):
        raw = XorName.from_hex(name)
        here = fraction(raw)
        depth = depth + 1 if previous is not None and here - previous < CROWDED else 0
        previous = here
        role = _role(name, group, holding, stray)
        bits = None if target is None else target.common_prefix_bits(raw)
        drawn.append(RingNode(index, name, alive, role, on_circle(raw, RADIUS - STAGGER * depth, centre),
                              on_circle(raw, LABEL_RADIUS + STAGGER * depth, centre), bits))
    drawn.sort(key=lambda n: n.index)
    chosen = None if target is None else RingItem(target.hex(), on_circle(target, ITEM_RADIUS, centre))
    return Ring(SIZE, centre, RADIUS, drawn, chosen)


def _role(name: str, group: set[str], holding: set[str], stray: set[str]) -> str:
    if name in group:
        return "holder" if name in holding else "member"
    return "stray" if name in stray else ""


def roles_from_locate(found: Mapping[str, object]) -> dict[str, list[str]]:
    """The keyword arguments of `layout` from a `LocalCluster.locate` answer."""

    def names(key: str) -> list[str]:
        value = found.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    return {"close_group": names("close_group"), "holders": names("holders"), "strays": names("others")}
