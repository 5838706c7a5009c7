"""The event-store workload: appends with expected versions and stream reads, checked as
linearizable streams.

Each process is an app (all share one app key, so all may write the one database) appending
single events to a few hot streams, with the expected version it last saw (now and then
`ANY`), and reading streams back. The history goes to `Workload.streams` and is checked with
`StreamModel` - a model for `simulations.checker`, plugged in as the checker allows: a
stream is the tuple of its event ids; an append takes effect only at its expected version
and returns the next expected version; a read returns the ids in order.

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
    DatabaseInfo,
    EventData,
    EventStore,
    StreamNotFound,
    WrongExpectedVersion,
)
from node.keys import Keypair

from .checker import Anomaly, CheckResult, Model
from .history import Op, short
from .workloads import Workload

STREAMS = ("order-1", "order-2", "order-3")
DATABASE = "chaos"


class StreamModel(Model):
    """An event stream as the tuple of its event ids (see the module docstring).

    ``append`` value ``(expected_version, event_id)``, output the next expected version;
    ``read`` output the tuple of ids.
    """

    name = "es_stream"

    def init(self) -> Hashable:
        return ()

    def is_read(self, op: Op) -> bool:
        return op.f == "read"

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        if op.f == "read":
            return (not op.output_known or tuple(op.output) == state), state
        if op.f == "append":
            expected, event = op.value
            version = len(state) - 1  # NO_STREAM (-1) when empty
            if expected != ANY and expected != version:
                return False, state
            new = (*state, event)
            if op.output_known and op.output != len(new) - 1:
                return False, state
            return True, new
        raise ValueError(f"es_stream model has no op {op.f!r}")

    def explain(self, state: Any, op: Op) -> str:
        if op.f == "read":
            return f"read saw {len(op.output or ())} events but the stream has {len(state)}"
        return f"append expecting v{op.value[0]} but the stream is at v{len(state) - 1}"

    def show(self, state: Any) -> str:
        return f"{len(state)} events" + (f", last {short(state[-1])}" if state else "")


class EventStoreLoad:
    """Event-store processes of one run, sharing the run's `Workload` for recording."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.rng = workload.op_rng("es")
        self.keys = Keypair.generate(self.rng)
        self.info = DatabaseInfo(DATABASE, self.rng.randbytes(32), None, 2, 1000, 1000, 0, ())

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
        wl = self.workload
        rng = wl.op_rng(f"es:{worker}")
        beliefs: dict[str, int] = {}

        async def body(client: Any) -> None:
            store = self._store(client)
            db = await store.add_database(self.info)
            pid = wl.new_pid()
            while not wl.stopping:
                stream = rng.choice(STREAMS)
                outcome = await self._one(db, pid, stream, beliefs, rng)
                if outcome == "info":
                    pid = wl.new_pid()
                await trio.sleep(rng.expovariate(1.0 / wl.config.think))

        await wl._with_clients(3000 + worker, body, keys=self.keys)

    async def _one(self, db: Any, pid: int, stream: str, beliefs: dict[str, int], rng: Any) -> str:
        wl = self.workload
        started = trio.current_time()
        if rng.random() < 0.35:
            op = wl.streams.invoke(pid, stream, "read", None, started)
            try:
                events = await db.read_stream(stream)
            except StreamNotFound:
                wl._complete(op, "ok", started, output=(), history=wl.streams)
                beliefs[stream] = NO_STREAM
                return "ok"
            except Exception as exc:  # noqa: BLE001 - any failure of a read leaves its output unknown
                wl._complete(op, "info", started, error=exc, history=wl.streams)
                return "info"
            except BaseException:
                wl._complete(op, "info", started, error="client crashed", history=wl.streams)
                raise
            ids = tuple(e.id.hex[:12] for e in events)
            wl._complete(op, "ok", started, output=ids, history=wl.streams)
            beliefs[stream] = len(ids) - 1
            return "ok"
        expected = ANY if rng.random() < 0.1 else beliefs.get(stream, NO_STREAM)
        event_id = uuid.UUID(bytes=rng.randbytes(16))
        op = wl.streams.invoke(pid, stream, "append", (expected, event_id.hex[:12]), started)
        try:
            result = await db.append(stream, [EventData("Tick", {"n": len(wl.streams)}, id=event_id)],
                                     expected_version=expected)
        except WrongExpectedVersion as exc:
            beliefs[stream] = getattr(exc, "actual", beliefs.get(stream, NO_STREAM))
            wl._complete(op, "fail", started, error=exc, history=wl.streams)
            return "fail"
        except Exception as exc:  # noqa: BLE001 - timeouts and network errors: the outcome is unknown
            wl._complete(op, "info", started, error=exc, history=wl.streams)
            return "info"
        except BaseException:
            wl._complete(op, "info", started, error="client crashed", history=wl.streams)
            raise
        beliefs[stream] = result.next_expected_version
        wl._complete(op, "ok", started, output=result.next_expected_version, history=wl.streams)
        return "ok"

    async def final_reads(self, attempts: int = 6) -> dict[str, tuple[str, ...]]:
        """Each stream read after healing (left out if it cannot be read)."""
        finals: dict[str, tuple[str, ...]] = {}
        async with self.workload.sim.client(keys=self.keys, timeout=self.workload.config.client_timeout) as client:
            db = await self._store(client).add_database(self.info)
            for stream in STREAMS:
                for attempt in range(attempts):
                    try:
                        finals[stream] = tuple(e.id.hex[:12] for e in await db.read_stream(stream))
                        break
                    except StreamNotFound:
                        finals[stream] = ()
                        break
                    except Exception:  # noqa: BLE001 - the network may still be healing
                        await trio.sleep(2.0 * (attempt + 1))
        return finals


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
        event, version = op.value[1], op.output
        if version >= len(final) or final[version] != event:
            where = final.index(event) if event in final else None
            anomalies.append(Anomaly("lost-event", op.key, f"acknowledged at v{version}, found at {where}", [op]))
    result = CheckResult("lost_events", anomalies=anomalies, stats={"streams": len(finals)})
    if anomalies:
        result.status = "invalid"
    elif unread:
        result.status, result.reason = "unknown", f"{unread} acknowledged append(s) in streams not read at the end"
    return result
