"""A run's trace: what happened, in order, condensed into one hash.

Every delivered or dropped message (kind, source, destination, virtual time), every fault
and every client operation's outcome is folded into a BLAKE2b digest as it happens. Two runs
of one seed must end with the same digest; if they do not, something outside the seed
(wall-clock time, an unseeded generator, set order under hash randomisation) leaked in.

Messages are many (millions in a long run), so by default only the digest and counters are
kept for them; faults and operations are few and are kept whole for reports. Pass
``keep_messages=True`` to keep every line too (for diffing two runs that disagree).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """A fault or an operation outcome, for timelines and reports."""

    time: float
    kind: str  # "fault", "heal", "op", "note"
    what: str
    details: dict[str, Any] = field(default_factory=dict)


class Trace:
    """The rolling digest of a run, plus its fault and operation events."""

    # Lines wait in `pending` and are hashed a few thousand at a time: BLAKE2b of the joined
    # text is the digest of the lines one by one, at a fraction of the calls. The network's
    # delivery loop appends its message lines to `pending` itself (the body of `message`)
    # and calls `flush` once the list holds `FLUSH`, so `pending` is only ever emptied in place.
    FLUSH = 4096

    def __init__(self, *, keep_messages: bool = False) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.pending: list[str] = []
        self.delivered = 0
        self.kinds: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.events: list[TraceEvent] = []
        self._lines: list[str] | None = [] if keep_messages else None

    def _line(self, line: str) -> None:
        pending = self.pending
        pending.append(line)
        if len(pending) >= self.FLUSH:
            self.flush()

    def flush(self) -> None:
        pending = self.pending
        if pending:
            self._hash.update(("\n".join(pending) + "\n").encode())
            if self._lines is not None:
                self._lines.extend(pending)
            pending.clear()

    def message(self, time: float, kind: str, src: str, dst: str) -> None:
        self.delivered += 1
        self.kinds[kind] += 1
        self._line(f"{time!r} m {kind} {src} {dst}")

    def drop(self, time: float, kind: str, src: str, dst: str, why: str) -> None:
        self.drops[why] += 1
        self._line(f"{time!r} x {kind} {src} {dst} {why}")

    def event(self, time: float, kind: str, what: str, **details: Any) -> None:
        self.events.append(TraceEvent(time, kind, what, details))
        shown = " ".join(f"{k}={details[k]}" for k in sorted(details))
        self._line(f"{time!r} {kind} {what} {shown}")

    @property
    def lines(self) -> list[str] | None:
        """Every line so far, when kept (`keep_messages`)."""
        self.flush()
        return self._lines

    def digest(self) -> str:
        self.flush()
        return self._hash.hexdigest()
