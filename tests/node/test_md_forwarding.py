"""A request for an MD reaches its group even when the node a client reached has a poor view
of the MD's region: in a large network a node far from the MD knows some of its nodes, not
the nearest. The member it forwards to, if it finds itself outside the group too, passes the
request on once to the members it knows (`Replicator.on_md_request`, the `hop` field); a second
miss is refused. Three real node cores driven by hand, with R = 1 so the views are easy to set."""

from __future__ import annotations

import random

from node.core import NodeConfig, NodeCore
from node.data import MDataAddress
from node.keys import Keypair
from node.ops import GetMDataVersion
from node.peer import Peer
from node.requests import Request
from node.store import MemoryStore
from node.wire import new_message
from node.xorname import distance

CLIENT = Peer(Keypair.generate(random.Random(99)).name, "client", None)


def _cores() -> dict[str, NodeCore]:
    """x, y, z with the MD's name z's own, y nearer to it than x; x knows only y, y only z."""
    rng = random.Random(5)
    while True:
        x, y, z = (Keypair.generate(rng) for _ in range(3))
        if distance(y.name, z.name) < distance(x.name, z.name):
            break
    cores = {}
    for label, keys in (("x", x), ("y", y), ("z", z)):
        core = NodeCore(keys, MemoryStore(), NodeConfig(replication=1), rng=random.Random(1), address=f"sim:{label}")
        core.start(0.0)
        cores[label] = core
    for knower, known in (("x", "y"), ("y", "z")):
        peer = Peer(cores[known].name, "node", cores[known].address)
        cores[knower].handle(0.0, peer, new_message("ping", addr=peer.address))
    for core in cores.values():
        core.take_output()
    return cores


def _run(cores: dict[str, NodeCore], first: list, now: float = 0.1) -> tuple[list[dict], list[tuple[str, dict]]]:
    """Deliver messages between the cores until none is left; what the client got, and every
    (receiver, message) delivered to a node."""
    by_name = {core.name: (label, core) for label, core in cores.items()}
    queue = [("x", CLIENT, msg) for msg in first]
    to_client, seen = [], []
    while queue:
        label, sender, msg = queue.pop(0)
        seen.append((label, msg))
        core = cores[label]
        for send in core.handle(now, sender, msg):
            if send.to == CLIENT.name:
                to_client.append(send.msg)
            elif send.to in by_name:
                queue.append((by_name[send.to][0], Peer(core.name, "node", core.address), send.msg))
    return to_client, seen


def test_a_member_outside_the_group_passes_the_request_on_once() -> None:
    cores = _cores()
    address = MDataAddress(cores["z"].name, 15000)
    request = Request(GetMDataVersion(address))
    replies, seen = _run(cores, [new_message("request", req=request.to_obj())])
    hops = [(label, msg.get("hop")) for label, msg in seen if msg.get("k") == "md_request"]
    assert hops == [("y", 0), ("z", 1)]  # x -> y (x's view), y -> z (y's view, one more hop)
    (reply,) = replies
    # z, the MD's true group, ran the read: the MD does not exist (not "not in the group")
    assert reply["k"] == "error" and reply["err"]["code"] != -205, reply


def test_a_second_miss_is_refused_not_passed_on() -> None:
    cores = _cores()
    address = MDataAddress(cores["z"].name, 15000)
    msg = new_message("md_request", req=Request(GetMDataVersion(address)).to_obj(), hop=1)
    sent = cores["x"].handle(0.1, Peer(cores["y"].name, "node", cores["y"].address), msg)
    (reply,) = [s.msg for s in sent if s.msg.get("re") == msg["id"]]
    assert reply["k"] == "error" and reply["err"]["code"] == -205  # NotReady: no third hop
    assert not any(s.msg.get("k") == "md_request" for s in sent)
