"""Apps written with the `eventsourcing` library, under chaos, through this project's
persistence module (eventstore.eventsourcing_module).

    def app() -> EsChaosApp:
        return EsChaosApp(
            "es-bank",
            application=lambda env: Bank(env=env),      # the library's Application, unchanged
            commands=commands,                          # commands(rng) -> callables of the app
            setup=[lambda bank: bank.open("ann", 100)],
            state=lambda bank: bank.balances(),         # read at the end, for the invariants
            invariants=[money_is_conserved],
        )

The library is synchronous; in the simulator it must still run under the seeded scheduler
and the virtual clock, in the one thread the simulation owns. So its code runs in a
*greenlet* started from the trio task that stands for the app's process: when a recorder
calls the bridge, the greenlet switches back to that task, which awaits the store call on
the simulated network and switches back in with the result (`GreenletBridge`). Nothing
runs in another thread, so a failing seed replays exactly. A process killed mid-command
(the task cancelled) closes its greenlet; the library's cleanup then finds the bridge gone.

Commands are not retried after an unknown outcome: the library has no command ids, so a
second send would be a second command.

Checks: `exactly_once` over the application sequence (no aggregate event stored twice, each
aggregate's versions without gaps, and every event an acknowledged command stored is there
once) and the app's invariants, given `FinalState.extra["state"]` (what `state` read) and
`FinalState.extra["stored"]` (the sequence as (originator id, version, topic)).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import greenlet
import outcome
import trio
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    PersistenceError,
)

from eventstore import eventsourcing_module as module
from eventstore.errors import EventStoreError, StreamNotFound
from eventstore.store import EventStore
from eventstore.trio_bridge import CALL_TIMEOUT, TrioBridge, as_library_errors
from node import errors as E
from node.keys import Keypair

from .checker import Anomaly, CheckResult, Report
from .determinism import sub_rng
from .history import History
from .trace import Trace
from .workloads import Workload

_names = itertools.count()


@dataclass
class EsChaosApp:
    """An app built on the `eventsourcing` library (see the module docstring)."""

    name: str
    application: Callable[[dict[str, str]], Any] | None = None  # env -> an Application
    commands: Callable[[Any], Iterable[Any]] | None = None  # rng -> callables of the application
    setup: Sequence[Callable[[Any], Any]] = ()
    state: Callable[[Any], Any] | None = None  # application -> what the invariants see
    invariants: Sequence[Callable[[Any], Any]] = ()
    clients: int = 2
    database: str = "eventsourcing"


# ============================================================================ the bridge


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class GreenletBridge(TrioBridge):
    """A bridge for library code running in a greenlet of the trio thread (`in_greenlet`):
    each store call switches to the trio task, which runs it and switches back."""

    def __init__(self, store: EventStore, *, timeout: float = CALL_TIMEOUT) -> None:
        super().__init__(store, None, timeout=timeout)  # type: ignore[arg-type]
        self.dead = False

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed or self.dead:
            raise InterfaceError("the process running this application was killed")
        parent = greenlet.getcurrent().parent
        if parent is None:
            raise InterfaceError("library code must run inside in_greenlet()")
        result: outcome.Outcome = parent.switch(_Call(fn, args))
        with as_library_errors(self.timeout):
            return result.unwrap()


async def in_greenlet(bridge: GreenletBridge, fn: Callable[..., Any], *args: Any) -> Any:
    """Run the synchronous `fn(*args)` in a greenlet, serving its store calls on this task."""
    child = greenlet.greenlet(fn)
    request = child.switch(*args)
    while not child.dead:
        if not isinstance(request, _Call):
            raise RuntimeError(f"the greenlet switched out with {request!r}")
        try:
            async def call(request: _Call = request) -> Any:
                with trio.fail_after(bridge.timeout):
                    return await request.fn(*request.args)

            result = await outcome.acapture(call)
        except BaseException:
            _abandon(bridge, child)
            raise
        if isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled):
            _abandon(bridge, child)
            result.unwrap()
        request = child.switch(result)
    return request


def _abandon(bridge: GreenletBridge, child: greenlet.greenlet) -> None:
    """The process was killed mid-call: let the library unwind with the bridge gone."""
    bridge.dead = True
    with contextlib.suppress(BaseException):  # whatever its cleanup raised dies with the process
        child.throw(greenlet.GreenletExit)


# ============================================================================ the driver


def _label(command: Any) -> str:
    return getattr(command, "__name__", None) or repr(command)[:80]


class EsDriver:
    """The processes of an `eventsourcing` app in one run: command clients, each with an
    Application of its own, then a fresh one at the end to read the final state."""

    def __init__(self, app: EsChaosApp, target: Any, workload: Workload, trace: Trace, seed: int) -> None:
        from eventstore.database import DatabaseInfo

        self.app, self.target, self.workload, self.trace, self.seed = app, target, workload, trace, seed
        rng = sub_rng(seed, "app")
        names = ["owner", *(f"client{i}" for i in range(app.clients)), "final"]
        self.keys = {name: Keypair.generate(rng) for name in names}
        writers = tuple(bytes(k.public) for k in self.keys.values())
        self.info = DatabaseInfo(app.database, rng.randbytes(32), None, 2, 1000, 1000, 0, writers)
        self.history = History()
        self.counts: Counter[str] = Counter()
        self._commands = iter(app.commands(sub_rng(seed, "app:commands")) if app.commands else ())
        self._pids = 0
        self.sequence_stream = ""

    def note(self, what: str, **details: Any) -> None:
        self.trace.event(trio.current_time(), "op", what, **details)

    async def _bridge(self, client: Any) -> tuple[GreenletBridge, dict[str, str]]:
        store = EventStore(client, clock=lambda: 1_500_000_000.0 + trio.current_time(), pending_grace=1.0,
                           poll_interval=0.2)
        await store.add_database(self.info)
        bridge = GreenletBridge(store, timeout=60.0)
        name = f"app-chaos-{next(_names)}"
        module.register_bridge(name, bridge)
        env = {"PERSISTENCE_MODULE": "eventstore.eventsourcing_module", module.SAFENET_BRIDGE: name,
               module.SAFENET_DATABASE: self.app.database}
        return bridge, env

    async def _open(self, client: Any) -> tuple[GreenletBridge, Any]:
        bridge, env = await self._bridge(client)
        assert self.app.application is not None
        application = await in_greenlet(bridge, self.app.application, env)
        self.sequence_stream = f"events@{module.app_name(application.name)}"
        return bridge, application

    async def execute(self, bridge: GreenletBridge, application: Any, command: Any, pid: str) -> str:
        label = _label(command)
        op = self.history.invoke(pid, "app", label, {"n": len(self.history)}, trio.current_time())
        stored: list[tuple[str, int]] = []
        recorder = application.recorder
        original = recorder.insert_events

        def recording(stored_events: Any, **kwargs: Any) -> Any:
            result = original(stored_events, **kwargs)
            stored.extend((str(s.originator_id), s.originator_version) for s in stored_events)
            return result

        recorder.insert_events = recording
        try:
            await in_greenlet(bridge, command, application)
        except IntegrityError as exc:
            self.history.fail(op, f"IntegrityError: {exc}", trio.current_time())
            kind = "fail"
        except PersistenceError as exc:  # OperationalError and the like: the outcome is unknown
            self.history.info(op, trio.current_time(), f"{type(exc).__name__}: {exc}")
            kind = "info"
        except Exception as exc:  # noqa: BLE001 - the app's own refusal
            self.history.fail(op, f"{type(exc).__name__}: {exc}", trio.current_time())
            kind = "fail"
        except BaseException:
            self.history.info(op, trio.current_time(), "process killed")
            self.counts["command:killed"] += 1
            self.note("app:killed", cmd=label)
            raise
        else:
            self.history.ok(op, {"stored": stored}, trio.current_time())
            kind = "ok"
        finally:
            recorder.insert_events = original
        self.counts[f"command:{kind}"] += 1
        self.note(f"app:{kind}", cmd=label, op=op.index)
        return kind

    async def setup(self) -> None:
        for _ in range(20):
            try:
                async with self.target.client(keys=self.keys["owner"], timeout=20.0) as client:
                    bridge, application = await self._open(client)
                    for command in self.app.setup:
                        pid = f"setup#{len(self.history)}"
                        if await self.execute(bridge, application, command, pid) != "ok":
                            raise RuntimeError(f"setup command {_label(command)} failed")
                    return
            except (E.SafeError, EventStoreError, trio.TooSlowError, PersistenceError):
                await trio.sleep(1.0)
        raise RuntimeError("could not set the app up: the network never answered")

    async def client_process(self, number: int) -> None:
        name = f"client{number}"
        rng = sub_rng(self.seed, f"app:{name}")

        async def body(client: Any) -> None:
            bridge, application = await self._open(client)
            while not self.workload.stopping:
                command = next(self._commands, None)
                if command is None:
                    await trio.sleep_forever()
                self._pids += 1
                await self.execute(bridge, application, command, f"{name}#{self._pids}")
                await trio.sleep(rng.expovariate(2.0))

        await self.workload.with_clients(7000 + number, body, keys=self.keys[name])

    def start(self, nursery: trio.Nursery) -> None:
        for i in range(self.app.clients):
            nursery.start_soon(self.client_process, i)

    async def finish(self) -> Any:
        from .app_spec import FinalState

        last: BaseException | None = None
        for _ in range(12):
            try:
                async with self.target.client(keys=self.keys["final"], timeout=20.0) as client:
                    bridge, application = await self._open(client)
                    db = bridge.store.database(self.app.database)
                    try:
                        raw = await db.read_stream(self.sequence_stream)
                    except StreamNotFound:
                        raw = []
                    stored = []
                    for event in raw:
                        decoded, _tracking = module.decode_record(event)
                        if decoded is not None:
                            stored.append((str(decoded.originator_id), decoded.originator_version, decoded.topic))
                    state = await in_greenlet(bridge, self.app.state, application) if self.app.state else None
                    return FinalState(list(raw), extra={"stored": stored, "state": state})
            except (E.SafeError, EventStoreError, trio.TooSlowError, PersistenceError) as exc:
                last = exc
                await trio.sleep(2.0)
        raise RuntimeError(f"the final reads never got through: {last!r}")


def es_exactly_once(history: History, final: Any) -> CheckResult:
    stored = final.extra.get("stored", [])
    counts = Counter((o, v) for o, v, _t in stored)
    anomalies = [Anomaly("stored-twice", o, f"v{v} is in the application sequence {n} times")
                 for (o, v), n in counts.items() if n > 1]
    versions: dict[str, list[int]] = {}
    for o, v, _t in stored:
        versions.setdefault(o, []).append(v)
    for o, vs in versions.items():
        if sorted(set(vs)) != list(range(1, len(set(vs)) + 1)):
            anomalies.append(Anomaly("version-gap", o, f"versions {sorted(set(vs))[:20]} are not 1..n"))
    acked = 0
    for op in history.ops():
        if op.outcome != "ok":
            continue
        acked += 1
        for o, v in (op.output or {}).get("stored", []):
            if counts.get((o, v), 0) == 0:
                anomalies.append(Anomaly("lost-event", o, f"v{v} was stored by an acknowledged command but is not "
                                         "in the application sequence", [op]))
    result = CheckResult("exactly_once", anomalies=anomalies,
                         stats={"commands": len(history.ops()), "acknowledged": acked, "events": len(stored)})
    if anomalies:
        result.status = "invalid"
    return result


async def play_es_app(app: EsChaosApp, scenario: Any, seed: int) -> Any:
    from .app_chaos import AppRunResult, played_under_faults
    from .app_checks import invariant_check

    trace = Trace()
    started = time.perf_counter()
    async with played_under_faults(scenario, seed, trace,
                                   lambda sim, workload: EsDriver(app, sim, workload, trace, seed)) as (
            sim, driver, nemesis):
        final = await driver.finish()
        checks = {"exactly_once": es_exactly_once(driver.history, final)}
        for invariant in app.invariants:
            result = invariant_check(invariant, final)
            checks[result.name] = result
        return AppRunResult(
            app=app.name, app_spec="", seed=seed, mode="sim", scenario=scenario.name, nodes=scenario.nodes,
            duration=scenario.duration, digest=trace.digest(), report=Report(checks), final=final,
            history=driver.history, counts=dict(sorted(driver.counts.items())),
            faults=dict(sorted(nemesis.counts.items())), virtual=sim.now, messages=trace.delivered,
            wall=time.perf_counter() - started,
        )
