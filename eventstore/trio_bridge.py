"""The bridge between the synchronous `eventsourcing` library and this trio event store.

The library calls its recorders from many threads and expects them to block; the client
is trio. A `TrioBridge` owns one trio loop - its own thread running the client (what the
persistence module's factory starts from the SAFENET_* settings), or the caller's own loop
(`TrioBridge.attach`, for programs already in trio that run the library in worker threads).
Library threads hand coroutines to that loop with `trio.from_thread.run`, and the store's
errors come back as the library's (OperationalError, DataError, DatabaseError).

eventstore/eventsourcing_module.py holds the recorders that use it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import trio
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    InfrastructureFactoryError,
    InterfaceError,
    OperationalError,
)
from eventsourcing.utils import Environment

from client.api import DataClient
from node import errors as E
from node.keys import Keypair

from .errors import CorruptData, EventStoreError, InvalidEvent
from .store import EventStore

T = TypeVar("T")

CALL_TIMEOUT = 120.0  # seconds for one recorder call on the network

SAFENET_BRIDGE = "SAFENET_BRIDGE"
SAFENET_MOCK = "SAFENET_MOCK"
SAFENET_CLUSTER = "SAFENET_CLUSTER"
SAFENET_DATABASE = "SAFENET_DATABASE"
SAFENET_CLIENT_KEY = "SAFENET_CLIENT_KEY"
SAFENET_POLL_INTERVAL = "SAFENET_POLL_INTERVAL"


# ================================================================================ the bridge


@contextlib.contextmanager
def as_library_errors(timeout: float) -> Iterator[None]:
    """Raise the store's and the network's failures as the `eventsourcing` library's errors."""
    try:
        yield
    except trio.TooSlowError:
        raise OperationalError(f"the network did not answer within {timeout}s") from None
    except E.NetworkError as exc:
        raise OperationalError(f"{type(exc).__name__}: {exc}") from exc
    except (InvalidEvent, CorruptData) as exc:
        raise DataError(str(exc)) from exc
    except EventStoreError as exc:
        raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc


class TrioBridge:
    """Runs coroutines on one trio loop for synchronous callers in other threads."""

    def __init__(self, store: EventStore, token: trio.lowlevel.TrioToken, *, timeout: float = CALL_TIMEOUT) -> None:
        self.store = store
        self.token = token
        self.timeout = timeout
        self._thread: threading.Thread | None = None
        self._scope: trio.CancelScope | None = None
        self._closed = False

    @classmethod
    def attach(cls, store: EventStore, **kwargs: Any) -> TrioBridge:
        """A bridge to the trio loop this is called from, with `store` living on it. The
        library must then be called from other threads (e.g. `trio.to_thread.run_sync`):
        a call from the loop's own thread would wait for itself."""
        return cls(store, trio.lowlevel.current_trio_token(), **kwargs)

    @classmethod
    def start(
        cls,
        connect: Callable[[], contextlib.AbstractAsyncContextManager[DataClient]],
        *,
        timeout: float = CALL_TIMEOUT,
        **store_options: Any,
    ) -> TrioBridge:
        """A bridge with a loop of its own: a daemon thread running trio, connected with
        `connect()`, until `close()`."""
        ready = threading.Event()
        box: dict[str, Any] = {}

        async def main() -> None:
            try:
                async with connect() as client:
                    with trio.CancelScope() as scope:
                        box["bridge"] = cls(EventStore(client, **store_options),
                                            trio.lowlevel.current_trio_token(), timeout=timeout)
                        box["scope"] = scope
                        ready.set()
                        await trio.sleep_forever()
            except BaseException as exc:  # reported to the starting thread
                box.setdefault("error", exc)
            finally:
                ready.set()

        thread = threading.Thread(target=trio.run, args=(main,), name="safenet-trio-bridge", daemon=True)
        thread.start()
        if not ready.wait(timeout) or "bridge" not in box:
            raise InterfaceError(f"could not connect to the network: {box.get('error', 'timed out')!r}")
        bridge: TrioBridge = box["bridge"]
        bridge._thread, bridge._scope = thread, box["scope"]
        return bridge

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` on the loop and return its result (from another thread).
        Network failures surface as the library's OperationalError."""
        if self._closed:
            raise InterfaceError("the bridge to the network is closed")

        async def call() -> T:
            with trio.fail_after(self.timeout):
                return await fn(*args)

        with as_library_errors(self.timeout):
            try:
                return trio.from_thread.run(call, trio_token=self.token)
            except (trio.RunFinishedError, trio.Cancelled):
                # Cancelled reaches this thread when the loop shuts down during the call.
                raise InterfaceError("the trio loop of the bridge has stopped") from None

    def close(self) -> None:
        """Stop the loop, if the bridge started it."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self.token)
            self._thread.join(timeout=10)


# Bridges made by programs (and tests) for the factory to find by name: SAFENET_BRIDGE=name.
_registered: dict[str, TrioBridge] = {}
# Bridges the factory started from settings, shared by the factories of one process.
_shared: dict[tuple[str, ...], list[Any]] = {}  # key -> [bridge, users]
_shared_lock = threading.Lock()


def register_bridge(name: str, bridge: TrioBridge) -> None:
    """Let factories configured with SAFENET_BRIDGE=name use `bridge`."""
    _registered[name] = bridge


def unregister_bridge(name: str) -> None:
    _registered.pop(name, None)


def _connector(
    env: Environment,
) -> tuple[tuple[str, ...], Callable[[], contextlib.AbstractAsyncContextManager[DataClient]]]:
    from client.connect import FileMockNetwork, key_file  # the same files and key as `safenet es`

    mock = env.get(SAFENET_MOCK)
    key_path = Path(env.get(SAFENET_CLIENT_KEY) or key_file(mock)).expanduser()
    if mock:
        path = Path(mock).resolve()

        @contextlib.asynccontextmanager
        async def mock_client() -> AsyncIterator[DataClient]:
            yield FileMockNetwork(path).client(Keypair.load_or_create(key_path))

        return ("mock", str(path), str(key_path)), mock_client

    from client.network import NetworkClient
    from node.clusterfile import ClusterError, load_cluster_file

    try:
        cluster_path, info = load_cluster_file(env.get(SAFENET_CLUSTER))
    except ClusterError as exc:
        raise InfrastructureFactoryError(str(exc)) from None

    def cluster_client() -> contextlib.AbstractAsyncContextManager[DataClient]:
        keys = Keypair.load_or_create(key_path)
        return NetworkClient.open(info.addresses, keys, replication=info.replication)

    return ("cluster", str(cluster_path.resolve()), str(key_path)), cluster_client


def acquire_bridge(env: Environment) -> tuple[TrioBridge, Callable[[], None]]:
    name = env.get(SAFENET_BRIDGE)
    if name:
        try:
            return _registered[name], lambda: None
        except KeyError:
            raise InfrastructureFactoryError(f"no bridge registered as {name!r} ({SAFENET_BRIDGE})") from None
    key, connect = _connector(env)
    poll = float(env.get(SAFENET_POLL_INTERVAL) or 0.2)
    with _shared_lock:
        entry = _shared.get(key)
        if entry is None:
            entry = _shared[key] = [TrioBridge.start(connect, poll_interval=poll), 0]
        entry[1] += 1

    def release() -> None:
        with _shared_lock:
            entry[1] -= 1
            if entry[1] == 0 and _shared.get(key) is entry:
                del _shared[key]
                entry[0].close()

    return entry[0], release
