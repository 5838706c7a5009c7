"""The event-store workload: appends with every expected-version mode, single events and
batches, stream reads and `$all` reads, checked two ways.

Each process is an app (all share one app key, so all may write the one database) appending
to streams of a few categories, with the expected version it last saw (now and then `ANY`,
`STREAM_EXISTS` or `NO_STREAM`), retrying an append whose outcome it does not know with the
same event ids, and reading streams and the whole log back. The history goes to
`Workload.streams` in the event-store record format of docs/simulations.md ("History
files"), and is checked by `simulations.es_checker` (stream order, the log, refusals) and,
per stream, for linearizability with `StreamModel`: a stream is the tuple of its event ids;
an append takes effect only at its expected version; a read returns the ids in order; a
refused append saw the version it reports.

Event ids are drawn from the run's seed (the store's default is uuid4), so a replay appends
the very same events.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable
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
STREAMS = tuple(f"{c}@{i}" for c in CATEGORIES for i in range(1, 26))
DATABASE = "chaos"
RETRIES = 2  # appends retried with the same event ids after an unknown outcome
CLIENTS_PER_PROCESS = 4  # concurrent store clients behind each of the scenario's es processes
SUBSCRIBERS = 2  # catch-up subscribers (one to $all, one to a category), run by es process 0


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
        if op.f in ("read_all", "read_category", "subscribe", "deliver"):
            return True, state  # the log and subscribers are es_checker's: their keys hold no stream
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
    """Event-store processes of one run, sharing the run's `Workload` for recording."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.rng = workload.op_rng("es")
        self.keys = Keypair.generate(self.rng)
        # One app key per process: concurrent clients sharing a key share one network
        # address, so their replies go astray (they time out bootstrapping). The owner's
        # key and every process's key are the database's writers.
        self.worker_keys = [Keypair.generate(self.rng)
                            for _ in range(workload.config.es_processes * CLIENTS_PER_PROCESS + SUBSCRIBERS)]
        writers = tuple(bytes(k.public) for k in [self.keys, *self.worker_keys])
        self.info = DatabaseInfo(DATABASE, self.rng.randbytes(32), None, 2, 1000, 1000, 0, writers)
        self.errors: list[str] = []  # store errors a subscriber met (a check fails on any)

    def _store(self, client: Any) -> EventStore:
        return EventStore(client, clock=lambda: 1_500_000_000.0 + trio.current_time())

    async def setup(self) -> None:
        async with self.workload.sim.client(keys=self.keys, timeout=self.workload.config.client_timeout) as client:
            for _ in range(10):
                try:
                    await self._store(client).add_database(self.info)
                    return
                except Exception as exc:  # noqa: BLE001 - retried: the network may be settling
                    last = exc
                    await trio.sleep(1.0)
            raise RuntimeError(f"could not create the event-store database: {last!r}")

    async def process(self, worker: int) -> None:
        """One of the scenario's es processes: `CLIENTS_PER_PROCESS` store clients at once."""
        async with trio.open_nursery() as nursery:
            for i in range(CLIENTS_PER_PROCESS):
                nursery.start_soon(self._client, worker * CLIENTS_PER_PROCESS + i)
            for i in range(SUBSCRIBERS if worker == 0 else 0):
                nursery.start_soon(self._subscriber, i)

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
            db = await self._store(client).add_database(self.info)
            while not wl.stopping:
                now = trio.current_time()
                wl.streams.ok(wl.streams.invoke(name, name, "subscribe", {"from": checkpoint, "filter": filter_},
                                                now), None, now)
                sub = db.subscribe_to_all(checkpoint) if filter_ == ALL \
                    else db.subscribe_to_category(filter_, checkpoint)
                handled_before_kill = rng.randint(3, 30)
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

        await wl._with_clients(3900 + number, body,
                               keys=self.worker_keys[wl.config.es_processes * CLIENTS_PER_PROCESS + number])

    async def _client(self, worker: int) -> None:
        wl = self.workload
        rng = wl.op_rng(f"es:{worker}")
        beliefs: dict[str, int] = {}
        log_seen = [0]  # where this client's next $all read starts: a suffix, not the whole log
        retry: list[Any] = []  # an append whose outcome is unknown: tried again, same ids

        async def body(client: Any) -> None:
            store = self._store(client)
            db = await store.add_database(self.info)
            pid = wl.new_pid()
            while not wl.stopping:
                if retry:
                    stream, expected, events, tries = retry.pop()
                    outcome = await self._append(db, pid, stream, expected, events, beliefs)
                    if outcome == "info" and tries < RETRIES:
                        retry.append((stream, expected, events, tries + 1))
                else:
                    outcome = await self._one(db, pid, rng.choice(STREAMS), beliefs, rng, retry, log_seen)
                if outcome == "info":
                    pid = wl.new_pid()
                await trio.sleep(rng.expovariate(1.0 / wl.config.think))

        await wl._with_clients(3000 + worker, body, keys=self.worker_keys[worker])

    async def _one(self, db: Any, pid: int, stream: str, beliefs: dict[str, int], rng: Any,
                   retry: list[Any], log_seen: list[int]) -> str:
        r = rng.random()
        if r < 0.25:
            return await self._read(db, pid, stream, beliefs)
        if r < 0.32:
            # Mostly from the last position this client saw; now and then the whole log.
            start = 0 if rng.random() < 0.1 else log_seen[0]
            return await self._read_all(db, pid, start, log_seen)
        belief = beliefs.get(stream, NO_STREAM)
        m = rng.random()
        expected = ANY if m < 0.1 else STREAM_EXISTS if m < 0.15 else belief
        events = [EventData("Tick", {"n": len(self.workload.streams)}, id=uuid.UUID(bytes=rng.randbytes(16)))
                  for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 4))]
        outcome = await self._append(db, pid, stream, expected, events, beliefs)
        if outcome == "info":
            retry.append((stream, expected, events, 1))
        return outcome

    async def _append(self, db: Any, pid: int, stream: str, expected: int, events: list[EventData],
                      beliefs: dict[str, int]) -> str:
        wl = self.workload
        started = trio.current_time()
        shown = "any" if expected == ANY else "exists" if expected == STREAM_EXISTS else expected
        value = {"expected": shown, "events": tuple(e.id.hex[:12] for e in events)}
        op = wl.streams.invoke(pid, stream, "append", value, started)
        try:
            result = await db.append(stream, events, expected_version=expected)
        except WrongExpectedVersion as exc:
            beliefs[stream] = exc.actual
            wl._complete(op, "fail", started, error=exc, output={"version": exc.actual}, history=wl.streams)
            return "fail"
        except Exception as exc:  # noqa: BLE001 - timeouts and network errors: the outcome is unknown
            wl._complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl._complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        beliefs[stream] = result.next_expected_version
        wl._complete(op, "ok", started, output={"version": result.next_expected_version,
                                                "position": result.log_position}, history=wl.streams)
        return "ok"

    async def _read(self, db: Any, pid: int, stream: str, beliefs: dict[str, int] | None = None) -> str:
        wl = self.workload
        started = trio.current_time()
        op = wl.streams.invoke(pid, stream, "read", None, started)
        try:
            events = await db.read_stream(stream)
        except StreamNotFound:
            events = []
        except Exception as exc:  # noqa: BLE001 - any failure of a read leaves its output unknown
            wl._complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl._complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        ids = tuple(e.id.hex[:12] for e in events)
        wl._complete(op, "ok", started, output=ids, history=wl.streams)
        if beliefs is not None:
            beliefs[stream] = len(ids) - 1
        return "ok"

    async def _read_all(self, db: Any, pid: int, start: int = 0, log_seen: list[int] | None = None) -> str:
        wl = self.workload
        started = trio.current_time()
        op = wl.streams.invoke(pid, "$all", "read_all", {"from": start} if start else None, started)
        try:
            events = await db.read_all(start)
        except Exception as exc:  # noqa: BLE001 - any failure of a read leaves its output unknown
            wl._complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl._complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        rows = tuple((e.position, e.stream, e.version, e.id.hex[:12]) for e in events)
        wl._complete(op, "ok", started, output=rows, history=wl.streams)
        if log_seen is not None and rows:
            log_seen[0] = max(log_seen[0], rows[-1][0] + 1)
        return "ok"

    async def final_reads(self, attempts: int = 6) -> dict[str, tuple[str, ...]]:
        """Each stream, and the log, read after healing and recorded in the history (a stream
        that cannot be read is left out)."""
        finals: dict[str, tuple[str, ...]] = {}
        wl = self.workload
        async with wl.sim.client(keys=self.keys, timeout=wl.config.client_timeout) as client:
            db = await self._store(client).add_database(self.info)
            pid = wl.new_pid()
            for stream in STREAMS:
                for attempt in range(attempts):
                    if await self._read(db, pid, stream) == "ok":
                        finals[stream] = tuple(wl.streams.ops()[-1].output)
                        break
                    pid = wl.new_pid()
                    await trio.sleep(2.0 * (attempt + 1))
            for attempt in range(attempts):
                if await self._read_all(db, pid) == "ok":
                    break
                pid = wl.new_pid()
                await trio.sleep(2.0 * (attempt + 1))
        return finals


def subscriber_errors(load: EventStoreLoad) -> CheckResult:
    """A subscriber's store call that failed with a store error (not a network one)."""
    result = CheckResult("es_client_errors", stats={"errors": len(load.errors)})
    result.anomalies = [Anomaly("store-error", "subscriber", text) for text in load.errors]
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
