"""Throughput and latency of a real 8-node cluster, side by side with bmuller's `kademlia`.

    .venv/bin/python bench/cluster_bench.py [--repeat 3] [--concurrency 1 8 32] ...

Starts an N-node network of PyPI `kademlia` 2.2.3 on loopback (N processes of
bench/kademlia_peer.py plus one driver process: that library is asyncio-only and over UDP)
and, for each repeat, a fresh N-node cluster (default 8, R = 5) of `safenet node run`
processes in a temp dir (`node.cluster.LocalCluster`). Then, cell by cell and ours right
before theirs so both see the same machine load:

- IData put (ours: `put_idata`, signed, durable on a majority of the close group) against
  kademlia `set` (unsigned, in memory, stored on its k closest), at each concurrency and at
  the compared sizes (default 1 KiB and 8,000 B: kademlia refuses values over 8,137 B);
- IData get (ours: `get_idata`, through a fresh client so no close group is cached, checked
  against the name; opening it, untimed like the driver's bootstrap, also opens its links to
  the nodes it learned) against kademlia `get` (the driver stores nothing, so every get is a
  network lookup), every key of the put batch once, shuffled;
- ours only: IData put / get at 8 KiB, 64 KiB and 1 MiB; MD insert (`mutate_entries` with
  one `Ins` on a set of MDs, round robin) and MD read (`get_value`, a quorum read).

Each cell prints ops/s, p50 / p99 latency (ms, measured by the client), the CPU the server
processes spent per op (ms, summed over the N nodes: less sensitive to other load than
ops/s; background work such as anti-entropy is included), the client's CPU per op, the
messages our nodes received per op, and how many evictions the nodes logged meanwhile (a
node evicts a peer after three unanswered pings: on an overloaded machine this is what
starts data moving). The summary gives the median over the repeats and the ratio ours / theirs
against the issue's targets (get >= theirs, put >= half their set). Load average is
printed before and after: the machine is shared, so read the figures with it.

A benchmark, not a test: it passes or fails nothing and is kept out of the pytest run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import trio

from client.network import NetworkClient
from node.cluster import LocalCluster
from node.data import Ins, MDataAddress, MutableData
from node.keys import Keypair
from node.tools import open_tools
from node.xorname import XorName

HERE = Path(__file__).resolve().parent
KIB = 1024
MIB = 1024 * 1024
START_TIMEOUT = 180.0  # generous: two cores shared with other engineers' test runs
MD_TAG = 15_100
KADEMLIA_CAP = 8137


# =============================================================================== shared helpers
# (client_bench.py and node_footprint.py import these)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_line() -> str:
    return (f"{platform.node()} | {os.cpu_count()} cores | Python {platform.python_version()} | "
            f"load average {load_average()} (1/5/15 min)")


def header(title: str, config: dict[str, Any]) -> None:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"# {title}")
    print(f"# {now} | {machine_line()}")
    print("# command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    for key, value in config.items():
        print(f"#   {key}: {value}")
    sys.stdout.flush()


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def human_size(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} B"


def proc_status_kib(pid: int | str, field_name: str) -> int | None:
    """A `Vm*` figure (KiB) from /proc/PID/status, e.g. VmRSS or VmHWM."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (dead ones count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


@contextlib.contextmanager
def running_cluster(nodes: int, replication: int, data_dir: str | None = None,
                    timeout: float = START_TIMEOUT) -> Iterator[tuple[LocalCluster, float]]:
    """An N-node LocalCluster in a temp dir (or `data_dir`), every process killed on exit
    however the block ends. Yields the cluster and its start-up seconds."""
    with contextlib.ExitStack() as stack:
        where = data_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="safenet-bench-"))
        lc = LocalCluster(where)
        try:
            t0 = time.monotonic()
            trio.run(partial(lc.up, nodes, replication=replication, timeout=timeout))
            yield lc, time.monotonic() - t0
        finally:
            try:
                lc.down(timeout=5.0)
            finally:
                lc.kill_everything()


def node_pids(lc: LocalCluster) -> list[int]:
    return [e.pid for e in lc.load().nodes if e.pid and lc.is_alive(e)]


# =============================================================================== measuring


@dataclass
class Cell:
    """One measurement: `n` ops of one kind, size and concurrency."""

    ops_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int = 0
    server_cpu_ms_per_op: float = float("nan")
    client_cpu_ms_per_op: float = float("nan")
    msgs_per_op: float = float("nan")
    n: int = 0
    seconds: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def good_per_s(self) -> float:
        """Successful ops per second: what the ratios use (a failed op is no throughput)."""
        return (self.n - self.failed) / self.seconds if self.seconds > 0 else float("nan")


CELL_LIMIT = 60.0  # seconds a cell may take before it stops issuing ops (see --cell-limit)


async def run_ops(ops: Sequence[Callable[[], Awaitable[Any]]], concurrency: int,
                  server_pids: Sequence[int] = (), limit: float | None = None) -> Cell:
    """Run `ops` with `concurrency` workers; time each op. An op that raises counts as failed
    (its time still counts). After `limit` seconds no new op starts (those in flight finish),
    so a cluster in trouble costs minutes, not hours; the cell then says how many ran."""
    latencies: list[float] = []
    failed = 0
    queue = iter(ops)
    errors: dict[str, int] = {}
    limit = CELL_LIMIT if limit is None else limit
    cut = False

    async def worker() -> None:
        nonlocal failed, cut
        for op in queue:
            if time.perf_counter() - started > limit:
                cut = True
                break
            t0 = time.perf_counter()
            try:
                await op()
            except Exception as exc:  # noqa: BLE001 - a failure is a figure here
                failed += 1
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            latencies.append(time.perf_counter() - t0)

    cpu0 = cpu_seconds(server_pids)
    client0 = time.process_time()
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client0
    cpu = cpu_seconds(server_pids) - cpu0
    latencies.sort()
    n = len(latencies)
    extra: dict[str, Any] = {"errors": errors} if errors else {}
    if cut:
        extra["cut"] = f"only {n} of {len(ops)} ops ran: the cell hit its {limit:g}s limit"
    return Cell(n / seconds, 1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.99), failed,
                1000 * cpu / n if n and server_pids else float("nan"), 1000 * client_cpu / max(1, n),
                n=n, seconds=seconds, extra=extra)


async def messages_handled(lc: LocalCluster) -> int:
    """Messages all nodes have received so far (their `status` counters)."""
    info = lc.load()
    async with open_tools(timeout=5.0) as tools:
        statuses = await tools.statuses([(e.address, e.name) for e in info.nodes if lc.is_alive(e)])
    return sum(sum((s.get("msgs_in") or {}).values()) for s in statuses if s)


class LogWatch:
    """Counts events in the nodes' JSON logs since the last call (evictions are the health
    sign here: a node evicts a peer whose pings went unanswered three times, and on an
    overloaded machine that starts data moving between nodes)."""

    def __init__(self, lc: LocalCluster) -> None:
        self.lc = lc
        self.offsets: dict[Path, int] = {}
        self.since()

    def since(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.lc.load().nodes:
            path = Path(entry.data_dir) / "node.log"
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
                self.offsets[path] = f.tell()
                for line in data.splitlines():
                    with contextlib.suppress(ValueError):
                        event = json.loads(line).get("event", "?")
                        counts[event] = counts.get(event, 0) + 1
        return counts

    def evictions(self) -> int:
        return self.since().get("evicted", 0)


class Ours:
    """The workloads on our cluster, through NetworkClient."""

    def __init__(self, lc: LocalCluster, replication: int) -> None:
        self.lc = lc
        self.replication = replication
        self.keys = Keypair()
        self.names: list[tuple[XorName, bytes]] = []
        self.md_keys: list[tuple[MDataAddress, bytes, bytes]] = []
        self.logs = LogWatch(lc)

    def contacts(self) -> list[str]:
        return self.lc.load().addresses

    async def measured(self, ops: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> Cell:
        """`run_ops`, plus the messages the nodes received per op (background pings and
        anti-entropy included: a few per second per node)."""
        before = await messages_handled(self.lc)
        self.logs.since()
        cell = await run_ops(ops, concurrency, node_pids(self.lc))
        cell.msgs_per_op = (await messages_handled(self.lc) - before) / max(1, cell.n)
        evicted = self.logs.evictions()
        if evicted:
            cell.extra["evictions"] = evicted
        return cell

    @contextlib.asynccontextmanager
    async def client(self, keys: Keypair | None = None) -> Any:
        async with NetworkClient.open(self.contacts(), keys or Keypair(), replication=self.replication) as c:
            yield c

    async def put(self, n: int, size: int, concurrency: int) -> Cell:
        values = [os.urandom(size) for _ in range(n)]
        self.names = []
        async with self.client(self.keys) as client:
            def op(value: bytes) -> Callable[[], Awaitable[None]]:
                async def go() -> None:
                    name = await client.put_idata(value)
                    self.names.append((name, value))
                return go
            return await self.measured([op(v) for v in values], concurrency)

    async def get(self, concurrency: int) -> Cell:
        order = list(self.names)
        random.shuffle(order)
        async with self.client() as client:  # a fresh client: no close group cached
            def op(name: XorName, value: bytes) -> Callable[[], Awaitable[None]]:
                async def go() -> None:
                    if await client.get_idata(name) != value:
                        raise AssertionError("wrong IData")
                return go
            return await self.measured([op(nm, v) for nm, v in order], concurrency)

    async def md_insert(self, n: int, size: int, concurrency: int, mds: int) -> Cell:
        """`n` single-entry inserts spread round robin over `mds` fresh MDs (put untimed)."""
        async with self.client(self.keys) as client:
            shells = [MutableData(XorName.random(), MD_TAG, {}, {}, 0, frozenset({self.keys.public}))
                      for _ in range(mds)]
            async with trio.open_nursery() as nursery:
                for md in shells:
                    nursery.start_soon(client.put_mdata, md)
            self.md_keys = []

            def op(i: int) -> Callable[[], Awaitable[None]]:
                address = shells[i % mds].address
                key, value = f"k{i}".encode(), os.urandom(size)

                async def go() -> None:
                    await client.mutate_entries(address, {key: Ins(value)})
                    self.md_keys.append((address, key, value))
                return go
            return await self.measured([op(i) for i in range(n)], concurrency)

    async def md_read(self, concurrency: int) -> Cell:
        order = list(self.md_keys)
        random.shuffle(order)
        async with self.client() as client:
            def op(address: MDataAddress, key: bytes, value: bytes) -> Callable[[], Awaitable[None]]:
                async def go() -> None:
                    if (await client.get_value(address, key)).content != value:
                        raise AssertionError("wrong MD value")
                return go
            return await self.measured([op(*item) for item in order], concurrency)


class Kademlia:
    """N bmuller/kademlia peers (one process each) and a driver process, on 127.0.0.1."""

    def __init__(self, nodes: int, ksize: int, alpha: int) -> None:
        self.nodes, self.ksize, self.alpha = nodes, ksize, alpha
        self.peers: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []
        self.driver: subprocess.Popen[str] | None = None
        self.driver_contacts = 0

    def _spawn(self, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        cmd = [sys.executable, str(HERE / "kademlia_peer.py"), *args,
               "--ksize", str(self.ksize), "--alpha", str(self.alpha)]
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1, start_new_session=True)
        return proc

    def _ready_port(self, proc: subprocess.Popen[str]) -> str:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready "):
            raise RuntimeError(f"a kademlia peer did not start (said {line!r})")
        return f"127.0.0.1:{int(line.split()[1])}"

    def start(self) -> None:
        seed = self._spawn("node")
        self.peers.append(seed)
        self.addresses.append(self._ready_port(seed))
        for i in range(1, self.nodes):
            # Each joins through the seed and the previous peer, as our nodes join through <= 3.
            boot = ["--bootstrap", self.addresses[0]]
            if i > 1:
                boot += ["--bootstrap", self.addresses[-1]]
            proc = self._spawn("node", *boot)
            self.peers.append(proc)
            self.addresses.append(self._ready_port(proc))
        self.driver = self._spawn("drive", "--peers", ",".join(self.addresses), stdin=subprocess.PIPE)
        ready = json.loads(self.driver.stdout.readline())  # type: ignore[union-attr]
        self.driver_contacts = int(ready.get("contacts", 0))

    def pids(self) -> list[int]:
        return [p.pid for p in self.peers]

    def command(self, **cmd: Any) -> Cell:
        assert self.driver is not None and self.driver.stdin and self.driver.stdout
        cpu0 = cpu_seconds(self.pids())
        driver0 = cpu_seconds([self.driver.pid])
        self.driver.stdin.write(json.dumps(cmd) + "\n")
        self.driver.stdin.flush()
        line = self.driver.stdout.readline()
        cpu = cpu_seconds(self.pids()) - cpu0
        driver_cpu = cpu_seconds([self.driver.pid]) - driver0
        if not line:
            raise RuntimeError("the kademlia driver died")
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError(f"kademlia driver: {r['error']}")
        n = max(1, r["n"])
        return Cell(r["ops_per_s"], r["p50_ms"], r["p99_ms"], r["failed"], 1000 * cpu / n, 1000 * driver_cpu / n,
                    n=r["n"], seconds=r["seconds"])

    async def set(self, n: int, size: int, concurrency: int) -> Cell:
        return await trio.to_thread.run_sync(partial(self.command, op="set", n=n, size=size, concurrency=concurrency))

    async def get(self, concurrency: int) -> Cell:
        return await trio.to_thread.run_sync(partial(self.command, op="get", concurrency=concurrency))

    def stop(self) -> None:
        procs = ([self.driver] if self.driver else []) + self.peers
        if self.driver and self.driver.stdin:
            with contextlib.suppress(OSError):
                self.driver.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.driver.stdin.flush()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# =============================================================================== the run


def ops_for(size: int, base: int) -> int:
    """Fewer ops for big values, so every cell takes seconds, not minutes."""
    if size >= MIB:
        return max(10, base // 15)
    if size >= 64 * KIB:
        return max(20, base // 3)
    return base


def fmt_cell(c: Cell) -> str:
    fail = f" ({c.failed} failed)" if c.failed else ""
    return (f"{c.ops_per_s:9.1f} {c.p50_ms:8.2f} {c.p99_ms:8.2f} {c.server_cpu_ms_per_op:9.2f} "
            f"{c.client_cpu_ms_per_op:9.2f} {c.msgs_per_op:8.1f}{fail}")


def median_cell(cells: list[Cell]) -> Cell:
    good = median([c.good_per_s for c in cells])
    return Cell(good, median([c.p50_ms for c in cells]),
                median([c.p99_ms for c in cells]), sum(c.failed for c in cells),
                median([c.server_cpu_ms_per_op for c in cells]), median([c.client_cpu_ms_per_op for c in cells]),
                median([c.msgs_per_op for c in cells]))


Results = dict[tuple[str, int, int], dict[str, list[Cell]]]


async def one_repeat(args: argparse.Namespace, lc: LocalCluster, kad: Kademlia | None, results: Results) -> None:
    """Every cell once, on a freshly started cluster."""
    ours = Ours(lc, args.replication)

    def record(kind: str, size: int, conc: int, who: str, cell: Cell) -> None:
        results.setdefault((kind, size, conc), {}).setdefault(who, []).append(cell)
        label = f"{kind:<9} {human_size(size):>8} c={conc:<3} {who:<8}"
        print(f"  {label} {fmt_cell(cell)}" + (f"  {cell.extra}" if cell.extra else ""), flush=True)

    async def idata(size: int, conc: int) -> None:
        n = ops_for(size, args.ops)
        record("put", size, conc, "ours", await ours.put(n, size, conc))
        if kad is not None and size <= KADEMLIA_CAP:
            record("put", size, conc, "kademlia", await kad.set(n, size, conc))
        record("get", size, conc, "ours", await ours.get(conc))
        if kad is not None and size <= KADEMLIA_CAP:
            record("get", size, conc, "kademlia", await kad.get(conc))

    print(f"  {'op':<9} {'size':>8} {'conc':<5} {'who':<8} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'srv cpu':>9} {'cli cpu':>9} {'msgs/op':>8}")
    # The compared sizes and the MDs first, the big chunks last: what a node stores costs
    # it anti-entropy work later, which the small-op figures should not inherit.
    for size in [s for s in args.sizes if s <= KADEMLIA_CAP]:
        for conc in args.concurrency:
            await idata(size, conc)
    for conc in args.concurrency if args.md_ops > 0 else []:
        record("md-insert", args.md_size, conc, "ours", await ours.md_insert(args.md_ops, args.md_size, conc, args.mds))
        record("md-read", args.md_size, conc, "ours", await ours.md_read(conc))
    for size in [s for s in args.sizes if s > KADEMLIA_CAP]:
        for conc in args.concurrency:
            await idata(size, conc)
    events = ours.logs.since()
    if events.get("evicted"):
        print(f"  (nodes logged {events['evicted']} evictions since the last cell)")


def summary(args: argparse.Namespace, results: Results) -> None:
    print(f"\n## summary: median of {args.repeat} repeat(s); load average now {load_average()}")
    print("   ops/s = successful ops per second; p50 / p99 latency in ms at the client; "
          "srv = CPU ms per op of all server processes;")
    print("   cli = CPU ms per op of the client (ours: this process; kademlia: its driver); msgs = messages")
    print("   our nodes received per op; ratio = ours / kademlia ops/s; targets: get >= 1, put >= 0.5")
    print(f"  {'op':<9} {'size':>8} {'conc':>4} | "
          f"{'ours/s':>7} {'p50':>6} {'p99':>7} {'srv':>5} {'cli':>5} {'msgs':>5} | "
          f"{'kad/s':>7} {'p50':>6} {'p99':>7} {'srv':>5} {'cli':>5} | {'ratio':>5}  target")
    verdicts = []
    for (kind, size, conc), by in sorted(results.items(), key=lambda kv: (kv[0][0] not in ("put", "get"), kv[0])):
        o = median_cell(by["ours"])
        k = median_cell(by["kademlia"]) if "kademlia" in by else None
        line = (f"  {kind:<9} {human_size(size):>8} {conc:>4} | {o.ops_per_s:7.1f} {o.p50_ms:6.1f} {o.p99_ms:7.1f} "
                f"{o.server_cpu_ms_per_op:5.2f} {o.client_cpu_ms_per_op:5.2f} {o.msgs_per_op:5.1f} | ")
        if k is not None:
            ratio = o.ops_per_s / k.ops_per_s if k.ops_per_s else float("inf")
            need = 1.0 if kind == "get" else 0.5
            ok = ratio >= need
            verdicts.append(ok)
            line += (f"{k.ops_per_s:7.1f} {k.p50_ms:6.1f} {k.p99_ms:7.1f} {k.server_cpu_ms_per_op:5.2f} "
                     f"{k.client_cpu_ms_per_op:5.2f} | {ratio:5.2f}  {'met' if ok else 'MISSED'} (>= {need:g})")
            if k.failed:
                line += f"; kademlia: {k.failed} failed ops"
        else:
            line += f"{'':>7} {'':>6} {'':>7} {'':>5} {'':>5} |"
        if o.failed:
            line += f"; ours: {o.failed} failed ops"
        print(line)
    if verdicts:
        print(f"\n  targets met in {sum(verdicts)}/{len(verdicts)} compared cells")


def main() -> None:
    global CELL_LIMIT
    parser = argparse.ArgumentParser(
        description="IData put/get and MD insert/read ops/s with p50/p99 on a real cluster, "
                    "side by side with an N-node bmuller/kademlia network on loopback.")
    parser.add_argument("--nodes", type=int, default=8, help="nodes in each network (default 8)")
    parser.add_argument("--replication", type=int, default=5, help="our R (default 5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="requests in flight (default 1 8 32)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1 * KIB, 8000, 8 * KIB, 64 * KIB, MIB],
                        help="IData value sizes in bytes; kademlia joins in at sizes <= 8,137 "
                             "(default 1024 8000 8192 65536 1048576)")
    parser.add_argument("--ops", type=int, default=150,
                        help="ops per cell at sizes < 64 KiB (64 KiB: a third, 1 MiB: a fifteenth) (default 150)")
    parser.add_argument("--md-ops", type=int, default=150,
                        help="MD inserts (then reads) per cell; 0 skips the MD cells (default 150)")
    parser.add_argument("--md-size", type=int, default=KIB, help="MD entry value size (default 1024)")
    parser.add_argument("--mds", type=int, default=16, help="MDs the inserts are spread over (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the summary gives medians (default 3)")
    parser.add_argument("--kad-ksize", type=int, default=None,
                        help="kademlia k (default: our R, so both keep the same number of copies)")
    parser.add_argument("--kad-alpha", type=int, default=3, help="kademlia alpha (default 3)")
    parser.add_argument("--no-kademlia", action="store_true", help="measure ours only")
    parser.add_argument("--cell-limit", type=float, default=CELL_LIMIT,
                        help=f"seconds after which a cell starts no new op (default {CELL_LIMIT:g})")
    parser.add_argument("--data-dir", default=None,
                        help="where the clusters go (default: a fresh temp dir per repeat); with it, "
                             "one cluster serves every repeat")
    parser.add_argument("--json", type=Path, default=None, help="also write every cell to this JSON file")
    args = parser.parse_args()
    CELL_LIMIT = args.cell_limit
    ksize = args.kad_ksize or args.replication
    header("cluster_bench: IData / MD ops on a real cluster vs bmuller/kademlia", {
        "ours": f"{args.nodes} node processes, R={args.replication}, TCP, sqlite store, a fresh cluster "
                f"per repeat; one NetworkClient in this process (a fresh one per get/read cell)",
        "kademlia": "off" if args.no_kademlia else
                    f"{args.nodes} peer processes + 1 driver process, PyPI kademlia 2.2.3, k={ksize}, "
                    f"alpha={args.kad_alpha}, UDP; the driver keeps no values (every get is a lookup)",
        "sizes": ", ".join(human_size(s) for s in args.sizes) + f" (kademlia only at <= {KADEMLIA_CAP} B)",
        "concurrency": " ".join(map(str, args.concurrency)),
        "ops per cell": f"{args.ops} (64 KiB: {ops_for(64 * KIB, args.ops)}, 1 MiB: {ops_for(MIB, args.ops)})",
        "MD": f"{args.md_ops} single-entry Ins of {human_size(args.md_size)} over {args.mds} MDs per cell, "
              f"then get_value of each",
        "repeats": args.repeat,
        "cell limit": f"{args.cell_limit:g}s (no new op starts after it)",
    })
    kad: Kademlia | None = None
    results: Results = {}
    try:
        if not args.no_kademlia:
            kad = Kademlia(args.nodes, ksize, args.kad_alpha)
            t0 = time.monotonic()
            kad.start()
            print(f"# kademlia: {args.nodes} peers up in {time.monotonic() - t0:.1f}s; "
                  f"the driver knows {kad.driver_contacts} of them (its k-buckets keep k={ksize} each)")
        for rep in range(1, args.repeat + 1):
            # A fresh cluster each repeat, so each starts from empty stores (start-up takes seconds).
            with running_cluster(args.nodes, args.replication, args.data_dir) as (lc, startup):
                print(f"\n## repeat {rep}/{args.repeat}: our {args.nodes} nodes up in {startup:.1f}s "
                      f"(load {load_average()})")
                trio.run(one_repeat, args, lc, kad, results)
    finally:
        if kad is not None:
            kad.stop()
    summary(args, results)
    if args.json:
        args.json.write_text(json.dumps(
            [{"op": k[0], "size": k[1], "concurrency": k[2], "who": who, **c.__dict__}
             for k, by in results.items() for who, cells in by.items() for c in cells], indent=1))


if __name__ == "__main__":
    main()
