"""Benchmark of client.selfenc: encrypt/decrypt throughput, and the streaming path's memory.

Run: .venv/bin/python bench/selfenc_bench.py [--size-mib 50] [--stream-mib 200]

Prints MB/s of `encrypt_bytes` and `decrypt_bytes` on random and all-zero buffers, then,
in a fresh child process so the buffers above do not count, the peak RSS of storing a file
with `store_blob` and reading it back with `fetch_blob_to` through an on-disk chunk store.
A script, not a test: it is kept out of the pytest run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from client.blobs import fetch_blob_to, store_blob
from client.selfenc import decrypt_bytes, encrypt_bytes
from node.xorname import XorName

MiB = 1024 * 1024


def peak_rss_mib() -> float:
    """This process's peak resident set, in MiB."""
    try:
        # Linux: VmHWM starts afresh at exec, whereas ru_maxrss keeps the forking parent's peak.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MiB if sys.platform == "darwin" else 1024)  # macOS reports bytes


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def throughput(label: str, data: bytes) -> None:
    mb = len(data) / 1e6
    enc_s, (dm, chunks) = timed(lambda: encrypt_bytes(data))  # type: ignore[misc]
    store = dict(chunks)
    dec_s, plain = timed(lambda: decrypt_bytes(dm, store.__getitem__))
    assert plain == data
    stored = sum(len(v) for v in store.values())
    print(
        f"{label:>7}: encrypt {mb / enc_s:7.1f} MB/s   decrypt {mb / dec_s:7.1f} MB/s   "
        f"({len(chunks)} chunks, {len(store)} distinct, {stored / 1e6:.1f} MB stored)"
    )


class DiskStore:
    """Chunks as files named by their hex name: memory use is the client's alone."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, value: bytes) -> XorName:
        name = XorName.hash_of(value)
        (self.root / name.hex()).write_bytes(value)
        return name

    async def get(self, name: XorName) -> bytes:
        return (self.root / name.hex()).read_bytes()


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))


def stream_child(size: int) -> None:
    """Runs in its own process: store and fetch a `size`-byte file, report peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source, sink = root / "source.bin", root / "sink.bin"
        (root / "chunks").mkdir()
        write_random_file(source, size)
        store = DiskStore(root / "chunks")
        before = peak_rss_mib()

        async def run() -> tuple[float, float]:
            t0 = time.perf_counter()
            name = await store_blob(store.put, source, offload=True)
            t1 = time.perf_counter()
            with open(sink, "wb") as out:
                await fetch_blob_to(store.get, name, out, offload=True)
            return t1 - t0, time.perf_counter() - t1

        put_s, get_s = trio.run(run)
        after = peak_rss_mib()
        same = source.read_bytes() == sink.read_bytes() if size <= 512 * MiB else "unchecked"
        mb = size / 1e6
        print(
            f"streaming {size // MiB} MiB file: store_blob {mb / put_s:.1f} MB/s, "
            f"fetch_blob_to {mb / get_s:.1f} MB/s, round trip ok: {same}"
        )
        print(
            f"  peak RSS {after:.1f} MiB (before: {before:.1f} MiB, "
            f"growth {after - before:.1f} MiB for a {size // MiB} MiB file)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--stream-mib", type=int, default=200)
    parser.add_argument("--stream-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child is not None:
        stream_child(args.stream_child)
        return
    size = args.size_mib * MiB
    print(f"self-encryption of {args.size_mib} MiB (MB = 10^6 bytes)")
    throughput("random", os.urandom(size))
    throughput("zeros", bytes(size))
    subprocess.run(
        [sys.executable, __file__, "--stream-child", str(args.stream_mib * MiB)], check=True
    )


if __name__ == "__main__":
    main()
