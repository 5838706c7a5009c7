"""`safenet chaos run app --app module:factory ...`: the command-line side of the app runner
(simulations/cli.py only hands its options over)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from typing import Any

import click

from node.clikit import fail
from node.exitcodes import FAILED, OK, USAGE

from .app_spec import SpecError, load_app


def _extra_args(commands: str | None, invariants: tuple[str, ...], faults: str | None) -> str:
    out = f" --commands {commands}" if commands else ""
    out += "".join(f" --invariant {i}" for i in invariants)
    return out + (f" --faults {faults}" if faults else "")


def _scenario(faults: str | None, nodes: int | None, duration: float | None, quiet: float | None) -> Any:
    from .app_chaos import APP_SCENARIO
    from .scenarios import get_scenario

    scenario = APP_SCENARIO
    if faults is not None:
        try:
            chosen = get_scenario(faults)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--faults") from None
        scenario = scenario.with_(faults=dict(chosen.faults), nemesis=chosen.nemesis, link=chosen.link,
                                  name=f"app/{chosen.name}")
    changes: dict[str, Any] = {}
    if nodes is not None:
        changes["nodes"] = nodes
    if duration is not None:
        changes["duration"] = duration
    if quiet is not None:
        changes["quiet"] = quiet
    return scenario.with_(**changes)


def _one(job: dict[str, Any]) -> dict[str, Any]:
    """One seed, in a worker process for many seeds."""
    from .app_chaos import run_app_sim

    app = load_app(job["app"], job["commands"], job["invariants"])
    scenario = _scenario(job["faults"], job["nodes"], job["duration"], job["quiet"])
    result = run_app_sim(app, job["seed"], app_spec=job["app"], scenario=scenario, extra_args=job["extra"])
    return result.summary()


def run_app(*, app_spec: str | None, commands: str | None, invariants: tuple[str, ...], faults: str | None,
            seeds: list[int], nodes: int | None, duration: float | None, quiet: float | None, mode: str, jobs: int,
            cluster_path: str | None, as_json: bool) -> None:
    if app_spec is None:
        raise click.UsageError("chaos run app needs --app package.module:factory")
    try:
        load_app(app_spec, commands, invariants)  # one clear line now, rather than one per worker
    except SpecError as exc:
        fail(str(exc), USAGE)
    extra = _extra_args(commands, invariants, faults)
    _scenario(faults, nodes, duration, quiet)
    if mode == "cluster":
        if len(seeds) != 1:
            raise click.UsageError("a cluster run takes one --seed")
        from .app_cluster import run_app_cluster

        app = load_app(app_spec, commands, invariants)
        result = run_app_cluster(app, seeds[0], app_spec=app_spec, scenario=_scenario(faults, nodes, duration, quiet),
                                 data_dir=cluster_path, extra_args=extra,
                                 log=lambda text: click.echo(text, err=True))
        summary = result.summary()
        if as_json:
            click.echo(json.dumps(summary, indent=2, default=str))
        else:
            print_run(summary)
        sys.exit(OK if summary["valid"] else FAILED)
    job = {"app": app_spec, "commands": commands, "invariants": invariants, "faults": faults, "nodes": nodes,
           "duration": duration, "quiet": quiet, "extra": extra}
    jobs_list = [dict(job, seed=s) for s in seeds]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(seeds)))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []

    def show(summary: dict[str, Any]) -> None:
        results.append(summary)
        if not summary["valid"]:
            failed.append(summary)
        if as_json:
            return
        if len(seeds) == 1:
            print_run(summary)
            return
        mark = click.style(summary["status"].upper(), fg="green" if summary["valid"] else "red")
        click.echo(f"[{len(results):>{len(str(len(seeds)))}}/{len(seeds)}] seed {summary['seed']}: {mark} "
                   f"({summary['wall_s']:.1f} s, {summary['ops'].get('command:ok', 0)} commands acknowledged)"
                   + (f" — {'; '.join(summary['failures'])}" if summary["failures"] else ""))

    if workers == 1:
        for one in jobs_list:
            show(_one(one))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for summary in pool.imap_unordered(_one, jobs_list):
                show(summary)
    wall = time.perf_counter() - started
    if as_json:
        runs = sorted(results, key=lambda r: r["seed"])
        click.echo(json.dumps(runs[0] if len(seeds) == 1 else {
            "app": app_spec, "seeds": [seeds[0], seeds[-1]], "runs": runs, "passed": len(seeds) - len(failed),
            "failed": [r["seed"] for r in sorted(failed, key=lambda r: r["seed"])], "wall_s": round(wall, 3),
            "workers": workers}, indent=2, default=str))
        sys.exit(FAILED if failed else OK)
    if len(seeds) > 1:
        click.echo(f"\n{len(seeds)} runs in {wall:.1f} s wall ({workers} workers): "
                   f"{len(seeds) - len(failed)} passed, {len(failed)} failed")
        for summary in sorted(failed, key=lambda s: s["seed"]):
            click.echo(click.style(f"FAILED seed {summary['seed']}", fg="red") + f": {'; '.join(summary['failures'])}")
            # The user's own invariants first: they say what went wrong in the app's words.
            ordered = sorted(summary["checks"].items(), key=lambda item: not item[0].startswith("invariant:"))
            for _name, check in ordered:
                if check["status"] != "valid" and check["anomalies"]:
                    click.echo("  " + check["anomalies"][0].replace("\n", "\n  ")[:2000])
                    break
            click.echo(f"  replay: {summary['replay']}")
    sys.exit(FAILED if failed else OK)


def print_run(summary: dict[str, Any]) -> None:
    colour = "green" if summary["valid"] else "red"
    click.echo(click.style(f"app {summary['app']} seed {summary['seed']}: {summary['status'].upper()}",
                           fg=colour, bold=True))
    if summary["mode"] == "cluster":
        click.echo(f"  {summary['nodes']} node processes, {summary['wall_s']:.1f} s")
    else:
        click.echo(f"  {summary['nodes']} nodes, {summary['virtual_s']:.1f} s simulated in {summary['wall_s']:.1f} s "
                   f"wall; {summary['messages']} messages; digest {summary['digest']}")
    click.echo(f"  faults: {summary['faults'] or 'none'}")
    click.echo(f"  ops: {summary['ops']}")
    for name, check in summary["checks"].items():
        mark = click.style(check["status"], fg="green" if check["status"] == "valid" else "red")
        click.echo(f"  {name:<28} {mark}  {check['stats']}")
        for anomaly in check["anomalies"][:3]:
            click.echo("      " + anomaly.replace("\n", "\n      ")[:3000])
        if check["reason"]:
            click.echo(f"      {check['reason']}")
    if not summary["valid"]:
        click.echo(f"  replay: {summary['replay']}")
