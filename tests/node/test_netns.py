"""Kernel-level partitions: a 6-node cluster (R = 3), each node in its own network
namespace (`cluster up --netns`), split 4 + 2 by nftables rules inside the namespaces.

Clients run inside a node's namespace, so they are on that side of the partition as a
machine on that side of a real network would be. A write from the big side (where the MD's
close group has its majority) succeeds; one from the small side times out; after `heal`
the small side writes again, and every acknowledged write reads back. `cluster down` must
leave no namespace, veth, bridge or rule behind.

Needs Linux, root, `ip` and `nft` (Debian: iproute2, nftables); skips saying which is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from client.network import NetworkClient
from node import netns
from node.cluster_faults import ClusterFaults
from node.data import Action, MutableData, PermissionSet, Value
from node.keys import Keypair
from node.launcher import LocalCluster
from node.xorname import XorName

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(netns.missing() is not None, reason=f"netns mode: {netns.missing()}")]

R = 3
TAG = 15_077
MINORITY_TIMEOUT = 6.0

# A client run inside a namespace: insert KEY=VALUE into the MD, print {"ok": ...}.
CLIENT = """
import json, sys, trio
from pathlib import Path
from client.network import NetworkClient
from node.data import Ins, MDataAddress
from node.keys import Keypair
from node.xorname import XorName
contacts, key_file, name, tag, key, value, timeout = sys.argv[1:8]
async def main():
    keys = Keypair.load_or_create(Path(key_file))
    try:
        with trio.fail_after(float(timeout)):
            async with NetworkClient.open(json.loads(contacts), keys, replication=3) as client:
                await client.mutate_entries(MDataAddress(XorName.from_hex(name), int(tag)),
                                            {key.encode(): Ins(value.encode())})
        print(json.dumps({"ok": True}))
    except BaseException as exc:
        print(json.dumps({"ok": False, "error": repr(exc)[:300]}))
trio.run(main)
"""


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    lc = LocalCluster(tmp_path / "cluster")
    try:
        trio.run(partial(lc.up, 6, replication=R, timeout=120.0, netns_mode=True))
        yield lc
    finally:
        try:
            lc.down(timeout=5.0)
        finally:
            lc.kill_everything()


def close_group(ids: dict[int, int], name: bytes) -> list[int]:
    return sorted(ids, key=lambda i: ids[i] ^ int.from_bytes(name, "big"))[:R]


def pick_sides(ids: dict[int, int], account: bytes) -> tuple[XorName, list[int]]:
    """A random MD name and a small side of two nodes that holds exactly one member of the
    MD's close group and at most one of the owner's account group."""
    accounts = set(close_group(ids, account))
    while True:
        name = XorName.random()
        group = close_group(ids, bytes(name))
        for other in (i for i in ids if i not in group):
            small = {group[-1], other}
            if len(small & accounts) <= 1:
                return name, sorted(small)


def write_from(lc: LocalCluster, index: int, side: list[int], key_file: Path, name: XorName,
               key: str, timeout: float) -> dict:
    """Insert key=value from inside node `index`'s namespace, knowing only `side`'s nodes."""
    info = lc.load()
    layout = netns.Layout.load(lc.data_dir)
    assert layout is not None
    contacts = [e.address for e in info.nodes if e.index in side]
    result = subprocess.run(
        [*layout.exec_prefix(index), sys.executable, "-c", CLIENT, json.dumps(contacts), str(key_file),
         name.hex(), str(TAG), key, f"value-of-{key}", str(timeout)],
        capture_output=True, text=True, timeout=timeout + 30)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_kernel_partition_4_plus_2_majority_writes_minority_times_out_heal_restores(
    netns_cluster: LocalCluster, tmp_path: Path,
) -> None:
    lc = netns_cluster
    tag = netns.Layout.load(lc.data_dir).tag  # type: ignore[union-attr]
    owner_file = tmp_path / "owner.key"
    owner = Keypair.load_or_create(owner_file)
    # The sides are drawn around a random MD: one member of its close group (R = 3 of the 6)
    # and one other node on the small side, so the group keeps its majority on the big side.
    # Every mutation also reads its owner's account register first (node/accounts.py), so
    # that register's group must keep its majority on the big side too: drawn otherwise,
    # the big side's write times out for want of the account (about one draw in five).
    ids = {e.index: int(e.id, 16) for e in lc.load().nodes}
    name, small_side = pick_sides(ids, bytes(owner.public.name))
    big_side = sorted(i for i in ids if i not in small_side)

    async def create() -> None:
        md = MutableData(name, TAG, {b"created": Value(b"yes", 0)},
                         {owner.public: PermissionSet.allowing(Action.INSERT, Action.UPDATE)}, 0,
                         frozenset({owner.public}))
        async with NetworkClient.open(lc.load().addresses, owner, replication=R) as client:
            await client.put_mdata(md)

    async def create_guarded() -> None:
        with trio.fail_after(60):
            await create()

    trio.run(create_guarded)
    faults = ClusterFaults(lc)
    out = trio.run(faults.partition, [big_side, small_side])
    assert out["applied"] == [0, 1, 2, 3, 4, 5]
    status = trio.run(faults.status)
    assert status["mode"] == "netns"
    assert all(n["in_force"] and n["by"] == "kernel" for n in status["nodes"])
    assert status["nodes"][small_side[0]]["blocked_out"] == big_side
    assert status["nodes"][big_side[0]]["blocked_in"] == small_side

    # Let each side notice: its nodes evict the unreachable ones (unanswered pings), so the
    # close groups each side sees are made of the nodes it can reach.
    async def sides_evicted() -> None:
        with trio.fail_after(90):
            while True:
                reports = {r.entry.index: r.status for r in await lc.status()}
                if all(reports[i] and reports[i]["contacts"] == len(side) - 1
                       for side in (big_side, small_side) for i in side):
                    return
                await trio.sleep(0.1)

    trio.run(sides_evicted)
    acknowledged = {"created": "yes"}
    big = write_from(lc, big_side[0], big_side, owner_file, name, "from-big-side", 30.0)
    assert big["ok"], big
    acknowledged["from-big-side"] = "value-of-from-big-side"
    small = write_from(lc, small_side[0], small_side, owner_file, name, "from-small-side", MINORITY_TIMEOUT)
    assert not small["ok"], "a write from the side without a majority was acknowledged"
    print(f"\n[netns] the small side's write: {small['error']}")

    trio.run(faults.heal)
    assert all(n["blocked_out"] == [] for n in trio.run(faults.status)["nodes"])
    trio.run(partial(lc.wait_converged, timeout=90.0))
    healed = write_from(lc, small_side[0], small_side, owner_file, name, "after-heal", 60.0)
    assert healed["ok"], healed
    acknowledged["after-heal"] = "value-of-after-heal"

    async def read_back() -> dict[str, str]:
        async with NetworkClient.open(lc.load().addresses, Keypair(), replication=R) as client:
            from node.data import MDataAddress

            entries = await client.list_entries(MDataAddress(name, TAG))
        return {k.decode(): v.content.decode() for k, v in entries.items()}

    got = trio.run(read_back)
    assert {k: got.get(k) for k in acknowledged} == acknowledged  # nothing acknowledged lost

    lc.down(timeout=5.0)
    assert netns.leftovers(tag) == []
    assert not (lc.data_dir / netns.NETNS_FILE).exists()


def test_netns_needs_what_it_needs_and_says_so(tmp_path: Path) -> None:
    # Here everything is present (the module would have skipped otherwise): a bad combination
    # is still refused before anything is made.
    lc = LocalCluster(tmp_path / "c")
    with pytest.raises(netns.BadClusterRequest, match="no --base-port"):
        trio.run(partial(lc.up, 3, replication=3, base_port=20000, netns_mode=True))
    assert netns.leftovers(netns.tag_for(lc.data_dir)) == []
