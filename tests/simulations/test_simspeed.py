"""The simulator's short cuts keep its promises: the network loop that moves the virtual clock
itself (instead of sleeping) never passes another task's deadline, and the trace digest is
the same whether its lines are hashed one by one or in bulk."""

from __future__ import annotations

import hashlib

import pytest
import trio

from simulations import network
from simulations.determinism import run_seeded
from simulations.simulator import Simulator
from simulations.trace import Trace


def test_the_network_jumps_the_clock_but_never_past_another_task() -> None:
    woke: list[tuple[float, float]] = []
    jumps = []

    async def main() -> None:
        async with Simulator.open(4, driver="stepped") as sim:
            await sim.add_nodes(6, settle=0.0)
            target = trio.current_time()
            for _ in range(40):  # odd steps, so deadlines fall between the network's ticks
                target += 0.0371
                await trio.sleep_until(target)
                woke.append((target, trio.current_time()))
            jumps.append(sim.network.jumps)
            assert all(n.core is not None and n.core.ready for n in sim.nodes)

    run_seeded(main, seed=4)
    assert jumps[0] > 0  # the short cut was taken ...
    assert all(now == target for target, now in woke)  # ... and every sleeper woke on time


def test_bulk_hashing_gives_the_line_by_line_digest() -> None:
    trace = Trace(keep_messages=True)
    expected = hashlib.blake2b(digest_size=16)
    for i in range(10_000):
        if i % 7 == 0:
            trace.drop(i / 1000, "ping", "n1", "n2", "loss")
        else:
            trace.message(i / 1000, "ping", "n1", f"n{i % 5}")
    trace.event(11.0, "fault", "kill", node="n3")
    lines = trace.lines
    assert lines is not None and len(lines) == 10_001
    for line in lines:
        expected.update(line.encode() + b"\n")
    assert trace.digest() == expected.hexdigest()


def _short_run_digest(seed: int) -> tuple[str, int]:
    out: list[tuple[str, int]] = []

    async def main() -> None:
        async with Simulator.open(seed, driver="stepped") as sim:
            await sim.add_nodes(6, settle=3.0)
            async with sim.client() as client:  # a task of its own beside the network loop
                names = [await client.put_idata(b"chunk %d" % i) for i in range(3)]
                sim.crash(sim.nodes[2])
                await trio.sleep(2.0)
                await sim.restart(sim.nodes[2])
                assert [await client.get_idata(name) for name in names] == [b"chunk %d" % i for i in range(3)]
            await trio.sleep(2.0)
            out.append((sim.trace.digest(), sim.network.jumps))

    run_seeded(main, seed=seed)
    return out[0]


def test_reading_the_scheduler_directly_changes_no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SimNetwork._jump` peeks at trio's run queue and deadlines itself; with that peek gone
    (as if a trio release moved them) it asks the public statistics, and the run is the same."""
    peeked = _short_run_digest(5)
    monkeypatch.setattr(network, "_scheduler", lambda clock: None)
    public = _short_run_digest(5)
    assert peeked == public
    assert peeked[1] > 0  # the clock was jumped, so both ways were really asked
