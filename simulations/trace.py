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

    def __init__(self, *, keep_messages: bool = False) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.delivered = 0
        self.kinds: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.events: list[TraceEvent] = []
        self.lines: list[str] | None = [] if keep_messages else None

    def _line(self, line: str) -> None:
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self.lines is not None:
            self.lines.append(line)

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

    def digest(self) -> str:
        return self._hash.hexdigest()
