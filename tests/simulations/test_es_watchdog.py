"""An event-store process that never finishes once the run stops is cancelled and named
(`stuck`), so a store call that hangs fails the run instead of keeping it going forever
(as `chaos run eventstore --seed 2` once did)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import trio

from simulations.es_workload import STOP_GRACE, EventStoreLoad, subscriber_errors
from simulations.history import History


def _load() -> EventStoreLoad:
    load = object.__new__(EventStoreLoad)  # only what the watchdog uses: the run's state
    load.workload = SimpleNamespace(stopping=False, streams=History(), counts=Counter())  # type: ignore[assignment]
    load.errors, load.stuck = [], []
    return load


async def _process(load: EventStoreLoad, append_takes: float) -> float:
    """A process whose one append takes `append_takes` seconds; the run stops at t=5.
    Returns when the process ended."""
    finished = trio.Event()
    history = load.workload.streams

    async def append() -> None:
        op = history.invoke(1, "order@1", "append", {"expected": "any", "events": ("e1",)}, trio.current_time())
        await trio.sleep(append_takes)
        history.ok(op, {"version": 0}, trio.current_time())

    async def stop_the_run() -> None:
        await trio.sleep(5.0)
        load.workload.stopping = True

    start = trio.current_time()
    async with trio.open_nursery() as outer:
        outer.start_soon(load._watchdog, 0, finished, outer.cancel_scope)
        outer.start_soon(stop_the_run)
        try:
            await append()
        finally:
            finished.set()
    return trio.current_time() - start


async def test_a_process_still_in_a_store_call_after_the_grace_is_cancelled_and_named(autojump_clock):
    load = _load()
    ended = await _process(load, append_takes=10_000.0)
    assert 5.0 + STOP_GRACE <= ended <= 6.0 + STOP_GRACE
    assert len(load.stuck) == 1 and "#0 append 'order@1'" in load.stuck[0]
    check = subscriber_errors(load)
    assert check.status == "invalid" and [a.kind for a in check.anomalies] == ["stuck"]


async def test_a_process_that_finishes_its_operation_in_time_is_left_alone(autojump_clock):
    load = _load()
    ended = await _process(load, append_takes=60.0)
    assert ended == 60.0
    assert not load.stuck
