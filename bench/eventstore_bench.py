"""Event-store throughput and latency: single-event appends, 100-event batch appends,
full-stream and database-log reads, and single appends paced at half their peak rate, on
the mock network (and on a real cluster with --cluster), each row with its ratio to the
Python `eventsourcing` library's SQLite store measured in the same run on the same machine.

    .venv/bin/python bench/eventstore_bench.py                   # mock + eventsourcing
    .venv/bin/python bench/eventstore_bench.py --cluster         # also a fresh 8-node cluster, R = 5
    .venv/bin/python bench/eventstore_bench.py --cluster .safenet    # ... or a running one
    .venv/bin/python bench/eventstore_bench.py --profile         # where the mock's time goes
    .venv/bin/python bench/eventstore_bench.py --singles-only --repeat 5   # just the mock's singles row

Each figure is events/s and ms/event (the mean time per event, i.e. 1000 / rate), and for
appends the p50/p99 latency of one append call. Single-event appends come from --writers
concurrent writers, each on a stream of its own (one process: their log intents share
mutations, see eventstore/log.py); the first append of each stream, which creates it, is
also shown on its own. The paced row offers single-event appends at half the peak rate just
measured, to the streams the singles made, open loop (an append's latency counts from its
scheduled start, so queueing behind a slow one shows). The ratio column divides by the SQLite row of the same
kind (reads: the aggregate read). On a loaded two-core machine every figure moves with the
load average, printed first.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from client.api import DataClient  # noqa: E402
from client.mock import MockNetwork  # noqa: E402
from eventstore.api import Database, EventData, EventStore  # noqa: E402
from node.data import Ins, MutableData  # noqa: E402
from node.xorname import XorName  # noqa: E402

# What each row of ours is compared with: the SQLite row of the same kind.
SQLITE_OF = {"single": "single", "paced": "single", "batch": "batch", "stream": "read", "log": "read"}


@dataclass
class Row:
    rate: float
    p50_ms: float = math.nan
    p99_ms: float = math.nan


SQLITE: dict[str, Row] = {}


def line(label: str, events: int, seconds: float, latencies: list[float] | None = None,
         kind: str | None = None) -> Row:
    rate = events / seconds if seconds else float("inf")
    row = Row(rate)
    text = f"  {label:<46} {rate:>9,.0f} ev/s {1000 / rate:>7.3f} ms/ev"
    if latencies:
        ordered = sorted(latencies)
        row.p50_ms = statistics.median(ordered) * 1000
        row.p99_ms = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
        text += f"  p50 {row.p50_ms:7.2f} ms  p99 {row.p99_ms:7.2f} ms"
    if kind is not None and kind.startswith("sqlite:"):
        SQLITE[kind[len("sqlite:"):]] = row
    elif kind is not None:
        versus = SQLITE.get(SQLITE_OF[kind])
        text += f"  {row.rate / versus.rate:6.3f}x SQLite" if versus else "  (no SQLite figure)"
    print(text, flush=True)
    return row


# ----------------------------------------------------------------------------- our store


async def raw_rates(client: DataClient, n: int) -> None:
    """The network's own cost per request, one at a time: the floor under every figure."""
    started = time.perf_counter()
    for i in range(n):
        await client.put_idata(b"raw %d %d" % (i, time.monotonic_ns()))
    line("(raw) put_idata, one at a time", n, time.perf_counter() - started)
    md = MutableData(XorName.random(), 15001, {}, {}, 0, frozenset({client.public_key}))
    await client.put_mdata(md)
    started = time.perf_counter()
    for i in range(n):
        await client.mutate_entries(md.address, {(i % 200).to_bytes(8, "big") + b"%d" % i: Ins(b"x" * 150)})
    line("(raw) mutate_entries, 1 Ins", n, time.perf_counter() - started)


def ticked(k: int, i: int) -> EventData:
    return EventData("Ticked", {"writer": k, "i": i, "pad": "x" * 40})


async def singles(db: Database, prefix: str, count: int, writers: int,
                  firsts: list[float] | None = None) -> tuple[int, float, list[float]]:
    """`count` single-event appends by `writers` concurrent writers, a stream each (the
    latency of each stream's first append, which creates it, also goes to `firsts`)."""
    latencies: list[float] = []

    async def writer(k: int, n: int) -> None:
        for i in range(n):
            began = time.perf_counter()
            await db.append(f"{prefix}@{k}", [ticked(k, i)])
            latencies.append(time.perf_counter() - began)
            if i == 0 and firsts is not None:
                firsts.append(latencies[-1])

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(writers):
            nursery.start_soon(writer, k, count // writers)
    return len(latencies), time.perf_counter() - started, latencies


async def paced(db: Database, rate: float, seconds: float, writers: int,
                prefix: str = "paced") -> tuple[int, float, list[float]]:
    """Single-event appends offered at `rate` per second for `seconds`, open loop: a pacer
    hands each scheduled start to the next free writer (a stream each, `prefix@k`); an
    append's latency counts from its scheduled start, so waiting for a free writer counts too."""
    latencies: list[float] = []
    send, receive = trio.open_memory_channel[float](math.inf)
    total = max(1, int(rate * seconds))

    async def pacer() -> None:
        async with send:
            began = time.perf_counter()
            for i in range(total):
                due = began + i / rate
                await trio.sleep(max(0.0, due - time.perf_counter()))
                send.send_nowait(due)

    async def writer(k: int) -> None:
        i = 0
        async for due in receive:
            await db.append(f"{prefix}@{k}", [ticked(k, i)])
            latencies.append(time.perf_counter() - due)
            i += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pacer)
        for k in range(writers):
            nursery.start_soon(writer, k)
    return len(latencies), time.perf_counter() - started, latencies


class CostMeter:
    """Node CPU, client CPU and node messages over a stretch of a cluster run (only when
    this bench started the cluster, so knows its processes)."""

    def __init__(self, lc: object | None) -> None:
        self.lc = lc

    async def __aenter__(self) -> CostMeter:
        if self.lc is not None:
            from cluster_bench import cpu_seconds, messages_handled, node_pids

            self.nodes0 = cpu_seconds(node_pids(self.lc))
            self.msgs0 = await messages_handled(self.lc)
        self.client0 = time.process_time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client = time.process_time() - self.client0
        if self.lc is not None:
            from cluster_bench import cpu_seconds, messages_handled, node_pids

            self.nodes = cpu_seconds(node_pids(self.lc)) - self.nodes0
            self.msgs = await messages_handled(self.lc) - self.msgs0

    def report(self, appends: int, events: int) -> None:
        text = f"      cost: client CPU {1000 * self.client / events:.3f} ms/event"
        if self.lc is not None:
            text += (f", node CPU (all nodes) {1000 * self.nodes / events:.3f} ms/event, "
                     f"{self.msgs / appends:.1f} node messages per append")
        print(text, flush=True)


async def bench_store(client: DataClient, label: str, count: int, writers: int, batches: int,
                      pace_seconds: float, lc: object | None = None) -> None:
    store = EventStore(client)
    db = await store.create_database(f"bench-{os.getpid()}-{time.monotonic_ns()}")
    requests0 = dict(getattr(client, "stats", {}))

    firsts: list[float] = []
    async with CostMeter(lc) as cost:
        n, seconds, latencies = await singles(db, "single", count, writers, firsts)
    peak = line(f"{label}: single-event appends ({writers} writers)", n, seconds, latencies, "single")
    cost.report(n, n)
    flushes = db.log.stats["flushes"]
    print(f"      log: {db.log.stats['claimed']} intents in {flushes} mutations "
          f"({db.log.stats['claimed'] / max(flushes, 1):.1f} per mutation)")
    ordered = sorted(firsts)
    print(f"      of which the first append of each stream (it creates the stream): "
          f"p50 {1000 * statistics.median(ordered):.0f} ms, max {1000 * ordered[-1]:.0f} ms", flush=True)

    # Paced on the streams the singles made: the steady state of appending to a stream. (A
    # stream's first append, which creates its MDs and lists it, is the line above.)
    n, seconds, latencies = await paced(db, peak.rate / 2, pace_seconds, writers, prefix="single")
    line(f"{label}: {n} singles paced at {peak.rate / 2:,.0f}/s (half peak)", n, seconds, latencies, "paced")

    latencies = []

    async def batch_writer(k: int, count: int) -> None:
        for b in range(count):
            events = [EventData("Ticked", {"batch": b, "i": i, "pad": "x" * 40}) for i in range(100)]
            began = time.perf_counter()
            await db.append(f"batch@{k}", events)
            latencies.append(time.perf_counter() - began)

    batch_writers = max(1, min(4, batches))
    started = time.perf_counter()
    async with CostMeter(lc) as cost:
        async with trio.open_nursery() as nursery:
            for k in range(batch_writers):
                nursery.start_soon(batch_writer, k, batches // batch_writers)
    line(f"{label}: 100-event appends ({batch_writers} writers)", 100 * len(latencies),
         time.perf_counter() - started, latencies, "batch")
    cost.report(len(latencies), 100 * len(latencies))

    # A cold reader (nothing cached): the whole stream, payloads and all; then the log.
    reader = EventStore(client).database(db.name)
    before = client.stats.get("requests", 0) if hasattr(client, "stats") else 0
    started = time.perf_counter()
    events = await reader.read_stream("batch@0")
    line(f"{label}: full-stream read ({len(events)} events)", len(events), time.perf_counter() - started,
         kind="stream")
    started = time.perf_counter()
    events = await reader.read_all()
    line(f"{label}: database log read ({len(events)} events)", len(events), time.perf_counter() - started,
         kind="log")
    print(f"      reader: {reader.data.stats['chunk_gets']} chunks fetched", end="")
    if hasattr(client, "stats"):
        print(f", {client.stats.get('requests', 0) - before} requests for both reads", end="")
    print(flush=True)
    if requests0:
        print(f"      client: {client.stats}")


async def mock_singles(count: int, writers: int) -> None:
    """The mock's single-event row alone, as `bench_store` makes it (a fresh network,
    database and streams), with the client's CPU per append."""
    client = MockNetwork().client()
    db = await EventStore(client).create_database(f"bench-{os.getpid()}-{time.monotonic_ns()}")
    async with CostMeter(None) as cost:
        n, seconds, latencies = await singles(db, "single", count, writers)
    line(f"mock: single-event appends ({writers} writers)", n, seconds, latencies)
    cost.report(n, n)


@asynccontextmanager
async def cluster_client(path: str) -> AsyncIterator[DataClient]:
    from client.network import NetworkClient
    from node.cluster import load_cluster_file

    _file, info = load_cluster_file(path)
    async with NetworkClient.open(info.addresses, replication=info.replication) as client:
        yield client  # a fresh key: the store acts as its own account (unregistered mode)


@contextlib.contextmanager
def fresh_cluster(nodes: int, replication: int) -> Iterator[tuple[str, object]]:
    """Start a LocalCluster of `nodes` processes in a temp dir; every process killed on exit."""
    from cluster_bench import running_cluster

    with running_cluster(nodes, replication) as (lc, startup):
        print(f"  ({nodes} nodes, R = {replication}, up and converged in {startup:.1f}s)", flush=True)
        yield str(lc.file), lc


# ----------------------------------------------------------------------------- eventsourcing


def bench_eventsourcing(singles: int, batches: int) -> None:
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        print("  eventsourcing is not installed: .venv/bin/pip install eventsourcing")
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
        line("eventsourcing/SQLite: single-event saves", singles, time.perf_counter() - started, latencies,
             "sqlite:single")
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
        line("eventsourcing/SQLite: 100-event saves", 100 * batches, time.perf_counter() - started, latencies,
             "sqlite:batch")
        started = time.perf_counter()
        stored = list(app.recorder.select_events(big.id))
        line(f"eventsourcing/SQLite: aggregate read ({len(stored)} events)", len(stored),
             time.perf_counter() - started, kind="sqlite:read")
        started = time.perf_counter()
        app.repository.get(big.id)
        line("eventsourcing/SQLite: aggregate rebuilt (repository.get)", len(stored), time.perf_counter() - started)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=4000, help="single-event appends in all")
    parser.add_argument("--writers", type=int, default=32, help="concurrent single-event writers")
    parser.add_argument("--batches", type=int, default=40, help="100-event appends in all")
    parser.add_argument("--pace-seconds", type=float, default=3.0, help="length of the paced run")
    parser.add_argument("--cluster", nargs="?", const="", default=None, metavar="PATH",
                        help="also run on a cluster: a fresh one of --nodes (no PATH), or PATH's cluster.json")
    parser.add_argument("--nodes", type=int, default=8, help="nodes of the fresh cluster")
    parser.add_argument("--replication", type=int, default=5, help="R of the fresh cluster")
    parser.add_argument("--cluster-singles", type=int, default=1600, help="single-event appends on the cluster")
    parser.add_argument("--cluster-batches", type=int, default=40, help="100-event appends on the cluster")
    parser.add_argument("--no-mock", action="store_true", help="skip the mock network")
    parser.add_argument("--profile", action="store_true", help="profile the mock run, print the top 25")
    parser.add_argument("--singles-only", action="store_true",
                        help="only the mock's single-event appends (no SQLite, no other row): for A/B runs")
    parser.add_argument("--repeat", type=int, default=1, help="with --singles-only: runs, each on a fresh database")
    args = parser.parse_args()

    if args.singles_only:
        print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for _ in range(args.repeat):
            trio.run(mock_singles, args.singles, args.writers)
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return

    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("eventsourcing 9.x, SQLite file (no network, no replication):")
    bench_eventsourcing(args.singles, args.batches)

    async def on_mock() -> None:
        net = MockNetwork()
        await raw_rates(net.client(), 1000)
        await bench_store(net.client(), "mock", args.singles, args.writers, args.batches, args.pace_seconds)

    if not args.no_mock:
        print("mock network (every request signed, checked and run through the rules engine):")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(trio.run, on_mock)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
        else:
            trio.run(on_mock)

    if args.cluster is not None:
        with contextlib.ExitStack() as stack:
            lc = None
            path = args.cluster
            print(f"cluster {path or '(fresh)'}:", flush=True)
            if not path:
                path, lc = stack.enter_context(fresh_cluster(args.nodes, args.replication))

            async def on_cluster() -> None:
                async with cluster_client(path) as client:
                    await raw_rates(client, 50)
                    await bench_store(client, "cluster", args.cluster_singles, args.writers, args.cluster_batches,
                                      args.pace_seconds * 2, lc)

            trio.run(on_cluster)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
