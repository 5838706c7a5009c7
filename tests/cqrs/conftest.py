"""Fixtures of the CQRS tests: a mock network, stores on it, and a database.

The first lines work around the test tree's layout, as tests/eventstore/conftest.py does:
`tests/` is on sys.path, where test directories without `__init__.py` would shadow the real
packages as namespace packages. Put the repository root first instead.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)
for _name in ("node", "client", "eventstore"):
    _module = sys.modules.get(_name)
    if _module is not None and getattr(_module, "__file__", None) is None:
        del sys.modules[_name]

import pytest  # noqa: E402

from client.mock import MockNetwork  # noqa: E402
from eventstore.api import EventStore  # noqa: E402
from node.keys import Keypair  # noqa: E402

APP_KEYS = Keypair(b"\x09" * 32)


@pytest.fixture
def net() -> MockNetwork:
    return MockNetwork(seed=1)


@pytest.fixture
def make_store(net: MockNetwork):
    """Another process of the same app: same key, nothing shared in memory."""

    def make(**kwargs: object) -> EventStore:
        kwargs.setdefault("pending_grace", 1.0)
        kwargs.setdefault("poll_interval", 0.05)
        return EventStore(net.client(APP_KEYS), **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def db(make_store):
    return await make_store().create_database("cqrs")
