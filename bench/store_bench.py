"""How fast the vault store writes and reads small records: prints figures, passes or fails nothing.

    python bench/store_bench.py [--n N] [--dir DIR]

For each SQLite durability mode ("process": synchronous=NORMAL, "power": synchronous=FULL)
and each group-commit size (a sync after every write, and after every 32), it writes N
records of 100 bytes under 32-byte keys into a fresh store, then reads them all back in a
shuffled order. MemoryStore is measured the same way for reference. Put DIR on the disk a
node would use: fsync costs are the disk's, and a tmpfs hides them.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from node.store import STORE_FILENAME, Durability, MemoryStore, SqliteStore, Store

VALUE_LEN = 100
KEY_LEN = 32
SYNC_EVERY = (1, 32)


def _keys(n: int) -> list[bytes]:
    rng = random.Random(7)
    return [rng.randbytes(KEY_LEN) for _ in range(n)]


def _write(store: Store, keys: list[bytes], sync_every: int) -> float:
    """Writes per second, a sync after every `sync_every` writes and at the end."""
    value = bytes(VALUE_LEN)
    start = time.perf_counter()
    for i, key in enumerate(keys, 1):
        store.put_record("md", key, value)
        if i % sync_every == 0:
            store.sync()
    store.sync()
    return len(keys) / (time.perf_counter() - start)


def _read(store: Store, keys: list[bytes]) -> float:
    order = list(keys)
    random.Random(11).shuffle(order)
    start = time.perf_counter()
    for key in order:
        if store.get_record("md", key) is None:
            raise AssertionError("a written record is missing")
    return len(order) / (time.perf_counter() - start)


def _measure(name: str, open_store: Callable[[], Store], keys: list[bytes]) -> None:
    for every in SYNC_EVERY:
        store = open_store()
        try:
            writes = _write(store, keys, every)
            reads = _read(store, keys)
        finally:
            store.close()
        print(f"{name:<16} {every:>10} {writes:>12,.0f} {reads:>12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="records per run (default 5000)")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (a temp dir)")
    args = parser.parse_args()
    keys = _keys(args.n)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        runs = iter(range(1_000_000))

        def sqlite_opener(durability: Durability) -> Callable[[], Store]:
            def open_store() -> Store:
                path = Path(tmp) / f"run{next(runs)}" / STORE_FILENAME
                return SqliteStore(path, durability)

            return open_store

        print(f"{args.n} records of {VALUE_LEN} bytes, stores in {tmp}")
        print(f"{'store':<16} {'sync every':>10} {'writes/s':>12} {'reads/s':>12}")
        _measure("sqlite process", sqlite_opener("process"), keys)
        _measure("sqlite power", sqlite_opener("power"), keys)
        _measure("memory", MemoryStore, keys)


if __name__ == "__main__":
    main()
