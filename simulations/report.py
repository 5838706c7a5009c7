"""Reports of chaos runs: JSON for tools, Markdown for people, PNG plots for both.

One run (`write_run_report`) gives ``summary.json``, ``report.md``, the histories as JSON
lines (``history.jsonl`` for the MD registers, ``chunks.jsonl`` for IData, in the schema of
`simulations.history`), and plots: a timeline of faults and operations, latency CDFs,
replicas per item over time and the routing topology at the end. Many seeds
(`write_batch_report`) give one table of all runs. A routing-only run
(`write_routing_report`) gives its figures and a hop-count histogram.

Plots use matplotlib's Agg backend (no display needed) and networkx for the topology.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .run import RunResult, percentiles

INSTANT = ("byzantine", "corrupt", "client-crash", "churn-leave", "churn-join")  # marks, not bars
FAULT_COLOURS = {
    "partition": "tab:red", "kill": "tab:purple", "wipe": "black", "pause": "tab:orange",
    "churn": "tab:brown", "corrupt": "tab:olive", "client": "tab:pink", "byzantine": "tab:gray",
}
OUTCOME_COLOURS = {"ok": "tab:green", "fail": "tab:blue", "info": "tab:red"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return repr(value)


# ============================================================================ one run


def write_run_report(result: RunResult, directory: str | Path, *, plots: bool = True) -> Path:
    """Write everything about one run into `directory`; returns the Markdown file."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    summary["latency"] = _latency_table(result)
    _json(out / "summary.json", summary)
    if result.history is not None:
        result.history.to_jsonl(out / "history.jsonl")
    if result.chunks is not None:
        result.chunks.to_jsonl(out / "chunks.jsonl")
    if result.streams is not None:
        result.streams.to_jsonl(out / "streams.jsonl")
    if result.trace_lines is not None:
        (out / "trace.txt").write_text("\n".join(result.trace_lines) + "\n")
    images = []
    if plots:
        images = [
            ("Timeline of faults and operations", plot_timeline(result, out / "timeline.png")),
            ("Latency CDF", plot_latency_cdf(result, out / "latency_cdf.png")),
            ("Replicas per item over time", plot_replicas(result, out / "replicas.png")),
            ("Routing topology at the end", plot_topology(result, out / "topology.png")),
            ("Event-store operations against the faults", plot_eventstore(result, out / "eventstore.png")),
        ]
    md = out / "report.md"
    md.write_text(_run_markdown(result, summary, [(t, p) for t, p in images if p is not None]))
    return md


def _latency_table(result: RunResult) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[float]] = {}
    for lat in result.latencies:
        if lat.outcome == "ok":
            by_kind.setdefault(lat.f, []).append(lat.seconds)
    return {f: {k: round(v * 1000, 2) for k, v in percentiles(v).items()} | {"n": len(v)}
            for f, v in sorted(by_kind.items())}


def _run_markdown(result: RunResult, summary: dict[str, Any], images: list[tuple[str, Path]]) -> str:
    lines = [
        f"# Chaos run: `{result.scenario}`, seed {result.seed}",
        "",
        f"**{result.status.upper()}** — {result.nodes} nodes, {result.duration:g} s of faults "
        f"({result.virtual:.1f} s simulated in {result.wall:.2f} s wall, {result.cpu:.2f} s CPU)."
        if result.mode != "cluster" else
        f"**{result.status.upper()}** — {result.nodes} node processes, {result.duration:g} s of faults "
        f"({result.wall:.1f} s of real time, {result.cpu:.2f} s CPU in the runner).",
        "",
        f"Replay: `{result.replay_command()}`  ",
        f"Trace digest: `{result.digest}` ({result.messages} messages delivered)" if result.mode != "cluster"
        else f"Trace digest: `{result.digest}` (faults and operations; the nodes' messages travel over TCP, "
             f"unseen by the runner: the live node processes counted {result.messages} received at the end)",
    ]
    if result.mode == "cluster":
        lines += ["", "Real time: the seed fixes which faults come in what order, not when; a replay is "
                  "another run of the same plan."]
    if result.breaks:
        lines += ["", f"Broken on purpose: {', '.join(result.breaks)}"]
    lines += ["", "## Checks", "", "| check | status | figures |", "|---|---|---|"]
    for name, check in result.report.checks.items():
        stats = ", ".join(f"{k}={v}" for k, v in check.stats.items())
        lines.append(f"| {name} | {check.status} | {stats} |")
    bad = [c for c in result.report.checks.values() if not c.valid]
    if bad:
        lines += ["", "## What failed", ""]
        for check in bad:
            lines += ["```", check.summary(limit=5), "```", ""]
    lines += ["", "## Faults injected", ""]
    lines += [f"- {name}: {count}" for name, count in summary["faults"].items()] or ["- none"]
    if result.churn:
        lines.append(f"- churn: {result.churn}")
    if result.byzantine:
        lines.append(f"- Byzantine lies told: {result.byzantine}")
    lines += ["", "## Operations", "", "| op | outcome | count |", "|---|---|---|"]
    for key, count in summary["ops"].items():
        f, _, outcome = key.partition(":")
        lines.append(f"| {f} | {outcome} | {count} |")
    lines += ["", "Latency of successful operations (ms):", "", "| op | n | p50 | p90 | p99 |", "|---|---|---|---|---|"]
    for f, row in summary["latency"].items():
        lines.append(f"| {f} | {row['n']} | {row.get('p50', '')} | {row.get('p90', '')} | {row.get('p99', '')} |")
    if result.lookups:
        lines += ["", f"Lookups: {result.lookups}"]
    lines += _eventstore_markdown(result)
    if result.mode == "cluster":
        lines += ["", "## Network", "", f"- received by the live node processes (their own counters at the end; "
                  f"a node restarted during the run counts from its restart): {result.messages}",
                  f"- by kind: {dict(list(result.kinds.items())[:12])}",
                  "- dropped: not counted (loss and partitions act inside the nodes' transports)"]
    else:
        lines += ["", "## Network", "", f"- delivered: {result.messages}", f"- dropped: {result.drops}",
                  f"- by kind: {dict(list(result.kinds.items())[:12])}", f"- node log events: {result.node_logs}"]
    for title, path in images:
        lines += ["", f"## {title}", "", f"![{title}]({path.name})"]
    lines += ["", "Histories: `history.jsonl` (MD entries, model `md_entry`), "
              "`chunks.jsonl` (IData, model `register`).", ""]
    return "\n".join(lines)


def _fault_family(name: str) -> str:
    for family in FAULT_COLOURS:
        if name.startswith(family):
            return family
    return "link"


def plot_timeline(result: RunResult, path: Path) -> Path | None:
    plt = _plt()
    fig, (ax_f, ax_o) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    _fault_bars(ax_f, result)
    for outcome, colour in OUTCOME_COLOURS.items():
        points = [(lat.time, lat.seconds) for lat in result.latencies if lat.outcome == outcome]
        if points:
            ax_o.scatter([p[0] for p in points], [p[1] * 1000 for p in points], s=4, color=colour, label=outcome)
    ax_o.set_yscale("log")
    ax_o.set_ylabel("op latency (ms)")
    ax_o.set_xlabel("virtual time (s)")
    ax_o.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fault_bars(ax_f: Any, result: RunResult) -> None:
    """The faults in force over time, one row per kind (bars) or instant (markers)."""
    open_faults: dict[tuple[str, str], float] = {}
    rows: dict[str, int] = {}
    end = result.virtual
    for event in result.events:
        if event.kind not in ("fault", "heal") or event.what == "all":
            continue
        key = (event.what, json.dumps(event.details, sort_keys=True, default=str))
        if event.what in INSTANT:
            if event.kind == "fault" or event.what == "churn-join":
                row = rows.setdefault(event.what, len(rows))
                colour = FAULT_COLOURS.get(_fault_family(event.what), "tab:cyan")
                ax_f.plot([event.time], [row], marker="v", color=colour)
        elif event.kind == "fault":
            open_faults[key] = event.time
        else:
            started = open_faults.pop(key, None)
            if started is not None:
                row = rows.setdefault(event.what, len(rows))
                ax_f.barh(row, event.time - started, left=started, height=0.6,
                          color=FAULT_COLOURS.get(_fault_family(event.what), "tab:cyan"))
    for (what, _), started in open_faults.items():
        row = rows.setdefault(what, len(rows))
        colour = FAULT_COLOURS.get(_fault_family(what), "tab:cyan")
        ax_f.barh(row, end - started, left=started, height=0.6, color=colour)
    ax_f.set_yticks(list(rows.values()), list(rows.keys()), fontsize=7)
    ax_f.set_title(f"{result.scenario} seed {result.seed}: faults (bars: in force)")


ES_CHECKS = ("streams_linearizable", "lost_events", "es_streams", "es_log", "es_subscriptions",
             "es_projections", "es_process_managers", "es_client_errors")
ES_KINDS = {"append": "append", "read": "read", "read_all": "read", "read_category": "read", "deliver": "deliver"}


def plot_eventstore(result: RunResult, path: Path, bucket: float = 2.0) -> Path | None:
    """Event-store appends and reads completed per second, by outcome, against the faults;
    red lines mark the operations an anomaly names."""
    if result.streams is None:
        return None
    plt = _plt()
    fig, (ax_f, ax_o) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    _fault_bars(ax_f, result)
    counts: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for op in result.streams.ops():
        if op.complete_time is not None and op.f in ES_KINDS:
            counts[(ES_KINDS[op.f], op.outcome)][int(op.complete_time // bucket)] += 1
    styles = {"append": "-", "read": ":", "deliver": "--"}
    for (kind, outcome), per in sorted(counts.items()):
        xs = range(0, int(result.virtual // bucket) + 1)
        ax_o.plot([x * bucket for x in xs], [per.get(x, 0) / bucket for x in xs], styles[kind],
                  color=OUTCOME_COLOURS.get(outcome, "grey"), label=f"{kind} {outcome}", linewidth=1)
    for name in ES_CHECKS:
        check = result.report.checks.get(name)
        for anomaly in check.anomalies if check is not None else ():
            for op in anomaly.ops[:3]:
                ax_o.axvline(op.invoke_time, color="red", linewidth=0.6, alpha=0.6)
    ax_o.set_ylabel("event-store ops / s")
    ax_o.set_xlabel("virtual time (s)")
    ax_o.legend(loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _eventstore_markdown(result: RunResult) -> list[str]:
    if result.streams is None:
        return []
    ops = Counter(f"{op.f}:{op.outcome}" for op in result.streams.ops())
    events = sum(len(op.value["events"]) for op in result.streams.ops() if op.f == "append" and op.outcome == "ok")
    lines = ["", "## Event store", "",
             f"{ops.get('append:ok', 0)} acknowledged appends ({events} events), "
             f"{ops.get('append:fail', 0)} refused, {ops.get('append:info', 0)} unknown; "
             f"{ops.get('read:ok', 0)} stream reads, {ops.get('read_category:ok', 0)} category reads, "
             f"{ops.get('read_all:ok', 0)} `$all` reads; {ops.get('deliver:ok', 0)} deliveries to subscribers; "
             f"{ops.get('project:ok', 0)} projection states and {ops.get('command:ok', 0)} process-manager "
             "commands checked.", "",
             "| check | status | anomalies |", "|---|---|---|"]
    found = []
    for name in ES_CHECKS:
        check = result.report.checks.get(name)
        if check is not None:
            kinds = Counter(a.kind for a in check.anomalies)
            lines.append(f"| {name} | {check.status} | {', '.join(f'{k} x{n}' for k, n in kinds.items()) or '-'} |")
            found += [f"- `{name}`: {str(a).splitlines()[0]}" for a in check.anomalies[:5]]
    if found:
        lines += ["", "Anomalies (the first of each check):", "", *found]
    lines += ["", "Recheck the history alone: `safenet chaos check --model eventstore streams.jsonl`."]
    return lines


def plot_latency_cdf(result: RunResult, path: Path) -> Path | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_kind: dict[str, list[float]] = {}
    for lat in result.latencies:
        if lat.outcome == "ok":
            by_kind.setdefault(lat.f, []).append(lat.seconds * 1000)
    if not by_kind:
        plt.close(fig)
        return None
    for f, values in sorted(by_kind.items()):
        values.sort()
        ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=f"{f} (n={len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, virtual)")
    ax.set_ylabel("share of operations")
    ax.set_title("Latency CDF of successful operations")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_replicas(result: RunResult, path: Path) -> Path | None:
    if not result.samples:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    items = sorted({s.item for s in result.samples})
    for item in items:
        points = [s for s in result.samples if s.item == item]
        ax.step([s.time for s in points], [s.in_group for s in points], where="post", label=f"{item} (in group)")
    ax.axhline(5, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("close-group members holding the item")
    ax.set_title("Replicas per item over time")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_topology(result: RunResult, path: Path) -> Path | None:
    if not result.topology:
        return None
    import networkx as nx

    plt = _plt()
    graph = nx.DiGraph()
    for node, contacts in result.topology.items():
        graph.add_node(node)
        for contact in contacts:
            graph.add_edge(node, contact)
    fig, ax = plt.subplots(figsize=(7, 7))
    layout = nx.circular_layout(sorted(graph.nodes))
    sizes = [100 + 40 * len(result.topology.get(n, [])) for n in graph.nodes]
    nx.draw_networkx(graph, layout, ax=ax, node_size=sizes, font_size=7, arrows=False, edge_color="#bbbbbb")
    ax.set_title("Routing tables at the end (edge: the node knows the contact)")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ============================================================================ many runs


def write_batch_report(rows: Iterable[dict[str, Any]], directory: str | Path, *, title: str, wall: float) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["seed"])
    failed = [r for r in rows if not r["valid"]]
    _json(out / "summary.json", {"title": title, "runs": len(rows), "failed": len(failed), "wall_s": round(wall, 2),
                                 "results": rows})
    lines = [f"# {title}", "", f"{len(rows)} runs, {len(failed)} failed, {wall:.1f} s wall.", ""]
    if failed:
        lines += ["## Failing seeds", ""]
        for r in failed:
            lines += [f"- seed {r['seed']}: {'; '.join(r['failures'])}  ", f"  replay: `{r['replay']}`"]
        lines.append("")
    lines += ["## All runs", "", "| seed | status | wall s | messages | faults | digest |", "|---|---|---|---|---|---|"]
    for r in rows:
        faults = sum(r["faults"].values())
        lines.append(f"| {r['seed']} | {r['status']} | {r['wall_s']} | {r['messages']} | {faults} "
                     f"| `{r['digest'][:12]}` |")
    md = out / "summary.md"
    md.write_text("\n".join(lines) + "\n")
    return md


# ============================================================================ routing only


def write_routing_report(figures: dict[str, Any], hops: list[int], directory: str | Path) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _json(out / "routing.json", figures)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if hops:
        top = max(hops)
        ax.hist(hops, bins=range(0, top + 2), align="left", rwidth=0.8)
    ax.set_xlabel("lookup rounds (hops)")
    ax.set_ylabel("lookups")
    ax.set_title(f"Lookup hops, {figures['nodes']} nodes, {figures['lookups']} lookups")
    fig.tight_layout()
    fig.savefig(out / "hops.png", dpi=90)
    plt.close(fig)
    lines = [f"# Routing-only simulation: {figures['nodes']} nodes", ""]
    lines += [f"- {k}: {v}" for k, v in figures.items()]
    lines += ["", "![hops](hops.png)", ""]
    md = out / "routing.md"
    md.write_text("\n".join(lines))
    return md
