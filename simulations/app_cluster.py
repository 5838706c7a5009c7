"""`chaos run app --mode cluster`: the app on a real local cluster, in a process of its own
that is SIGKILLed mid-command, while the scenario's node faults run (docs/app-chaos.md).

The parent starts the cluster (or uses `--cluster DIR`), makes the app's database and runs
its setup commands, then starts the *app worker* - `python -m simulations.app_cluster
worker ...` - which runs the command clients, projection agents and process-manager
runners (agents and runners are also killed at random requests inside it, as in the
simulator). Every few seconds the parent SIGKILLs the worker and starts a new one, which
goes on with the commands its predecessor had not taken - first re-sending, with the same
id, any whose outcome it never learnt (an outbox that survives the crash). Each command is
journalled (invoke, then outcome) to a file, one flushed line at a time, so the parent
knows what was acknowledged before the kill. At the end the parent kills the worker, heals
every fault, waits, catches the process managers and projections up, reads everything
back and runs the same checks as the simulator.

Time is real, so a seed fixes the commands and the order of the faults, not their timing.
`eventsourcing` apps run in the simulator only.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from node.launcher import LocalCluster

from .app_chaos import AppDriver, AppRunResult
from .app_spec import ChaosApp, load_app
from .determinism import sub_rng
from .history import History
from .scenarios import Scenario
from .trace import Trace
from .workloads import Workload

WORKER_LIFE = (1.0, 8.0)  # seconds an app worker runs commands before its SIGKILL


def _journal_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the last line of a killed worker may be cut short
    return records


def history_from_journals(paths: list[Path]) -> tuple[History, int, list[dict[str, Any]]]:
    """The commands of every worker incarnation as one history; how many commands were
    taken from the generator; and those whose outcome no incarnation learnt."""
    history = History()
    taken: set[str] = set()
    outcomes: dict[str, str] = {}
    unknown: dict[str, dict[str, Any]] = {}
    for path in paths:
        ops: dict[int, Any] = {}
        for record in _journal_records(path):
            if "op" not in record:
                continue  # "ready"
            if record["type"] == "invoke":
                ops[record["op"]] = history.invoke(f"{path.stem}/{record['process']}", record["key"], record["f"],
                                                   record["value"], record["time"])
                if record["process"].startswith("client"):
                    taken.add(record["value"]["id"])
                    unknown[record["value"]["id"]] = record
            elif record["op"] in ops:
                op = ops[record["op"]]
                if record["type"] == "ok":
                    history.ok(op, record["output"], record["time"])
                elif record["type"] == "fail":
                    history.fail(op, record["error"], record["time"])
                else:
                    history.info(op, record["time"], record["error"])
                if record["type"] in ("ok", "fail"):
                    outcomes[op.value["id"]] = record["type"]
                    unknown.pop(op.value["id"], None)
    return history, len(taken), list(unknown.values())


# ============================================================================ the worker


async def _worker(app_spec: str, seed: int, cluster_dir: str, journal: str, previous: list[str]) -> None:
    from eventstore.cqrs import Command

    from .cluster_chaos import ClusterTarget

    app = load_app(app_spec)
    cluster = LocalCluster(cluster_dir)
    trace = Trace()
    target = ClusterTarget(cluster, trace, sub_rng(f"{seed}:{journal}", "app-worker"))
    workload = Workload(target, Scenario("app", "").workload, seed)  # type: ignore[arg-type]
    driver = AppDriver(app, target, workload, trace, seed)
    _history, taken, unknown = history_from_journals([Path(p) for p in previous])
    driver.skip(taken)
    out = open(journal, "a", buffering=1)  # noqa: SIM115 - one line at a time until the SIGKILL

    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, default=str) + "\n")
        out.flush()

    driver.journal = write
    # The outbox: commands a killed predecessor sent without learning their outcome go first.
    outbox = []
    for record in unknown:
        for cls in _command_types(app):
            if cls.type_name == record["f"]:
                outbox.append(cls.from_data(record["value"]))
    pending = iter(outbox)
    generator_next = driver.next_command

    def next_command() -> Command | None:
        return next(pending, None) or generator_next()

    driver.next_command = next_command  # type: ignore[method-assign]
    write({"type": "ready"})
    async with trio.open_nursery() as nursery:
        driver.start(nursery)


def _command_types(app: ChaosApp) -> list[Any]:
    """Every Command class the app's modules define (for rebuilding outbox commands)."""
    from eventstore.cqrs import Command

    seen: dict[str, Any] = {}
    stack = list(Command.__subclasses__())
    while stack:
        cls = stack.pop()
        seen.setdefault(cls.type_name, cls)
        stack.extend(cls.__subclasses__())
    return list(seen.values())


# ============================================================================ the parent


async def _ready(journal: Path, process: trio.Process) -> None:
    """Until the worker says it is ready (or has died)."""
    while process.poll() is None:
        if journal.exists() and '"ready"' in journal.read_text():
            return
        await trio.sleep(0.2)


def run_app_cluster(app: Any, seed: int, *, app_spec: str, scenario: Scenario, data_dir: str | None = None,
                    extra_args: str = "", log: Any = print) -> AppRunResult:
    if not isinstance(app, ChaosApp):
        raise ValueError("cluster mode runs apps of the CQRS library; an eventsourcing app runs with --mode sim")
    return trio.run(_run, app, seed, app_spec, scenario, data_dir, extra_args, log)


async def _run(app: ChaosApp, seed: int, app_spec: str, scenario: Scenario, data_dir: str | None, extra_args: str,
               log: Any) -> AppRunResult:
    from node.clusterfile import ClusterError
    from node.tools import open_tools

    from .app_checks import judge_app
    from .cluster_chaos import ClusterNemesis, ClusterTarget

    started = time.perf_counter()
    made_dir = data_dir is None
    directory = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="safenet-app-chaos-"))
    cluster = LocalCluster(directory)
    trace = Trace()
    rng = sub_rng(seed, "app-cluster")
    journals_dir = Path(tempfile.mkdtemp(prefix="safenet-app-journal-"))
    journals: list[Path] = []
    kills = 0
    log(f"starting a {scenario.nodes}-node cluster in {directory} ...")
    await cluster.up(scenario.nodes, replication=5)
    try:
        target = ClusterTarget(cluster, trace, sub_rng(seed, "cluster-clients"))
        workload = Workload(target, scenario.workload, seed)  # type: ignore[arg-type]
        driver = AppDriver(app, target, workload, trace, seed)
        await driver.setup()
        async with open_tools(cluster.admin_keys(), timeout=5.0) as tools:
            nemesis = ClusterNemesis(target, tools, sub_rng(seed, "nemesis"), scenario.faults, workload,
                                     scenario.nemesis.interval, scenario.nemesis.duration)
            until = trio.current_time() + scenario.duration
            log(f"running {app.name} for {scenario.duration:g} s (seed {seed}), its worker SIGKILLed every "
                f"{WORKER_LIFE[0]:g}-{WORKER_LIFE[1]:g} s ...")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(nemesis.run, until)
                while trio.current_time() < until:
                    journal = journals_dir / f"w{len(journals)}.jsonl"
                    command = [sys.executable, "-m", "simulations.app_cluster", "worker", app_spec, str(seed),
                               str(directory), str(journal), *map(str, journals)]
                    journals.append(journal)
                    errors = journal.with_suffix(".err")
                    with errors.open("wb") as stderr:
                        process = await trio.lowlevel.open_process(command, stderr=stderr)
                    with trio.move_on_at(until):
                        await _ready(journal, process)  # Python and the app take a while to import
                        await trio.sleep(rng.uniform(*WORKER_LIFE))
                    if process.poll() is not None:  # it died on its own: that is the app's bug, or ours
                        tail = errors.read_text(errors="replace").strip().splitlines()[-5:]
                        raise RuntimeError(f"the app worker exited with {process.returncode}: " + " | ".join(tail))
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    kills += 1
                    trace.event(trio.current_time(), "fault", "app-worker-sigkill", worker=len(journals) - 1)
            workload.stopping = True
            await nemesis.heal_all()
            log(f"healed; {scenario.quiet:g} s quiet, then the final catch-up and reads ...")
            await trio.sleep(scenario.quiet)
            target.reload()
            history, _taken, _unknown = history_from_journals(journals)
            setup_history = driver.history
            final, raw = await driver.finish()
            for op in setup_history.ops():  # the setup commands ran in this process
                replayed = history.invoke(op.process, op.key, op.f, op.value, op.invoke_time)
                if op.type == "ok":
                    history.ok(replayed, op.output, op.complete_time)
            report = judge_app(app, history, final, raw)
    finally:
        with contextlib.suppress(ClusterError, OSError):
            cluster.down(purge=made_dir)
        for journal in journals:
            with contextlib.suppress(OSError):
                journal.unlink()
            with contextlib.suppress(OSError):
                journal.with_suffix(".err").unlink()
        with contextlib.suppress(OSError):
            journals_dir.rmdir()
    counts = _counts(history)
    counts["worker:sigkilled"] = kills
    return AppRunResult(
        app=app.name, app_spec=app_spec, seed=seed, mode="cluster", scenario=scenario.name, nodes=scenario.nodes,
        duration=scenario.duration, digest=trace.digest(), report=report, final=final, history=history,
        counts=dict(sorted(counts.items())), faults=dict(sorted(nemesis.counts.items())),
        wall=time.perf_counter() - started, extra_args=extra_args,
    )


def _counts(history: History) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in history.ops():
        key = f"command:{op.outcome}"
        out[key] = out.get(key, 0) + 1
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "worker":
        trio.run(_worker, sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:])
    else:
        sys.exit("usage: python -m simulations.app_cluster worker APP SEED CLUSTER_DIR JOURNAL [PREVIOUS ...]")
