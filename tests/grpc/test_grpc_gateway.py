"""The gateway (`safenet es serve`, a real process) on a mock network kept in a file, driven
by KurrentDB's own Python client (`kurrentdbclient`) and by an `eventsourcing` application
with KurrentDB persistence, both connected with an ordinary `kurrentdb://` URI."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from gateway_testing import gateway
from kurrentdbclient import CaughtUp, KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)

from client.connect import connect
from eventstore.api import EventStore


@pytest.fixture(scope="module")
def mock_file(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("grpc") / "net.mock"


@pytest.fixture(scope="module")
def served(mock_file):
    with gateway(["--mock", str(mock_file)], "kdb") as running:
        yield running


@pytest.fixture(scope="module")
def client(served):
    with KurrentDBClient(uri=served.uri) as c:
        yield c


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new(kind: str = "Happened", **data: object) -> NewEvent:
    data_bytes = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return NewEvent(type=kind, data=data_bytes, content_type="application/json")


def test_append_with_every_expected_version_and_the_wrong_one_names_the_actual(client):
    s = name("order")
    # BatchAppend (a list of events) and Append (one event) with each expected-version form.
    assert client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n=0), new(n=1)]) > 0
    client.append_to_stream(s, current_version=StreamState.EXISTS, events=new(n=2))
    client.append_to_stream(s, current_version=StreamState.ANY, events=[new(n=3)])
    client.append_to_stream(s, current_version=3, events=new(n=4))
    client.append_to_stream(s, current_version=4, events=[new(n=5)])
    assert client.get_current_version(s) == 5

    for events in ([new(n=9)], new(n=9)):  # BatchAppend's error, then Append's
        with pytest.raises(WrongCurrentVersionError) as caught:
            client.append_to_stream(s, current_version=2, events=events)
        assert caught.value.actual_version == 5 and caught.value.expected_version == 2
        with pytest.raises(WrongCurrentVersionError) as caught:
            client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=events)
        assert caught.value.actual_version == 5
    with pytest.raises(WrongCurrentVersionError) as caught:
        client.append_to_stream(name("fresh"), current_version=StreamState.EXISTS, events=[new()])
    assert caught.value.actual_version == StreamState.NO_STREAM
    assert [json.loads(e.data)["n"] for e in client.get_stream(s)] == [0, 1, 2, 3, 4, 5]


def test_a_retried_append_with_the_same_ids_is_stored_once(client):
    s = name("retry")
    events = [new(n=1), new(n=2)]
    first = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=events)
    assert client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=events) == first
    assert len(client.get_stream(s)) == 2


def test_events_read_back_as_written(client):
    s = name("bytes")
    raw = NewEvent(type="Raw", data=b"\x00\xffnot json", metadata=b"\x01meta", content_type="application/octet-stream")
    spaced = NewEvent(type="Spaced", data=b'{ "a": 1 }', content_type="application/json")
    plain = new("Plain", a=[1, 2], text="été")
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[raw, spaced, plain])
    got = client.get_stream(s)
    assert [(e.id, e.type, e.data, e.metadata) for e in got] == [
        (x.id, x.type, x.data, x.metadata) for x in (raw, spaced, plain)]
    assert got[2].content_type == "application/json" and got[0].content_type == "application/octet-stream"
    assert all(e.recorded_at is not None and abs(e.recorded_at.timestamp() - time.time()) < 600 for e in got)


def test_reads_forwards_backwards_and_from_a_version(client):
    s = name("read")
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n=n) for n in range(10)])
    versions = lambda events: [e.stream_position for e in events]  # noqa: E731
    assert versions(client.get_stream(s)) == list(range(10))
    assert versions(client.get_stream(s, backwards=True)) == list(range(9, -1, -1))
    assert versions(client.get_stream(s, stream_position=4, limit=3)) == [4, 5, 6]
    assert versions(client.get_stream(s, stream_position=4, backwards=True, limit=3)) == [4, 3, 2]
    assert versions(client.get_stream(s, backwards=True, limit=1)) == [9]
    with pytest.raises(NotFoundError):
        client.get_stream(name("never"))


def test_all_reads_forwards_backwards_from_a_position_with_filters(client):
    a, b = name("alla"), name("allb")
    first = client.append_to_stream(a, current_version=StreamState.NO_STREAM, events=[new("A1"), new("A2")])
    client.append_to_stream(b, current_version=StreamState.NO_STREAM, events=[new("B1")])
    last = client.append_to_stream(a, current_version=1, events=[new("A3")])
    assert client.get_commit_position() == last

    tail = [(e.stream_name, e.type) for e in client.read_all(commit_position=first)]
    assert tail == [(a, "A2"), (b, "B1"), (a, "A3")]  # from a position: it is included
    everything = list(client.read_all())
    assert [e.commit_position for e in everything] == sorted(e.commit_position for e in everything)
    assert everything[0].commit_position > 0  # 0 is "the start", before any event
    back = [e.type for e in client.read_all(backwards=True, limit=3)]
    assert back == ["A3", "B1", "A2"]
    before = [e.type for e in client.read_all(commit_position=last, backwards=True, limit=2)]
    assert before == ["B1", "A2"]  # backwards from a position: it is excluded
    assert [e.type for e in client.read_all(commit_position=first, filter_include=["B1"])] == ["B1"]
    by_stream = client.read_all(commit_position=first, filter_include=[a], filter_by_stream_name=True)
    assert [e.type for e in by_stream] == ["A2", "A3"]


def test_catch_up_subscriptions_receive_what_is_appended_after_they_start(client):
    s = name("live")
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new("Old")])
    start = client.get_commit_position()
    to_stream = client.subscribe_to_stream(s, include_caught_up=True)
    to_all = client.subscribe_to_all(commit_position=start, filter_include=["New.*"])
    got: dict[str, list[str]] = {"stream": [], "all": []}
    live = threading.Event()  # the stream subscription has caught up: it is live

    def follow(subscription, key: str, want: int) -> None:
        for event in subscription:
            if isinstance(event, CaughtUp):
                got[key].append("caught-up")
                if key == "stream":
                    live.set()
                continue
            got[key].append(event.type)
            if len([g for g in got[key] if g != "caught-up"]) == want:
                return

    threads = [threading.Thread(target=follow, args=(to_stream, "stream", 2)),
               threading.Thread(target=follow, args=(to_all, "all", 2))]
    for t in threads:
        t.start()
    # Append once the stream subscription is live (the $all one starts from `start`, so it
    # receives the appends whenever it gets going).
    assert live.wait(timeout=30), "the stream subscription never caught up"
    client.append_to_stream(s, current_version=0, events=[new("New1")])
    client.append_to_stream(name("other"), current_version=StreamState.ANY, events=[new("Ignored"), new("New2")])
    for t in threads:
        t.join(timeout=30)
    to_stream.stop()
    to_all.stop()
    assert got["stream"][0] == "Old" and "caught-up" in got["stream"] and got["stream"][-2:] == ["caught-up", "New1"]
    assert got["all"] == ["New1", "New2"]


def test_delete_then_tombstone(client):
    s = name("gone")
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n=0), new(n=1)])
    with pytest.raises(WrongCurrentVersionError):
        client.delete_stream(s, current_version=0)
    client.delete_stream(s, current_version=1)
    with pytest.raises(NotFoundError):
        client.get_stream(s)
    client.append_to_stream(s, current_version=StreamState.ANY, events=[new(n=2)])  # numbering continues
    assert [e.stream_position for e in client.get_stream(s)] == [2]
    with pytest.raises(NotFoundError):
        client.delete_stream(name("never"), current_version=0)

    client.tombstone_stream(s, current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(s)
    with pytest.raises(StreamIsDeletedError):
        client.append_to_stream(s, current_version=StreamState.ANY, events=[new()])  # BatchAppend
    with pytest.raises(FailedPreconditionError, match="is deleted"):  # Append: this client does not
        client.append_to_stream(s, current_version=StreamState.ANY, events=new())  # classify it further


def test_gossip_names_the_gateway_as_the_single_leader(served, client):
    members = client.read_gossip()
    assert [(m.state, m.address, m.port) for m in members] == [("NODE_STATE_LEADER", "127.0.0.1", served.port)]
    with KurrentDBClient(uri=f"kurrentdb+discover://127.0.0.1:{served.port}?tls=false") as discovering:
        assert discovering.get_commit_position() == client.get_commit_position()


def test_the_gateway_holds_no_events_a_second_gateway_and_the_store_agree(mock_file, served, client):
    s = name("shared")
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n=1)])
    with gateway(["--mock", str(mock_file)], "kdb") as second, KurrentDBClient(uri=second.uri) as other:
        other.append_to_stream(s, current_version=0, events=[new(n=2)])
        assert [e.id for e in other.read_all()] == [e.id for e in client.read_all()]
    assert [json.loads(e.data)["n"] for e in client.get_stream(s)] == [1, 2]

    import trio

    async def read_natively() -> list[object]:
        async with connect(None, str(mock_file)) as network:
            return [e.data for e in await EventStore(network).database("kdb").read_stream(s)]

    assert trio.run(read_natively) == [{"n": 1}, {"n": 2}]  # JSON in the store, not opaque bytes


def test_an_eventsourcing_application_saves_and_reloads_aggregates(served):
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
    from eventsourcing.persistence import IntegrityError

    class Dog(Aggregate):
        INITIAL_VERSION = 0  # KurrentDB numbers a stream's events from 0

        @event("Registered")
        def __init__(self, name: str) -> None:
            self.name = name
            self.tricks: list[str] = []

        @event("TrickAdded")
        def add_trick(self, trick: str) -> None:
            self.tricks.append(trick)

    env = {"PERSISTENCE_MODULE": "eventsourcing_kurrentdb", "KURRENTDB_URI": served.uri}
    app = Application(env=env)
    dog = Dog("Fido")
    dog.add_trick("roll over")
    dog.add_trick("play dead")
    app.save(dog)
    app.close()

    again = Application(env=env)  # a second instance: nothing in memory
    loaded = again.repository.get(dog.id)
    assert (loaded.name, loaded.tricks, loaded.version) == ("Fido", ["roll over", "play dead"], 2)
    stale = again.repository.get(dog.id)
    loaded.add_trick("fetch")
    again.save(loaded)
    assert again.repository.get(dog.id).tricks == ["roll over", "play dead", "fetch"]
    stale.add_trick("sit")  # a writer that missed the last save: refused, not overwritten
    with pytest.raises(IntegrityError):
        again.save(stale)
    notifications = again.recorder.select_notifications(start=1, limit=1000)  # the $all read
    mine = [n for n in notifications if str(n.originator_id) == str(dog.id)]
    assert [n.originator_version for n in mine] == [0, 1, 2, 3]
    again.close()


def test_bad_requests_are_refused_with_the_protocols_errors(client):
    from kurrentdbclient.exceptions import KurrentDBClientError

    s = name("bad")
    with pytest.raises(KurrentDBClientError):  # a type starting with $ belongs to the store
        client.append_to_stream(s, current_version=StreamState.ANY, events=[new("$streamDeleted")])
    with pytest.raises(KurrentDBClientError):  # not a regex
        list(client.read_all(filter_include=["(unclosed"]))
    with pytest.raises(NotFoundError):  # nothing was written by either
        client.get_stream(s)


# ----------------------------------------------------------------------------- hostile requests


def test_hostile_requests_get_errors_and_the_gateway_keeps_serving(served, client):
    """Raw gRPC, as an attacker would send it: garbage bodies, an append without options,
    names that are not UTF-8 or far too long, ids that are not ids, 2,000-event batches,
    the largest numbers the protocol can carry."""
    import grpc

    from eventstore.grpc.protocol import shared_pb2, streams_pb2, streams_pb2_grpc

    def code_of(call) -> grpc.StatusCode:
        try:
            result = call()
            if hasattr(result, "__iter__") and not hasattr(result, "ByteSize"):
                list(result)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    Ident = shared_pb2.StreamIdentifier
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = streams_pb2_grpc.StreamsStub(channel)
        garbage = channel.unary_stream("/event_store.client.streams.Streams/Read",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert code_of(lambda: garbage(b"\xff" * 64, timeout=10)) != grpc.StatusCode.OK

        def append(*requests):
            return lambda: stub.Append(iter(requests), timeout=10)

        def options(stream: bytes, revision: int | None = None) -> streams_pb2.AppendReq:
            o = streams_pb2.AppendReq.Options(stream_identifier=Ident(stream_name=stream))
            if revision is None:
                o.any.SetInParent()
            else:
                o.revision = revision
            return streams_pb2.AppendReq(options=o)

        def message(event_id: str = str(uuid.uuid4()), event_type: str = "T") -> streams_pb2.AppendReq:
            return streams_pb2.AppendReq(proposed_message=streams_pb2.AppendReq.ProposedMessage(
                id=shared_pb2.UUID(string=event_id), metadata={"type": event_type}, data=b"x"))

        invalid = grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(append(message())) == invalid  # no options first
        assert code_of(append(options(b"\xff\xfe"), message())) == invalid  # not UTF-8
        assert code_of(append(options(b"s" * 100_000), message())) == invalid  # a name far too long
        assert code_of(append(options(b"ok-name"), message(event_id="not-a-uuid"))) == invalid
        assert code_of(append(options(b"ok-name"), message(event_type=""))) == invalid
        assert code_of(append(options(b"ok-name"))) == invalid  # no events at all
        wrong = stub.Append(iter([options(b"ok-name", 2**64 - 1), message()]), timeout=10)
        assert wrong.WhichOneof("result") == "wrong_expected_version"

        batch = streams_pb2.BatchAppendReq(
            correlation_id=shared_pb2.UUID(string=str(uuid.uuid4())), is_final=True,
            options=streams_pb2.BatchAppendReq.Options(stream_identifier=Ident(stream_name=b"big")),
            proposed_messages=[streams_pb2.BatchAppendReq.ProposedMessage(
                id=shared_pb2.UUID(string=str(uuid.uuid4())), metadata={"type": "T"}, data=b"") for _ in range(2000)])
        batch.options.any.SetInParent()
        [reply] = list(stub.BatchAppend(iter([batch]), timeout=30))
        assert reply.WhichOneof("result") == "error" and reply.error.code == invalid.value[0]

        huge = streams_pb2.ReadReq(options=streams_pb2.ReadReq.Options(
            stream=streams_pb2.ReadReq.Options.StreamOptions(stream_identifier=Ident(stream_name=b"ok-name"),
                                                             revision=2**64 - 1),
            count=2**64 - 1, read_direction=streams_pb2.ReadReq.Options.Backwards))
        huge.options.no_filter.SetInParent()
        assert code_of(lambda: stub.Read(huge, timeout=10)) == grpc.StatusCode.OK
    # None of it was written, and the gateway still serves.
    for refused in ("ok-name", "big"):
        with pytest.raises(NotFoundError):
            client.get_stream(refused)
    client.append_to_stream("ok-name", current_version=StreamState.NO_STREAM, events=[new()])
    assert len(client.get_stream("ok-name")) == 1


def test_stream_metadata_in_kurrentdbs_form_applies_to_reads(client):
    s = name("meta")
    client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n=n) for n in range(5)])
    assert client.get_stream_metadata(s) == ({}, StreamState.NO_STREAM)
    client.set_stream_metadata(s, metadata={"$maxCount": 2, "owner": "ops"}, current_version=StreamState.NO_STREAM)
    assert [json.loads(e.data)["n"] for e in client.get_stream(s)] == [3, 4]
    metadata, version = client.get_stream_metadata(s)
    assert (metadata, version) == ({"$maxCount": 2, "owner": "ops"}, 0)
    client.set_stream_metadata(s, metadata={"$tb": 4}, current_version=0)
    assert [json.loads(e.data)["n"] for e in client.get_stream(s)] == [4]
    with pytest.raises(WrongCurrentVersionError):
        client.set_stream_metadata(s, metadata={}, current_version=0)


def test_tls_with_a_generated_certificate(mock_file, tmp_path, client):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    s = name("tls")
    with gateway(["--mock", str(mock_file), "--tls-cert", str(cert), "--tls-key", str(key)], "kdb") as secure:
        # With TLS the Python client insists on credentials; the gateway ignores them.
        uri = f"kurrentdb://any:thing@127.0.0.1:{secure.port}"
        with KurrentDBClient(uri=uri, root_certificates=cert.read_text()) as over_tls:
            over_tls.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[new(n=1)])
    assert [json.loads(e.data)["n"] for e in client.get_stream(s)] == [1]


def test_a_port_in_use_is_a_one_line_error(mock_file, served):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from node.cli import main; main()", "es", "serve", "--port",
                           str(served.port), "--mock", str(mock_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"safenet: error: cannot listen on 127.0.0.1:{served.port} (in use, or not an address of this machine?)"]
