"""Benchmarks of the deterministic simulator (never part of the test run's pass/fail).

    python bench/sim_bench.py messages     # CPU per simulated message, idle network, both drivers
    python bench/sim_bench.py mixed        # seeds per second of `mixed` (16 nodes, 60 s), one core
    python bench/sim_bench.py routing      # 10,000 nodes routing-only, 10,000 lookups

Figures are CPU seconds (`time.process_time`) as well as wall seconds: on a shared machine
the wall clock says more about the neighbours than about the simulator.
"""

from __future__ import annotations

import sys
import time

import trio

from simulations.determinism import run_seeded
from simulations.routing_sim import run_routing
from simulations.run import run_sim
from simulations.scenarios import get_scenario
from simulations.simulator import Simulator


def messages(nodes: int = 16, seconds: float = 60.0) -> None:
    for driver in ("host", "stepped"):
        async def main(driver: str = driver) -> None:
            async with Simulator.open(1, driver=driver) as sim:
                await sim.add_nodes(nodes)
                cpu, sent = time.process_time(), sim.trace.delivered
                await trio.sleep(seconds)
                cpu, sent = time.process_time() - cpu, sim.trace.delivered - sent
                print(f"{driver:>8}: {nodes} idle nodes, {seconds:g} s: {sent} messages, {cpu:.2f} s CPU, "
                      f"{1e6 * cpu / sent:.1f} us/message; kinds {sim.trace.kinds.most_common(3)}")

        run_seeded(main, seed=1)


def mixed(seeds: int = 5) -> None:
    for driver in ("host", "stepped"):
        wall, cpu = time.perf_counter(), time.process_time()
        for seed in range(1, seeds + 1):
            run_sim(get_scenario("mixed"), seed, driver=driver, keep_histories=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{driver:>8}: mixed x{seeds}: {cpu / seeds:.2f} s CPU and {wall / seeds:.2f} s wall per seed "
              f"({seeds / cpu:.2f} seeds per CPU-second)")


def routing(nodes: int = 10_000, lookups: int = 10_000) -> None:
    figures, _ = run_routing(nodes, lookups)
    print(figures.as_dict())


if __name__ == "__main__":
    {"messages": messages, "mixed": mixed, "routing": routing}[sys.argv[1] if len(sys.argv) > 1 else "messages"]()
