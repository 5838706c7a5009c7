"""Fixtures of the event-store tests: a mock network and stores on it."""

from __future__ import annotations

import pytest

from client.mock import MockNetwork
from eventstore.api import EventStore
from node.keys import Keypair


@pytest.fixture
def net() -> MockNetwork:
    return MockNetwork(seed=1)


@pytest.fixture
def app_keys() -> Keypair:
    return Keypair(b"\x07" * 32)


@pytest.fixture
def make_store(net: MockNetwork, app_keys: Keypair):
    """Another process of the same app: same key, nothing shared in memory."""

    def make(**kwargs: object) -> EventStore:
        kwargs.setdefault("pending_grace", 1.0)
        kwargs.setdefault("poll_interval", 0.05)
        return EventStore(net.client(app_keys), **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def store(make_store) -> EventStore:
    """A store whose key is its own account owner (the mock's unregistered mode)."""
    return make_store()


@pytest.fixture
async def db(store: EventStore):
    return await store.create_database("shop")
