"""What every page works with: the store, where its data lives, the cluster (if any), and
the nursery that background work runs in.

Whoever serves the app builds one `UiContext` inside its trio run and hands it to
`create_app`: `serve` in app.py for `safenet ui`, a test for the fast tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from ..cqrs import Projection
from ..database import Database
from ..store import EventStore
from .cluster_control import ClusterControl
from .lookup import Lookups
from .operations import Operations

TAIL_ROWS = 20  # events a live tail page shows when it opens
TAIL_KEEP = 200  # rows the page keeps as new events arrive


@dataclass
class UiContext:
    """`source` describes where the data lives, for the page header ("mock network in
    ./shop.mock", "cluster /x/cluster.json"). `cluster` is None on the mock network.
    `projections` are the projections whose code the UI was given (it can rebuild them)."""

    store: EventStore
    source: str
    nursery: trio.Nursery
    cluster: ClusterControl | None = None
    projections: dict[str, Projection] = field(default_factory=dict)
    lookups: Lookups = field(default_factory=Lookups)
    rebuilds: Operations = field(default_factory=Operations)

    @property
    def mode(self) -> str:
        return "mock" if self.cluster is None else "cluster"

    async def database(self, name: str) -> Database:
        """An open database (DatabaseNotFound if there is none of that name)."""
        return await self.store.database(name).open()
