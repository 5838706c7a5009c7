"""What one replicated MD mutation costs: ops/s, node CPU and node messages per insert, by kind.

    .venv/bin/python bench/consensus_bench.py [--concurrency 1 8 32] [--seconds 20] [--mds 16]

Starts a fresh 8-node cluster (R = 5) in a temp dir, puts `--mds` MDs (untimed), then for each
concurrency runs single-entry inserts (`mutate_entries` with one 1 KiB `Ins`, round robin over
the MDs) for `--seconds`, and prints ops/s, p50 / p99 latency, the CPU all node processes
spent per insert (ms), and the messages the nodes received per insert in all and by kind
(their `status` counters; a node's messages to itself count too, as they always have).
Node CPU and messages per insert move far less with the machine's load than ops/s does, so
they are the figures to compare between trees on a shared machine.

It imports the cluster helpers of `bench/cluster_bench.py` from the tree it runs in, so the
same file measures an older tree too: run it with that tree's Python from that tree's root,
e.g. `cd OLD && OLD/.venv/bin/python NEW/bench/consensus_bench.py` (the old tree's code is
what gets imported: the script puts the current directory first on the path).

A benchmark, not a test: it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "bench")]

import trio  # noqa: E402
from cluster_bench import cpu_seconds, node_pids, running_cluster  # noqa: E402

from client.network import NetworkClient  # noqa: E402
from node.data import Ins, MutableData  # noqa: E402
from node.keys import Keypair  # noqa: E402
from node.tools import open_tools  # noqa: E402
from node.xorname import XorName  # noqa: E402


async def kinds(lc) -> collections.Counter:  # type: ignore[no-untyped-def]
    info = lc.load()
    async with open_tools(timeout=5.0) as tools:
        statuses = await tools.statuses([(e.address, e.name) for e in info.nodes if lc.is_alive(e)])
    out: collections.Counter = collections.Counter()
    for status in statuses:
        if status:
            out.update(status.get("msgs_in") or {})
    return out


async def measure(lc, concurrency: int, seconds: float, mds: int) -> None:  # type: ignore[no-untyped-def]
    keys = Keypair()
    async with NetworkClient.open(lc.load().addresses, keys, replication=5) as client:
        shells = [MutableData(XorName.random(), 30_001, {}, {}, 0, frozenset({keys.public})) for _ in range(mds)]
        for md in shells:
            await client.put_mdata(md)
        pids = node_pids(lc)
        latencies: list[float] = []
        before, cpu0 = await kinds(lc), cpu_seconds(pids)
        end = time.monotonic() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.monotonic() < end:
                t = time.monotonic()
                await client.mutate_entries(shells[i % mds].address, {f"k{w}-{i}".encode(): Ins(os.urandom(1024))})
                latencies.append(time.monotonic() - t)
                i += concurrency

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            for w in range(concurrency):
                nursery.start_soon(worker, w)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pids) - cpu0
        after = await kinds(lc)
        n = len(latencies)
        latencies.sort()
        delta = {k: (after[k] - before[k]) / n for k in after if after[k] - before[k]}
        print(f"c={concurrency:<3} {n:5d} inserts {n / wall:7.1f} ops/s  p50 {1000 * latencies[n // 2]:6.1f} ms  "
              f"p99 {1000 * latencies[min(n - 1, int(n * 0.99))]:6.1f} ms  node CPU {1000 * cpu / n:5.2f} ms/op  "
              f"msgs {sum(delta.values()):5.1f}/op  load {os.getloadavg()[0]:.1f}", flush=True)
        print("       by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
                                          if v >= 0.05), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mds", type=int, default=16)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} tree {os.getcwd()} commit {commit} "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} | {' '.join(sys.argv)}", flush=True)
    with running_cluster(8, 5) as (lc, _):
        for concurrency in args.concurrency:
            trio.run(measure, lc, concurrency, args.seconds, args.mds)


if __name__ == "__main__":
    main()
