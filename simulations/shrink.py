"""Shrinking a failing run: the fewest faults and the shortest attack that still fail.

    safenet chaos shrink mixed --seed 48
    safenet chaos shrink kill-restart --seed 3 --nodes 8 --duration 12 --break ack_before_quorum

A failing seed of `mixed` injects dozens of faults; usually a few of them matter. The nemesis
numbers its faults by its schedule and draws each fault's own choices from a generator of
its own (`simulations.faults.Nemesis`), so a run can leave some faults out and keep every
other fault exactly as it was: same time, same kind, same duration, same victim draw (the
victim itself can differ when the network's state does). Shrinking then is delta debugging
(Zeller's ddmin) over the fault numbers, after two cheaper cuts:

1. churn off (if the scenario has churn), kept if the run still fails;
2. the attack cut to half, a quarter, ... of its duration while the run still fails (the
   schedule is the same up to the cut, so this only drops the faults after it);
3. ddmin over the faults that took effect: drop a chunk, keep the drop if the run still
   fails, halve the chunks when no drop does, down to single faults; then step 2 once more.

"Still fails" means that at least one of the checks that failed in the original run fails
again (another failure would be another bug). Each attempt is one full run, so `max_runs`
bounds the work. The result is re-run once more and its replay command printed: that
command reproduces the shrunk run's trace digest exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .run import RunResult, format_numbers, run_sim
from .scenarios import Scenario


class ShrinkError(Exception):
    """Nothing to shrink (the seed passes)."""


@dataclass
class Attempt:
    what: str
    duration: float
    churn: bool
    faults: int
    failed: bool
    failures: list[str]


@dataclass
class Shrunk:
    original: RunResult
    final: RunResult
    runs: int
    attempts: list[Attempt] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.final.scenario, "seed": self.final.seed, "runs": self.runs,
            "original": {"faults": len(self.original.injected), "duration": self.original.duration,
                         "churn": bool(self.original.churn), "failures": self.original.failures(),
                         "digest": self.original.digest, "replay": self.original.replay_command()},
            "shrunk": {"faults": len(self.final.injected), "duration": self.final.duration,
                       "churn": bool(self.final.churn), "failures": self.final.failures(),
                       "digest": self.final.digest, "replay": self.final.replay_command(),
                       "injected": [{"i": i, "time": round(t, 3), "fault": name}
                                    for i, t, name in self.final.injected]},
            "attempts": [a.__dict__ for a in self.attempts],
        }


def failing_checks(result: RunResult) -> set[str]:
    return {name for name, check in result.report.checks.items() if not check.valid}


def shrink(scenario: Scenario, seed: int, *, breaks: tuple[str, ...] = (), driver: str = "stepped",
           max_runs: int = 60, min_duration: float = 1.0, max_steps: int = 200_000,
           log: Callable[[str], None] = lambda text: None) -> Shrunk:
    """Shrink `scenario`'s run of `seed`; see the module docstring."""
    runs = 0
    attempts: list[Attempt] = []
    tried: set[tuple[float, bool, frozenset[int] | None]] = set()

    def attempt(what: str, candidate: Scenario, keep: frozenset[int] | None) -> RunResult:
        nonlocal runs
        runs += 1
        result = run_sim(candidate, seed, breaks=breaks, driver=driver, keep_faults=keep, keep_histories=False,
                         max_steps=max_steps)
        failed = bool(failing_checks(result) & target) if target else not result.valid
        attempts.append(Attempt(what, candidate.duration, candidate.churn is not None, len(result.injected),
                                failed, result.failures()))
        log(f"  run {runs:>3}: {what:<34} {len(result.injected):>3} faults, {candidate.duration:g} s: "
            + ("still fails" if failed else "passes"))
        return result

    target: set[str] = set()
    original = attempt("the original run", scenario, None)
    if original.valid:
        raise ShrinkError(f"{scenario.name} seed {seed} passes: there is nothing to shrink")
    target = failing_checks(original)
    log(f"{scenario.name} seed {seed} fails {', '.join(sorted(target))} with {len(original.injected)} faults; "
        f"shrinking (at most {max_runs} runs)")

    best, best_keep = scenario, frozenset(i for i, _, _ in original.injected)
    exact: frozenset[int] | None = None  # the keep set of the last run that failed, as it was given

    def still_fails(what: str, candidate: Scenario, keep: frozenset[int]) -> RunResult | None:
        key = (candidate.duration, candidate.churn is not None, keep)
        if runs >= max_runs or key in tried:
            return None
        tried.add(key)
        result = attempt(what, candidate, keep)
        return result if failing_checks(result) & target else None

    def accept(candidate: Scenario, keep: frozenset[int], result: RunResult) -> None:
        # Iterate over the faults that took effect; remember the set as given for the end.
        nonlocal best, best_keep, exact
        best, exact = candidate, keep
        best_keep = frozenset(i for i, _, _ in result.injected) & keep

    def shorten() -> None:
        while best.duration / 2 >= min_duration:
            shorter = best.with_(duration=round(best.duration / 2, 3))
            result = still_fails(f"attack {shorter.duration:g} s", shorter, best_keep)
            if result is None:
                return
            accept(shorter, best_keep, result)

    if best.churn is not None:
        calm = best.with_(churn=None)
        result = still_fails("churn off", calm, best_keep)
        if result is not None:
            accept(calm, best_keep, result)
    shorten()
    if best_keep:
        result = still_fails("no faults at all", best, frozenset())
        if result is not None:
            accept(best, frozenset(), result)
    chunks = 2
    while len(best_keep) >= 1 and runs < max_runs:
        ordered = sorted(best_keep)
        size = max(1, len(ordered) // chunks)
        parts = [ordered[i:i + size] for i in range(0, len(ordered), size)]
        for part in parts:
            keep = best_keep - set(part)
            result = still_fails(f"without faults {format_numbers(part)}", best, keep)
            if result is not None:
                accept(best, keep, result)
                chunks = max(chunks - 1, 2)
                break
        else:
            if size == 1:
                break
            chunks = min(len(ordered), chunks * 2)
    shorten()
    # The last failing run, once more with only the faults that took effect in it (a fault
    # that was drawn but found nothing to do changes nothing); if that no longer fails, the
    # set as it was given.
    final = original
    for keep in dict.fromkeys(k for k in (best_keep, exact) if k is not None):
        final = run_sim(best, seed, breaks=breaks, driver=driver, keep_faults=keep, keep_histories=False,
                        max_steps=max_steps)
        runs += 1
        if failing_checks(final) & target:
            break
    return Shrunk(original, final, runs, attempts)
