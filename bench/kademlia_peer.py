"""The asyncio side of bench/cluster_bench.py: bmuller's `kademlia` (PyPI 2.2.3) on loopback.

`kademlia` runs only under asyncio (and over UDP), so the comparison network lives in its
own processes, started and stopped by cluster_bench.py. Two roles:

    python bench/kademlia_peer.py node [--bootstrap HOST:PORT ...] [--ksize K] [--alpha A]
        One peer on 127.0.0.1 (a port the OS picks). Prints `ready <port>` once bootstrapped,
        then serves until SIGTERM / SIGINT.

    python bench/kademlia_peer.py drive --peers HOST:PORT,... [--ksize K] [--alpha A]
        The load generator. It must be a node itself (the library has no client mode), but
        its storage forgets everything, so every `get` is a network lookup and never a local
        read. It reads one JSON command a line on stdin and answers one JSON line on stdout:

        {"op": "set", "n": 200, "size": 1024, "concurrency": 8}
            n sets of fresh random keys with random values of `size` bytes
        {"op": "get", "concurrency": 8}
            a get of every key of the latest set batch, in a shuffled order
        {"op": "quit"}

        Before each command the driver bootstraps again from the peer list (untimed): the
        library forgets a contact after one lost datagram, and a cell should not inherit
        the previous cell's losses. Answer: {"op", "n", "size", "concurrency", "seconds",
        "ops_per_s", "p50_ms", "p99_ms", "failed"} where `failed` counts sets that stored
        nowhere and gets that returned None or a wrong value (those still count in the time,
        as they cost it).

Not a test and not used by the project at run time: a yardstick for the benchmark only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from kademlia.network import Server
from kademlia.storage import IStorage

HOST = "127.0.0.1"
MAX_VALUE = 8137  # the largest bytes value rpcudp's 8 KiB request check lets through (measured)


class NullStorage(IStorage):
    """Storage that keeps nothing: the driver is a node only because the library needs one."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        pass

    def __getitem__(self, key: bytes) -> Any:
        raise KeyError(key)

    def get(self, key: bytes, default: Any = None) -> Any:
        return default

    def iter_older_than(self, seconds_old: float) -> Iterator[tuple[bytes, Any]]:
        return iter(())

    def __iter__(self) -> Iterator[tuple[bytes, Any]]:
        return iter(())


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _run_ops(ops: list[Callable[[], Awaitable[bool]]], concurrency: int) -> dict[str, Any]:
    """Run `ops` with `concurrency` workers; each op returns True when it succeeded."""
    latencies: list[float] = []
    failed = 0
    queue = iter(ops)

    async def worker() -> None:
        nonlocal failed
        for op in queue:
            t0 = time.perf_counter()
            try:
                ok = await op()
            except Exception:  # noqa: BLE001 - a failure is a figure here, not a crash
                ok = False
            latencies.append(time.perf_counter() - t0)
            failed += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "seconds": round(seconds, 4),
        "ops_per_s": round(len(latencies) / seconds, 2) if seconds > 0 else None,
        "p50_ms": round(1000 * _percentile(latencies, 0.50), 3),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 3),
        "failed": failed,
    }


async def _read_line() -> str:
    # A thread, not connect_read_pipe: stdin may be a file or /dev/null, which epoll refuses.
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run_node(args: argparse.Namespace) -> None:
    server = Server(ksize=args.ksize, alpha=args.alpha)
    await server.listen(0, interface=HOST)
    port = server.transport.get_extra_info("sockname")[1]
    if args.bootstrap:
        await server.bootstrap([_address(a) for a in args.bootstrap])
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


async def run_driver(args: argparse.Namespace) -> None:
    server = Server(ksize=args.ksize, alpha=args.alpha, storage=NullStorage())
    await server.listen(0, interface=HOST)
    peers = [_address(a) for a in args.peers.split(",") if a]
    await server.bootstrap(peers)
    known = len(server.protocol.router.find_neighbors(server.node, k=1000))
    print(json.dumps({"ready": True, "contacts": known}), flush=True)
    rng = random.Random()
    keys: list[tuple[str, bytes]] = []
    try:
        while True:
            line = await _read_line()
            if not line:
                break
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "quit":
                break
            concurrency = int(cmd.get("concurrency", 1))
            # rpcudp drops a contact after one unanswered request, so a cell that lost
            # datagrams can leave the driver knowing nobody; every cell starts from the full
            # peer list again (untimed), so one cell's losses do not fail the next.
            await server.bootstrap(peers)
            if op == "set":
                size = int(cmd["size"])
                if size > MAX_VALUE:
                    print(json.dumps({"op": op, "error": f"{size} bytes is over the {MAX_VALUE}-byte cap"}), flush=True)
                    continue
                keys = [(os.urandom(16).hex(), os.urandom(size)) for _ in range(int(cmd["n"]))]

                def setter(key: str, value: bytes) -> Callable[[], Awaitable[bool]]:
                    async def go() -> bool:
                        return bool(await server.set(key, value))
                    return go

                result = await _run_ops([setter(k, v) for k, v in keys], concurrency)
                result.update(op=op, n=len(keys), size=size, concurrency=concurrency)
            elif op == "get":
                order = list(keys)
                rng.shuffle(order)

                def getter(key: str, value: bytes) -> Callable[[], Awaitable[bool]]:
                    async def go() -> bool:
                        return await server.get(key) == value
                    return go

                result = await _run_ops([getter(k, v) for k, v in order], concurrency)
                size = len(order[0][1]) if order else 0
                result.update(op=op, n=len(order), size=size, concurrency=concurrency)
            else:
                result = {"op": op, "error": "unknown op"}
            print(json.dumps(result), flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    node = sub.add_parser("node", help="one peer: serve until SIGTERM")
    node.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    drive = sub.add_parser("drive", help="the load generator: JSON commands on stdin")
    drive.add_argument("--peers", required=True, help="comma-separated HOST:PORT of the peers")
    for p in (node, drive):
        p.add_argument("--ksize", type=int, default=20, help="Kademlia k (default 20)")
        p.add_argument("--alpha", type=int, default=3, help="Kademlia alpha (default 3)")
    args = parser.parse_args()
    # The library logs a warning per lookup that finds differing values, and its rpcudp layer
    # one per timeout; figures, not logs, are this process's output.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_node(args) if args.role == "node" else run_driver(args))


if __name__ == "__main__":
    main()
