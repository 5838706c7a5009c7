"""Self-encrypted payloads through a real cluster: put / get MB/s, client peak memory, range reads.

    .venv/bin/python bench/client_bench.py [--repeat 3] [--sizes 1024 1048576 52428800]

For each repeat, starts a fresh N-node cluster (default 8, R = 5) in a temp dir and, for
each size:

- put: `put_blob` of fresh random bytes (incompressible, so nothing is deduplicated or
  compressed away) read from a file on disk; get: `get_blob_to` into a file, compared with
  the original afterwards (outside the timing). MB/s is 10^6 bytes of payload per second.
  Sizes below `--child-from` (default 32 MiB) run in this process, `--count` blobs each
  (default: 50 of 1 KiB, 5 of 1 MiB), one after the other;
- sizes from `--child-from` up run in a fresh child process per repeat, which also reports
  its peak resident memory (VmHWM of /proc/self/status, reset through /proc/self/clear_refs
  before each phase): before any work, during the put, during the get;
- in the same child, a 1-byte `read_blob` from the middle of the blob, counting the
  IData fetches (the client's `get_idata`, wrapped): the data map, then content chunks.

Targets (issue 4): 50 MiB put >= 10 MB/s, get >= 30 MB/s, client peak RSS < 150 MB.
Figures are medians over the repeats; the load average is printed with them.
A benchmark, not a test: kept out of the pytest run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from cluster_bench import (
    KIB,
    MIB,
    header,
    human_size,
    load_average,
    median,
    proc_status_kib,
    running_cluster,
)

from client.blobs import fetch_blob_to, store_blob
from client.network import NetworkClient
from node.cluster import ClusterFile, LocalCluster
from node.keys import Keypair

TARGET_PUT, TARGET_GET, TARGET_RSS_MB = 10.0, 30.0, 150.0
# --what-if-offload: self-encryption in worker threads (client.selfenc's offload=True, which
# DataClient.put_blob / get_blob_to do not use); a diagnostic, not the product's figure.
OFFLOAD = False


def write_random_file(path: Path, size: int) -> str:
    """`size` random bytes to `path`, 1 MiB at a time; returns their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            piece = os.urandom(min(MIB, left))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(MIB):
            digest.update(piece)
    return digest.hexdigest()


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mib(kib: int | None) -> float:
    return float("nan") if kib is None else kib / 1024


# =============================================================================== one blob round trip


async def round_trip(client: NetworkClient, reader: NetworkClient, size: int, workdir: Path, *,
                     count_range_read: bool, memory: bool) -> dict[str, Any]:
    """Put one blob of `size` random bytes through `client`, get it back through `reader` (a
    different client, so no close group is cached from the put); optionally the 1-byte
    middle read."""
    src, dst = workdir / f"in-{size}", workdir / f"out-{size}"
    sha = write_random_file(src, size)
    result: dict[str, Any] = {"size": size}
    if memory:
        reset_peak()
        result["rss_before_mib"] = mib(proc_status_kib("self", "VmRSS"))
    t0 = time.perf_counter()
    if OFFLOAD:
        name = await store_blob(client.put_idata, str(src), offload=True)
    else:
        name = await client.put_blob(str(src))
    result["put_s"] = time.perf_counter() - t0
    if memory:
        result["peak_put_mib"] = mib(proc_status_kib("self", "VmHWM"))
        reset_peak()
    t0 = time.perf_counter()
    with open(dst, "wb") as sink:
        if OFFLOAD:
            written = await fetch_blob_to(reader.get_idata, name, sink, offload=True)
        else:
            written = await reader.get_blob_to(name, sink)
    result["get_s"] = time.perf_counter() - t0
    if memory:
        result["peak_get_mib"] = mib(proc_status_kib("self", "VmHWM"))
    result["ok"] = written == size and file_sha256(dst) == sha
    if count_range_read:
        async with NetworkClient.open(client.contacts, Keypair(), replication=client.replication) as fresh:
            result["range_read"] = await middle_byte_read(fresh, name, src, size)
    src.unlink()
    dst.unlink()
    return result


async def middle_byte_read(client: NetworkClient, name: bytes, src: Path, size: int) -> dict[str, Any]:
    """`read_blob(name, size // 2, 1)`, counting every IData the client fetches for it."""
    fetched: list[bytes] = []
    real_get = client.get_idata

    async def counting_get(chunk: bytes) -> bytes:
        fetched.append(bytes(chunk))
        return await real_get(chunk)

    client.get_idata = counting_get  # type: ignore[method-assign, assignment]
    try:
        t0 = time.perf_counter()
        got = await client.read_blob(name, size // 2, 1)
        seconds = time.perf_counter() - t0
    finally:
        del client.get_idata  # back to the class's method
    with open(src, "rb") as f:
        f.seek(size // 2)
        expected = f.read(1)
    data_map_fetches = sum(1 for n in fetched if n == bytes(name))
    return {"fetches": len(fetched), "data_map": data_map_fetches,
            "content_chunks": len(fetched) - data_map_fetches, "correct": got == expected,
            "ms": round(1000 * seconds, 1)}


# =============================================================================== the child


async def child_main(cluster: Path, size: int, workdir: Path) -> dict[str, Any]:
    info = ClusterFile.from_json(cluster.read_text())
    async with NetworkClient.open(info.addresses, Keypair(), replication=info.replication) as client, \
            NetworkClient.open(info.addresses, Keypair(), replication=info.replication) as reader:
        return await round_trip(client, reader, size, workdir, count_range_read=True, memory=True)


def run_child(cluster: Path, size: int, workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(cluster), "--child-size", str(size),
           "--child-dir", str(workdir)] + (["--what-if-offload"] if OFFLOAD else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# =============================================================================== the parent


async def in_process(addresses: list[str], replication: int, size: int, count: int, workdir: Path) -> dict[str, Any]:
    """`count` blobs of `size`, one after the other, through one client."""
    rounds = []
    async with NetworkClient.open(addresses, Keypair(), replication=replication) as client, \
            NetworkClient.open(addresses, Keypair(), replication=replication) as reader:
        for _ in range(count):
            rounds.append(await round_trip(client, reader, size, workdir, count_range_read=False, memory=False))
    put_s = sum(r["put_s"] for r in rounds)
    get_s = sum(r["get_s"] for r in rounds)
    return {"size": size, "count": count, "put_s": put_s, "get_s": get_s,
            "put_ms_p50": 1000 * median([r["put_s"] for r in rounds]),
            "get_ms_p50": 1000 * median([r["get_s"] for r in rounds]),
            "ok": all(r["ok"] for r in rounds)}


def measure_sizes(
    args: argparse.Namespace, lc: LocalCluster, workdir: Path, results: dict[int, list[dict[str, Any]]]
) -> None:
    """Every size once on the running cluster `lc`; prints a line per size."""
    info = lc.load()
    for size in args.sizes:
        if size >= args.child_from:
            r = run_child(lc.file, size, workdir)
            r["count"] = 1
        else:
            r = trio.run(in_process, info.addresses, info.replication, size,
                         args.count or default_count(size), workdir)
        results[size].append(r)
        mb = size * r["count"] / 1e6
        line = (f"  {human_size(size):>8} x{r['count']:<3} put {mb / r['put_s']:7.2f} MB/s "
                f"({r['count'] / r['put_s']:6.1f} blobs/s)  get {mb / r['get_s']:7.2f} MB/s "
                f"({r['count'] / r['get_s']:6.1f} blobs/s)  "
                f"round trip {'ok' if r['ok'] else 'MISMATCH'}")
        if "peak_put_mib" in r:
            line += (f"  RSS before {r['rss_before_mib']:.1f} MiB, peak put {r['peak_put_mib']:.1f}, "
                     f"peak get {r['peak_get_mib']:.1f}")
        if "range_read" in r:
            rr = r["range_read"]
            line += (f"\n           1-byte read_blob at the middle: {rr['fetches']} IData fetches "
                     f"({rr['data_map']} data map + {rr['content_chunks']} content chunk(s)), "
                     f"{rr['ms']} ms, {'correct' if rr['correct'] else 'WRONG BYTE'}")
        print(line, flush=True)


def default_count(size: int) -> int:
    return 50 if size < 64 * KIB else 5 if size < 8 * MIB else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description="put_blob / get_blob_to MB/s on a real cluster, the client's peak RSS for big "
                    "blobs (in a child process) and the IData fetches of a 1-byte range read.")
    parser.add_argument("--nodes", type=int, default=8, help="cluster nodes (default 8)")
    parser.add_argument("--replication", type=int, default=5, help="R (default 5)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[KIB, MIB, 50 * MIB],
                        help="payload sizes in bytes (default 1024 1048576 52428800)")
    parser.add_argument("--count", type=int, default=None,
                        help="blobs per in-process cell (default: 50 below 64 KiB, else 5)")
    parser.add_argument("--child-from", type=int, default=32 * MIB,
                        help="sizes from this many bytes up run in a child process that also "
                             "measures peak RSS (default 33554432)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; figures are medians (default 3)")
    parser.add_argument("--data-dir", default=None, help="cluster dir (default: a fresh temp dir)")
    parser.add_argument("--what-if-offload", action="store_true",
                        help="self-encrypt in worker threads (selfenc offload=True) instead of through "
                             "put_blob / get_blob_to: a diagnostic of where the time goes")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global OFFLOAD
    OFFLOAD = args.what_if_offload

    if args.child is not None:  # we are the child: one big round trip, one JSON line out
        print(json.dumps(trio.run(child_main, args.child, args.child_size, args.child_dir)))
        return

    header("client_bench: self-encrypted blobs through a real cluster", {
        "cluster": f"{args.nodes} node processes, R={args.replication}, on 127.0.0.1",
        "client": "put_blob(path) through one NetworkClient, get_blob_to(file) through another "
                  "(so no close group is cached from the put); random (incompressible) content; self-encryption inline "
                  "in the client's event loop (the API's default)",
        "sizes": ", ".join(human_size(s) for s in args.sizes),
        "per cell": ", ".join(f"{human_size(s)}: " + (f"{args.count or default_count(s)} blobs in this process"
                                                      if s < args.child_from else "1 blob in a child process")
                              for s in args.sizes),
        "repeats": args.repeat,
        "what-if": "self-encryption offloaded to worker threads (NOT the client API's default)"
                   if args.what_if_offload else "off",
        "targets": f"50 MiB put >= {TARGET_PUT:g} MB/s, get >= {TARGET_GET:g} MB/s, peak RSS < {TARGET_RSS_MB:g} MB",
    })
    results: dict[int, list[dict[str, Any]]] = {s: [] for s in args.sizes}
    with tempfile.TemporaryDirectory(prefix="client-bench-") as tmp:
        for rep in range(1, args.repeat + 1):
            # A fresh cluster each repeat: stored data costs the nodes anti-entropy work
            # later, so a repeat on a fuller cluster would not measure the same thing.
            with running_cluster(args.nodes, args.replication, args.data_dir) as (lc, startup):
                print(f"\n## repeat {rep}/{args.repeat}: {args.nodes} nodes up in {startup:.1f}s "
                      f"(load {load_average()})", flush=True)
                measure_sizes(args, lc, Path(tmp), results)

    print(f"\n## summary: median of {args.repeat} repeat(s); load average now {load_average()}")
    print(f"  {'size':>8} {'put MB/s':>9} {'blobs/s':>8} {'get MB/s':>9} {'blobs/s':>8} "
          f"{'peak RSS MiB (put/get)':>23}  targets")
    for size, rs in results.items():
        put = median([size * r["count"] / 1e6 / r["put_s"] for r in rs])
        get = median([size * r["count"] / 1e6 / r["get_s"] for r in rs])
        put_n = median([r["count"] / r["put_s"] for r in rs])
        get_n = median([r["count"] / r["get_s"] for r in rs])
        line = f"  {human_size(size):>8} {put:9.2f} {put_n:8.1f} {get:9.2f} {get_n:8.1f} "
        if rs and "peak_put_mib" in rs[0]:
            pp, pg = median([r["peak_put_mib"] for r in rs]), median([r["peak_get_mib"] for r in rs])
            peak_mb = max(pp, pg) * MIB / 1e6
            line += f"{pp:11.1f} / {pg:<9.1f}  "
            line += (f"put {'met' if put >= TARGET_PUT else 'MISSED'}, get {'met' if get >= TARGET_GET else 'MISSED'}, "
                     f"RSS {peak_mb:.0f} MB {'met' if peak_mb < TARGET_RSS_MB else 'MISSED'}")
        else:
            line += f"{'':>23}"
        if not all(r["ok"] for r in rs):
            line += "  (a round trip did not match!)"
        print(line)


if __name__ == "__main__":
    main()
