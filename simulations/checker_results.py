"""What every history checker returns: `Anomaly`, `CheckResult` and a run's `Report`.

Split out of `simulations.checker` so the register checkers, the event-store checkers and
the integrity checks share these types without importing the linearizability search.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .history import Op, short

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"


@dataclass
class Anomaly:
    """One thing a checker found wrong, with the ops that show it."""

    kind: str
    key: Hashable
    message: str
    ops: list[Op] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"[{self.kind}] key {short(self.key)}: {self.message}"]
        lines += [f"    {op.describe()}" for op in self.ops]
        return "\n".join(lines)


@dataclass
class CheckResult:
    """A checker's verdict: ``valid`` only when it looked at everything and found nothing."""

    name: str
    status: str = VALID
    anomalies: list[Anomaly] = field(default_factory=list)
    reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.status == VALID

    @property
    def unknown(self) -> bool:
        return self.status == UNKNOWN

    def headline(self) -> list[str]:
        facts = ", ".join(f"{k}={v}" for k, v in self.stats.items())
        lines = [f"{self.name}: {self.status.upper()}" + (f" ({facts})" if facts else "")]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        return lines

    def summary(self, limit: int = 5) -> str:
        lines = self.headline()
        for anomaly in self.anomalies[:limit]:
            lines.append("  " + str(anomaly).replace("\n", "\n  "))
        if len(self.anomalies) > limit:
            lines.append(f"  ... and {len(self.anomalies) - limit} more")
        return "\n".join(lines)


R = TypeVar("R", bound=CheckResult)


def finish(result: R, incomplete: str | None = None) -> R:
    if result.anomalies:
        result.status = INVALID
    elif incomplete:
        result.status, result.reason = UNKNOWN, incomplete
    return result


@dataclass
class Report:
    """The verdicts of every check that ran, by name."""

    checks: dict[str, CheckResult]

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks.values()}
        return INVALID if INVALID in statuses else UNKNOWN if UNKNOWN in statuses else VALID

    @property
    def valid(self) -> bool:
        return self.status == VALID

    def summary(self) -> str:
        lines = [f"history check: {self.status.upper()}"]
        lines += [c.summary() for c in self.checks.values()]
        return "\n".join(lines)
