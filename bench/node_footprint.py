"""A node's memory with many items stored, and how fast a dead holder's items are re-homed.

    .venv/bin/python bench/node_footprint.py [--nodes 8|16] [--items 10000] [--kills 3]

Starts an N-node cluster (default 8, R = 5) in a temp dir, puts `--items` small IData
(default 10,000 of 256 random bytes) through a client, waits until every item is on all R
nodes of its close group (by a brute-force XOR sort of the node ids), then:

(a) idle footprint: after `--idle` seconds without client traffic, each node's item count
    (its `status`), resident memory (VmRSS) and peak (VmHWM) from /proc, and store size.
    Target (issue 3): under 80 MB resident. Items spread over the nodes (each holds about
    items x R / N), so the per-node count is printed next to its memory; `--items 16000`
    puts about 10,000 on each of 8 nodes.

(b) recovery, `--kills` times: SIGKILL one node (a different one each time) and time until
    every item it held is back on R live nodes, i.e. on the member that joined each of its
    close groups. The clock starts at the kill. Two figures:
      - "counts": until every survivor's `status` chunk count has grown by the number of
        items it newly has to hold (polled every 0.1 s: cheap, exact when nothing else
        changes);
      - "verified": then each (item, new member) pair is checked with `locate` on that
        member, and unconfirmed pairs are re-checked until held; the time of the last
        confirmation (when the first pass confirms everything, this is the counts time).
    Also printed: when the first re-homed item arrived (failure detection + the first
    push) and when half / 90 % had. Between kills the victim is restarted with its data and
    the cluster is left to settle (copies made during the outage are released after the
    nodes' 30 s grace period), so each kill starts from the same fully replicated state.
    Target (issue 3): every item back on R live nodes within 10 s.

A benchmark, not a test: kept out of the pytest run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from cluster_bench import (
    cpu_seconds,
    header,
    load_average,
    median,
    proc_status_kib,
    running_cluster,
)

from client.network import NetworkClient
from node.cluster import LocalCluster, NodeEntry
from node.keys import Keypair
from node.tools import UNANSWERED, NodeTools, open_tools
from node.xorname import XorName

TARGET_RSS_MB = 80.0
TARGET_RECOVERY_S = 10.0
POLL = 0.1


def brute_group(name: bytes, ids: list[bytes], r: int) -> list[bytes]:
    t = int.from_bytes(name, "big")
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ t)[:r]


def expected_counts(names: list[XorName], ids: list[bytes], r: int) -> Counter[bytes]:
    counts: Counter[bytes] = Counter({i: 0 for i in ids})
    for name in names:
        counts.update(brute_group(name, ids, r))
    return counts


async def pushes_received(tools: NodeTools, entries: list[NodeEntry]) -> int:
    """`chunk_put` messages these nodes have received so far (their `status` counters)."""
    statuses = await tools.statuses([(e.address, e.name) for e in entries], timeout=3.0)
    return sum(int((s.get("msgs_in") or {}).get("chunk_put", 0)) for s in statuses if s)


async def chunk_counts(tools: NodeTools, entries: list[NodeEntry]) -> dict[bytes, int | None]:
    statuses = await tools.statuses([(e.address, e.name) for e in entries], timeout=3.0)
    return {bytes(e.name): (None if s is None else int(s.get("chunks") or 0))
            for e, s in zip(entries, statuses, strict=True)}


async def put_items(lc: LocalCluster, count: int, size: int, concurrency: int) -> list[XorName]:
    info = lc.load()
    names: list[XorName] = []
    failures = 0
    todo = iter(range(count))
    async with NetworkClient.open(info.addresses, Keypair(), replication=info.replication) as client:
        async def worker() -> None:
            nonlocal failures
            for _ in todo:
                value = os.urandom(size)
                for _attempt in range(3):
                    try:
                        names.append(await client.put_idata(value))
                        break
                    except Exception:  # noqa: BLE001 - retried, then counted
                        failures += 1
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    if failures:
        print(f"  ({failures} put attempts failed and were retried)")
    return names


async def wait_counts(tools: NodeTools, entries: list[NodeEntry], want: dict[bytes, int], timeout: float,
                      exact: bool = True) -> float | None:
    """Poll until every node's chunk count equals (or, not exact, reaches) `want`; the
    seconds it took, or None at the timeout."""
    started = time.monotonic()
    while True:
        have = await chunk_counts(tools, entries)
        if all(have[i] is not None and (have[i] == n if exact else have[i] >= n) for i, n in want.items()):  # type: ignore[operator]
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            behind = {bytes(i).hex()[:8]: (have[i], n) for i, n in want.items() if have[i] != n}
            print(f"  not settled after {timeout:g}s: (have, want) {behind}")
            return None
        await trio.sleep(0.5)


def footprint(lc: LocalCluster, counts: dict[bytes, int | None]) -> list[dict[str, Any]]:
    rows = []
    for e in lc.load().nodes:
        if not (e.pid and lc.is_alive(e)):
            continue
        store = Path(e.data_dir) / "store.sqlite3"
        store_bytes = sum(p.stat().st_size for p in store.parent.glob("store.sqlite3*") if p.is_file())
        rows.append({"index": e.index, "items": counts.get(bytes(e.name)),
                     "rss_mib": (proc_status_kib(e.pid, "VmRSS") or 0) / 1024,
                     "hwm_mib": (proc_status_kib(e.pid, "VmHWM") or 0) / 1024,
                     "store_mib": store_bytes / 2**20})
    return rows


async def recovery(lc: LocalCluster, tools: NodeTools, names: list[XorName], victim: NodeEntry,
                   r: int, timeout: float) -> dict[str, Any]:
    info = lc.load()
    live = [e for e in info.nodes if lc.is_alive(e)]
    ids = [bytes(e.name) for e in live]
    survivors = [e for e in live if e.index != victim.index]
    survivor_ids = [bytes(e.name) for e in survivors]
    by_id = {bytes(e.name): e for e in survivors}
    vid = bytes(victim.name)
    pairs: list[tuple[XorName, bytes]] = []  # (item, the member that newly has to hold it)
    for name in names:
        old = brute_group(name, ids, r)
        if vid in old:
            (joined,) = set(brute_group(name, survivor_ids, r)) - set(old)
            pairs.append((name, joined))
    gain = Counter(j for _, j in pairs)
    base = await chunk_counts(tools, survivors)
    want = {i: (base[i] or 0) + gain.get(i, 0) for i in survivor_ids}
    total = sum(gain.values())
    pushes0 = await pushes_received(tools, survivors)

    t0 = time.monotonic()
    lc.kill(victim.index)
    killed_in = time.monotonic() - t0
    first = half = ninety = counts_done = None
    while time.monotonic() - t0 < timeout:
        have = await chunk_counts(tools, survivors)
        arrived = sum(min(max(0, (have[i] or 0) - (base[i] or 0)), gain.get(i, 0)) for i in survivor_ids)
        now = time.monotonic() - t0
        if first is None and arrived > 0:
            first = now
        if half is None and arrived >= total / 2:
            half = now
        if ninety is None and arrived >= 0.9 * total:
            ninety = now
        if all((have[i] or 0) >= want[i] for i in survivor_ids):
            counts_done = now
            break
        await trio.sleep(POLL)

    # Verify pair by pair on the new members; re-check what is missing until the timeout.
    missing = list(pairs)
    verified = None
    checks = 0
    while missing and time.monotonic() - t0 < timeout:
        still: list[tuple[XorName, bytes]] = []
        limiter = trio.CapacityLimiter(64)

        async def check(name: XorName, member: bytes, limiter: trio.CapacityLimiter = limiter,
                        still: list[tuple[XorName, bytes]] = still) -> None:
            nonlocal checks
            e = by_id[member]
            async with limiter:
                checks += 1
                try:
                    held = (await tools.locate(e.address, name, expect=e.name, timeout=5.0)).holds
                except UNANSWERED:
                    held = False
            if not held:
                still.append((name, member))

        async with trio.open_nursery() as nursery:
            for name, member in missing:
                nursery.start_soon(check, name, member)
        if not still:
            verified = time.monotonic() - t0
        missing = still
        if missing:
            await trio.sleep(POLL)
    if verified is not None and counts_done is not None and checks == len(pairs):
        verified = counts_done  # the first pass confirmed everything the counts said
    pushes = await pushes_received(tools, survivors) - pushes0
    return {"victim": victim.index, "items_held": len(pairs), "kill_s": killed_in, "first_s": first,
            "half_s": half, "ninety_s": ninety, "counts_s": counts_done, "verified_s": verified,
            "unconfirmed": len(missing), "locate_checks": checks, "pushes": pushes}


async def sample_locate(lc: LocalCluster, tools: NodeTools, names: list[XorName], r: int, n: int = 20) -> int:
    """How many of `n` sample items `cluster locate` reports with the brute-force group, all holding."""
    info = lc.load()
    ids = [bytes(e.name) for e in info.nodes if lc.is_alive(e)]
    good = 0
    for name in names[:n]:
        where = await lc.locate(name, tools)
        group = [g.hex() for g in brute_group(name, ids, r)]
        good += where["close_group"] == group and sorted(where["holders"]) == sorted(group)
    return good


def fmt_s(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


async def run(args: argparse.Namespace, lc: LocalCluster) -> None:
    info = lc.load()
    r = info.replication
    async with open_tools(timeout=5.0) as tools:
        entries = [e for e in info.nodes if lc.is_alive(e)]
        pids = [e.pid for e in entries if e.pid]
        cpu0 = cpu_seconds(pids)
        await trio.sleep(5.0)
        empty_cpu = 100 * (cpu_seconds(pids) - cpu0) / 5.0
        empty = footprint(lc, await chunk_counts(tools, entries))
        print(f"# empty nodes, idle: RSS median {median([x['rss_mib'] for x in empty]):.1f} MiB "
              f"(min {min(x['rss_mib'] for x in empty):.1f}, max {max(x['rss_mib'] for x in empty):.1f}); "
              f"CPU {empty_cpu:.0f}% of one core for all {len(pids)} nodes together")

        t0 = time.monotonic()
        names = await put_items(lc, args.items, args.size, args.concurrency)
        put_s = time.monotonic() - t0
        print(f"# put {len(names)} items of {args.size} B at concurrency {args.concurrency} in {put_s:.1f}s "
              f"({len(names) / put_s:.0f}/s; load {load_average()})")
        ids = [bytes(e.name) for e in entries]
        want = expected_counts(names, ids, r)
        settled = await wait_counts(tools, entries, dict(want), args.settle_timeout)
        print(f"# fully replicated (every item on its R={r} brute-force closest nodes) "
              + (f"{settled:.1f}s after the last put" if settled is not None else "NOT reached"))

        if not args.skip_idle:
            by_index = {e.index: e.pid for e in lc.load().nodes if e.pid}
            start_cpu = {i: cpu_seconds([p]) for i, p in by_index.items()}
            await trio.sleep(args.idle)
            cpu = {i: 100 * (cpu_seconds([p]) - start_cpu[i]) / args.idle for i, p in by_index.items()}
            rows = footprint(lc, await chunk_counts(tools, entries))
            for x in rows:
                x["cpu_pct"] = cpu.get(x["index"], float("nan"))
            print(f"\n## (a) idle footprint, {args.idle:g}s after the last put settled (load {load_average()})")
            print(f"  {'node':>4} {'items':>6} {'RSS MiB':>8} {'peak MiB':>9} {'store MiB':>10} {'idle CPU %':>11}")
            for x in rows:
                print(f"  {x['index']:>4} {x['items']!s:>6} {x['rss_mib']:8.1f} {x['hwm_mib']:9.1f} "
                      f"{x['store_mib']:10.1f} {x['cpu_pct']:11.1f}")
            print(f"  idle CPU: {sum(x['cpu_pct'] for x in rows):.0f}% of one core for all {len(rows)} nodes together "
                  f"(pings, anti-entropy over the stored items)")
            worst = max(x["rss_mib"] for x in rows)
            print(f"  median RSS {median([x['rss_mib'] for x in rows]):.1f} MiB, max {worst:.1f} MiB "
                  f"({worst * 2**20 / 1e6:.1f} MB) with {max(x['items'] or 0 for x in rows)} items "
                  "on the fullest node: "
                  f"target < {TARGET_RSS_MB:g} MB {'met' if worst * 2**20 / 1e6 < TARGET_RSS_MB else 'MISSED'}")

        if args.kills:
            print(f"\n## (b) recovery after SIGKILL of one holder ({len(names)} items, {len(entries)} nodes, R={r})")
            print(f"  {'victim':>6} {'items':>6} {'first':>6} {'50%':>6} {'90%':>6} {'counts':>7} {'verified':>9}"
                  "  (seconds after the kill)")
            results = []
            for k in range(args.kills):
                victim = entries[(1 + k) % len(entries)]
                res = await recovery(lc, tools, names, victim, r, args.recovery_timeout)
                results.append(res)
                print(f"  {res['victim']:>6} {res['items_held']:>6} {fmt_s(res['first_s']):>6} "
                      f"{fmt_s(res['half_s']):>6} {fmt_s(res['ninety_s']):>6} {fmt_s(res['counts_s']):>7} "
                      f"{fmt_s(res['verified_s']):>9}"
                      + (f"  {res['unconfirmed']} items NOT back" if res["unconfirmed"] else "")
                      + f"  (load {load_average()})", flush=True)
                good = await sample_locate(lc, tools, names, r)
                print(f"         {res['pushes']} chunk_put messages reached the survivors for {res['items_held']} "
                      f"re-homed items ({res['pushes'] / max(1, res['items_held']):.1f} per item); "
                      f"`cluster locate` on 20 sample items: {good}/20 show the brute-force group, all holding")
                await lc.start(victim.index, timeout=180.0)
                if k + 1 < args.kills:
                    settled = await wait_counts(tools, entries, dict(want), args.settle_timeout)
                    if settled is None:
                        print("  the cluster did not settle back; stopping the kills here")
                        break
            times = [x["verified_s"] for x in results if x["verified_s"] is not None]
            if times:
                m = median(times)
                print(f"  median time to every item back on R live nodes: {m:.2f}s over {len(times)} kill(s) "
                      f"(max {max(times):.2f}s): target <= {TARGET_RECOVERY_S:g}s "
                      f"{'met' if m <= TARGET_RECOVERY_S else 'MISSED'}")
            if len(times) < len(results):
                print(f"  {len(results) - len(times)} kill(s) did not recover within {args.recovery_timeout:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="A node's idle memory with many small items, and the time until a killed "
                    "holder's items are back on R live nodes.")
    parser.add_argument("--nodes", type=int, default=8, help="cluster nodes (default 8; try 16)")
    parser.add_argument("--replication", type=int, default=5, help="R (default 5)")
    parser.add_argument("--items", type=int, default=10_000, help="small IData items to store (default 10000)")
    parser.add_argument("--size", type=int, default=256, help="bytes per item (default 256)")
    parser.add_argument("--concurrency", type=int, default=32, help="puts in flight (default 32)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading memory (default 10)")
    parser.add_argument("--kills", type=int, default=3, help="recovery measurements (default 3; 0 skips)")
    parser.add_argument("--skip-idle", action="store_true", help="skip (a)")
    parser.add_argument("--recovery-timeout", type=float, default=120.0,
                        help="give up on a kill after this (default 120)")
    parser.add_argument("--settle-timeout", type=float, default=180.0,
                        help="wait this long for full replication before measuring (default 180)")
    parser.add_argument("--data-dir", default=None, help="cluster dir (default: a fresh temp dir)")
    args = parser.parse_args()
    header("node_footprint: idle memory with many items, and recovery after a holder's death", {
        "cluster": f"{args.nodes} node processes, R={args.replication}, 127.0.0.1",
        "items": f"{args.items} IData of {args.size} random bytes, put at concurrency {args.concurrency}",
        "idle wait": f"{args.idle:g}s",
        "kills": f"{args.kills} (SIGKILL; node 1, 2, ... in turn; restarted and settled in between)",
        "targets": f"RSS < {TARGET_RSS_MB:g} MB per node; every item back on R live nodes <= {TARGET_RECOVERY_S:g}s",
    })
    with running_cluster(args.nodes, args.replication, args.data_dir) as (lc, startup):
        print(f"# cluster: {args.nodes} nodes up in {startup:.1f}s in {lc.data_dir}")
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(run, args, lc)


if __name__ == "__main__":
    main()
