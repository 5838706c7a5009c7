"""Your app under chaos: a user's event-sourced application, driven by its own command
generator while the scenario's faults run, then checked for its exactly-once promises and
its own invariants (docs/app-chaos.md).

    safenet chaos run app --app examples.bank:app --seeds 1..20
    safenet chaos run app --app examples.bank:app --mode cluster

In the simulator everything - the nodes, the event store, and the app's command handlers,
projection agents and process managers - runs in one trio loop under the seeded scheduler
and the virtual clock, so a failing seed replays to the same trace digest. The app's
processes are killed too: each projection agent and process-manager runner is cancelled
(kill -9, for all it knows: only the network remembers) at a random request, before it is
sent or after it took effect but before the reply, and starts again; command clients are
crashed by the scenario's `client-crash`.

A run: boot the nodes, make the database, run the app's `setup` commands, then its command
clients, agents and runners while the nemesis attacks; heal; wait; catch every process
manager and projection up with a fresh process; read the log and the saved states; judge
(simulations.app_checks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from eventstore.cqrs import (
    Command,
    DomainError,
    ProcessRunner,
    ProjectionAgent,
    Repository,
)
from eventstore.cqrs.follower import SavedStream
from eventstore.cqrs.process import STEP
from eventstore.database import Database, DatabaseInfo
from eventstore.errors import EventStoreError, StreamNotFound
from eventstore.store import EventStore
from node import errors as E
from node.keys import Keypair

from .app_spec import ChaosApp, FinalState
from .checker import Report
from .determinism import run_seeded, sub_rng
from .faults import NemesisConfig
from .history import History
from .scenarios import Scenario
from .trace import Trace
from .workloads import Workload, WorkloadConfig

RETRIES = 3  # a command whose outcome is unknown is sent again (same id) this many times
KILL_REQUESTS = (5, 60)  # an agent or runner is killed at a request drawn from this range
FINAL_ATTEMPTS = 12  # the final catch-up and reads, tried again after network errors
EPOCH = 1_500_000_000.0  # the store's clock: virtual seconds after this instant

# The faults an app run suffers by default (`--scenario` picks another scenario's menu).
APP_SCENARIO = Scenario(
    "app", "your app's commands, projections and process managers under kills, pauses, partitions, "
    "lost replies and crashed clients",
    {"kill": 1.0, "pause": 0.5, "partition-one": 1.0, "partition-halves": 0.5, "client-crash": 1.0, "loss": 0.5},
    NemesisConfig(interval=4.0),
    workload=WorkloadConfig(processes=0, chunk_processes=0, mds=0),
    nodes=8, duration=30.0, quiet=10.0,
)


@dataclass
class AppRunResult:
    """One seed of one app: the verdict and what it takes to replay it."""

    app: str
    app_spec: str
    seed: int
    mode: str
    scenario: str
    nodes: int
    duration: float
    digest: str
    report: Report
    final: FinalState | None = None
    history: History | None = None
    counts: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    virtual: float = 0.0
    messages: int = 0
    extra_args: str = ""  # --commands / --invariant / --faults as given, for the replay line
    quiet: float | None = None  # set when it differs from the default

    @property
    def valid(self) -> bool:
        return self.report.valid

    @property
    def status(self) -> str:
        return self.report.status

    def replay_command(self) -> str:
        line = (f"safenet chaos run app --app {self.app_spec}{self.extra_args} --seed {self.seed} "
                f"--nodes {self.nodes} --duration {self.duration:g} --mode {self.mode}")
        if self.quiet is not None:
            line += f" --quiet {self.quiet:g}"
        if self.mode == "cluster":
            line += "  (real time: the same faults and commands, not the same timing)"
        return line

    def failures(self) -> list[str]:
        return [f"{name}: {c.status}" + (f" ({len(c.anomalies)} anomalies)" if c.anomalies else f" ({c.reason})")
                for name, c in self.report.checks.items() if not c.valid]

    def summary(self) -> dict[str, Any]:
        return {
            "app": self.app, "seed": self.seed, "mode": self.mode, "scenario": self.scenario, "nodes": self.nodes,
            "duration": self.duration, "status": self.status, "valid": self.valid, "failures": self.failures(),
            "digest": self.digest, "replay": self.replay_command(), "wall_s": round(self.wall, 3),
            "virtual_s": round(self.virtual, 3), "messages": self.messages, "ops": self.counts,
            "faults": self.faults,
            "checks": {name: {"status": c.status, "stats": c.stats, "reason": c.reason,
                              "anomalies": [str(a) for a in c.anomalies[:10]]}
                       for name, c in self.report.checks.items()},
        }


# ============================================================================ one run's processes


def seeded_id(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


class AppDriver:
    """The app's processes in one run, on any target with `.client(keys=...)` (the
    simulator, or a cluster). Records every command in `history` and into the trace."""

    def __init__(self, app: ChaosApp, target: Any, workload: Workload, trace: Trace, seed: int) -> None:
        self.app = app
        self.target = target
        self.workload = workload
        self.trace = trace
        self.seed = seed
        self.rng = sub_rng(seed, "app")
        self.history = History()
        self.counts: Counter[str] = Counter()
        self.processes = [f"client{i}" for i in range(app.clients)] + \
            [f"agent:{p.name}" for p in app.projections] + [f"runner:{m.name}" for m in app.managers] + ["final"]
        self.keys = {name: Keypair.generate(self.rng) for name in ["owner", *self.processes]}
        writers = tuple(bytes(k.public) for k in self.keys.values())
        self.info = DatabaseInfo(app.database, self.rng.randbytes(32), None, 2, 1000, 1000, 0, writers)
        self._commands: Iterator[Any] = iter(app.commands(sub_rng(seed, "app:commands")) if app.commands else ())
        self._ids = sub_rng(seed, "app:command-ids")
        self._exhausted = False
        self._pids = 0
        self.journal: Callable[[dict[str, Any]], None] | None = None  # each record, as it is made (cluster mode)

    def skip(self, taken: int) -> None:
        """Move past the setup and the first `taken` commands (a restarted worker process
        goes on where its killed predecessor stopped: the same commands, the same ids)."""
        for _ in self.app.setup:
            seeded_id(self._ids)
        for _ in range(taken):
            self.next_command()

    # ------------------------------------------------------------------ helpers

    def store(self, client: Any) -> EventStore:
        return EventStore(client, clock=lambda: EPOCH + trio.current_time(), pending_grace=1.0, poll_interval=0.2)

    def note(self, what: str, **details: Any) -> None:
        self.trace.event(trio.current_time(), "op", what, **details)

    def next_command(self) -> Command | None:
        if self._exhausted:
            return None
        try:
            command = next(self._commands)
        except StopIteration:
            self._exhausted = True
            return None
        if isinstance(command, Command):
            command = dataclasses.replace(command, id=seeded_id(self._ids))
        return command

    def new_pid(self, process: str) -> str:
        self._pids += 1
        return f"{process}#{self._pids}"

    async def open_db(self, client: Any) -> Database:
        return await self.store(client).add_database(self.info)

    # ------------------------------------------------------------------ setup

    async def setup(self) -> None:
        """Make the database and run the app's setup commands, in order, before any fault."""
        # Ids drawn once: a setup retried after a network failure sends the same commands.
        commands = [dataclasses.replace(c, id=seeded_id(self._ids)) for c in self.app.setup]
        for _ in range(20):
            try:
                async with self.target.client(keys=self.keys["owner"], timeout=20.0) as client:
                    db = await self.open_db(client)
                    handler = self.app.handler(Repository(db))
                    pid = self.new_pid("setup")
                    for command in commands:
                        while await self.execute(handler, command, pid) == "info":
                            await trio.sleep(1.0)
                    return
            except (E.SafeError, EventStoreError, trio.TooSlowError):
                await trio.sleep(1.0)
        raise RuntimeError("could not set the app up: the network never answered")

    # ------------------------------------------------------------------ commands

    async def execute(self, handler: Any, command: Command, pid: str) -> str:
        started = trio.current_time()
        value = {"id": str(command.id), **{k: v for k, v in command.to_data().items()
                                          if k not in ("id", "correlation_id", "causation_id", "expected_version")}}
        op = self.history.invoke(pid, command.stream, command.type_name, value, started)
        if self.journal is not None:
            self.journal({"type": "invoke", "op": op.index, "process": pid, "key": command.stream,
                          "f": command.type_name, "value": value, "time": started})
        try:
            result = await handler.execute(command)
        except DomainError as exc:
            self.history.fail(op, f"{type(exc).__name__}: {exc}", trio.current_time())
            outcome = "fail"
        except Exception as exc:  # noqa: BLE001 - a network failure, ConcurrencyConflict...: the outcome is unknown
            self.history.info(op, trio.current_time(), f"{type(exc).__name__}: {exc}")
            outcome = "info"
        except BaseException:
            self.history.info(op, trio.current_time(), "process killed")
            self.counts["command:killed"] += 1
            self.note("app:killed", cmd=command.type_name, stream=command.stream, op=op.index)
            raise
        else:
            self.history.ok(op, {"version": result.version, "changed": result.changed,
                                 "duplicate": result.duplicate, "position": result.position}, trio.current_time())
            outcome = "ok"
        if self.journal is not None:
            self.journal({"type": op.type, "op": op.index, "output": op.output, "error": op.error,
                          "time": op.complete_time})
        self.counts[f"command:{outcome}"] += 1
        self.note(f"app:{outcome}", cmd=command.type_name, stream=command.stream, op=op.index)
        return outcome

    async def client_process(self, number: int) -> None:
        """A command client: the next command from the app's generator, sent until its
        outcome is known (the same command, same id, at most RETRIES more times)."""
        name = f"client{number}"
        rng = sub_rng(self.seed, f"app:{name}")
        retry: list[tuple[Command, int]] = []

        async def body(client: Any) -> None:
            db = await self.open_db(client)
            handler = self.app.handler(Repository(db))
            pid = self.new_pid(name)
            while not self.workload.stopping:
                if retry:
                    command, tries = retry.pop()
                else:
                    fresh = self.next_command()
                    if fresh is None:
                        await trio.sleep_forever()
                        return
                    command, tries = fresh, 0
                outcome = await self.execute(handler, command, pid)
                if outcome == "info":
                    pid = self.new_pid(name)
                    if tries < RETRIES:
                        retry.append((command, tries + 1))
                await trio.sleep(rng.expovariate(2.0))

        await self.workload.with_clients(7000 + number, body, keys=self.keys[name])

    # ------------------------------------------------------------------ agents and runners

    async def killed_again_and_again(self, name: str, make: Callable[[Database, random.Random], Any]) -> None:
        """Run `make(db, rng)` (a coroutine that follows the log forever) in a process that
        is killed at a random request - before it is sent, or once it took effect but
        before its reply - and restarted, until the run stops."""
        rng = sub_rng(self.seed, f"app:{name}")
        while not self.workload.stopping:
            with trio.CancelScope() as scope:
                try:
                    async with self.target.client(keys=self.keys[name], timeout=20.0) as client:
                        kill_at_request(client, rng.randint(*KILL_REQUESTS), scope, after_reply=rng.random() < 0.5)
                        db = await self.open_db(client)
                        await make(db, rng)
                except* (E.SafeError, EventStoreError, trio.TooSlowError) as group:
                    self.counts[f"{name}:errors"] += 1
                    self.note("app:process-error", process=name, error=type(group.exceptions[0]).__name__)
                    await trio.sleep(1.0)
            if scope.cancelled_caught:
                self.counts[f"{name}:killed"] += 1
                self.note("app:process-killed", process=name)
                await trio.sleep(rng.uniform(0.2, 2.0))

    async def agent_process(self, index: int) -> None:
        projection = self.app.projections[index]

        async def follow(db: Database, rng: random.Random) -> None:
            await ProjectionAgent(db, [projection], save_every=rng.choice((1, 2, 5, 20))).run()

        await self.killed_again_and_again(f"agent:{projection.name}", follow)

    async def runner_process(self, index: int) -> None:
        manager = self.app.managers[index]

        async def follow(db: Database, rng: random.Random) -> None:
            await ProcessRunner(db, manager, self.app.handler(Repository(db))).run()

        await self.killed_again_and_again(f"runner:{manager.name}", follow)

    def start(self, nursery: trio.Nursery) -> None:
        for i in range(self.app.clients):
            nursery.start_soon(self.client_process, i)
        for i in range(len(self.app.projections)):
            nursery.start_soon(self.agent_process, i)
        for i in range(len(self.app.managers)):
            nursery.start_soon(self.runner_process, i)

    # ------------------------------------------------------------------ the end

    async def finish(self) -> tuple[FinalState, dict[str, Any]]:
        """With every fault healed: catch the process managers and projections up (a fresh
        process each), then read the log and every saved state."""
        last: BaseException | None = None
        for _ in range(FINAL_ATTEMPTS):
            try:
                async with self.target.client(keys=self.keys["final"], timeout=20.0) as client:
                    db = await self.open_db(client)
                    return await self._finish(db)
            except* (E.SafeError, EventStoreError, trio.TooSlowError) as group:
                last = group.exceptions[0]
                self.note("app:final-retry", error=type(last).__name__)
                await trio.sleep(2.0)
        raise RuntimeError(f"the final catch-up never got through: {last!r}")

    async def _finish(self, db: Database) -> tuple[FinalState, dict[str, Any]]:
        from eventstore.cqrs import projection_history
        from eventstore.cqrs.streams import is_internal

        for _ in range(4):  # a manager's commands may wake another manager
            sent = 0
            for manager in self.app.managers:
                runner = ProcessRunner(db, manager, self.app.handler(Repository(db)))
                await runner.catch_up()
                sent += runner._sent
            if not sent:
                break
        if self.app.projections:
            await ProjectionAgent(db, list(self.app.projections)).catch_up()
        log = await db.read_all()
        events = [e for e in log if not e.is_system and not is_internal(e.stream)]
        saves = {p.name: await projection_history(db, p.name) for p in self.app.projections}
        steps = {}
        for manager in self.app.managers:
            try:
                steps[manager.name] = await db.read_stream(manager.stream)
            except StreamNotFound:
                steps[manager.name] = []
        managers = {}
        for manager in self.app.managers:
            saved = await SavedStream(db, manager.stream, STEP).load()
            managers[manager.name] = None if saved is None else saved.data.get("state")
        final = FinalState(events, {name: (s[-1].state if s else None) for name, s in saves.items()}, managers,
                           tuple(self.app.aggregates))
        return final, {"log": log, "projection_saves": saves, "steps": steps}


def kill_at_request(client: Any, number: int, scope: trio.CancelScope, *, after_reply: bool) -> None:
    """Cancel `scope` at the client's `number`-th request: before it is sent, or once it
    took effect but before its reply is seen - as kill -9 of the process would."""
    send = client._send
    count = 0

    async def counting(request: Any) -> Any:
        nonlocal count
        count += 1
        mine = count
        if mine == number and not after_reply:
            scope.cancel()
            await trio.lowlevel.checkpoint()
        try:
            return await send(request)
        finally:
            if mine == number:
                scope.cancel()
                await trio.lowlevel.checkpoint()

    client._send = counting


# ============================================================================ the simulator


def run_app_sim(app: Any, seed: int, *, app_spec: str, scenario: Scenario = APP_SCENARIO,
                extra_args: str = "") -> AppRunResult:
    """Play `scenario` with `app` for `seed` in the deterministic simulator and judge it."""
    from .app_es import EsChaosApp

    started = time.perf_counter()
    if isinstance(app, EsChaosApp):
        from .app_es import play_es_app

        result = run_seeded(play_es_app, app, scenario, seed, seed=seed)
    else:
        result = run_seeded(_play, app, scenario, seed, seed=seed)
    result.app_spec, result.extra_args = app_spec, extra_args
    if scenario.quiet != APP_SCENARIO.quiet:
        result.quiet = scenario.quiet
    result.wall = time.perf_counter() - started
    return result


@contextlib.asynccontextmanager
async def played_under_faults(scenario: Scenario, seed: int, trace: Trace,
                              make_driver: Callable[[Any, Workload], Any]) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Boot the scenario's nodes, set the app's driver up, run it under the scenario's faults
    for its duration, heal and wait the quiet period; yield (sim, driver, nemesis) for the
    final reads. Shared by our CQRS apps and `eventsourcing` ones (simulations/app_es.py)."""
    from .faults import Nemesis
    from .run import settle_time
    from .simulator import Simulator

    async with Simulator.open(seed, link=scenario.link, trace=trace) as sim:
        for _ in range(scenario.nodes):
            await sim.add_node()
        await trio.sleep(settle_time(scenario.nodes))
        workload = Workload(sim, scenario.workload, seed)
        driver = make_driver(sim, workload)
        await driver.setup()
        nemesis = Nemesis(sim, sub_rng(seed, "nemesis"), scenario.faults, scenario.nemesis, workload)
        until = sim.now + scenario.duration
        async with trio.open_nursery() as processes:
            driver.start(processes)
            async with trio.open_nursery() as chaos:
                chaos.start_soon(nemesis.run, until)
                await trio.sleep_until(until)
                chaos.cancel_scope.cancel()
            workload.stopping = True
            processes.cancel_scope.cancel()  # the app's processes stop where they are
        await nemesis.heal_all()
        await trio.sleep(scenario.quiet)
        yield sim, driver, nemesis


async def _play(app: ChaosApp, scenario: Scenario, seed: int) -> AppRunResult:
    from .app_checks import judge_app

    trace = Trace()
    async with played_under_faults(scenario, seed, trace,
                                   lambda sim, workload: AppDriver(app, sim, workload, trace, seed)) as (
            sim, driver, nemesis):
        final, raw = await driver.finish()
        report = judge_app(app, driver.history, final, raw)
        return AppRunResult(
            app=app.name, app_spec="", seed=seed, mode="sim", scenario=scenario.name, nodes=scenario.nodes,
            duration=scenario.duration, digest=trace.digest(), report=report, final=final, history=driver.history,
            counts=dict(sorted(driver.counts.items())), faults=dict(sorted(nemesis.counts.items())),
            virtual=sim.now, messages=trace.delivered,
        )
