"""Appends: expected versions, atomic batches, idempotent retries, racing creators, rivals,
and the append-only rule on the network."""

from __future__ import annotations

import pytest
import trio
from es_testing import check_consistent, ev

from eventstore.api import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DatabaseExists,
    DatabaseNotFound,
    EventData,
    EventStore,
    InvalidEvent,
    StreamDeleted,
    WrongExpectedVersion,
)
from eventstore.records import key_of
from eventstore.safe import RETRIES
from node import errors as E
from node.data import Del, Ins, Update
from node.keys import Keypair
from node.requests import MutateEntries, PutIData


async def test_expected_versions(db, autojump_clock):
    assert await db.stream_version("order@1") == NO_STREAM
    with pytest.raises(WrongExpectedVersion) as info:
        await db.append("order@1", [ev()], expected_version=STREAM_EXISTS)
    assert (info.value.expected, info.value.actual) == (STREAM_EXISTS, NO_STREAM)
    first = await db.append("order@1", [ev(n=0), ev(n=1)], expected_version=NO_STREAM)
    assert first.next_expected_version == 1
    with pytest.raises(WrongExpectedVersion) as info:
        await db.append("order@1", [ev()], expected_version=NO_STREAM)
    assert info.value.actual == 1
    with pytest.raises(WrongExpectedVersion) as info:
        await db.append("order@1", [ev()], expected_version=0)
    assert info.value.actual == 1
    with pytest.raises(WrongExpectedVersion) as info:
        await db.append("order@1", [ev()], expected_version=5)  # ahead of the stream
    assert info.value.actual == 1
    assert (await db.append("order@1", [ev(n=2)], expected_version=1)).next_expected_version == 2
    assert (await db.append("order@1", [ev(n=3)], expected_version=STREAM_EXISTS)).next_expected_version == 3
    assert (await db.append("order@1", [ev(n=4)])).next_expected_version == 4  # ANY
    events = await db.read_stream("order@1")
    assert [e.data["n"] for e in events] == [0, 1, 2, 3, 4]
    assert [e.version for e in events] == [0, 1, 2, 3, 4]
    assert events[0].position < events[2].position < events[4].position
    await check_consistent(db)


async def test_a_stale_cache_learns_the_actual_version(db, make_store, autojump_clock):
    other = make_store().database("shop")
    await db.append("order@1", [ev()], expected_version=NO_STREAM)
    await other.append("order@1", [ev()], expected_version=0)  # `db` still believes 0
    with pytest.raises(WrongExpectedVersion) as info:
        await db.append("order@1", [ev()], expected_version=0)
    assert info.value.actual == 1
    assert (await db.append("order@1", [ev()])).next_expected_version == 2  # ANY retries at the end


async def test_bad_input_is_refused_before_anything_is_written(db, net, autojump_clock):
    before = sum(net.requests.values())
    with pytest.raises(InvalidEvent):
        await db.append("order@1", [])
    with pytest.raises(InvalidEvent):
        await db.append("order@1", [ev()] * 1001)
    event = ev()
    with pytest.raises(InvalidEvent):
        await db.append("order@1", [event, event])  # the same id twice
    with pytest.raises(InvalidEvent):
        await db.append("$$order@1", [ev()])
    with pytest.raises(InvalidEvent):
        await db.append("", [ev()])
    with pytest.raises(InvalidEvent):
        await db.append("order@1", [ev()], expected_version=-3)
    with pytest.raises(InvalidEvent):
        await db.append("order@1", [ev()], expected_version=True)  # type: ignore[arg-type]
    assert sum(net.requests.values()) == before


async def test_databases_are_listed_and_unique(store, make_store, autojump_clock):
    await store.create_database("b")
    await store.create_database("a", private=True)
    assert await store.databases() == ["a", "b"]
    with pytest.raises(DatabaseExists):
        await store.create_database("a")
    with pytest.raises(DatabaseExists):
        await make_store().create_database("b")
    with pytest.raises(DatabaseNotFound):
        await store.database("nope").read_all()
    assert await make_store().databases() == ["a", "b"]  # the container is on the network


async def test_another_app_sees_other_databases(net, store, autojump_clock):
    await store.create_database("mine")
    other = EventStore(net.client(Keypair(b"\x09" * 32)))
    assert await other.databases() == []


async def test_a_lost_reply_is_retried_without_duplicates(db, net, autojump_clock):
    await db.append("order@1", [ev(n=0)])
    # The stream write is applied but its reply lost: the store retries and finds its own events.
    net.fail_next(applied=True, when=lambda r: isinstance(r.op, MutateEntries) and len(r.op.actions) == 2)
    result = await db.append("order@1", [ev(n=1), ev(n=2)], expected_version=0)
    assert result.next_expected_version == 2
    # The log intent's reply lost, then an IData put's: same.
    net.fail_next(applied=True, when=lambda r: isinstance(r.op, MutateEntries))
    await db.append("order@1", [ev(n=3)], expected_version=2)
    net.fail_next(applied=True, when=lambda r: isinstance(r.op, PutIData))
    await db.append("order@1", [ev(n=4)], expected_version=3)
    assert [e.data["n"] for e in await db.read_stream("order@1")] == [0, 1, 2, 3, 4]
    await check_consistent(db)


async def test_a_retry_by_the_caller_stores_nothing_twice(db, net, make_store, autojump_clock):
    events = [ev(n=0), ev(n=1)]
    first = await db.append("order@1", events, expected_version=NO_STREAM)
    # The same append again, as after a timeout: with an exact version, with ANY, from a
    # process that never saw the first attempt.
    assert await db.append("order@1", events, expected_version=NO_STREAM) == first
    assert await db.append("order@1", events) == first
    fresh = make_store().database("shop")
    assert await fresh.append("order@1", events) == first
    assert await fresh.append("order@1", events, expected_version=NO_STREAM) == first
    # The stream write takes effect, then every reply is lost: the caller retries by hand.
    more = [ev(n=2)]
    segment = db.layout.stream_segment("order@1", 0)

    def to_stream(request) -> bool:
        return isinstance(request.op, MutateEntries) and request.op.address == segment

    net.fail_next(applied=True, when=to_stream)
    net.fail_next(count=RETRIES, when=to_stream)
    with pytest.raises(E.RequestTimeout):
        await db.append("order@1", more, expected_version=1)
    again = await make_store().database("shop").append("order@1", more, expected_version=1)
    assert again.next_expected_version == 2
    assert len(await db.read_stream("order@1")) == 3
    # Same ids but other events at that place: a conflict, not a silent success.
    with pytest.raises(WrongExpectedVersion):
        await db.append("order@1", [events[0], ev()], expected_version=NO_STREAM)
    await check_consistent(db)


async def test_a_retried_any_append_finds_its_events_behind_later_ones(db, net, make_store, autojump_clock):
    """An ANY append whose stream write landed with every reply lost, then two appends by
    others, then the caller's retry of the same events: the retry returns where they landed.
    Its events are neither at the expected version (there is none) nor the stream's last
    append, so only the versions its own intents claimed show them (event-store chaos seed 16
    stored such an event twice, at versions 40 and 43)."""
    await db.append("order@2", [ev(n=0)], expected_version=NO_STREAM)
    segment = db.layout.stream_segment("order@2", 0)

    def to_stream(request) -> bool:
        return isinstance(request.op, MutateEntries) and request.op.address == segment

    mine = [ev(n=1), ev(n=2)]
    net.fail_next(applied=True, when=to_stream)
    net.fail_next(count=RETRIES, when=to_stream)
    with pytest.raises(E.RequestTimeout):
        await db.append("order@2", mine)
    other = make_store().database("shop")
    await other.append("order@2", [ev(n=3)])
    await other.append("order@2", [ev(n=4)])
    again = await db.append("order@2", mine)
    assert again.next_expected_version == 2
    ids = [e.id for e in await db.read_stream("order@2")]
    assert ids.count(mine[0].id) == 1 and ids.count(mine[1].id) == 1 and len(ids) == 5
    await check_consistent(db)


async def test_racing_creators_one_wins_and_the_stream_is_whole(db, make_store, autojump_clock):
    outcomes: list[object] = []

    async def create(i: int) -> None:
        other = make_store().database("shop")
        try:
            await other.append("order@9", [ev(w=i, n=0), ev(w=i, n=1), ev(w=i, n=2)], expected_version=NO_STREAM)
            outcomes.append(i)
        except WrongExpectedVersion as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(create, i)
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1
    assert all(o.actual == 2 for o in outcomes if isinstance(o, WrongExpectedVersion))
    events = await db.read_stream("order@9")
    assert [(e.data["w"], e.data["n"]) for e in events] == [(winners[0], 0), (winners[0], 1), (winners[0], 2)]
    assert await db.list_streams("order") == ["order@9"]
    await check_consistent(db)


async def test_twenty_writers_with_exact_versions_on_one_stream(db, make_store, autojump_clock):
    acknowledged: dict[object, int] = {}
    losers = 0

    async def writer(w: int) -> None:
        nonlocal losers
        mine = make_store().database("shop")
        for i in range(3):
            while True:
                version = await mine.stream_version("hot@1")
                event = ev(w=w, i=i)
                try:
                    result = await mine.append("hot@1", [event], expected_version=version)
                except WrongExpectedVersion as exc:
                    assert exc.actual > version
                    losers += 1
                    continue
                acknowledged[event.id] = result.next_expected_version
                break

    async with trio.open_nursery() as nursery:
        for w in range(20):
            nursery.start_soon(writer, w)
    events = await db.read_stream("hot@1")
    assert [e.version for e in events] == list(range(60))  # no shared number, no hole
    assert {e.id: e.version for e in events} == acknowledged  # nothing acknowledged is missing
    assert losers > 0
    log = await check_consistent(db)
    assert len(log) == 60


async def test_many_writers_with_any_all_land(db, make_store, autojump_clock):
    async def writer(w: int) -> None:
        mine = make_store().database("shop")
        for i in range(5):
            await mine.append("hot@2", [ev(w=w, i=i)])

    async with trio.open_nursery() as nursery:
        for w in range(10):
            nursery.start_soon(writer, w)
    events = await db.read_stream("hot@2")
    assert len(events) == 50
    for w in range(10):  # each writer's events in its own order
        assert [e.data["i"] for e in events if e.data["w"] == w] == list(range(5))
    await check_consistent(db)


async def test_streams_are_append_only_for_the_app_key(net, autojump_clock):
    owner = net.client(Keypair(b"\x01" * 32))
    app_keys = Keypair(b"\x02" * 32)
    await owner.create_account()
    await owner.ins_auth_key(app_keys.public, 1)
    store = EventStore(net.client(app_keys, owner=owner.public_key))
    db = await store.create_database("shop")
    await db.append("order@1", [ev(n=0), ev(n=1)])
    address = db.layout.stream_segment("order@1", 0)
    md = await owner.get_mdata(address)
    assert md.owners == {owner.public_key}
    assert md.permissions[app_keys.public].insert is True
    app = store.client
    for action in (Update(b"forged", 1), Del(1)):
        with pytest.raises(E.AccessDenied):
            await app.mutate_entries(address, {key_of(0): action})
    with pytest.raises(E.InvalidEntryActions):
        await app.mutate_entries(address, {key_of(1): Ins(b"forged")})
    assert [e.data["n"] for e in await db.read_stream("order@1")] == [0, 1]


async def test_hard_deleted_streams_refuse_appends_for_ever(db, make_store, autojump_clock):
    await db.append("order@1", [ev()])
    await db.delete_stream("order@1", hard=True)
    for expected in (ANY, NO_STREAM, 1, STREAM_EXISTS):
        with pytest.raises(StreamDeleted):
            await db.append("order@1", [ev()], expected_version=expected)
    other = make_store().database("shop")  # no cache: learns it from the stream
    with pytest.raises(StreamDeleted):
        await other.append("order@1", [ev()])
    with pytest.raises(StreamDeleted):
        await other.read_stream("order@1")
    with pytest.raises(StreamDeleted):
        await other.stream_version("order@1")


async def test_a_large_payload_and_metadata_go_to_blobs(db, autojump_clock):
    blob = bytes(range(256)) * 20_000  # 5 MB: self-encrypted into chunks
    meta = {"note": "m" * 5000}  # too big to sit in the record
    await db.append("file@1", [EventData("Uploaded", blob, metadata=meta)])
    [event] = await db.read_stream("file@1")
    assert event.data == blob and event.metadata == meta


async def test_apps_with_keys_of_their_own_share_a_database(net, autojump_clock):
    owner = net.client(Keypair(b"\x01" * 32))
    apps = [Keypair(bytes([0x30 + i]) * 32) for i in range(3)]
    await owner.create_account()
    for version, app in enumerate(apps, start=1):
        await owner.ins_auth_key(app.public, version)
    stores = [EventStore(net.client(app, owner=owner.public_key)) for app in apps]
    db = await stores[0].create_database("shop", writers=[a.public for a in apps[1:]])
    others = [await store.add_database(db.info) for store in stores[1:]]
    assert await stores[2].databases() == ["shop"]
    await db.append("order@1", [ev(n=0)])
    await others[0].append("order@1", [ev(n=1)], expected_version=0)
    await others[1].append("order@2", [ev(n=0)])  # a new stream: new MDs, granted to all
    assert [e.data["n"] for e in await others[1].read_stream("order@1")] == [0, 1]
    outsider = EventStore(net.client(Keypair(b"\x0f" * 32)))
    stranger = await outsider.add_database(db.info)  # not a writer: may read, may not append
    assert len(await stranger.read_all()) == 3
    with pytest.raises((E.AccessDenied, E.NoSuchAccount)):
        await stranger.append("order@1", [ev()])
    await check_consistent(db)
