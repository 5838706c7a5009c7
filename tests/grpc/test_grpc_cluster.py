"""The gateway on a real 8-node cluster (R = 5): kurrentdbclient appends, reads and follows
through it, and a node SIGKILLed while subscriptions are live neither ends them nor makes
them miss an event."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import trio
from gateway_testing import gateway
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import KurrentDBClientError, NotFoundError, WrongCurrentVersionError

from client.network import NetworkClient
from eventstore.api import EventStore
from node.keys import Keypair

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("grpc-cluster") / "client.key"


@pytest.fixture(scope="module")
def served(cluster8, key_file):
    with gateway(["--cluster", str(cluster8.lc.file)], "kdb", env={"SAFENET_CLIENT_KEY": str(key_file)}) as running:
        yield running


def holders_of_stream(lc, key_file, stream: str) -> list[str]:
    """The close group (node ids) of the stream's first segment: the MD that the stream
    subscription polls and the appends write."""

    async def find() -> list[str]:
        async with NetworkClient.open(lc.load().addresses, Keypair.load_or_create(key_file)) as network:
            db = await EventStore(network).database("kdb").open()
            address = db.layout.stream_segment(stream, 0)
        return (await lc.locate(address.name))["close_group"]

    return trio.run(find)


@pytest.fixture(scope="module")
def client(served):
    with KurrentDBClient(uri=served.uri) as c:
        yield c


def new(n: int) -> NewEvent:
    return NewEvent(type="Counted", data=json.dumps({"n": n}).encode(), content_type="application/json")


def test_append_read_and_all_on_a_cluster(healthy_cluster, client):
    s = f"acct-{uuid.uuid4().hex[:8]}"
    first = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(0), new(1)])
    client.append_to_stream(s, current_version=1, events=new(2))
    with pytest.raises(WrongCurrentVersionError) as caught:
        client.append_to_stream(s, current_version=0, events=[new(9)])
    assert caught.value.actual_version == 2
    assert [json.loads(e.data)["n"] for e in client.get_stream(s)] == [0, 1, 2]
    assert [e.stream_position for e in client.get_stream(s, backwards=True, limit=2)] == [2, 1]
    mine = [e.stream_position for e in client.read_all(commit_position=first) if e.stream_name == s]
    assert mine == [1, 2]
    client.delete_stream(s, current_version=2)
    with pytest.raises(NotFoundError):
        client.get_stream(s)


def append_until_acknowledged(client: KurrentDBClient, stream: str, version: int, event: NewEvent) -> None:
    """Retry the same event (same id) until the gateway acknowledges it: a retry after a lost
    answer finds the event already there and succeeds without storing it twice."""
    for _attempt in range(20):
        try:
            client.append_to_stream(stream, current_version=version - 1 if version else StreamState.NO_STREAM,
                                    events=[event])
            return
        except KurrentDBClientError:
            continue
    raise AssertionError(f"event {version} was never acknowledged")


def test_a_node_killed_during_subscriptions_neither_ends_them_nor_loses_an_event(healthy_cluster, client, key_file):
    lc = healthy_cluster.lc
    s = f"live-{uuid.uuid4().hex[:8]}"
    group = holders_of_stream(lc, key_file, s)
    # The closest holder of what is followed: the member that writes to it go to first.
    victim = next(n for n in lc.load().nodes if n.id == group[0])
    total = 10
    to_stream = client.subscribe_to_stream(s)
    to_all = client.subscribe_to_all(commit_position=client.get_commit_position(), filter_by_stream_name=True,
                                      filter_include=[s])
    got: dict[str, list[int]] = {"stream": [], "all": []}

    def follow(subscription, key: str) -> None:
        for event in subscription:
            got[key].append(json.loads(event.data)["n"])
            if len(got[key]) == total:
                return

    threads = [threading.Thread(target=follow, args=(to_stream, "stream"), daemon=True),
               threading.Thread(target=follow, args=(to_all, "all"), daemon=True)]
    for t in threads:
        t.start()
    for n in range(total):
        if n == total // 2:
            assert lc.kill(victim.index)
        append_until_acknowledged(client, s, n, new(n))
    for t in threads:
        t.join(timeout=120)
    to_stream.stop()
    to_all.stop()
    assert got["stream"] == list(range(total))
    assert got["all"] == list(range(total))
