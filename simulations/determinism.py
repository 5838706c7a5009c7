"""The one place that touches trio's private scheduler-determinism hook.

trio shuffles each batch of runnable tasks on purpose so that code cannot lean on task
order. It draws that shuffle from the module-level `trio._core._run._r`, and when
`_ALLOW_DETERMINISTIC_SCHEDULING` is set it first sorts the batch by task creation order,
so the order depends only on `_r`'s state (this is how Hypothesis gets reproducible runs).
Seeding `_r` therefore makes trio's scheduling part of a simulation's seed.

Both names are private API (trio issues #32 and #2022): if a trio release moves them,
`seeded_scheduling` fails loudly here rather than letting runs silently lose replayability,
and this module is the only thing to fix.

    with seeded_scheduling(seed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
import trio.testing

T = TypeVar("T")


def _hook() -> Any:
    run_module = trio._core._run  # private: see the module docstring
    if not hasattr(run_module, "_ALLOW_DETERMINISTIC_SCHEDULING") or not isinstance(
        getattr(run_module, "_r", None), random.Random
    ):
        raise RuntimeError(
            f"trio {trio.__version__} no longer has the scheduler hook the simulator relies on "
            "(trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING and _r); update simulations/determinism.py"
        )
    return run_module


@contextmanager
def seeded_scheduling(seed: int | str) -> Iterator[None]:
    """Within the block, trio's task order in every `trio.run` is a function of `seed` (and
    so are the global `random` generator and `os.urandom`).

    The previous flag and generator state are restored afterwards, so tests that rely on
    trio's ordinary randomised order are not affected by a simulation run beside them.
    """
    run_module = _hook()
    old_flag = run_module._ALLOW_DETERMINISTIC_SCHEDULING
    old_state = run_module._r.getstate()
    old_global = random.getstate()
    old_urandom = os.urandom
    run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    run_module._r.seed(f"trio-scheduler:{seed}")
    # Code that draws from the global generator (a retry's random back-off, say) would make
    # the run differ from its replay; inside the simulator that generator is seeded too.
    random.seed(f"global:{seed}")
    # So is the system's entropy: the event store names its log intents with os.urandom and
    # its events with uuid4 (which reads os.urandom), and those bytes decide races (which
    # copy of a value wins), so an event-store run never replayed without this.
    entropy = random.Random(f"entropy:{seed}")
    os.urandom = entropy.randbytes
    try:
        yield
    finally:
        os.urandom = old_urandom
        run_module._ALLOW_DETERMINISTIC_SCHEDULING = old_flag
        run_module._r.setstate(old_state)
        random.setstate(old_global)


def run_seeded(fn: Callable[..., Awaitable[T]], *args: Any, seed: int | str) -> T:
    """`trio.run(fn, *args)` on a virtual clock that jumps straight to the next deadline,
    with trio's scheduling order drawn from `seed`."""
    with seeded_scheduling(seed):
        return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def sub_rng(seed: int | str, purpose: str) -> random.Random:
    """An independent generator for one purpose of one run (node keys, links, faults...).

    Separate streams keep a change in how often one part draws (say, a new link fault)
    from reshuffling every other part of the run. String seeding is hashed with SHA-512 by
    `random`, so the stream is the same in every process whatever PYTHONHASHSEED is.
    """
    return random.Random(f"{seed}:{purpose}")
