"""How long the history checkers take on generated histories: prints figures, passes or fails nothing.

    python bench/checker_bench.py [--keys K] [--info-rate R] [--seed S] [--model M]

For 1k, 5k and 20k ops at concurrency 5, 10 and 20 it generates a linearizable history with
`random_history` (K keys, about R of the ops indeterminate) and times `check_linearizable`,
then `check_all` with the true final states (linearizability, conflicting acks, monotonic
reads, lost writes). A second table does the same with every op on one key - the worst case
for the search, since per-key partitioning cannot split it. Generation time is not counted.
"""

from __future__ import annotations

import argparse
import random
import time

from simulations.checker import check_all, check_linearizable, random_history

SIZES = (1_000, 5_000, 20_000)
CONCURRENCY = (5, 10, 20)


def _row(n: int, keys: int, concurrency: int, args: argparse.Namespace) -> str:
    rng = random.Random(f"{args.seed}-{n}-{keys}-{concurrency}")
    history, final = random_history(
        rng, n, keys, concurrency, info_rate=args.info_rate, model=args.model
    )
    indeterminate = sum(op.outcome == "info" for op in history.ops())
    start = time.perf_counter()
    lin = check_linearizable(history, args.model)
    lin_seconds = time.perf_counter() - start
    start = time.perf_counter()
    report = check_all(history, final_reads=final, model=args.model)
    all_seconds = time.perf_counter() - start
    return (
        f"{n:>7} {keys:>5} {concurrency:>5} {indeterminate:>6} {lin.stats['steps']:>10} "
        f"{lin_seconds:>9.3f} {all_seconds:>9.3f}  {report.status}"
    )


def _table(keys: int, args: argparse.Namespace) -> None:
    print(f"\n{args.model}, {keys} key(s), info rate {args.info_rate}, seed {args.seed}")
    print(f"{'ops':>7} {'keys':>5} {'conc':>5} {'info':>6} {'steps':>10} {'lin s':>9} {'all s':>9}")
    for n in SIZES:
        for concurrency in CONCURRENCY:
            print(_row(n, keys, concurrency, args), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--info-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default="md_entry", choices=("md_entry", "register"))
    args = parser.parse_args()
    _table(args.keys, args)
    _table(1, args)


if __name__ == "__main__":
    main()
