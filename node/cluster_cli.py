"""`safenet cluster`: the launcher (`node.launcher.LocalCluster`) on the command line.

Every command takes `--cluster DIR` (or the cluster.json in it; `--data-dir` is the old
name, kept) and prints JSON with `--json`, except `logs`, which prints the log file as it is
(node.log is JSON lines already). Errors and exit codes follow docs/cli.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from .clikit import CONTEXT, SafenetGroup, fail, json_option, run_async
from .clusterfile import ENV_VAR, cluster_dir, default_data_dir, human_bytes, parse_name
from .exitcodes import NOT_FOUND
from .launcher import (
    DEFAULT_REPLICATION,
    NODE_LOG_FILE,
    START_TIMEOUT,
    STDERR_FILE,
    STDOUT_FILE,
    STOP_TIMEOUT,
    LocalCluster,
    NodeReport,
    Progress,
    WaitState,
)

# =============================================================================== output


def _human_seconds(t: float | None) -> str:
    if t is None:
        return "-"
    t = float(t)
    if t < 120:
        return f"{t:.0f}s"
    if t < 7200:
        return f"{t / 60:.0f}m"
    return f"{t / 3600:.1f}h"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def status_table(reports: list[NodeReport], paused: set[int] | frozenset[int] = frozenset()) -> str:
    headers = ["#", "id", "address", "pid", "alive", "ready", "contacts", "chunks", "MDs",
               "stored", "uptime", "msgs in/out", "client reqs"]
    rows = []
    for report in reports:
        j = report.to_json()
        s = report.status
        alive = "yes" if report.alive else "no"
        if report.entry.remote:
            alive = "remote" if s is not None else "remote (silent)"
        elif report.alive and s is None:
            alive = "paused" if report.entry.index in paused else "yes (silent)"
        rows.append([
            str(j["index"]), j["id"][:16], j["address"], str(j["pid"] or "-"), alive,
            "-" if s is None else ("yes" if s.get("ready") else "no"),
            "-" if s is None else str(s.get("contacts")),
            "-" if s is None else str(s.get("chunks")),
            "-" if s is None else str(s.get("mds")),
            human_bytes(None if s is None else s.get("bytes")),
            _human_seconds(None if s is None else s.get("uptime")),
            "-" if s is None else f"{sum((s.get('msgs_in') or {}).values())}/{sum((s.get('msgs_out') or {}).values())}",
            "-" if s is None else str(sum((s.get("client_requests") or {}).values())),
        ])
    return _table(headers, rows)


def _progress_printer() -> Progress:
    """Progress on stderr: one line rewritten in place on a terminal, a line every 2 s
    otherwise (logs and CI)."""
    stream = sys.stderr
    tty = stream.isatty()
    last = {"t": -10.0}

    def show(state: WaitState) -> None:
        line = (f"waiting {state.elapsed:4.1f}s: {state.answering}/{state.total} answering, "
                f"{state.ready} ready, {state.converged} with >= {state.want_contacts} contacts")
        if tty:
            click.echo("\r" + line.ljust(78), nl=False, err=True)
            if state.converged == state.total:
                click.echo("", err=True)
        elif state.elapsed - last["t"] >= 2.0 or state.converged == state.total:
            last["t"] = state.elapsed
            click.echo(line, err=True)

    return show



# =============================================================================== commands


def _cluster_here(given: Path | None) -> LocalCluster:
    return LocalCluster(cluster_dir(given) if given is not None else default_data_dir())


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


cluster_dir_option = click.option(
    "--cluster", "--data-dir", "data_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
    help=f"The cluster's directory or its cluster.json [default: ./.safenet, or the dir ${ENV_VAR} "
         "points into]. --data-dir is the same option under its old name.")


@click.group(cls=SafenetGroup, context_settings=CONTEXT)
def cluster() -> None:
    """Run a local cluster: node processes on 127.0.0.1, kept in one data dir.

    \b
    safenet cluster up --nodes 8          start 8 nodes in ./.safenet
    safenet cluster status                who is up, what each stores
    safenet cluster locate NAME           an item's close group and its holders
    safenet cluster kill 3                crash node 3 (SIGKILL); `start 3` brings it back
    safenet cluster down                  stop them all (data is kept)
    """


@cluster.command()
@click.option("--nodes", "-n", type=click.IntRange(min=1), default=None,
              help="How many nodes (new cluster only) [default: 8].")
@cluster_dir_option
@click.option("--base-port", type=click.IntRange(1, 65535), default=None,
              help="Node i listens on BASE_PORT + i [default: free ports are picked].")
@click.option("--netns", "netns_mode", is_flag=True,
              help="Each node in its own network namespace on a bridge, so `cluster fault` cuts "
                   "links with nftables in the kernel (Linux, root, `ip` and `nft`; new cluster only).")
@click.option("--host", default=None, metavar="ADDR",
              help="The address the nodes listen on, e.g. this machine's LAN address so nodes "
                   "on other machines can join (new cluster only) [default: 127.0.0.1].")
@click.option("--replication", "-r", type=click.IntRange(min=1), default=None,
              help=f"R: nodes in each item's close group (new cluster only) [default: {DEFAULT_REPLICATION}].")
@click.option("--timeout", type=click.FloatRange(min=0), default=START_TIMEOUT, show_default=True,
              help="Seconds to wait for the nodes to be ready and routing to converge.")
@json_option
def up(nodes: int | None, data_dir: Path | None, base_port: int | None, netns_mode: bool, host: str | None,
       replication: int | None, timeout: float, as_json: bool) -> None:
    """Start a cluster, or restart the stopped nodes of an existing one.

    Returns once every node answers, is ready, and knows min(N-1, 20) others; then writes
    DIR/cluster.json (which clients read) and prints a table of the nodes.
    """
    lc = _cluster_here(data_dir)
    existed = lc.exists()
    if existed and nodes is not None and nodes != len(lc.load().nodes):
        click.echo(f"note: the cluster in {lc.data_dir} has {len(lc.load().nodes)} nodes; "
                   "use `safenet cluster add` to grow it", err=True)
    t0 = time.monotonic()
    info = run_async(lc.up, nodes, replication=replication, base_port=base_port, timeout=timeout,
                     progress=_progress_printer(), host=host, netns_mode=netns_mode)
    took = time.monotonic() - t0
    reports = run_async(lc.status)
    verb = "restarted" if existed else "started"
    if as_json:
        _echo_json({"cluster": str(lc.file), "action": verb, "seconds": round(took, 3),
                    "replication": info.replication, "admin": info.admin,
                    "nodes": [r.to_json() for r in reports]})
        return
    click.echo(status_table(reports))
    click.echo(f"{verb} in {took:.1f}s: {len(info.nodes)} nodes, replication {info.replication}; "
               f"cluster file {lc.file}")


@cluster.command()
@cluster_dir_option
@json_option
def status(data_dir: Path | None, as_json: bool) -> None:
    """Each node: id, address, pid, alive, contacts, chunks, MDs, bytes, uptime, messages.

    `alive` means the process runs; `responding` (JSON) that it answered within 3 s.
    """
    lc = _cluster_here(data_dir)
    info = lc.load()
    reports = run_async(lc.status)
    state = _faults(data_dir).load()
    if as_json:
        nodes = [dict(r.to_json(), paused=r.entry.index in state.paused) for r in reports]
        _echo_json({"cluster": str(lc.file), "replication": info.replication,
                    "admin": info.admin, "nodes": nodes,
                    "faults": dict(state.to_json(), summary=state.describe())})
    else:
        click.echo(status_table(reports, paused=state.paused))
        for line in state.describe():
            click.echo(f"fault: {line}")


@cluster.command()
@cluster_dir_option
@click.option("--purge", is_flag=True, help="Also delete the nodes' data, keys, logs and cluster.json.")
@click.option("--timeout", type=click.FloatRange(min=0), default=STOP_TIMEOUT, show_default=True,
              help="Seconds to wait for a clean exit before SIGKILL.")
@json_option
def down(data_dir: Path | None, purge: bool, timeout: float, as_json: bool) -> None:
    """Stop every node (SIGTERM, then SIGKILL after --timeout). Data is kept: `up` restarts it."""
    lc = _cluster_here(data_dir)
    stopped = lc.down(timeout, purge=purge)
    if as_json:
        _echo_json({"cluster": str(lc.file), "stopped": stopped, "purged": purge})
        return
    click.echo(f"stopped {len(stopped)} node(s)" + (f"; removed the cluster in {lc.data_dir}" if purge else ""))


def _report_one(as_json: bool, index: int, key: str, done: bool, yes: str, no: str) -> None:
    """The outcome of a one-node command: JSON, or a line (on stderr when nothing was done,
    which is not an error: the node already was as asked)."""
    if as_json:
        _echo_json({"index": index, key: done})
    elif done:
        click.echo(yes)
    else:
        click.echo(no, err=True)


@cluster.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@json_option
def kill(index: int, data_dir: Path | None, as_json: bool) -> None:
    """Crash node INDEX with SIGKILL (no clean shutdown; its data dir stays)."""
    done = _cluster_here(data_dir).kill(index)
    _report_one(as_json, index, "killed", done, f"killed node {index}", f"node {index} was not running")


@cluster.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@click.option("--timeout", type=click.FloatRange(min=0), default=STOP_TIMEOUT, show_default=True,
              help="Seconds to wait for a clean exit before SIGKILL.")
@json_option
def stop(index: int, data_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Stop node INDEX cleanly (SIGTERM) and wait for it to exit."""
    done = _cluster_here(data_dir).stop(index, timeout)
    _report_one(as_json, index, "stopped", done, f"stopped node {index}", f"node {index} was not running")


@cluster.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@click.option("--timeout", type=click.FloatRange(min=0), default=START_TIMEOUT, show_default=True,
              help="Seconds to wait for it to rejoin.")
@json_option
def start(index: int, data_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Start stopped node INDEX again, with its data dir and its port; wait until it rejoined."""
    done = run_async(_cluster_here(data_dir).start, index, timeout=timeout, progress=_progress_printer())
    _report_one(as_json, index, "started", done, f"started node {index}", f"node {index} is already running")


@cluster.command()
@click.option("--nodes", "-n", "count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many nodes to add.")
@cluster_dir_option
@click.option("--timeout", type=click.FloatRange(min=0), default=START_TIMEOUT, show_default=True,
              help="Seconds to wait for them to join.")
@json_option
def add(count: int, data_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Add new nodes; they join through the running ones."""
    new = run_async(_cluster_here(data_dir).add, count, timeout=timeout, progress=_progress_printer())
    if as_json:
        _echo_json({"added": [{"index": e.index, "id": e.id, "address": e.address, "pid": e.pid,
                               "data_dir": e.data_dir} for e in new]})
        return
    for entry in new:
        click.echo(f"added node {entry.index} {entry.id} at {entry.address}")


@cluster.command("add-remote")
@click.argument("address")
@cluster_dir_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for the node to answer.")
@json_option
def add_remote(address: str, data_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Record the node answering at ADDRESS (HOST:PORT, on another machine) in cluster.json.

    Start it there first with `safenet node run --listen ... --bootstrap <one of ours>
    --admin-key <this cluster's admin>`; clients reading cluster.json then use it too, and
    `status` shows it. It is never signalled from here: kill, stop and start refuse it.
    """
    from .transport import parse_address

    try:
        parse_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS") from None
    entry = run_async(_cluster_here(data_dir).add_remote, address, timeout=timeout)
    if as_json:
        _echo_json({"added": {"index": entry.index, "id": entry.id, "address": entry.address, "remote": True}})
        return
    click.echo(f"added remote node {entry.index} {entry.id} at {entry.address}")


@cluster.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines as they come (Ctrl-C to stop).")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=None, help="Only the last N lines first.")
@click.option("--stderr", "which", flag_value=STDERR_FILE, help="The process's stderr instead (tracebacks).")
@click.option("--stdout", "which", flag_value=STDOUT_FILE, help="The process's stdout instead.")
def logs(index: int, data_dir: Path | None, follow: bool, lines: int | None, which: str | None) -> None:
    """Print node INDEX's log: one JSON object a line (time, node id, event, fields)."""
    lc = _cluster_here(data_dir)
    entry = lc.node(lc.load(), index)
    path = entry.path / (which or NODE_LOG_FILE)
    if not path.exists():
        fail(f"node {index} has no {path.name} yet ({path})", NOT_FOUND)
    out = sys.stdout
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.readlines()
        for line in text[-lines:] if lines else ([] if lines == 0 else text):
            out.write(line)
        out.flush()
        if not follow:
            return
        try:
            while True:
                line = handle.readline()
                if line:
                    out.write(line)
                    out.flush()
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return


@cluster.command()
@click.argument("name")
@cluster_dir_option
@json_option
def locate(name: str, data_dir: Path | None, as_json: bool) -> None:
    """Where NAME (64 hex digits) lives: its close group as the network reports it, and which
    members hold a copy right now."""
    parse_name(name)
    lc = _cluster_here(data_dir)
    info = lc.load()
    result = run_async(lc.locate, name)
    if as_json:
        _echo_json(result)
        return
    by_id = {e.id: e for e in info.nodes}
    rows = []
    for i, member in enumerate(result["close_group"]):
        entry = by_id.get(member)
        rows.append([str(i + 1), str(entry.index) if entry else "?", member[:16],
                     entry.address if entry else "?", "yes" if member in result["holders"] else "no"])
    click.echo(f"{result['name']}  (asked node {result['asked']})")
    click.echo(_table(["rank", "node", "id", "address", "holds"], rows))
    holders = len(result["holders"])
    click.echo(f"{holders}/{len(result['close_group'])} of the close group hold a copy"
               + (f"; {len(result['others'])} other node(s) still do" if result["others"] else ""))


# =============================================================================== faults


def _faults(data_dir: Path | None) -> Any:
    from .cluster_faults import ClusterFaults  # only the fault commands need it

    return ClusterFaults(_cluster_here(data_dir))


def _nodes_option(help_text: str) -> Any:
    return click.option("--nodes", "nodes", default=None, metavar="I,J,...", help=help_text)


def _report_faults(result: dict[str, Any], as_json: bool, done: str) -> None:
    if as_json:
        _echo_json(result)
        return
    click.echo(done)
    if result.get("unanswered"):
        click.echo(f"note: node(s) {', '.join(map(str, result['unanswered']))} did not answer; "
                   "their rules apply when they do (re-run the command) or restart", err=True)
    summary = result.get("summary") or []
    click.echo("faults in force: " + ("; ".join(summary) if summary else "none"))


@cluster.group(cls=SafenetGroup, context_settings=CONTEXT)
def fault() -> None:
    """Shake a running cluster: partitions, paused nodes, loss, delay, clogged links.

    \b
    safenet cluster fault partition 0,1,2 3,4,5     cut every link between the two sides
    safenet cluster fault partition --one-way 0 1,2 node 0's messages to 1 and 2 are lost
    safenet cluster fault isolate 3                 node 3 alone
    safenet cluster fault pause 2 / resume 2        SIGSTOP / SIGCONT the process
    safenet cluster fault loss 10 --nodes 1,2       1 and 2 lose 10% of what they send
    safenet cluster fault delay 100 --jitter 50     every message waits 50-150 ms
    safenet cluster fault clog 0 1                  the 0-1 link holds each message 5 s
    safenet cluster fault heal                      lift them all
    safenet cluster fault status                    what is in force, node by node

    The faults in force are kept in DIR/faults.json and shown by `cluster status`.
    """


@fault.command()
@click.argument("groups", nargs=-1, required=True)
@click.option("--one-way", is_flag=True,
              help="Only the first side's messages to the others are dropped; the rest still flow.")
@cluster_dir_option
@json_option
def partition(groups: tuple[str, ...], one_way: bool, data_dir: Path | None, as_json: bool) -> None:
    """Cut the links between GROUPS (each like 0,1,2); unlisted nodes form one more side.

    Replaces the partition in force; loss, delay, clogs and pauses stay.
    """
    from .cluster_faults import parse_group

    sides = [parse_group(g) for g in groups]
    result = run_async(_faults(data_dir).partition, sides, one_way=one_way)
    _report_faults(result, as_json, f"partitioned: {len(result['faults']['cuts'])} directed link(s) cut")


@fault.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@json_option
def isolate(index: int, data_dir: Path | None, as_json: bool) -> None:
    """Cut node INDEX off from every other node, both ways (replaces the partition in force)."""
    result = run_async(_faults(data_dir).isolate, index)
    _report_faults(result, as_json, f"isolated node {index}")


@fault.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@json_option
def pause(index: int, data_dir: Path | None, as_json: bool) -> None:
    """Freeze node INDEX (SIGSTOP): alive, holding its connections, answering nothing."""
    done = _faults(data_dir).pause(index)
    _report_one(as_json, index, "paused", done, f"paused node {index}", f"node {index} was already paused")


@fault.command()
@click.argument("index", type=click.IntRange(min=0))
@cluster_dir_option
@json_option
def resume(index: int, data_dir: Path | None, as_json: bool) -> None:
    """Let paused node INDEX run again (SIGCONT)."""
    done = _faults(data_dir).resume(index)
    _report_one(as_json, index, "resumed", done, f"resumed node {index}", f"node {index} was not paused")


def _node_list(text: str | None) -> list[int] | None:
    from .cluster_faults import parse_group

    return None if text is None else parse_group(text)


@fault.command()
@click.argument("percent", type=click.FloatRange(0, 100))
@_nodes_option("Only these nodes (e.g. 1,2) [default: every node].")
@cluster_dir_option
@json_option
def loss(percent: float, nodes: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Drop PERCENT of the messages the nodes send (0 lifts it)."""
    chosen = _node_list(nodes)
    result = run_async(_faults(data_dir).loss, percent, chosen)
    _report_faults(result, as_json, f"loss {percent:g}% on " + (f"node(s) {nodes}" if nodes else "every node"))


@fault.command()
@click.argument("ms", type=click.FloatRange(0, 60_000))
@click.option("--jitter", type=click.FloatRange(0, 60_000), default=0.0, show_default=True, metavar="MS",
              help="Each message waits MS +- JITTER, drawn uniformly (distinct waits reorder).")
@_nodes_option("Only messages these nodes send (e.g. 1,2) [default: every node].")
@cluster_dir_option
@json_option
def delay(ms: float, jitter: float, nodes: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Hold every message the nodes send MS milliseconds (0 lifts it)."""
    chosen = _node_list(nodes)
    result = run_async(_faults(data_dir).delay, ms, jitter, chosen)
    _report_faults(result, as_json, f"delay {ms:g} ms" + (f" +- {jitter:g}" if jitter else "")
                   + " on " + (f"node(s) {nodes}" if nodes else "every node"))


@fault.command()
@click.argument("a", type=click.IntRange(min=0))
@click.argument("b", type=click.IntRange(min=0))
@click.option("--seconds", type=click.FloatRange(0, 3600, min_open=True), default=5.0, show_default=True,
              help="How long each message on the link waits.")
@cluster_dir_option
@json_option
def clog(a: int, b: int, seconds: float, data_dir: Path | None, as_json: bool) -> None:
    """Clog the link between nodes A and B: every message on it, both ways, waits SECONDS."""
    result = run_async(_faults(data_dir).clog, a, b, seconds)
    _report_faults(result, as_json, f"clogged link {a}-{b} ({seconds:g} s a message)")


@fault.command()
@cluster_dir_option
@json_option
def heal(data_dir: Path | None, as_json: bool) -> None:
    """Lift every fault: partitions, clogs, loss and delay; resume paused nodes."""
    result = run_async(_faults(data_dir).heal)
    _report_faults(result, as_json, "healed")


@fault.command("status")
@cluster_dir_option
@json_option
def fault_status(data_dir: Path | None, as_json: bool) -> None:
    """The faults in force, and each node's rules as the node itself reports them."""
    result = run_async(_faults(data_dir).status)
    if as_json:
        _echo_json(result)
        return
    summary = result["summary"]
    click.echo("faults in force: " + ("; ".join(summary) if summary else "none"))
    rows = []
    for n in result["nodes"]:
        state = "paused" if n["paused"] else ("-" if not n["answering"] else
                                              "yes" if n["in_force"] else "NO (re-run the command)")
        rows.append([str(n["index"]), state,
                     "-" if n["blocked_out"] is None else ",".join(map(str, n["blocked_out"])) or "none",
                     "-" if n["blocked_in"] is None else ",".join(map(str, n["blocked_in"])) or "none"])
    click.echo(_table(["#", "rules in force", "drops to", "drops from"], rows))
