"""The event-store workload: appends with every expected-version mode, single events and
batches, reads of streams, categories and `$all`, subscribers, a projection and a process
manager, checked two ways.

Each es process is an app (its own app key; all are writers of one database) whose writer
tasks share one client and one database, as the request handlers of a server do: appends
waiting for the log together share one log write. A writer appends mostly to streams of its
own, otherwise to any stream, with the expected version it last saw (now and then `ANY`,
`STREAM_EXISTS` or `NO_STREAM`); a few appends are cancelled partway through (between
whichever of its steps the append has reached), and an append whose outcome is unknown is
retried with the same event ids. The history goes to `Workload.streams` in the event-store
record format of docs/simulations.md ("History files"), and is checked by
`simulations.es_checker` (stream order, the log, subscribers, followers, refusals) and, per
stream, for linearizability with `StreamModel`: a stream is the tuple of its event ids; an
append takes effect only at its expected version; a read returns the ids in order; a refused
append saw the version it reports. The followers are in `simulations.es_followers`.

Event ids are drawn from the run's seed (the store's default is uuid4), so a replay appends
the very same events.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import trio

from eventstore.api import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DatabaseInfo,
    EventData,
    EventStore,
    EventStoreError,
    StreamNotFound,
    WrongExpectedVersion,
)
from node.keys import Keypair

from .checker import Anomaly, CheckResult, Model, error_name, observed_field
from .history import Op, short
from .workloads import Workload

CATEGORIES = ("order", "cart", "user", "invoice")
ALL = "$all"
STREAMS = tuple(f"{c}@{i}" for c in CATEGORIES for i in range(1, 61))
DATABASE = "chaos"
RETRIES = 2  # appends retried with the same event ids after an unknown outcome
HOME = 0.75  # share of a writer's appends to streams of its own (the rest: any stream)
CANCEL = 0.03  # share of appends whose writer is cancelled partway through
BILLED = 0.3  # share of invoice events the process manager reacts to
WRITE_THINK = 0.05  # mean pause between one writer's appends, seconds
READ_THINK = 0.15  # mean pause between one reader's reads
SUBSCRIBERS = 2  # catch-up subscribers (one to $all, one to a category), run by es process 0
FOLLOWERS = 2  # a projection agent and a process manager (simulations.es_followers)
FOLLOWER_POLL = 1.0  # how often subscribers and followers look for new events, seconds
FINAL_READERS = 8  # concurrent readers of the streams at the end
STOP_GRACE = 120.0  # seconds an es process has, once the run stops, to finish the operation it is in


def _expected(value: Any) -> int | str:
    expected = value.get("expected", "any")
    return -1 if expected == NO_STREAM else expected


class StreamModel(Model):
    """An event stream as the tuple of its event ids (see the module docstring).

    ``append`` value ``{"expected": E, "events": ids}``, output ``{"version": last}``;
    ``read`` output the tuple of ids. E is a version, -1 (no stream), ``"any"`` or
    ``"exists"``.
    """

    name = "es_stream"

    def init(self) -> Hashable:
        return ()

    def is_read(self, op: Op) -> bool:
        return op.f != "append"

    def _fits(self, state: Any, expected: int | str) -> bool:
        version = len(state) - 1  # NO_STREAM (-1) when empty
        return expected == "any" or (expected == "exists" and version >= 0) or expected == version

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.f == "read":
            return (not op.output_known or tuple(op.output) == state), state
        if op.f in ("read_all", "read_category", "subscribe", "deliver", "project", "command"):
            return True, state  # the log, subscribers and followers are es_checker's: their keys hold no stream
        if op.f == "append":
            events = tuple(op.value["events"])
            if events[0] in state:
                # A retry of an append that took effect: the store answers with the first
                # result and stores nothing twice.
                at = state.index(events[0])
                same = state[at:at + len(events)] == events
                return same and (not op.output_known or op.output["version"] == at + len(events) - 1), state
            if not self._fits(state, _expected(op.value)):
                return False, state
            new = (*state, *events)
            if op.output_known and op.output["version"] != len(new) - 1:
                return False, state
            return True, new
        raise ValueError(f"es_stream model has no op {op.f!r}")

    def is_refusal(self, op: Op) -> bool:
        return op.f == "append" and error_name(op.error) == "WrongExpectedVersion"

    def refused(self, state: Any, op: Op) -> bool:
        seen = observed_field(op, "version")
        return not self._fits(state, _expected(op.value)) and (seen is None or seen == len(state) - 1)

    def explain(self, state: Any, op: Op) -> str:
        if op.f == "read":
            return f"read saw {len(op.output or ())} events but the stream has {len(state)}"
        if op.type == "fail":
            return (f"refused (saw {short(op.output)}) expecting {_expected(op.value)}; "
                    f"the stream is at v{len(state) - 1}")
        return f"append expecting {_expected(op.value)} but the stream is at v{len(state) - 1}"

    def show(self, state: Any) -> str:
        return f"{len(state)} events" + (f", last {short(state[-1])}" if state else "")


class EventStoreLoad:
    """Event-store processes of one run, sharing the run's `Workload` for recording.

    Each es process is one app: one network client, one `Database` and `es_writers` writer
    tasks appending through it at once (their appends share log writes: the store's group
    commit), plus a reader of streams, categories and `$all`. Process 0 also runs the
    catch-up subscribers, process 1 a projection agent, process 2 a process manager (see
    `simulations.es_followers`), each with a client of its own.
    """

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.rng = workload.op_rng("es")
        self.keys = Keypair.generate(self.rng)
        # One app key per client: concurrent clients sharing a key share one network
        # address, so their replies go astray (they time out bootstrapping). The owner's
        # key and every client's key are the database's writers.
        self.processes = workload.config.es_processes
        self.worker_keys = [Keypair.generate(self.rng) for _ in range(self.processes + SUBSCRIBERS + FOLLOWERS)]
        writers = tuple(bytes(k.public) for k in [self.keys, *self.worker_keys])
        self.info = DatabaseInfo(DATABASE, self.rng.randbytes(32), None, 2, 1000, 1000, 0, writers)
        self.errors: list[str] = []  # store errors a subscriber or follower met (a check fails on any)
        self.stuck: list[str] = []  # es processes that did not stop within STOP_GRACE (a check fails on any)
        self.per_process = workload.config.es_writers
        self.writers = [_Writer(workload.op_rng(f"es:{i}"), i) for i in range(self.processes * self.per_process)]

    def store(self, client: Any, poll_interval: float = 0.2) -> EventStore:
        return EventStore(client, clock=lambda: 1_500_000_000.0 + trio.current_time(), poll_interval=poll_interval)

    def follower_keys(self, number: int) -> Keypair:
        """The key of follower `number` (0..SUBSCRIBERS+FOLLOWERS-1)."""
        return self.worker_keys[self.processes + number]

    async def setup(self) -> None:
        async with self.workload.sim.client(keys=self.keys, timeout=self.workload.config.client_timeout) as client:
            for _ in range(10):
                try:
                    await self.store(client).add_database(self.info)
                    return
                except Exception as exc:  # noqa: BLE001 - retried: the network may be settling
                    last = exc
                    await trio.sleep(1.0)
            raise RuntimeError(f"could not create the event-store database: {last!r}")

    async def process(self, worker: int) -> None:
        """One of the scenario's es processes (see the class docstring). Once the run stops,
        it has STOP_GRACE seconds to finish the operations it is in; one that does not is
        stuck - a store call that never returns - and is cancelled and reported (a run that
        waited for it would never end)."""
        from .es_followers import process_manager, projection_agent

        finished = trio.Event()
        async with trio.open_nursery() as outer:
            outer.start_soon(self._watchdog, worker, finished, outer.cancel_scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._app, worker)
                    for i in range(SUBSCRIBERS if worker == 0 else 0):
                        nursery.start_soon(self._subscriber, i)
                    if worker == min(1, self.processes - 1):
                        nursery.start_soon(projection_agent, self, SUBSCRIBERS)
                    if worker == min(2, self.processes - 1):
                        nursery.start_soon(process_manager, self, SUBSCRIBERS + 1)
            finally:
                finished.set()

    async def _watchdog(self, worker: int, finished: trio.Event, process: trio.CancelScope) -> None:
        wl = self.workload
        while not wl.stopping and not finished.is_set():
            await trio.sleep(1.0)
        stopped = trio.current_time()
        with trio.move_on_after(STOP_GRACE):
            await finished.wait()
            return
        open_ops = [op for op in wl.streams.ops() if op.pending and op.invoked_at[0] < stopped]
        shown = "; ".join(f"#{op.index} {op.f} {short(op.key)} since t={op.invoked_at[0]:.1f}"
                          for op in open_ops[:5])
        self.stuck.append(f"es process {worker} still running {STOP_GRACE:g} s after the run stopped "
                          f"(t={stopped:.1f}); open: {shown or 'no recorded op'}")
        wl.counts["es_stuck"] += 1
        process.cancel()

    async def _app(self, worker: int) -> None:
        wl = self.workload
        reader_rng = wl.op_rng(f"es-reader:{worker}")
        log_seen = [0]  # where this reader's next $all read starts: a suffix, not the whole log

        async def body(client: Any) -> None:
            db = await self.store(client).add_database(self.info)
            async with trio.open_nursery() as nursery:
                for writer in self.writers[worker * self.per_process:(worker + 1) * self.per_process]:
                    nursery.start_soon(self._write_loop, db, writer)
                nursery.start_soon(self._read_loop, db, reader_rng, log_seen)

        await wl.with_clients(3000 + worker, body, keys=self.worker_keys[worker])

    async def _subscriber(self, number: int) -> None:
        """A catch-up subscriber that is killed every few seconds (or between handling an
        event and saving its checkpoint) and resumes from the checkpoint it saved."""
        wl = self.workload
        rng = wl.op_rng(f"es-sub:{number}")
        name = f"sub{number}"
        filter_ = ALL if number == 0 else CATEGORIES[number % len(CATEGORIES)]
        checkpoint: int | None = None

        async def body(client: Any) -> None:
            nonlocal checkpoint
            db = await self.store(client, FOLLOWER_POLL).add_database(self.info)
            while not wl.stopping:
                now = trio.current_time()
                wl.streams.ok(wl.streams.invoke(name, name, "subscribe", {"from": checkpoint, "filter": filter_},
                                                now), None, now)
                sub = db.subscribe_to_all(checkpoint) if filter_ == ALL \
                    else db.subscribe_to_category(filter_, checkpoint)
                handled_before_kill = rng.randint(3, 60)
                try:
                    with trio.move_on_after(rng.uniform(2.0, 12.0)):  # killed while waiting, at the latest
                        async for event in sub:
                            now = trio.current_time()
                            op = wl.streams.invoke(name, name, "deliver", None, now)
                            handled_before_kill -= 1
                            if handled_before_kill == 0:
                                wl.streams.info(op, now, "killed before saving its checkpoint")
                                wl.counts["deliver:info"] += 1
                                break
                            checkpoint = event.position
                            wl.streams.ok(op, (event.position, event.stream, event.version, event.id.hex[:12]), now)
                            wl.counts["deliver:ok"] += 1
                except EventStoreError as exc:  # not a network failure: the store itself broke
                    self.errors.append(f"{name} at t={trio.current_time():.3f}: {type(exc).__name__}: {exc}")
                    wl.counts["subscriber_errors"] += 1
                await trio.sleep(0.5)  # the killed subscriber restarts

        await wl.with_clients(3900 + number, body, keys=self.follower_keys(number))

    async def _write_loop(self, db: Any, w: _Writer) -> None:
        wl = self.workload
        pid = wl.new_pid()
        while not wl.stopping:
            if w.retry:
                stream, expected, events, tries = w.retry.pop()
                outcome = await self.append_as_store(db, pid, stream, expected, events, w)
                if outcome == "info" and tries < RETRIES:
                    w.retry.append((stream, expected, events, tries + 1))
            else:
                outcome = await self._one_append(db, pid, w)
            if outcome == "info":
                pid = wl.new_pid()
            await trio.sleep(w.rng.expovariate(1.0 / WRITE_THINK))

    def _pick_stream(self, w: _Writer) -> str:
        """Mostly one of the writer's own streams (as an aggregate has one writer at a
        time), otherwise any stream: the contended appends."""
        if w.rng.random() < HOME:
            return STREAMS[w.rng.randrange(w.index, len(STREAMS), len(self.writers))]
        return w.rng.choice(STREAMS)

    async def _one_append(self, db: Any, pid: int, w: _Writer) -> str:
        rng = w.rng
        stream = self._pick_stream(w)
        belief = w.beliefs.get(stream, NO_STREAM)
        m = rng.random()
        expected = ANY if m < 0.08 else STREAM_EXISTS if m < 0.12 else NO_STREAM if m < 0.14 else belief
        billed = stream.startswith("invoice@")
        events = [EventData("Tick", {"n": len(self.workload.streams), "bill": billed and rng.random() < BILLED},
                            id=uuid.UUID(bytes=rng.randbytes(16)))
                  for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 4))]
        cancel_after = rng.uniform(0.0, 0.4) if rng.random() < CANCEL else None
        outcome = await self.append_as_store(db, pid, stream, expected, events, w, cancel_after)
        if outcome == "info":
            w.retry.append((stream, expected, events, 1))
        return outcome

    async def append_as_store(self, db: Any, pid: int, stream: str, expected: int, events: list[EventData],
                      w: _Writer, cancel_after: float | None = None) -> str:
        """One append; with `cancel_after`, the writer is cancelled that many seconds in,
        between whichever steps of the append it has reached (its outcome is then unknown)."""
        wl = self.workload
        started = trio.current_time()
        shown = "any" if expected == ANY else "exists" if expected == STREAM_EXISTS else expected
        value = {"expected": shown, "events": tuple(e.id.hex[:12] for e in events)}
        op = wl.streams.invoke(pid, stream, "append", value, started)
        try:
            with trio.move_on_after(math.inf if cancel_after is None else cancel_after) as scope:
                result = await db.append(stream, events, expected_version=expected)
        except WrongExpectedVersion as exc:
            w.beliefs[stream] = exc.actual
            wl.complete(op, "fail", started, error=exc, output={"version": exc.actual}, history=wl.streams)
            return "fail"
        except Exception as exc:  # noqa: BLE001 - timeouts and network errors: the outcome is unknown
            wl.complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl.complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        if scope.cancelled_caught:
            wl.counts["append:cancelled"] += 1
            wl.complete(op, "info", started, error="writer cancelled mid-append", history=wl.streams)
            return "info"
        w.beliefs[stream] = result.next_expected_version
        wl.complete(op, "ok", started, output={"version": result.next_expected_version,
                                                "position": result.log_position}, history=wl.streams)
        return "ok"

    async def _read_loop(self, db: Any, rng: Any, log_seen: list[int]) -> None:
        wl = self.workload
        pid = wl.new_pid()
        while not wl.stopping:
            r = rng.random()
            if r < 0.6:
                outcome = await self._read(db, pid, rng.choice(STREAMS))
            elif r < 0.8:
                outcome = await self._read_log(db, pid, rng.choice(CATEGORIES), 0 if rng.random() < 0.2
                                               else max(0, log_seen[0] - 200))
            else:
                # Mostly from the last position this reader saw; now and then the whole log.
                start = 0 if rng.random() < 0.05 else log_seen[0]
                outcome = await self._read_log(db, pid, ALL, start, log_seen)
            if outcome == "info":
                pid = wl.new_pid()
            await trio.sleep(rng.expovariate(1.0 / READ_THINK))

    async def _read(self, db: Any, pid: int, stream: str, seen: dict[str, tuple[str, ...]] | None = None) -> str:
        wl = self.workload
        started = trio.current_time()
        op = wl.streams.invoke(pid, stream, "read", None, started)
        try:
            events = await db.read_stream(stream)
        except StreamNotFound:
            events = []
        except Exception as exc:  # noqa: BLE001 - any failure of a read leaves its output unknown
            wl.complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl.complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        ids = tuple(e.id.hex[:12] for e in events)
        wl.complete(op, "ok", started, output=ids, history=wl.streams)
        if seen is not None:
            seen[stream] = ids
        return "ok"

    async def _read_log(self, db: Any, pid: int, filter_: str, start: int = 0,
                        log_seen: list[int] | None = None) -> str:
        """A read of `$all` or of a category (`filter_`) from position `start`."""
        wl = self.workload
        started = trio.current_time()
        f = "read_all" if filter_ == ALL else "read_category"
        op = wl.streams.invoke(pid, filter_, f, {"from": start} if start else None, started)
        try:
            events = await (db.read_all(start) if filter_ == ALL else db.read_category(filter_, start))
        except Exception as exc:  # noqa: BLE001 - any failure of a read leaves its output unknown
            wl.complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl.complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        rows = tuple((e.position, e.stream, e.version, e.id.hex[:12]) for e in events)
        wl.complete(op, "ok", started, output=rows, history=wl.streams)
        if log_seen is not None and rows:
            log_seen[0] = max(log_seen[0], rows[-1][0] + 1)
        return "ok"

    async def final_reads(self, attempts: int = 6) -> dict[str, tuple[str, ...]]:
        """Each stream, and the log, read after healing and recorded in the history (a stream
        that cannot be read is left out); then what the followers saved."""
        finals: dict[str, tuple[str, ...]] = {}
        wl = self.workload
        async with wl.sim.client(keys=self.keys, timeout=wl.config.client_timeout) as client:
            db = await self.store(client).add_database(self.info)

            async def read_streams(streams: tuple[str, ...]) -> None:
                pid = wl.new_pid()
                for stream in streams:
                    for attempt in range(attempts):
                        if await self._read(db, pid, stream, finals) == "ok":
                            break
                        pid = wl.new_pid()
                        await trio.sleep(2.0 * (attempt + 1))

            async with trio.open_nursery() as nursery:
                for i in range(FINAL_READERS):
                    nursery.start_soon(read_streams, STREAMS[i::FINAL_READERS])
            pid = wl.new_pid()
            for attempt in range(attempts):
                if await self._read_log(db, pid, ALL) == "ok":
                    break
                pid = wl.new_pid()
                await trio.sleep(2.0 * (attempt + 1))
            from .es_followers import observe

            await observe(self, db, attempts)
        return finals


@dataclass
class _Writer:
    """What one writer task keeps across its client's crashes."""

    rng: Any
    index: int
    beliefs: dict[str, int] = field(default_factory=dict)
    retry: list[Any] = field(default_factory=list)  # appends whose outcome is unknown: tried again, same ids


def subscriber_errors(load: EventStoreLoad) -> CheckResult:
    """A subscriber's store call that failed with a store error (not a network one), and an
    es process that never finished once the run stopped (``stuck``: a liveness failure)."""
    result = CheckResult("es_client_errors", stats={"errors": len(load.errors), "stuck": len(load.stuck)})
    result.anomalies = [Anomaly("store-error", "subscriber", text) for text in load.errors]
    result.anomalies += [Anomaly("stuck", "es process", text) for text in load.stuck]
    if result.anomalies:
        result.status = "invalid"
    return result


def lost_events(workload: Workload, finals: dict[str, tuple[str, ...]]) -> CheckResult:
    """Every acknowledged append is in its stream at the end, at the version it was given."""
    anomalies, unread = [], 0
    for op in workload.streams.ops():
        if op.f != "append" or op.outcome != "ok":
            continue
        final = finals.get(str(op.key))
        if final is None:
            unread += 1
            continue
        event, version = op.value["events"][-1], op.output["version"]
        if version >= len(final) or final[version] != event:
            where = final.index(event) if event in final else None
            anomalies.append(Anomaly("lost-event", op.key, f"acknowledged at v{version}, found at {where}", [op]))
    result = CheckResult("lost_events", anomalies=anomalies, stats={"streams": len(finals)})
    if anomalies:
        result.status = "invalid"
    elif unread:
        result.status, result.reason = "unknown", f"{unread} acknowledged append(s) in streams not read at the end"
    return result


def es_checks(workload: Workload, load: EventStoreLoad, finals: dict[str, tuple[str, ...]],
              max_steps: int | None = None) -> dict[str, CheckResult]:
    """Every event-store check of a run: per-stream linearizability, lost events, the
    Elle-style checks of `simulations.es_checker`, and store errors met by followers."""
    from .checker import DEFAULT_MAX_STEPS, check_linearizable
    from .es_checker import check_eventstore

    streams = check_linearizable(workload.streams, StreamModel(), max_steps=max_steps or DEFAULT_MAX_STEPS)
    streams.name = "streams_linearizable"
    checks: dict[str, CheckResult] = {"streams_linearizable": streams, "lost_events": lost_events(workload, finals)}
    checks.update(check_eventstore(workload.streams).checks)
    if load.errors or load.stuck:
        checks["es_client_errors"] = subscriber_errors(load)
    return checks
