"""CPU per message of the transport alone: one coordinator and four peers over loopback TCP.

    .venv/bin/python bench/transport_bench.py [--rounds 3000] [--size 1300] [--profile]

Five `Endpoint`s in this one process (so the CPU figure covers both ends of every message:
encoding, sealing, the socket calls, opening, decoding, and trio's task switches). Each
round the coordinator sends one message of `--size` bytes to each of the four peers and
waits for their four 150-byte answers, the shape of one MD insert's accept round. Prints
the process CPU per message and the wall time per round. No node core, no store: what it
measures is the part of a node's cost per message that node/endpoint.py, connections.py,
framing.py and securelink.py decide. It runs in any tree that has `node.transport.Endpoint`
(so the same file measures older commits: run it from that tree's directory).

A benchmark, not a test: it passes or fails nothing and is kept out of the pytest run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import trio

sys.path.insert(0, os.getcwd())  # the tree it is run from, not necessarily this file's

from node.keys import Keypair  # noqa: E402
from node.transport import Endpoint  # noqa: E402
from node.wire import new_message  # noqa: E402

PEERS = 4
ANSWER = b"x" * 150


async def measure(rounds: int, size: int, profile: bool) -> None:
    async with trio.open_nursery() as nursery:
        coordinator = Endpoint(Keypair(), role="node")
        peers = [Endpoint(Keypair(), role="node") for _ in range(PEERS)]
        for endpoint in (coordinator, *peers):
            await nursery.start(endpoint.run)

        async def answer(peer: Endpoint) -> None:
            async for incoming in peer.inbox:
                peer.send_nowait(incoming.peer.name, None, new_message("pong", val=ANSWER))

        for peer in peers:
            nursery.start_soon(answer, peer)
        payload = os.urandom(size)

        async def run(n: int) -> None:
            for _ in range(n):
                for peer in peers:
                    coordinator.send_nowait(peer.name, peer.address, new_message("ping", val=payload))
                for _ in peers:
                    await coordinator.inbox.receive()

        await run(50)  # connections, handshakes, dial-backs
        profiler = cProfile.Profile() if profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        await run(rounds)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        messages = rounds * 2 * PEERS
        print(f"{rounds} rounds of {PEERS} x {size} B out, {PEERS} x {len(ANSWER)} B back: "
              f"{1e6 * cpu / messages:.1f} us CPU per message, {1e6 * wall / rounds:.0f} us wall "
              f"per round (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per message of the transport alone (loopback TCP).")
    parser.add_argument("--rounds", type=int, default=3000, help="rounds measured (default 3000)")
    parser.add_argument("--size", type=int, default=1300, help="bytes of each coordinator message (default 1300)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the measured rounds")
    args = parser.parse_args()
    trio.run(measure, args.rounds, args.size, args.profile)


if __name__ == "__main__":
    main()
