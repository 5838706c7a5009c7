"""The `eventsourcing` library on the event store: its own recorder test cases, run
against our persistence module on a mock network, and its example application (bank
accounts) run unchanged - on the mock, and on real node cores with a node crashed."""

from __future__ import annotations

import contextlib
import itertools
import os
import unittest
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from uuid import uuid4

import trio
from eventsourcing.persistence import (
    AggregateRecorder,
    InfrastructureFactory,
    IntegrityError,
    NotSupportedError,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests import application as library_app
from eventsourcing.tests import persistence as library  # its abstract recorder test cases

from client.api import DataClient
from client.localnet import LocalNetwork
from client.mock import MockNetwork
from eventstore import eventsourcing_module as module
from eventstore import trio_bridge
from eventstore.api import EventStore
from eventstore.eventsourcing_module import (
    Factory,
    SafeAggregateRecorder,
    SafeApplicationRecorder,
    SafeProcessRecorder,
    SafeTrackingRecorder,
    TrioBridge,
    register_bridge,
    unregister_bridge,
)
from node.keys import Keypair

KEYS = Keypair(b"\x0b" * 32)
_names = itertools.count()


@contextlib.contextmanager
def mock_bridge(net: MockNetwork | None = None) -> Iterator[str]:
    """A bridge (its own trio thread) to a mock network, registered under a fresh name."""
    network = net or MockNetwork(seed=7)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[DataClient]:
        yield network.client(KEYS)

    bridge = TrioBridge.start(connect, poll_interval=0.02, pending_grace=0.5)
    name = f"mock-{next(_names)}"
    register_bridge(name, bridge)
    try:
        yield name
    finally:
        unregister_bridge(name)
        bridge.close()


class MockFactoryMixin(unittest.TestCase):
    """Each test: a fresh mock network behind a bridge, and a factory on it."""

    def setUp(self) -> None:
        super().setUp()
        self._bridge_cm = mock_bridge()
        self.bridge_name = self._bridge_cm.__enter__()
        self.factories: list[Factory] = []

    def tearDown(self) -> None:
        for factory in self.factories:
            factory.close()
        self._bridge_cm.__exit__(None, None, None)
        super().tearDown()

    def factory(self) -> Factory:
        env = {"PERSISTENCE_MODULE": "eventstore.eventsourcing_module", module.SAFENET_BRIDGE: self.bridge_name}
        factory = InfrastructureFactory.construct(env)
        assert isinstance(factory, Factory)
        # A fresh application name per recorder: a fresh sequence, as each test expects.
        factory.app = f"test-{uuid4().hex[:8]}"
        self.factories.append(factory)
        return factory


class TestAggregateRecorder(MockFactoryMixin, library.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        recorder = self.factory().aggregate_recorder("snapshots")
        assert isinstance(recorder, SafeAggregateRecorder)
        return recorder

    def test_several_originators_in_one_call_are_refused(self) -> None:
        recorder = self.create_recorder()
        a, b = (StoredEvent(uuid4(), 1, "t", b"s") for _ in range(2))
        with self.assertRaises(NotSupportedError):
            recorder.insert_events([a, b])
        self.assertEqual(recorder.select_events(a.originator_id), [])


class TestApplicationRecorder(MockFactoryMixin, library.ApplicationRecorderTestCase[SafeApplicationRecorder]):
    def create_recorder(self) -> SafeApplicationRecorder:
        recorder = self.factory().application_recorder()
        assert isinstance(recorder, SafeApplicationRecorder)
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_two_processes_share_one_sequence(self) -> None:
        """Two recorders of one application (two processes: nothing shared in memory)
        number their events as one sequence and refuse each other's versions."""
        first = self.create_recorder()
        second = SafeApplicationRecorder(first.bridge, first.database, first.stream)
        second._sequence = module._Sequence(first.bridge, first.database, first.stream)
        originator = uuid4()
        self.assertEqual(first.insert_events([StoredEvent(originator, 1, "t", b"1")]), [1])
        with self.assertRaises(IntegrityError):
            second.insert_events([StoredEvent(originator, 1, "t", b"again")])
        self.assertEqual(second.insert_events([StoredEvent(originator, 2, "t", b"2")]), [2])
        self.assertEqual([n.id for n in first.select_notifications(None, 10)], [1, 2])
        self.assertEqual([e.state for e in first.select_events(originator)], [b"1", b"2"])


class TestProcessRecorder(MockFactoryMixin, library.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = self.factory().process_recorder()
        assert isinstance(recorder, SafeProcessRecorder)
        return recorder


class TestTrackingRecorder(MockFactoryMixin, library.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder = self.factory().tracking_recorder()
        assert isinstance(recorder, SafeTrackingRecorder)
        return recorder


class TestExampleApplicationOnMock(library_app.ExampleApplicationTestCase):
    """The library's bank-accounts application, configured only through the environment."""

    expected_factory_topic = "eventstore.eventsourcing_module:Factory"

    def setUp(self) -> None:
        self._bridge_cm = mock_bridge()
        name = self._bridge_cm.__enter__()
        self._saved = {k: os.environ.get(k) for k in ("PERSISTENCE_MODULE", module.SAFENET_BRIDGE)}
        os.environ["PERSISTENCE_MODULE"] = "eventstore.eventsourcing_module"
        os.environ[module.SAFENET_BRIDGE] = name

    def tearDown(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._bridge_cm.__exit__(None, None, None)


# ------------------------------------------------------------------------ real node cores


async def test_example_application_on_real_node_cores_with_a_node_crashed(monkeypatch, autojump_clock):
    """The library's example application, unchanged, on eight real node cores. Its
    threads call into this trio loop through an attached bridge; midway through, the node
    closest to the application sequence's stream (so: one that holds it) is crashed."""
    async with LocalNetwork.start(nodes=8, seed=5) as net, net.client(KEYS) as client:
        store = EventStore(client, pending_grace=1.0, poll_interval=0.1)
        send, sent, crashed = client._send, [0], []

        async def crash_midway(request):
            sent[0] += 1
            db = store.database(module.DEFAULT_DATABASE)
            if sent[0] >= CRASH_AT and not crashed and db.info is not None:
                segment = db.layout.stream_segment("events@BankAccounts", 0)
                crashed.append(net.close_group(segment.name)[0])
                await net.crash(crashed[0])
            return await send(request)

        client._send = crash_midway  # type: ignore[method-assign]
        register_bridge("localnet", TrioBridge.attach(store))
        monkeypatch.setenv("PERSISTENCE_MODULE", "eventstore.eventsourcing_module")
        monkeypatch.setenv(module.SAFENET_BRIDGE, "localnet")
        try:
            result = unittest.TestResult()
            await trio.to_thread.run_sync(_example_case().run, result)
            assert result.wasSuccessful(), result.errors + result.failures
        finally:
            unregister_bridge("localnet")
        assert crashed and sent[0] > CRASH_AT, sent  # the crash came before the end


CRASH_AT = 60  # of the example's requests (it makes about 100)


def _example_case() -> unittest.TestCase:
    """The library's example test, made here so pytest does not collect it on its own."""

    class ExampleOnLocalnet(library_app.ExampleApplicationTestCase):
        expected_factory_topic = "eventstore.eventsourcing_module:Factory"

    return ExampleOnLocalnet("test_example_application")



def test_configured_by_settings_alone_and_durable_across_processes(tmp_path, monkeypatch):
    """No bridge registered: the factory starts its own trio thread on the mock file named
    by SAFENET_MOCK. A second application object (another process, for all it knows)
    finds what the first one recorded."""
    monkeypatch.delenv(module.SAFENET_BRIDGE, raising=False)
    monkeypatch.delenv("SAFENET_CLIENT_KEY", raising=False)  # the key goes next to the mock file
    env = {"PERSISTENCE_MODULE": "eventstore.eventsourcing_module", "SAFENET_MOCK": str(tmp_path / "bank.mock"),
           "BANKACCOUNTS_SAFENET_DATABASE": "bank"}  # settings may carry the application's name
    first = library_app.BankAccounts(env=env)
    account = first.open_account("Alice", "alice@example.com")
    first.credit_account(account, Decimal("12.50"))
    first.close()
    assert (tmp_path / "bank.mock.client.key").exists()
    second = library_app.BankAccounts(env=env)
    try:
        assert second.get_balance(account) == Decimal("12.50")
        assert second.factory.database == "bank"
        assert [n.id for n in second.notification_log.select(start=1, limit=10)] == [1, 2]
    finally:
        second.close()
    assert trio_bridge._shared == {}  # the last application closed its bridge
