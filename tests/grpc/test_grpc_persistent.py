"""Persistent subscriptions through the gateway, with kurrentdbclient: create, read with acks
and a parked nack, info, list, replay of parked events, update and delete. Runs once the
store has persistent subscriptions (eventstore.persistent)."""

from __future__ import annotations

import json
import uuid

import pytest
from gateway_testing import gateway
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import AlreadyExistsError, NotFoundError

pytest.importorskip("eventstore.persistent", reason="the store's persistent subscriptions are not in this tree")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    with gateway(["--mock", str(tmp_path_factory.mktemp("grpc-ps") / "net.mock")], "kdb") as running, \
            KurrentDBClient(uri=running.uri) as c:
        yield c


def new(n: int) -> NewEvent:
    return NewEvent(type="Counted", data=json.dumps({"n": n}).encode(), content_type="application/json")


def numbers(events) -> list[int]:
    return [json.loads(e.data)["n"] for e in events]


def test_a_group_on_a_stream_delivers_acks_parks_and_replays(client):
    s, group = f"work-{uuid.uuid4().hex[:8]}", "workers"
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n) for n in range(3)])
    client.create_subscription_to_stream(group, s, message_timeout=30)
    with pytest.raises(AlreadyExistsError):
        client.create_subscription_to_stream(group, s)

    subscription = client.read_subscription_to_stream(group, s)
    seen = []
    for event in subscription:
        seen.append(event)
        if json.loads(event.data)["n"] == 1:
            subscription.nack(event, action="park")
        else:
            subscription.ack(event)
        if len(seen) == 3:
            break
    subscription.stop()
    assert numbers(seen) == [0, 1, 2]

    info = client.get_subscription_info(group, s)
    assert (info.group_name, info.event_source, info.parked_message_count) == (group, s, 1)
    assert [i.group_name for i in client.list_subscriptions_to_stream(s)] == [group]

    client.replay_parked_events(group, s)
    again = client.read_subscription_to_stream(group, s)
    replayed = next(iter(again))
    again.ack(replayed)
    again.stop()
    assert numbers([replayed]) == [1]

    client.update_subscription_to_stream(group, s, max_retry_count=3)
    assert client.get_subscription_info(group, s).max_retry_count == 3
    client.delete_subscription(group, s)
    with pytest.raises(NotFoundError):
        client.get_subscription_info(group, s)


def test_a_group_on_all_from_the_end_gets_only_new_events(client):
    group = f"all-{uuid.uuid4().hex[:8]}"
    s = f"later-{uuid.uuid4().hex[:8]}"
    client.create_subscription_to_all(group, from_end=True)
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(7)])
    subscription = client.read_subscription_to_all(group)
    event = next(e for e in subscription if e.stream_name == s)
    subscription.ack(event)
    subscription.stop()
    assert numbers([event]) == [7]


def test_a_group_on_a_category(client):
    category = f"cat{uuid.uuid4().hex[:8]}"
    group = "by-category"
    client.create_subscription_to_stream(group, f"$ce-{category}", from_end=False)
    client.append_to_stream(f"{category}@1", current_version=StreamState.NO_STREAM, events=[new(1)])
    client.append_to_stream(f"{category}@2", current_version=StreamState.NO_STREAM, events=[new(2)])
    subscription = client.read_subscription_to_stream(group, f"$ce-{category}")
    got = []
    for event in subscription:
        subscription.ack(event)
        got.append(event)
        if len(got) == 2:
            break
    subscription.stop()
    assert sorted(numbers(got)) == [1, 2] and {e.stream_name for e in got} == {f"{category}@1", f"{category}@2"}
