"""Work a button starts that outlasts the request: restarting or adding a node, rebuilding
a projection. Each runs as a task in the server's nursery; the page lists the recent ones
with how they went, so the effect is visible without holding the browser's request open.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import trio

from .render import describe

log = logging.getLogger(__name__)

KEEP = 20  # how many past operations a page lists


@dataclass
class Operation:
    number: int
    what: str
    started: float = field(default_factory=time.time)
    finished: float | None = None
    outcome: str = "running"  # running, done, failed
    message: str = ""

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started


class Operations:
    """The recent operations of one kind, newest first."""

    def __init__(self, keep: int = KEEP) -> None:
        self._recent: deque[Operation] = deque(maxlen=keep)
        self._count = 0

    def __iter__(self) -> Iterator[Operation]:
        return iter(list(self._recent))

    def __len__(self) -> int:
        return len(self._recent)

    def start(self, nursery: trio.Nursery, what: str, run: Callable[[], Awaitable[str]]) -> Operation:
        """Run `run` in the background; its result is the message shown when it is done.
        The same operation still running is not started twice (a double click)."""
        for op in self._recent:
            if op.outcome == "running" and op.what == what:
                return op
        self._count += 1
        op = Operation(self._count, what)
        self._recent.appendleft(op)

        async def track() -> None:
            try:
                op.message = await run()
                op.outcome = "done"
            except Exception as exc:  # shown on the page; describe() logs the unexpected
                op.outcome, op.message = "failed", describe(exc)[1]
            finally:
                op.finished = time.time()

        nursery.start_soon(track)
        return op
