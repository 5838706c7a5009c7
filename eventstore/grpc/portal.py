"""The bridge between gRPC's threads and the trio event store.

grpcio's synchronous server runs each call's handler in a thread of its pool. The event
store is trio code, and one trio run owns it: a thread of its own runs `trio.run`, connects
to the network, opens the database and then waits to be stopped. A handler calls into it
with `portal.call(fn, *args)`, which is `trio.from_thread.run` with that run's token: the
coroutine runs in the store's trio run, the handler's thread blocks until it returns, and an
exception crosses back as itself. So the store keeps one connection, one set of caches and
one group-commit queue for every gRPC client, and never sees a thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from client.connect import connect
from node.clikit import leaf

from ..database import Database
from ..errors import DatabaseExists, DatabaseNotFound
from ..store import EventStore

T = TypeVar("T")


class PortalClosed(Exception):
    """The store's trio run has ended (the gateway is stopping)."""


class StorePortal:
    """A trio run in a thread holding one open database; `call` runs a coroutine in it."""

    def __init__(self, cluster: str | None, mock: str | None, database: str) -> None:
        self.cluster = cluster
        self.mock = mock
        self.database_name = database
        self.db: Database | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="eventstore-trio", daemon=True)

    def start(self) -> StorePortal:
        """Connect and open (or create) the database; raise what went wrong if that failed."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to start(), or the run ended after it
            self._error = leaf(exc)
        finally:
            self._token = None
            self._ready.set()

    async def _main(self) -> None:
        async with connect(self.cluster, self.mock) as client:
            store = EventStore(client)
            self.db = await _open_or_create(store, self.database_name)
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """Run `fn(*args)` in the store's trio run and return its result (or raise its
        error, unwrapped from any exception group). `timeout` bounds it (trio.TooSlowError)."""
        token = self._token
        if token is None:
            raise PortalClosed("the event store is not running")

        async def bounded() -> T:
            if timeout is None:
                return await fn(*args)
            with trio.fail_after(max(timeout, 0.0)):
                return await fn(*args)

        try:
            return trio.from_thread.run(bounded, trio_token=token)
        except trio.RunFinishedError:
            raise PortalClosed("the event store stopped") from None
        except BaseExceptionGroup as group:
            raise leaf(group) from None

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Start `fn()` as a task of the store's trio run, living until it returns or the
        portal stops (a subscription's feed)."""

        async def start() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(fn)

        self.call(start)

    def stop(self) -> None:
        token, stop = self._token, self._stop
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        self._thread.join(timeout=10)


async def _open_or_create(store: EventStore, name: str) -> Database:
    try:
        return await store.database(name).open()
    except DatabaseNotFound:
        pass
    try:
        return await store.create_database(name)
    except DatabaseExists:  # another gateway made it a moment ago
        return await store.database(name).open()
