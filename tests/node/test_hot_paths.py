"""The short cuts on the simulator's per-message path give what the plain code gives.

`NodeCore.group` remembers close groups across membership changes, dropping only those a
change can move; `wire.BodyEncoder` keeps one MessagePack packer for all its messages. Each
is checked here against the computation it stands for, under random changes and messages
(Hypothesis), including hostile ones: unencodable values and missing envelope fields."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core import NodeConfig, NodeCore
from node.errors import ProtocolError
from node.keys import Keypair
from node.peer import Peer
from node.store import MemoryStore
from node.wire import BodyEncoder, encode_body, new_message
from node.xorname import XorName, closest

# ---------------------------------------------------------------------- remembered close groups

membership_ops = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(0, 29)),
        st.tuples(st.just("leave"), st.integers(0, 29)),
        st.tuples(st.just("shirk"), st.integers(0, 29)),
        st.tuples(st.just("ask"), st.sampled_from([1, 3, 4, 8])),
        st.tuples(st.just("later"), st.integers(1, 30)),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), membership_ops)
def test_remembered_groups_are_what_routing_says_now(seed: int, ops: list[tuple[Any, ...]]) -> None:
    for joined in (2, 15):  # groups short of their count, and full ones
        _play_membership(seed, joined, ops)


def _play_membership(seed: int, joined: int, ops: list[tuple[Any, ...]]) -> None:
    rng = random.Random(seed)
    config = NodeConfig(replication=4, k=6)  # small buckets: some joins wait in replacement caches
    core = NodeCore(Keypair.generate(rng), MemoryStore(), config, rng=random.Random(seed), address="sim:0")
    core.start(0.0)
    pool = [XorName.random(rng) for _ in range(30)]
    items = [XorName.random(rng) for _ in range(8)] + pool[:2] + [core.name, XorName(bytes(32))]
    now = 0.0
    for op in [("join", i) for i in range(0, 2 * joined, 2)] + [("ask", 4)] + ops:
        if op[0] == "join":  # any message from a node is a sighting of it
            core.handle(now, Peer(pool[op[1]], "node", f"sim:{op[1] + 1}"), new_message("ping", addr="x"))
        elif op[0] == "leave":  # one of those routing holds
            held = core.routing.contacts()
            if held and core.routing.remove(held[op[1] % len(held)].name):
                core.on_membership_change()
        elif op[0] == "shirk":  # it answers pings but lets work lapse until demoted
            name = pool[op[1]]
            core.standing.heard(name, now)
            for _ in range(core.standing.strikes):
                if core.standing.lapsed(name, now, now) is not None:
                    core.on_membership_change()
        elif op[0] == "later":
            now += op[1]
        else:  # every item's group, so that most asks repeat an earlier one across changes
            core.now = max(core.now, now)
            demoted = core.standing.demoted(core.now)
            known = [c.name for c in core.routing.contacts() if c.name not in demoted]
            for name in items:
                assert core.group(name, op[1]) == closest(name, [*known, core.name], op[1])
        core.take_output()


def _core_knowing(count: int, seed: int = 7, replication: int = 3) -> tuple[NodeCore, random.Random]:
    rng = random.Random(seed)
    core = NodeCore(Keypair.generate(rng), MemoryStore(), NodeConfig(replication=replication), rng=rng,
                    address="sim:0")
    core.start(0.0)
    for i in range(count):
        core.handle(0.0, Peer(XorName.random(rng), "node", f"sim:{i + 1}"), new_message("ping", addr="x"))
    assert len(core.routing) == count
    return core, rng


def _truth(core: NodeCore, name: bytes, count: int) -> list[XorName]:
    demoted = core.standing.demoted(core.now)
    return closest(name, [c.name for c in core.routing.contacts() if c.name not in demoted] + [core.name], count)


def test_a_small_network_loses_and_gains_members_of_every_group() -> None:
    core, rng = _core_knowing(3)  # groups of 6 hold everyone: each departure and arrival is in all
    items = [XorName.random(rng) for _ in range(10)]
    assert all(len(core.group(item, 6)) == 4 for item in items)
    leaver = core.routing.contacts()[1]
    assert core.routing.remove(leaver.name)
    core.on_membership_change()
    assert all(core.group(item, 6) == _truth(core, item, 6) for item in items)
    core.handle(1.0, Peer(leaver.name, "node", leaver.address), new_message("ping", addr="x"))
    assert all(core.group(item, 6) == _truth(core, item, 6) for item in items)
    assert all(leaver.name in core.group(item, 6) for item in items)


def test_a_demoted_peer_that_comes_back_stays_out_of_groups() -> None:
    core, rng = _core_knowing(8)
    items = [XorName.random(rng) for _ in range(20)]
    shirker = core.routing.contacts()[2]
    core.standing.heard(shirker.name, 0.0)
    while core.standing.lapsed(shirker.name, 0.0, 0.0) is None:
        pass
    core.on_membership_change()
    for item in items:
        assert shirker.name not in core.group(item, 9) == _truth(core, item, 9)
    assert core.routing.remove(shirker.name)  # it leaves, and comes back while still demoted
    core.on_membership_change()
    core.group(items[0], 9)
    core.handle(1.0, Peer(shirker.name, "node", shirker.address), new_message("ping", addr="x"))
    for item in items:
        assert shirker.name not in core.group(item, 9) == _truth(core, item, 9)


def test_a_departure_drops_only_the_groups_it_was_in() -> None:
    rng = random.Random(7)
    core = NodeCore(Keypair.generate(rng), MemoryStore(), NodeConfig(replication=3), rng=rng, address="sim:0")
    core.start(0.0)
    for i in range(12):
        core.handle(0.0, Peer(XorName.random(rng), "node", f"sim:{i + 1}"), new_message("ping", addr="x"))
    assert len(core.routing) == 12
    items = [XorName.random(rng) for _ in range(40)]
    groups = {item: core.group(item) for item in items}
    leaver = groups[items[0]][0] if groups[items[0]][0] != core.name else groups[items[0]][1]
    assert core.routing.remove(leaver)
    core.on_membership_change()
    core.group(XorName.random(rng))  # the next ask, of any name, sorts out what the change moved
    kept = set(core._groups.known)
    for item in items:
        assert ((bytes(item), 3) in kept) == (leaver not in groups[item])
        assert core.group(item) == closest(item, [c.name for c in core.routing.contacts()] + [core.name], 3)


# ---------------------------------------------------------------------- the kept packer

wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.integers(0, 9), inner, max_size=4),
    max_leaves=6,
)
hostile_values = st.sampled_from([object(), 2**64, -(2**63) - 1, {1, 2}, 1j, ValueError("x")])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.text(max_size=5), wire_values, max_size=4),
                          st.sampled_from(["ok", "bad", "no-id", "no-k"]), hostile_values), min_size=1, max_size=4))
def test_a_kept_packer_encodes_what_encode_body_does(messages: list[tuple[dict[str, Any], str, Any]]) -> None:
    encode = BodyEncoder()  # one encoder for the whole sequence: a failed message must not stain the next
    for fields, how, hostile in messages:
        msg = {**fields, "v": 1, "k": "x", "id": b"i" * 16}
        if how == "bad":
            msg["payload"] = [1, {"deep": hostile}]
        elif how == "no-id":
            del msg["id"]
        elif how == "no-k":
            del msg["k"]
        try:
            want: bytes | str = encode_body(msg)
        except ProtocolError as exc:
            want = str(exc)
        try:
            got: bytes | str = encode(msg)
        except ProtocolError as exc:
            got = str(exc)
        assert got == want
        assert (how == "ok") == isinstance(got, bytes)


def test_a_failed_encoding_leaves_the_packer_clean() -> None:
    encode = BodyEncoder()
    good = {"v": 1, "k": "ping", "id": bytes(16), "addr": "sim:1"}
    with pytest.raises(ProtocolError, match="not encodable"):
        encode({"v": 1, "k": "x", "id": bytes(16), "items": [b"a" * 1000, 2**70]})
    assert encode(good) == encode_body(good)
