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

_FLUSH = 4096  # lines hashed at once


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
        # Lines wait here and are hashed a few thousand at a time: BLAKE2b of the joined text
        # is the digest of the lines one by one, at a fraction of the calls.
        self._pending: list[str] = []
        self.delivered = 0
        self.kinds: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.events: list[TraceEvent] = []
        self._lines: list[str] | None = [] if keep_messages else None

    def _line(self, line: str) -> None:
        pending = self._pending
        pending.append(line)
        if len(pending) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._hash.update(("\n".join(self._pending) + "\n").encode())
            if self._lines is not None:
                self._lines.extend(self._pending)
            self._pending = []

    def message(self, time: float, kind: str, src: str, dst: str) -> None:
        self.delivered += 1
        self.kinds[kind] += 1
        pending = self._pending
        pending.append(f"{time!r} m {kind} {src} {dst}")
        if len(pending) >= _FLUSH:
            self._flush()

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
        self._flush()
        return self._lines

    def digest(self) -> str:
        self._flush()
        return self._hash.hexdigest()
