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

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from node.clikit import CONTEXT, SafenetGroup, json_option
from node.clusterfile import cluster_dir
from node.exitcodes import FAILED, OK

from .cli_check import check_command
from .run import BREAKS
from .scenarios import SCENARIOS, Scenario, get_scenario


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
                    "breaks": list(BREAKS)})
        return
    for scenario in SCENARIOS.values():
        click.echo(click.style(scenario.name, bold=True) + f" — {scenario.summary}")
        click.echo(f"    {scenario.nodes} nodes, {scenario.duration:g} s of faults, then heal and "
                   f"{scenario.quiet:g} s quiet; {scenario.workload.processes} register clients, "
                   f"{scenario.workload.chunk_processes} chunk client(s)")
        for item in scenario.injects() or ["nothing"]:
            click.echo(f"    - {item}")
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

    scenario = get_scenario(job["scenario"]).with_(**job["overrides"])
    result = run_sim(scenario, job["seed"], breaks=job["breaks"], keep_messages=job["trace"], driver=job["driver"])
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
@click.option("--driver", type=click.Choice(["host", "stepped"]), default="host", show_default=True,
              help="host: every node under its own NodeHost task; stepped: cores driven by the network loop (faster).")
@click.option("--cluster", "--data-dir", "cluster_path", type=click.Path(), metavar="DIR",
              help="cluster mode: the cluster's dir or its cluster.json [default: a new one in a temp dir].")
@json_option
def run_command(scenario: str, seed: int | None, seeds: str | None, nodes: int | None, duration: float | None,
                quiet: float | None, mode: str, report_dir: str | None, breaks: tuple[str, ...], jobs: int, trace: bool,
                driver: str, cluster_path: str | None, as_json: bool) -> None:
    """Play SCENARIO and check every invariant; exit 0 only if all held."""
    try:
        base = get_scenario(scenario)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="SCENARIO") from None
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
    overrides: dict[str, Any] = {}
    if nodes is not None:
        overrides["nodes"] = nodes
    if duration is not None:
        overrides["duration"] = duration
    if quiet is not None:
        overrides["quiet"] = quiet
    chosen = parse_seeds(seed, seeds)
    jobs_list = [{"scenario": base.name, "seed": s, "overrides": overrides, "breaks": breaks, "trace": trace,
                  "driver": driver,
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
            "workers": workers, "report": None if batch_report is None else str(batch_report)})
        sys.exit(FAILED if failed else OK)
    if batch_report is not None:
        click.echo(f"report: {batch_report}")
    if len(chosen) > 1:
        click.echo(f"\n{len(chosen)} runs in {wall:.1f} s wall ({len(chosen) / wall:.2f} seeds/s, {workers} workers): "
                   f"{len(chosen) - len(failed)} passed, {len(failed)} failed")
    for summary in sorted(failed, key=lambda s: s["seed"]):
        click.echo(click.style(f"FAILED seed {summary['seed']}", fg="red") + f": {'; '.join(summary['failures'])}")
        click.echo(f"  replay: {summary['replay']}")
    sys.exit(FAILED if failed else OK)


def _run_on_cluster(scenario: Scenario, seed: int, *, nodes: int | None, duration: float | None,
                    report_dir: str | None, data_dir: str | None, quiet: float | None) -> dict[str, Any]:
    """`chaos run SCENARIO --mode cluster`: play it on real node processes; its summary."""
    import trio

    from .cluster_chaos import run_cluster

    result = trio.run(lambda: run_cluster(scenario, seed, nodes=nodes, duration=duration, data_dir=data_dir,
                                          quiet=45.0 if quiet is None else quiet,
                                          log=lambda text: click.echo(text, err=True)))
    summary = result.summary()
    summary["replay"] = (f"safenet chaos run {scenario.name} --mode cluster --seed {seed} --nodes {result.nodes} "
                         f"--duration {result.duration:g}  (real time: the same faults, not the same timing)")
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
                   f"wall {result.wall:.1f} s, CPU {result.cpu:.1f} s for {result.virtual:.0f} simulated s")
    sys.exit(OK if result.valid else FAILED)
