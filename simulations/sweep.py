"""Seed sweeps that stream into a directory, on local worker processes or a Dask cluster.

    safenet chaos run mixed --seeds 1..100000 --dask tcp://10.0.0.5:8786 --results sweep/
    safenet chaos run mixed --seeds 1..2000 --dask local --results sweep/
    safenet chaos run mixed --seeds 1..2000 -j 2 --results sweep/

Each seed's summary is written to `DIR/seeds/<seed // 1000>/seed-<seed>.json` the moment it
arrives (to a temporary name, then renamed, so a sweep killed half way leaves no half file).
Running the same sweep again skips every seed that has its file; `DIR/sweep.json` records
what the sweep is (scenario, overrides, breaks, driver), and a directory holding another
sweep is refused rather than mixed. At the end (and on a re-run that had nothing left to do)
`summary.json`, `summary.md` and `outcomes.png` are written from every seed file: the
outcome counts, which checks failed how often, and each failing seed with its replay command.

Dask workers need only this package installed: a job is plain data (the scenario, the seed,
the breaks) and `run_job` is found by name. Each worker must run one job at a time in its own
process (`threads_per_worker=1`): a run seeds process-wide state (trio's scheduler generator
and the global `random`). `--dask local` starts such a cluster on this machine.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .scenarios import Scenario

Job = dict[str, Any]
Summary = dict[str, Any]


class SweepError(Exception):
    """A sweep cannot start (its directory holds another sweep, Dask is missing, ...)."""


# ============================================================================ one job


def make_job(scenario: Scenario | str, seed: int, *, breaks: Iterable[str] = (), driver: str = "stepped",
             overrides: dict[str, Any] | None = None, replay_args: str = "",
             keep_faults: frozenset[int] | None = None) -> Job:
    """A seed's job: plain data a Dask worker can unpickle with only this package installed."""
    return {"scenario": scenario, "seed": seed, "breaks": tuple(breaks), "driver": driver,
            "overrides": dict(overrides or {}), "replay_args": replay_args,
            "keep_faults": None if keep_faults is None else sorted(keep_faults)}


def run_job(job: Job) -> Summary:
    """Play one seed; its summary (histories left out). An exception in the run is a result too."""
    from .run import run_sim
    from .scenario_file import resolve

    scenario = job["scenario"]
    if isinstance(scenario, str):
        scenario = resolve(scenario)
    scenario = scenario.with_(**job["overrides"])
    try:
        keep = job.get("keep_faults")
        result = run_sim(scenario, job["seed"], breaks=tuple(job["breaks"]), driver=job["driver"],
                         keep_histories=False, keep_faults=None if keep is None else frozenset(keep))
        summary = result.summary()
    except Exception as exc:  # a sweep of 100,000 seeds must not die of one
        summary = {"scenario": scenario.name, "seed": job["seed"], "status": "error", "valid": False,
                   "failures": [f"run raised {type(exc).__name__}: {exc}"[:300]], "digest": "",
                   "replay": _replay(scenario, job), "wall_s": 0.0, "messages": 0, "faults": {}, "checks": {}}
    if job["replay_args"]:
        summary["replay"] += " " + job["replay_args"]
    summary["worker_pid"] = os.getpid()
    return summary


def _replay(scenario: Scenario, job: Job) -> str:
    parts = [f"safenet chaos run {scenario.name} --seed {job['seed']} --nodes {scenario.nodes}",
             f"--duration {scenario.duration:g} --mode sim"] + [f"--break {b}" for b in job["breaks"]]
    if job["driver"] != "stepped":
        parts.append(f"--driver {job['driver']}")
    return " ".join(parts)


# ============================================================================ the directory


class SweepDir:
    """Where a sweep's results stream to; see the module docstring for the layout."""

    def __init__(self, directory: str | Path, identity: dict[str, Any]) -> None:
        self.root = Path(directory)
        self.identity = identity
        manifest = self.root / "sweep.json"
        if manifest.exists():
            try:
                found = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise SweepError(f"{manifest} is not readable: {exc}") from None
            if found != identity:
                raise SweepError(f"{self.root} holds another sweep ({_describe(found)}); "
                                 f"this one is {_describe(identity)}: give another --results directory")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_atomic(manifest, json.dumps(identity, indent=2) + "\n")

    def path(self, seed: int) -> Path:
        return self.root / "seeds" / f"{seed // 1000:05d}" / f"seed-{seed}.json"

    def done(self) -> set[int]:
        seeds = self.root / "seeds"
        if not seeds.is_dir():
            return set()
        return {int(p.stem[5:]) for p in seeds.glob("*/seed-*.json") if p.stem[5:].lstrip("-").isdigit()}

    def save(self, summary: Summary) -> None:
        path = self.path(summary["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(summary, default=str) + "\n")

    def summaries(self, seeds: Iterable[int] | None = None) -> Iterator[Summary]:
        wanted = sorted(self.done() if seeds is None else set(seeds) & self.done())
        for seed in wanted:
            yield json.loads(self.path(seed).read_text())


def identity_of(job: Job) -> dict[str, Any]:
    """What makes two sweeps the same sweep (everything of a job but its seed)."""
    scenario = job["scenario"]
    described = scenario if isinstance(scenario, str) else {"name": scenario.name, "spec": _jsonable(asdict(scenario))}
    return {"scenario": described, "overrides": _jsonable(job["overrides"]), "breaks": list(job["breaks"]),
            "driver": job["driver"], "replay_args": job["replay_args"], "keep_faults": job.get("keep_faults")}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def _describe(identity: dict[str, Any]) -> str:
    scenario = identity.get("scenario")
    name = scenario.get("name") if isinstance(scenario, dict) else scenario
    extra = [f"--break {b}" for b in identity.get("breaks", [])]
    extra += [f"{k}={v}" for k, v in sorted((identity.get("overrides") or {}).items())]
    return " ".join([str(name), *extra])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ============================================================================ running


def run_pool(jobs: list[Job], workers: int) -> Iterator[Summary]:
    """Summaries as they finish, from `workers` forked processes (in this process if 1)."""
    if workers <= 1:
        for job in jobs:
            yield run_job(job)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap_unordered(run_job, jobs)


def run_dask(jobs: list[Job], address: str, workers: int,
             log: Callable[[str], None] = lambda text: None) -> Iterator[Summary]:
    """Summaries as they finish, from a Dask cluster at `address` (or "local": start one here).

    At most a few jobs per worker thread are in flight at a time, so a sweep of 100,000 seeds
    does not hand the scheduler 100,000 tasks at once.
    """
    try:
        import logging

        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SweepError("--dask needs Dask: pip install 'safenet-testbed[dask]'") from None
    import multiprocessing

    import dask

    cluster = None
    if address == "local":
        # The worker's sampling profiler wakes every 10 ms in a thread of the process that runs
        # the simulation, and a sweep has no use for it: a local cluster runs without.
        dask.config.set({"distributed.worker.profile.enabled": False})
        if "fork" in multiprocessing.get_all_start_methods():
            # Workers forked from this process start with the simulator imported, as -j's pool
            # does. Spawned ones (Dask's default) each imported it again: a 20-seed sweep of
            # `mixed` took 16-25 % more CPU than with -j 2, forked ones the same.
            from . import run  # noqa: F401  (imported here, so the workers inherit it)

            dask.config.set({"distributed.worker.multiprocessing-method": "fork"})
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout=10)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"no Dask scheduler answers at {address}: {exc}") from None
    try:
        threads = sum(client.nthreads().values()) or 1
        log(f"dask: {address if cluster is None else 'local cluster'} with {len(client.nthreads())} workers, "
            f"{threads} threads")
        pending = iter(jobs)
        flying = as_completed()
        for job in _take(pending, 2 * threads):
            flying.add(client.submit(run_job, job, pure=False))
        for future in flying:
            summary = future.result()
            future.release()
            for job in _take(pending, 1):
                flying.add(client.submit(run_job, job, pure=False))
            yield summary
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _take(items: Iterator[Job], count: int) -> list[Job]:
    out = []
    for item in items:
        out.append(item)
        if len(out) >= count:
            break
    return out


class Progress:
    """A line per seed for small sweeps; for big ones a line every few seconds, and failures."""

    def __init__(self, total: int, skipped: int, echo: Callable[[str], None], *, every: float = 5.0) -> None:
        self.total, self.skipped, self.echo, self.every = total, skipped, echo, every
        self.done = 0
        self.failed = 0
        self.started = self.last = time.perf_counter()

    def __call__(self, summary: Summary) -> None:
        self.done += 1
        self.failed += not summary["valid"]
        now = time.perf_counter()
        rate = self.done / max(now - self.started, 1e-9)
        left = self.total - self.skipped - self.done
        head = f"[{self.skipped + self.done}/{self.total}]"
        if self.total <= 200 or not summary["valid"]:
            mark = summary["status"].upper()
            self.echo(f"{head} seed {summary['seed']}: {mark} ({summary['wall_s']:.1f} s, {summary['messages']} msgs)"
                      + (f" — {'; '.join(summary['failures'])}" if summary["failures"] else ""))
        elif now - self.last >= self.every or left == 0:
            self.last = now
            self.echo(f"{head} {rate:.2f} seeds/s, {self.failed} failed, ~{left / rate:.0f} s left")


def summarize(sweep: SweepDir, seeds: list[int], *, title: str, wall: float, workers: str) -> Summary:
    """Write summary.json, summary.md and outcomes.png for `seeds` (those that are done)."""
    rows: list[dict[str, Any]] = [
        {k: s.get(k) for k in ("seed", "status", "valid", "failures", "digest", "replay", "wall_s", "cpu_s",
                               "messages")}
        for s in sweep.summaries(seeds)]
    cpu = [r["cpu_s"] for r in rows if r.get("cpu_s")]
    statuses = Counter(r["status"] for r in rows)
    checks: Counter[str] = Counter(f.split(":")[0] for r in rows for f in r["failures"])
    failed = [r for r in rows if not r["valid"]]
    body = {"title": title, "seeds": [seeds[0], seeds[-1]] if seeds else [], "runs": len(rows),
            "missing": len(seeds) - len(rows), "passed": len(rows) - len(failed), "failed": [r["seed"] for r in failed],
            "outcomes": dict(statuses), "failed_checks": dict(checks.most_common()), "wall_s": round(wall, 3),
            "cpu_per_seed_s": round(sum(cpu) / len(cpu), 3) if cpu else None,
            "workers": workers, "digests": {str(r["seed"]): r["digest"] for r in rows},
            "verdicts": {str(r["seed"]): r["status"] for r in rows},
            "replays": {str(r["seed"]): r["replay"] for r in failed}}
    _write_atomic(sweep.root / "summary.json", json.dumps(body, indent=2) + "\n")
    lines = [f"# {title}", "", f"{len(rows)} of {len(seeds)} seeds done, {len(failed)} failed "
             f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}); {wall:.1f} s wall this time, "
             f"{workers}.", "", "![outcomes](outcomes.png)", ""]
    if checks:
        lines += ["## Checks that failed", "", "| check | seeds |", "|---|---|"]
        lines += [f"| {name} | {count} |" for name, count in checks.most_common()] + [""]
    if failed:
        lines += ["## Failing seeds", ""]
        for r in failed:
            lines += [f"- seed {r['seed']}: {'; '.join(r['failures'])}  ", f"  replay: `{r['replay']}`"]
    _write_atomic(sweep.root / "summary.md", "\n".join(lines) + "\n")
    _plot_outcomes(sweep.root / "outcomes.png", statuses, checks, title)
    return body


def _plot_outcomes(path: Path, statuses: Counter[str], checks: Counter[str], title: str) -> None:
    from .report import _plt

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
    names = sorted(statuses)
    colours = {"valid": "tab:green", "invalid": "tab:red", "unknown": "tab:orange", "error": "black"}
    left.bar(names, [statuses[n] for n in names], color=[colours.get(n, "tab:gray") for n in names])
    left.set_title("outcomes")
    left.set_ylabel("seeds")
    top = checks.most_common(12)
    right.barh([n for n, _ in top][::-1], [c for _, c in top][::-1], color="tab:red")
    right.set_title("failed checks (seeds)" if top else "no check failed")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path.with_name(f".{path.name}.tmp.png"), dpi=80)
    plt.close(fig)
    os.replace(path.with_name(f".{path.name}.tmp.png"), path)


def sweep(jobs: list[Job], directory: str | Path, *, workers: int, dask: str | None = None,
          echo: Callable[[str], None] = print, title: str = "sweep") -> Summary:
    """Run every job whose seed is not yet in `directory`, streaming results in; the summary."""
    if not jobs:
        raise SweepError("no seeds to run")
    store = SweepDir(directory, identity_of(jobs[0]))
    done = store.done()
    seeds = [job["seed"] for job in jobs]
    todo = [job for job in jobs if job["seed"] not in done]
    if len(todo) < len(jobs):
        echo(f"{len(jobs) - len(todo)} of {len(jobs)} seeds already done in {store.root}: skipped")
    progress = Progress(len(jobs), len(jobs) - len(todo), echo)
    started = time.perf_counter()
    results = run_dask(todo, dask, workers, echo) if dask is not None else run_pool(todo, workers)
    for summary in results if todo else ():
        store.save(summary)
        progress(summary)
    wall = time.perf_counter() - started
    where = f"dask {dask} ({workers} local workers)" if dask == "local" else (
        f"dask {dask}" if dask else f"{workers} local workers")
    body = summarize(store, seeds, title=title, wall=wall, workers=where)
    body["ran"] = len(todo)
    body["rate"] = round(len(todo) / wall, 3) if todo and wall > 0 else None
    body["directory"] = str(store.root)
    return body
