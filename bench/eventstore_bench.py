"""Event-store throughput: single-event appends, 100-event batch appends and full-stream
reads, on the mock network (and on a real cluster with --cluster), next to the Python
`eventsourcing` library's SQLite store in the same run on the same machine.

    /work/venv/bin/python bench/eventstore_bench.py                  # mock + eventsourcing
    /work/venv/bin/python bench/eventstore_bench.py --cluster .safenet
    /work/venv/bin/python bench/eventstore_bench.py --profile        # where the mock's time goes

Each figure is events/s and ms/event (the mean time per event, i.e. 1000 / rate), and for
appends the p50/p99 latency of one append call. Single-event appends come from --writers
concurrent writers, each on a stream of its own (one process: their log intents share
mutations, see eventstore/log.py). The first lines print the mock's own raw request rates:
on a loaded two-core machine every figure moves with them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.api import DataClient  # noqa: E402
from client.mock import MockNetwork  # noqa: E402
from eventstore.api import EventData, EventStore  # noqa: E402
from node.data import Ins, MutableData  # noqa: E402
from node.xorname import XorName  # noqa: E402


def line(label: str, events: int, seconds: float, latencies: list[float] | None = None) -> None:
    rate = events / seconds if seconds else float("inf")
    text = f"  {label:<44} {rate:>10,.0f} events/s  {1000 / rate:>8.3f} ms/event"
    if latencies:
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        text += f"   append p50 {statistics.median(ordered) * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms"
    print(text, flush=True)


# ----------------------------------------------------------------------------- our store


async def raw_rates(client: DataClient, n: int) -> None:
    """The mock's own cost per request: the floor under every event-store figure."""
    started = time.perf_counter()
    for i in range(n):
        await client.put_idata(b"raw %d" % i)
    line("(raw) put_idata, one at a time", n, time.perf_counter() - started)
    md = MutableData(XorName.random(), 15001, {}, {}, 0, frozenset({client.public_key}))
    await client.put_mdata(md)
    started = time.perf_counter()
    for i in range(n):
        await client.mutate_entries(md.address, {(i % 200).to_bytes(8, "big") + b"%d" % i: Ins(b"x" * 150)})
    line("(raw) mutate_entries, 1 Ins", n, time.perf_counter() - started)


async def bench_store(client: DataClient, label: str, singles: int, writers: int, batches: int) -> None:
    store = EventStore(client)
    db = await store.create_database(f"bench-{os.getpid()}-{time.monotonic_ns()}")
    latencies: list[float] = []

    async def writer(k: int, count: int) -> None:
        for i in range(count):
            event = EventData("Ticked", {"writer": k, "i": i, "pad": "x" * 40})
            began = time.perf_counter()
            await db.append(f"single@{k}", [event])
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(writers):
            nursery.start_soon(writer, k, singles // writers)
    line(f"{label}: single-event appends ({writers} writers)", len(latencies), time.perf_counter() - started,
         latencies)
    flushes = db.log.stats["flushes"]
    print(f"      log: {db.log.stats['claimed']} intents in {flushes} mutations "
          f"({db.log.stats['claimed'] / max(flushes, 1):.1f} per mutation)")

    latencies.clear()

    async def batch_writer(k: int, count: int) -> None:
        for b in range(count):
            events = [EventData("Ticked", {"batch": b, "i": i, "pad": "x" * 40}) for i in range(100)]
            began = time.perf_counter()
            await db.append(f"batch@{k}", events)
            latencies.append(time.perf_counter() - began)

    batch_writers = max(1, min(4, batches))
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(batch_writers):
            nursery.start_soon(batch_writer, k, batches // batch_writers)
    line(f"{label}: 100-event batch appends ({batch_writers} writers)", 100 * len(latencies),
         time.perf_counter() - started, latencies)

    # A cold reader (nothing cached): the whole stream, payloads and all.
    reader = EventStore(client).database(db.name)
    started = time.perf_counter()
    events = await reader.read_stream("batch@0")
    line(f"{label}: full-stream read ({len(events)} events)", len(events), time.perf_counter() - started)
    started = time.perf_counter()
    events = await reader.read_all()
    line(f"{label}: database log read ({len(events)} events)", len(events), time.perf_counter() - started)


@asynccontextmanager
async def cluster_client(path: str) -> AsyncIterator[DataClient]:
    from client.network import NetworkClient
    from node.cluster import load_cluster_file

    _file, info = load_cluster_file(path)
    async with NetworkClient.open(info.addresses, replication=info.replication) as client:
        yield client  # a fresh key: the store acts as its own account (unregistered mode)


# ----------------------------------------------------------------------------- eventsourcing


def bench_eventsourcing(singles: int, batches: int) -> None:
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        print("  eventsourcing is not installed: /work/venv/bin/pip install eventsourcing")
        return

    class Counter(Aggregate):
        @event("Started")
        def __init__(self, n: int) -> None:
            self.n = n

        @event("Ticked")
        def tick(self, i: int, pad: str) -> None:
            self.n = i

    with tempfile.TemporaryDirectory() as tmp:
        app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(Path(tmp) / "es.sqlite")})
        latencies = []
        started = time.perf_counter()
        for i in range(singles):
            counter = Counter(i)
            began = time.perf_counter()
            app.save(counter)
            latencies.append(time.perf_counter() - began)
        line("eventsourcing/SQLite: single-event saves", singles, time.perf_counter() - started, latencies)
        latencies = []
        big = Counter(0)
        app.save(big)
        started = time.perf_counter()
        for _b in range(batches):
            for i in range(100):
                big.tick(i, "x" * 40)
            began = time.perf_counter()
            app.save(big)
            latencies.append(time.perf_counter() - began)
        line("eventsourcing/SQLite: 100-event saves", 100 * batches, time.perf_counter() - started, latencies)
        started = time.perf_counter()
        stored = list(app.recorder.select_events(big.id))
        line(f"eventsourcing/SQLite: aggregate read ({len(stored)} events)", len(stored),
             time.perf_counter() - started)
        started = time.perf_counter()
        app.repository.get(big.id)
        line("eventsourcing/SQLite: aggregate rebuilt (repository.get)", len(stored), time.perf_counter() - started)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=4000, help="single-event appends in all")
    parser.add_argument("--writers", type=int, default=32, help="concurrent single-event writers")
    parser.add_argument("--batches", type=int, default=40, help="100-event appends in all")
    parser.add_argument("--cluster", help="also run on the cluster of this cluster.json (or dir)")
    parser.add_argument("--cluster-singles", type=int, default=400, help="single-event appends on the cluster")
    parser.add_argument("--cluster-batches", type=int, default=8, help="100-event appends on the cluster")
    parser.add_argument("--profile", action="store_true", help="profile the mock run, print the top 25")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    async def on_mock() -> None:
        net = MockNetwork()
        await raw_rates(net.client(), 1000)
        await bench_store(net.client(), "mock", args.singles, args.writers, args.batches)

    print("mock network (every request signed, verified and checked by the rules engine):")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(trio.run, on_mock)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    else:
        trio.run(on_mock)

    if args.cluster:
        async def on_cluster() -> None:
            async with cluster_client(args.cluster) as client:
                await raw_rates(client, 50)
                await bench_store(client, "cluster", args.cluster_singles, args.writers, args.cluster_batches)
                print(f"      client: {client.stats}")

        print(f"cluster {args.cluster}:")
        trio.run(on_cluster)

    print("eventsourcing 9.x, SQLite file (no network, no replication):")
    bench_eventsourcing(args.singles, args.batches)


if __name__ == "__main__":
    main()

