"""Client workloads for chaos runs, recorded as Jepsen-style histories.

- **Registers** (`register_process`): each MD entry of a few hot MDs is a versioned register,
  tested the way a CAS register is. A process reads, inserts if it believes the entry absent,
  updates or deletes at the version after the one it last saw, and records every invoke and
  outcome in `Workload.history` for the `md_entry` model of `simulations.checker`.
- **Chunks** (`chunk_process`): IData puts and gets, recorded in `Workload.chunks` as a
  register per chunk name (a put writes the chunk's digest, a get reads it, None when the
  network says there is no such chunk), so a lost chunk shows up as a read of None after
  an acknowledged write.
- **Lookups** (`lookup_process`): routing only: a client's iterative lookup of a random name,
  compared with the close group a brute-force sort of the live nodes gives.

Outcomes are recorded as the checker needs them: ``ok`` when the network said so; ``fail``
only when it definitely did not happen (a precondition refused on the first try); ``info``
for everything uncertain - a timeout, an unreachable quorum, a client that crashed
mid-operation, and a refusal that came after the client had retried the same request
(the first attempt may have been applied; the retry is then refused by the version check,
as docs of `client.network` say it may be). After an ``info`` a process continues under a
new process id, as in Jepsen, since its old operation may still take effect.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from client.network import NetworkClient
from node import errors as E
from node.data import (
    ANYONE,
    Action,
    Del,
    EntryAction,
    Ins,
    MDataAddress,
    MutableData,
    PermissionSet,
    Update,
    Value,
)
from node.requests import MutateEntries
from node.xorname import XorName, sha3_256

from .determinism import sub_rng
from .history import History, Op
from .trace import Trace

MD_TAG = 15000


class Target(Protocol):
    """What a workload runs against: the simulator, or a real cluster (`cluster_chaos`)."""

    trace: Trace
    config: Any  # has .replication

    def client(self, keys: Any = None, **kwargs: Any) -> AbstractAsyncContextManager[NetworkClient]: ...

    def close_group(self, name: bytes, count: int | None = None) -> Sequence[Any]: ...  # items have .name


@dataclass(frozen=True)
class WorkloadConfig:
    """How much load, and of what kind. Times in virtual seconds."""

    processes: int = 4  # concurrent register clients
    mds: int = 2
    entries_per_md: int = 3
    think: float = 0.2  # mean pause between one process's operations
    read_ratio: float = 0.4
    chunk_processes: int = 1
    chunk_think: float = 0.5
    lookup_processes: int = 0
    lookup_think: float = 1.0
    es_processes: int = 0  # event-store appenders and readers (simulations.es_workload)
    es_writers: int = 24  # writer tasks in each of them, sharing its client and database
    # How long a projection agent or process manager runs before it is killed (and restarts
    # from what it saved), seconds: drawn uniformly from this range each time.
    es_follower_life: tuple[float, float] = (3.0, 15.0)
    client_timeout: float = 20.0


@dataclass
class Latency:
    f: str
    outcome: str
    seconds: float
    time: float


@dataclass
class Workload:
    """The shared state of a run's client processes: histories, targets and figures."""

    sim: Target
    config: WorkloadConfig
    seed: int | str
    history: History = field(default_factory=History)
    chunks: History = field(default_factory=History)
    streams: History = field(default_factory=History)  # event-store ops, if any
    latencies: list[Latency] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    lookups: Counter[str] = field(default_factory=Counter)
    lookup_hops: list[int] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    stopping: bool = False
    mds: list[MutableData] = field(default_factory=list)
    chunk_values: dict[bytes, bytes] = field(default_factory=dict)  # name -> bytes put
    _pids: int = 0
    _scopes: dict[int, trio.CancelScope] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = sub_rng(self.seed, "workload")

    # ------------------------------------------------------------------ targets

    def md_label(self, index: int) -> str:
        return f"md{index}"

    def registers(self) -> list[tuple[str, str]]:
        return [(self.md_label(i), f"k{j}") for i in range(self.config.mds) for j in range(self.config.entries_per_md)]

    def address(self, key: tuple[str, str]) -> MDataAddress:
        return self.mds[int(key[0][2:])].address

    def new_pid(self) -> int:
        self._pids += 1
        return self._pids

    def op_rng(self, worker: str) -> random.Random:
        return sub_rng(self.seed, f"workload:{worker}")

    async def setup(self, attempts: int = 20) -> None:
        """Create the hot MDs (open to anyone for entry changes) before any fault starts."""
        async with self.sim.client(timeout=self.config.client_timeout) as owner:
            for i in range(self.config.mds):
                md = MutableData(
                    XorName.hash_of(f"chaos-md:{self.seed}:{i}".encode()), MD_TAG, {},
                    {ANYONE: PermissionSet.allowing(Action.INSERT, Action.UPDATE, Action.DELETE)},
                    0, frozenset({owner.public_key}),
                )
                last: Exception | None = None
                for _ in range(attempts):
                    try:
                        await owner.put_mdata(md)
                        break
                    except E.DataExists:
                        break
                    except (E.NetworkError, E.ProtocolError) as exc:
                        last = exc
                        await trio.sleep(1.0)
                else:
                    raise RuntimeError(f"could not create {self.md_label(i)} in {attempts} attempts: {last!r}")
                self.mds.append(md)

    # ------------------------------------------------------------------ client crashes

    def crash_client(self, rng: random.Random) -> int | None:
        """Cancel one running client process mid-operation (its op becomes ``info``)."""
        if not self._scopes:
            return None
        worker = rng.choice(sorted(self._scopes))
        self._scopes[worker].cancel()
        return worker

    async def with_clients(self, worker: int, body: Any, keys: Any = None) -> None:
        """Run `body(client)` with fresh clients until the run stops; a crash starts a new one."""
        while not self.stopping:
            scope = trio.CancelScope()
            self._scopes[worker] = scope
            with scope:
                try:
                    async with self.sim.client(keys=keys, timeout=self.config.client_timeout) as client:
                        await body(client)
                except* (E.SafeError, trio.TooSlowError):
                    self.counts["client_bootstrap_failures"] += 1  # no contact answered
                    await trio.sleep(1.0)
            del self._scopes[worker]
            if scope.cancelled_caught:
                self.counts["client_crashes"] += 1
                await trio.sleep(0.5)  # the crashed client restarts

    # ------------------------------------------------------------------ registers

    async def register_process(self, worker: int) -> None:
        rng = self.op_rng(f"register:{worker}")
        beliefs: dict[tuple[str, str], tuple[bytes | None, int] | None] = {}
        keys = self.registers()

        async def body(client: NetworkClient) -> None:
            pid = self.new_pid()
            while not self.stopping:
                key = rng.choice(keys)
                outcome = await self._register_op(client, pid, key, beliefs, rng)
                if outcome == "info":
                    pid = self.new_pid()
                await trio.sleep(rng.expovariate(1.0 / self.config.think))

        await self.with_clients(worker, body)

    def _choose(self, belief: tuple[bytes | None, int] | None, rng: random.Random, n: int) -> tuple[str, Any]:
        content = f"v{n}".encode()
        r = rng.random()
        if r < self.config.read_ratio:
            return "read", None
        if belief is None:
            return ("insert", content) if rng.random() < 0.9 else ("update", (content, 1))
        version = belief[1] + 1
        r = rng.random()
        if r < 0.8:
            return "update", (content, version)
        if r < 0.9:
            return "delete", version
        return "insert", content

    async def _register_op(
        self,
        client: NetworkClient,
        pid: int,
        key: tuple[str, str],
        beliefs: dict[tuple[str, str], tuple[bytes | None, int] | None],
        rng: random.Random,
    ) -> str:
        f, value = self._choose(beliefs.get(key), rng, len(self.history))
        address, entry = self.address(key), key[1].encode()
        started = trio.current_time()
        op = self.history.invoke(pid, key, f, value, started)
        retries = client.stats["retries"]
        try:
            if f == "read":
                try:
                    got: Value | None = await client.get_value(address, entry)
                except E.NoSuchEntry:
                    got = None
                output = None if got is None else (got.content, got.entry_version)
                self.complete(op, "ok", started, output=output)
                beliefs[key] = output
                return "ok"
            action: EntryAction = Ins(value) if f == "insert" else Update(*value) if f == "update" else Del(value)
            request_id = rng.randbytes(16)
            await client.call(MutateEntries(address, {entry: action}), request_id=request_id)
            self.complete(op, "ok", started)
            beliefs[key] = (value, 0) if f == "insert" else value if f == "update" else (b"", value)
            return "ok"
        except E.InvalidEntryActions as exc:
            problem = exc.errors.get(entry)
            seen = None  # what the refusal saw: an observation the checker holds it to
            if problem is not None and problem.version is not None:
                beliefs[key] = (None, problem.version)
                seen = {"version": problem.version}
            elif problem is not None:
                beliefs[key] = None  # no such entry
                seen = {"version": -1}
            definite = client.stats["retries"] == retries
            self.complete(op, "fail" if definite else "info", started, error=exc, output=seen)
            return "fail" if definite else "info"
        except E.ClientError as exc:
            if isinstance(exc, E.NoSuchData):
                self.anomalies.append(f"{key[0]} vanished: {f} at t={started:.3f} got {exc}")
            # A refusal is definite only if this very attempt was the only one (see above).
            definite = f != "read" and client.stats["retries"] == retries
            self.complete(op, "fail" if definite else "info", started, error=exc)
            return "fail" if definite else "info"
        except (E.SafeError, trio.TooSlowError, ValueError, TypeError) as exc:
            self.complete(op, "info", started, error=exc)
            return "info"
        except BaseException:  # the client crashed (its task was cancelled) mid-operation
            self.complete(op, "info", started, error="client crashed")
            raise

    def complete(self, op: Op, outcome: str, started: float, *, output: Any = None, error: Any = None,
                  history: History | None = None) -> None:
        history = history or self.history
        now = trio.current_time()
        if outcome == "ok":
            history.ok(op, output, now)
        elif outcome == "fail":
            history.fail(op, error, now, observed=output)
        else:
            history.info(op, now, error)
        self.counts[f"{op.f}:{outcome}"] += 1
        self.latencies.append(Latency(op.f, outcome, now - started, now))
        self.sim.trace.event(now, "op", op.f, process=op.process, key="/".join(map(str, _flat(op.key))),
                             outcome=outcome)

    # ------------------------------------------------------------------ chunks

    async def chunk_process(self, worker: int) -> None:
        rng = self.op_rng(f"chunks:{worker}")

        async def body(client: NetworkClient) -> None:
            pid = self.new_pid()
            while not self.stopping:
                known = sorted(self.chunk_values)
                if not known or rng.random() < 0.5:
                    outcome = await self._put_chunk(client, pid, rng.randbytes(rng.randrange(32, 2048)))
                else:
                    outcome = await self._get_chunk(client, pid, rng.choice(known))
                if outcome == "info":
                    pid = self.new_pid()
                await trio.sleep(rng.expovariate(1.0 / self.config.chunk_think))

        await self.with_clients(1000 + worker, body)

    async def _put_chunk(self, client: NetworkClient, pid: int, value: bytes) -> str:
        name = sha3_256(value)
        self.chunk_values[name] = value
        started = trio.current_time()
        op = self.chunks.invoke(pid, ("chunk", name.hex()[:16]), "write", name.hex()[:16], started)
        try:
            await client.put_idata(value)
        except E.ClientError as exc:
            self.complete(op, "fail", started, error=exc, history=self.chunks)
            return "fail"
        except (E.SafeError, trio.TooSlowError, ValueError, TypeError) as exc:
            self.complete(op, "info", started, error=exc, history=self.chunks)
            return "info"
        except BaseException:
            self.complete(op, "info", started, error="client crashed", history=self.chunks)
            raise
        self.complete(op, "ok", started, history=self.chunks)
        return "ok"

    async def _get_chunk(self, client: NetworkClient, pid: int, name: bytes) -> str:
        started = trio.current_time()
        op = self.chunks.invoke(pid, ("chunk", name.hex()[:16]), "read", None, started)
        try:
            got = await client.get_idata(name)
            output = sha3_256(got).hex()[:16]
        except E.NoSuchData:
            output = None
        except (E.SafeError, trio.TooSlowError, ValueError, TypeError) as exc:
            self.complete(op, "info", started, error=exc, history=self.chunks)
            return "info"
        except BaseException:
            self.complete(op, "info", started, error="client crashed", history=self.chunks)
            raise
        self.complete(op, "ok", started, output=output, history=self.chunks)
        return "ok"

    # ------------------------------------------------------------------ lookups

    async def lookup_process(self, worker: int) -> None:
        rng = self.op_rng(f"lookups:{worker}")
        replication = self.sim.config.replication

        async def body(client: NetworkClient) -> None:
            while not self.stopping:
                target = XorName.random(rng)
                try:
                    found = await client.find_group(target, fresh=True)
                except (E.SafeError, trio.TooSlowError):
                    self.lookups["failed"] += 1
                else:
                    want = {bytes(n.name) for n in self.sim.close_group(target, replication)}
                    got = {bytes(c.name) for c in found[:replication]}
                    self.lookups["exact" if got == want else "inexact"] += 1
                await trio.sleep(rng.expovariate(1.0 / self.config.lookup_think))

        await self.with_clients(2000 + worker, body)

    # ------------------------------------------------------------------ the end of a run

    async def final_reads(self, attempts: int = 8) -> dict[Hashable, Any]:
        """Each register's value read after healing (missing if it cannot be read)."""
        finals: dict[Hashable, Any] = {}
        async with self.sim.client(timeout=self.config.client_timeout) as client:
            for key in self.registers():

                async def read(key: tuple[str, str] = key) -> tuple[bytes, int]:
                    got = await client.get_value(self.address(key), key[1].encode())
                    return got.content, got.entry_version

                read_ok, value = await _read_after_healing(read, E.NoSuchEntry, attempts)
                if read_ok:
                    finals[key] = value
        return finals

    async def final_chunks(self, attempts: int = 4) -> dict[Hashable, Any]:
        """For each chunk ever put, what a get finds after healing (digest, or None)."""
        finals: dict[Hashable, Any] = {}
        async with self.sim.client(timeout=self.config.client_timeout) as client:
            for name in sorted(self.chunk_values):

                async def read(name: bytes = name) -> str:
                    return sha3_256(await client.get_idata(name)).hex()[:16]

                read_ok, value = await _read_after_healing(read, E.NoSuchData, attempts)
                if read_ok:
                    finals[("chunk", name.hex()[:16])] = value
        return finals


def _flat(key: Any) -> tuple[Any, ...]:
    return tuple(key) if isinstance(key, tuple) else (key,)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _read_after_healing(read: Callable[[], Awaitable[Any]], absent: type[E.SafeError],
                              attempts: int) -> tuple[bool, Any]:
    """(True, what `read` returns), (True, None) when the network answers `absent`, or
    (False, None) when every attempt failed otherwise; failures back off 2 s, 4 s, ..."""
    for attempt in range(attempts):
        try:
            return True, await read()
        except absent:
            return True, None
        except (E.SafeError, trio.TooSlowError):
            await trio.sleep(2.0 * (attempt + 1))
    return False, None
