"""The `chaos` and `sim` command groups of `safenet`.

    safenet chaos list
    safenet chaos run mixed --seeds 1..200            # the deterministic simulator
    safenet chaos run kill-restart --mode cluster     # a real multi-process cluster
    safenet sim routing --nodes 10000 --lookups 10000
    safenet sim scale --nodes 1000 --duration 3600

`chaos run` exits 0 only when every invariant held in every run (1 otherwise; docs/cli.md
has every exit code); each failing seed is printed with the command that replays it
exactly. Every command prints JSON with `--json` (progress lines go to stderr either way).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from node.clikit import CONTEXT, SafenetGroup, fail, json_option
from node.clusterfile import cluster_dir
from node.exitcodes import FAILED, INTERRUPTED, OK

from .cli_check import check_command
from .faults import FAULTS
from .run import BREAKS
from .scenarios import SCENARIOS, Scenario


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(cls=SafenetGroup, context_settings=CONTEXT)
def chaos() -> None:
    """Attack the network with faults and check what survived (Jepsen / FoundationDB style)."""


chaos.add_command(check_command)


@click.group(cls=SafenetGroup, context_settings=CONTEXT)
def sim() -> None:
    """Simulate the network at scale: routing only, or full nodes with churn."""


# ============================================================================ chaos list


@chaos.command("list")
@json_option
def list_scenarios(as_json: bool) -> None:
    """Name the scenarios and what each injects."""
    if as_json:
        _echo_json({"scenarios": [{"name": s.name, "summary": s.summary, "nodes": s.nodes, "duration": s.duration,
                                   "quiet": s.quiet, "register_clients": s.workload.processes,
                                   "chunk_clients": s.workload.chunk_processes, "injects": s.injects()}
                                  for s in SCENARIOS.values()],
                    "breaks": list(BREAKS), "faults": {name: summary for name, (summary, _) in FAULTS.items()}})
        return
    for scenario in SCENARIOS.values():
        click.echo(click.style(scenario.name, bold=True) + f" — {scenario.summary}")
        click.echo(f"    {scenario.nodes} nodes, {scenario.duration:g} s of faults, then heal and "
                   f"{scenario.quiet:g} s quiet; {scenario.workload.processes} register clients, "
                   f"{scenario.workload.chunk_processes} chunk client(s)")
        for item in scenario.injects() or ["nothing"]:
            click.echo(f"    - {item}")
    click.echo("\nFaults (--faults name[=weight],...; or a scenario file):")
    for name, (summary, _) in FAULTS.items():
        click.echo(f"    {name:<18} {summary}")
    click.echo("\nBreaks (--break, test-only: the network breaks its contract on purpose): " + ", ".join(BREAKS))


# ============================================================================ chaos run


def parse_seeds(seed: int | None, seeds: str | None) -> list[int]:
    if seed is not None and seeds is not None:
        raise click.UsageError("give --seed or --seeds, not both")
    if seeds is None:
        return [1 if seed is None else seed]
    first, sep, last = seeds.partition("..")
    try:
        a, b = int(first), int(last) if sep else int(first)
    except ValueError:
        raise click.BadParameter(f"--seeds takes A..B, got {seeds!r}") from None
    if b < a:
        raise click.BadParameter(f"--seeds {seeds}: the range is empty")
    return list(range(a, b + 1))


def _one_seed(job: dict[str, Any]) -> dict[str, Any]:
    """Run one seed (in a worker process for multi-seed runs); returns its summary."""
    from .report import write_run_report
    from .run import run_sim
    from .scenario_file import resolve

    scenario = resolve(job["scenario"]).with_(**job["overrides"])
    result = run_sim(scenario, job["seed"], breaks=job["breaks"], keep_messages=job["trace"], driver=job["driver"],
                     keep_faults=job.get("keep_faults"))
    summary = result.summary()
    report_dir = job["report"]
    if report_dir is not None and (job["single"] or not result.valid):
        directory = Path(report_dir) / f"seed-{job['seed']}"
        summary["report"] = str(write_run_report(result, directory))
    return summary


@chaos.command("run")
@click.argument("scenario")
@click.option("--seed", type=int, help="One seed (default 1).")
@click.option("--seeds", help="A range of seeds, A..B (inclusive).")
@click.option("--nodes", type=click.IntRange(min=1), help="Nodes (default: the scenario's).")
@click.option("--duration", type=click.FloatRange(min=0), help="Seconds of faults (virtual in sim mode).")
@click.option("--quiet", type=click.FloatRange(min=0),
              help="Seconds between the final heal and the final checks (default: the scenario's).")
@click.option("--mode", type=click.Choice(["sim", "cluster"]), default="sim", show_default=True)
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write JSON, Markdown and PNG reports here.")
@click.option("--break", "breaks", multiple=True, type=click.Choice(BREAKS),
              help="Break the network on purpose (repeatable).")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0,
              help="Worker processes for --seeds (default: one per CPU).")
@click.option("--trace", is_flag=True, help="Keep every message line in the report (trace.txt).")
@click.option("--driver", type=click.Choice(["host", "stepped"]), default="stepped", show_default=True,
              help="host: every node under its own NodeHost task; stepped: cores driven by the network loop (faster).")
@click.option("--cluster", "--data-dir", "cluster_path", type=click.Path(), metavar="DIR",
              help="cluster mode: the cluster's dir or its cluster.json [default: a new one in a temp dir].")
@click.option("--app", "app_spec", metavar="MODULE:FACTORY", help="`chaos run app`: your app (docs/app-chaos.md).")
@click.option("--commands", "app_commands", metavar="MODULE:GENERATOR", help="`chaos run app`: the command generator.")
@click.option("--invariant", "app_invariants", multiple=True, metavar="MODULE:FUNCTION",
              help="`chaos run app`: an invariant over the final state (repeatable).")
@click.option("--dask", "dask_address", metavar="ADDRESS",
              help="Run --seeds on the Dask cluster at ADDRESS ('local': start one here with -j workers).")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Stream each seed's result into DIR; a re-run skips seeds already there [--dask default: "
                   "chaos-sweep-SCENARIO].")
@click.option("--keep-faults", "keep_faults", metavar="LIST",
              help="Inject only these of the nemesis's faults, by number (e.g. 3,7-9; 'none'): what "
                   "`chaos shrink` prints.")
@click.option("--no-churn", is_flag=True, help="Leave out the scenario's churn.")
@click.option("--faults", "fault_menu", metavar="LIST",
              help="Replace the scenario's faults: name[=weight],... (e.g. kill=2,partition-halves,clock-skew; "
                   "'none'); `chaos list` names them. For `chaos run app`: a SCENARIO whose faults to use.")
@click.option("--fault-interval", type=click.FloatRange(min=0, min_open=True),
              help="Mean seconds between two faults (default: the scenario's).")
@json_option
def run_command(scenario: str, seed: int | None, seeds: str | None, nodes: int | None, duration: float | None,
                quiet: float | None, mode: str, report_dir: str | None, breaks: tuple[str, ...], jobs: int, trace: bool,
                driver: str, cluster_path: str | None, app_spec: str | None, app_commands: str | None,
                app_invariants: tuple[str, ...], dask_address: str | None, results_dir: str | None,
                keep_faults: str | None, no_churn: bool, fault_menu: str | None, fault_interval: float | None,
                as_json: bool) -> None:
    """Play SCENARIO (a name, or a scenario file ending in .toml) and check every invariant;
    exit 0 only if all held. SCENARIO `app` runs your own event-sourced app (--app) under the
    faults instead."""
    if scenario == "app":
        from .app_cli import run_app

        explicit_driver = click.get_current_context().get_parameter_source("driver") != ParameterSource.DEFAULT
        if breaks or report_dir or trace or explicit_driver or dask_address or results_dir or keep_faults \
                or no_churn or fault_interval is not None:
            raise click.UsageError("--break, --report, --trace, --driver, --dask, --results, --keep-faults, "
                                   "--no-churn and --fault-interval are not for `chaos run app`")
        run_app(app_spec=app_spec, commands=app_commands, invariants=app_invariants, faults=fault_menu,
                seeds=parse_seeds(seed, seeds), nodes=nodes, duration=duration, quiet=quiet, mode=mode, jobs=jobs,
                cluster_path=cluster_path, as_json=as_json)
        return
    if app_spec or app_commands or app_invariants:
        raise click.UsageError("--app, --commands and --invariant are for `chaos run app`")
    from .scenario_file import ScenarioError, parse_faults, resolve

    try:
        base = resolve(scenario)
        menu = None if fault_menu is None else parse_faults(fault_menu)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults" if "fault" in str(exc) else "SCENARIO") from None
    if mode == "cluster":
        if seeds is not None or breaks:
            raise click.UsageError("--seeds and --break are for --mode sim (a cluster run takes one --seed)")
        given = None if cluster_path is None else str(cluster_dir(cluster_path))
        summary = _run_on_cluster(base, seed if seed is not None else 1, nodes=nodes, duration=duration,
                                  report_dir=report_dir, data_dir=given, quiet=quiet)
        if as_json:
            _echo_json(summary)
        else:
            _print_single(summary)
        sys.exit(OK if summary["valid"] else FAILED)
    if cluster_path is not None:
        raise click.UsageError("--cluster is for --mode cluster")
    if (dask_address is not None or results_dir is not None) and (report_dir is not None or trace):
        raise click.UsageError("--dask and --results write their own summary; leave out --report and --trace")
    overrides: dict[str, Any] = {}
    if nodes is not None:
        overrides["nodes"] = nodes
    if duration is not None:
        overrides["duration"] = duration
    if quiet is not None:
        overrides["quiet"] = quiet
    if no_churn:
        overrides["churn"] = None
    if menu is not None:
        overrides["faults"] = menu
    if fault_interval is not None:
        overrides["nemesis"] = dataclasses.replace(base.nemesis, interval=fault_interval)
    keep = _keep_faults(keep_faults)
    chosen = parse_seeds(seed, seeds)
    if dask_address is not None or results_dir is not None:
        _sweep(base, chosen, overrides, breaks, driver, jobs, dask_address,
               results_dir or f"chaos-sweep-{base.name}", as_json, keep)
    jobs_list = [{"scenario": base.name, "seed": s, "overrides": overrides, "breaks": breaks, "trace": trace,
                  "driver": driver, "keep_faults": keep,
                  "report": report_dir, "single": len(chosen) == 1} for s in chosen]
    workers = jobs or os.cpu_count() or 1
    workers = max(1, min(workers, len(chosen)))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []

    def show(summary: dict[str, Any]) -> None:
        results.append(summary)
        if not summary["valid"]:
            failed.append(summary)
        if as_json:
            return
        if len(chosen) == 1:
            _print_single(summary)
        else:
            mark = click.style(summary["status"].upper(), fg="green" if summary["valid"] else "red")
            click.echo(f"[{len(results):>{len(str(len(chosen)))}}/{len(chosen)}] seed {summary['seed']}: {mark} "
                       f"({summary['wall_s']:.1f} s, {summary['messages']} msgs)"
                       + (f" — {'; '.join(summary['failures'])}" if summary["failures"] else "")
                       + (f"  [{len(failed)} failed so far]" if failed else ""))

    if workers == 1:
        for job in jobs_list:
            show(_one_seed(job))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for summary in pool.imap_unordered(_one_seed, jobs_list):
                show(summary)
    wall = time.perf_counter() - started
    batch_report = None
    if report_dir is not None and len(chosen) > 1:
        from .report import write_batch_report

        batch_report = write_batch_report(results, report_dir, wall=wall,
                                          title=f"chaos run {base.name}, seeds {chosen[0]}..{chosen[-1]}")
    if as_json:
        runs = sorted(results, key=lambda r: r["seed"])
        _echo_json(runs[0] if len(chosen) == 1 else {
            "scenario": base.name, "seeds": [chosen[0], chosen[-1]], "runs": runs, "passed": len(chosen) - len(failed),
            "failed": [r["seed"] for r in sorted(failed, key=lambda r: r["seed"])], "wall_s": round(wall, 3),
            "seeds_per_s": round(len(chosen) / wall, 3), "cpu_per_seed_s": _cpu_per_seed(results),
            "load": _load(), "workers": workers, "report": None if batch_report is None else str(batch_report)})
        sys.exit(FAILED if failed else OK)
    if batch_report is not None:
        click.echo(f"report: {batch_report}")
    if len(chosen) > 1:
        click.echo(f"\n{len(chosen)} runs in {wall:.1f} s wall ({len(chosen) / wall:.2f} seeds/s, {workers} workers; "
                   f"{_cpu_per_seed(results)} s CPU a seed; load {_load()}): "
                   f"{len(chosen) - len(failed)} passed, {len(failed)} failed")
    for summary in sorted(failed, key=lambda s: s["seed"]):
        click.echo(click.style(f"FAILED seed {summary['seed']}", fg="red") + f": {'; '.join(summary['failures'])}")
        click.echo(f"  replay: {summary['replay']}")
    sys.exit(FAILED if failed else OK)


def _cpu_per_seed(results: list[dict[str, Any]]) -> float | None:
    cpu = [r["cpu_s"] for r in results if r.get("cpu_s")]
    return round(sum(cpu) / len(cpu), 3) if cpu else None


def _load() -> str:
    """The load average (1, 5, 15 min): speed figures on a shared machine mean little without it."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _keep_faults(text: str | None) -> frozenset[int] | None:
    from .run import parse_numbers

    if text is None:
        return None
    try:
        return parse_numbers(text)
    except ValueError:
        raise click.BadParameter(f"a list of fault numbers such as 3,7-9 (or 'none'), got {text!r}",
                                 param_hint="--keep-faults") from None


@chaos.command("shrink")
@click.argument("scenario")
@click.option("--seed", type=int, required=True, help="The failing seed.")
@click.option("--nodes", type=click.IntRange(min=1), help="Nodes (default: the scenario's).")
@click.option("--duration", type=click.FloatRange(min=0), help="Seconds of faults of the failing run.")
@click.option("--quiet", type=click.FloatRange(min=0), help="Quiet seconds of the failing run.")
@click.option("--break", "breaks", multiple=True, type=click.Choice(BREAKS),
              help="As the failing run had (repeatable).")
@click.option("--driver", type=click.Choice(["host", "stepped"]), default="stepped", show_default=True)
@click.option("--no-churn", is_flag=True, help="The failing run had no churn.")
@click.option("--faults", "fault_menu", metavar="LIST", help="The failing run's --faults.")
@click.option("--fault-interval", type=click.FloatRange(min=0, min_open=True), help="The failing run's.")
@click.option("--max-runs", type=click.IntRange(min=2), default=60, show_default=True,
              help="At most this many runs while shrinking.")
@json_option
def shrink_command(scenario: str, seed: int, nodes: int | None, duration: float | None, quiet: float | None,
                   breaks: tuple[str, ...], driver: str, no_churn: bool, fault_menu: str | None,
                   fault_interval: float | None, max_runs: int, as_json: bool) -> None:
    """Shrink a failing run of SCENARIO to the fewest faults and shortest attack that still fail;
    print the replay command of the result. Exits 0 when it shrank a failing run."""
    from .scenario_file import ScenarioError, parse_faults, resolve
    from .shrink import ShrinkError, shrink

    try:
        base = resolve(scenario)
        menu = None if fault_menu is None else parse_faults(fault_menu)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults" if "fault" in str(exc) else "SCENARIO") from None
    changes: dict[str, Any] = {k: v for k, v in (("nodes", nodes), ("duration", duration), ("quiet", quiet))
                               if v is not None}
    if no_churn:
        changes["churn"] = None
    if menu is not None:
        changes["faults"] = menu
    if fault_interval is not None:
        changes["nemesis"] = dataclasses.replace(base.nemesis, interval=fault_interval)
    try:
        shrunk = shrink(base.with_(**changes), seed, breaks=breaks, driver=driver, max_runs=max_runs,
                        log=lambda text: click.echo(text, err=True))
    except ShrinkError as exc:
        raise click.ClickException(str(exc)) from None
    summary = shrunk.summary()
    if as_json:
        _echo_json(summary)
        sys.exit(OK)
    before, after = summary["original"], summary["shrunk"]
    click.echo(click.style(f"{scenario} seed {seed}: {before['faults']} faults over {before['duration']:g} s "
                           f"-> {after['faults']} over {after['duration']:g} s"
                           + ("" if after["churn"] or not before["churn"] else ", no churn")
                           + f" ({shrunk.runs} runs)", bold=True))
    for fault in after["injected"]:
        click.echo(f"  fault {fault['i']:>3} at {fault['time']:8.2f} s: {fault['fault']}")
    click.echo(f"  still fails: {'; '.join(after['failures'])}")
    click.echo(f"  digest {after['digest']}")
    click.echo(f"  replay: {after['replay']}")
    sys.exit(OK)


def _sweep(scenario: Scenario, seeds: list[int], overrides: dict[str, Any], breaks: tuple[str, ...], driver: str,
           jobs: int, dask_address: str | None, results_dir: str, as_json: bool,
           keep: frozenset[int] | None) -> None:
    """`chaos run --dask/--results`: stream seeds into a directory (simulations.sweep); exits."""
    from .scenario_file import is_file
    from .sweep import SweepError, make_job, sweep

    # A scenario file is sent whole: a Dask worker on another machine does not have it.
    named: Scenario | str = scenario if is_file(scenario.name) else scenario.name
    job_list = [make_job(named, s, breaks=breaks, driver=driver, overrides=overrides, keep_faults=keep)
                for s in seeds]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(seeds)))
    try:
        body = sweep(job_list, results_dir, workers=workers, dask=dask_address,
                     echo=lambda text: click.echo(text, err=as_json),
                     title=f"chaos run {scenario.name}, seeds {seeds[0]}..{seeds[-1]}")
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    body["load"] = _load()
    if as_json:
        _echo_json(body)
    else:
        rate = f" ({body['rate']:.2f} seeds/s; load {body['load']})" if body["rate"] else ""
        click.echo(f"\n{body['runs']} of {len(seeds)} seeds done, {body['ran']} run now in {body['wall_s']:.1f} s"
                   f"{rate} on {body['workers']}: {body['passed']} passed, {len(body['failed'])} failed")
        for failed in body["failed"]:
            click.echo(click.style(f"FAILED seed {failed}", fg="red") + f"  replay: {body['replays'][str(failed)]}")
        click.echo(f"summary: {Path(body['directory']) / 'summary.md'}")
    sys.exit(FAILED if body["failed"] or body["missing"] else OK)


def _run_on_cluster(scenario: Scenario, seed: int, *, nodes: int | None, duration: float | None,
                    report_dir: str | None, data_dir: str | None, quiet: float | None) -> dict[str, Any]:
    """`chaos run SCENARIO --mode cluster`: play it on real node processes; its summary."""
    import trio

    from .cluster_chaos import Interrupted, run_cluster

    try:
        result = trio.run(lambda: run_cluster(scenario, seed, nodes=nodes, duration=duration, data_dir=data_dir,
                                              quiet=45.0 if quiet is None else quiet,
                                              log=lambda text: click.echo(text, err=True)))
    except Interrupted as exc:
        fail(str(exc), INTERRUPTED)
    summary = result.summary()
    summary["replay"] = f"{result.replay_command()}  (real time: the same faults, not the same timing)"
    if report_dir:
        from .report import write_run_report

        summary["report"] = str(write_run_report(result, report_dir))
    return summary


def _print_single(summary: dict[str, Any]) -> None:
    colour = "green" if summary["valid"] else "red"
    title = f"{summary['scenario']} seed {summary['seed']}: {summary['status'].upper()}"
    click.echo(click.style(title, fg=colour, bold=True))
    if summary["mode"] == "cluster":
        click.echo(f"  {summary['nodes']} node processes, {summary['wall_s']:.1f} s; trace digest {summary['digest']}")
    else:
        click.echo(f"  {summary['nodes']} nodes, {summary['virtual_s']:.1f} s simulated in "
                   f"{summary['wall_s']:.2f} s wall; "
                   f"{summary['messages']} messages; digest {summary['digest']}")
    click.echo(f"  faults: {summary['faults'] or 'none'}")
    click.echo(f"  ops: {summary['ops']}")
    for name, check in summary["checks"].items():
        mark = click.style(check["status"], fg="green" if check["status"] == "valid" else "red")
        click.echo(f"  {name:<20} {mark}  {check['stats']}")
        for anomaly in check["anomalies"][:3]:
            click.echo("      " + anomaly.replace("\n", "\n      ")[:1500])
        if check["reason"]:
            click.echo(f"      {check['reason']}")
    if "report" in summary:
        click.echo(f"  report: {summary['report']}")
    if not summary["valid"]:
        click.echo(f"  replay: {summary['replay']}")


# ============================================================================ sim routing


@sim.command("routing")
@click.option("--nodes", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--lookups", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--k", type=click.IntRange(min=1), default=20, show_default=True, help="Bucket size.")
@click.option("--alpha", type=click.IntRange(min=1), default=3, show_default=True, help="Lookup parallelism.")
@click.option("--replication", type=click.IntRange(min=1), default=5, show_default=True, help="Close-group size R.")
@click.option("--build", type=click.Choice(["fill", "join"]), default="fill", show_default=True,
              help="fill: tables as a settled network has them; join: nodes join one by one.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False))
@json_option
def routing_command(nodes: int, lookups: int, seed: int, k: int, alpha: int, replication: int, build: str,
                    report_dir: str | None, as_json: bool) -> None:
    """Routing only: build NODES tables and run LOOKUPS lookups; hops, exactness, time.
    Exits 0 only if every lookup found the exact close group."""
    from .routing_sim import hop_histogram, run_routing

    if replication > nodes:
        raise click.BadParameter(f"{replication} is more than the {nodes} nodes", param_hint="--replication")
    figures, hops = run_routing(nodes, lookups, seed, k=k, alpha=alpha, replication=replication, build=build)
    report = None
    if report_dir:
        from .report import write_routing_report

        report = write_routing_report(figures.as_dict() | {"hops": hop_histogram(hops)}, hops, report_dir)
    if as_json:
        _echo_json(figures.as_dict() | {"hops": hop_histogram(hops), "report": None if report is None else str(report)})
    else:
        for key, value in figures.as_dict().items():
            click.echo(f"{key:>14}: {value}")
        click.echo(f"{'hops':>14}: {hop_histogram(hops)}")
        if report is not None:
            click.echo(f"report: {report}")
    sys.exit(OK if figures.exact_share == 1.0 else FAILED)


# ============================================================================ sim scale


@sim.command("scale")
@click.option("--nodes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              help="Simulated seconds of churn.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--session-mean", type=click.FloatRange(min=0, min_open=True), default=1800.0, show_default=True,
              help="Mean node session (s).")
@click.option("--distribution", type=click.Choice(["pareto", "weibull"]), default="pareto", show_default=True)
@click.option("--shape", type=click.FloatRange(min=0, min_open=True), default=1.5, show_default=True,
              help="Pareto alpha or Weibull k.")
@click.option("--dead-mean", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Mean time until a slot's next node joins.")
@click.option("--driver", type=click.Choice(["host", "stepped"]), default="stepped", show_default=True)
@click.option("--ping-interval", type=click.FloatRange(min=0, min_open=True),
              help="NodeConfig.ping_interval (default: the node's own default).")
@click.option("--quiet", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Quiet seconds before the final checks.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False))
@json_option
def scale_command(nodes: int, duration: float, seed: int, session_mean: float, distribution: str, shape: float,
                  dead_mean: float, driver: str, ping_interval: float | None, quiet: float,
                  report_dir: str | None, as_json: bool) -> None:
    """Full nodes with churn at scale: wall time, memory, and every invariant at the end."""
    import resource
    from dataclasses import replace

    from node.core import NodeConfig

    from .faults import ChurnConfig
    from .run import run_sim
    from .scenarios import Scenario
    from .workloads import WorkloadConfig

    config = NodeConfig() if ping_interval is None else replace(NodeConfig(), ping_interval=ping_interval)
    scenario = Scenario(
        "scale", f"{nodes} nodes with churn", churn=ChurnConfig(session_mean, distribution, shape, dead_mean),
        workload=WorkloadConfig(processes=2, think=1.0, chunk_processes=1, chunk_think=2.0, lookup_processes=1,
                                lookup_think=5.0),
        nodes=nodes, duration=duration, quiet=quiet,
    )
    started, started_cpu = time.perf_counter(), time.process_time()

    def progress(now: float, simulator: Any) -> None:
        wall = time.perf_counter() - started
        cpu = time.process_time() - started_cpu
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        click.echo(f"t={now:8.0f}s  wall {wall:7.1f}s  cpu {cpu:7.1f}s  live {len(simulator.live()):5d}  "
                   f"msgs {simulator.trace.delivered:>10,}  peak RSS {rss:,.0f} MB", err=True)

    result = run_sim(scenario, seed, config=config, driver=driver, progress=progress, keep_histories=True)
    summary = result.summary()
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    summary["ping_interval"] = config.ping_interval
    summary["replay"] = (
        f"safenet sim scale --nodes {nodes} --duration {duration:g} --seed {seed} --session-mean {session_mean:g} "
        f"--distribution {distribution} --shape {shape:g} --dead-mean {dead_mean:g} --driver {driver} "
        f"--quiet {quiet:g}" + (f" --ping-interval {ping_interval:g}" if ping_interval is not None else ""))
    if report_dir:
        from .report import write_run_report

        summary["report"] = str(write_run_report(result, report_dir))
    if as_json:
        _echo_json(summary)
    else:
        _print_single(summary)
        click.echo(f"  churn: {result.churn}; lookups: {result.lookups}; peak RSS {summary['peak_rss_mb']} MB; "
                   f"wall {result.wall:.1f} s, CPU {result.cpu:.1f} s for {result.virtual:.0f} simulated s; "
                   f"load {_load()}")
    sys.exit(OK if result.valid else FAILED)
