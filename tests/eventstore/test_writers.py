"""Adding and removing a database's writers (eventstore.writers) on the mock network: a key
of another account is refused before `add_writer`, appends after it (its new MDs handed to
the owner), is refused again after `remove_writer`; concurrent appends of the owner and the
writer keep every stream and the log consistent; a writer added while others make new MDs
gets Insert on every one of them; an app's database is changed by its account alone."""

from __future__ import annotations

import random

import pytest
import trio
from es_testing import check_consistent, ev

from eventstore.api import EventStore
from eventstore.errors import NotAWriter, NotTheOwner
from eventstore.writers import database_mds
from node.data import Action, MutableData
from node.keys import Keypair
from node.rules import is_action_allowed

SMALL = {"stream_segment_size": 3, "log_segment_size": 4, "partitions": 2}  # many MDs from few events


async def every_md(db, key, *, owner) -> list[MutableData]:
    """The shells of the database's MDs, each checked to be the owner's and to let `key` insert."""
    shells = [await db.store.client.get_mdata_shell(a) for a in await database_mds(db)]
    for shell in shells:
        assert set(shell.owners) == {owner}, "an MD was not handed to the owner"
        assert is_action_allowed(shell, key, Action.INSERT), "an MD does not let the writer insert"
    return shells


async def test_another_key_appends_only_while_it_is_a_writer(net, autojump_clock):
    alice, bob = Keypair(b"\x0a" * 32), Keypair(b"\x0b" * 32)
    a_store, b_store = EventStore(net.client(alice)), EventStore(net.client(bob))
    a = await a_store.create_database("shop", **SMALL)
    for i in range(5):
        await a.append(f"order@{i % 2}", [ev(i=i)])
    b = await b_store.add_database(a.info)  # bob learns the database: he may read it
    assert len(await b.read_all()) == 5
    with pytest.raises(NotAWriter) as refused:
        await b.append("order@0", [ev(by="bob")])
    assert "add-writer" in str(refused.value)
    with pytest.raises(NotAWriter):
        await b.append("order@9", [ev(by="bob")])  # a new stream: nothing is made for it
    assert await a.stream_version("order@9") == -1
    with pytest.raises(NotTheOwner):
        await b.add_writer(bytes(bob.public))

    change = await a.add_writer(bytes(bob.public))
    assert change.added and not change.was_writer and change.changed == change.mds > 0 and not change.held
    await b.append("order@0", [ev(by="bob")])
    await b.append("order@9", [ev(by="bob")] * 1)  # bob makes MDs: a segment, index entries
    for i in range(8):  # and log segments
        await b.append(f"order@{10 + i}", [ev(i=i)])
    await a.append("order@9", [ev(by="alice")], expected_version=0)  # alice inserts into bob's MDs
    await every_md(a, bob.public, owner=alice.public)
    assert (await a.writer_set()).keys == {bytes(alice.public), bytes(bob.public)}
    again = await a.add_writer(bytes(bob.public))  # idempotent: nothing left to change
    assert again.was_writer and again.changed == 0

    removed = await a.remove_writer(bytes(bob.public))
    assert removed.was_writer and removed.changed == removed.mds and not removed.held
    for stream in ("order@0", "order@9", "order@99"):
        with pytest.raises(NotAWriter):
            await b.append(stream, [ev(by="bob")])
    await a.append("order@0", [ev(by="alice")])  # the owner goes on
    log = await check_consistent(a)
    assert [e.data.get("by") for e in log if e.stream == "order@9"] == ["bob", "alice"]


async def test_concurrent_appends_of_owner_and_writer_stay_consistent(net, autojump_clock):
    alice, bob = Keypair(b"\x1a" * 32), Keypair(b"\x1b" * 32)
    a_store, b_store = EventStore(net.client(alice)), EventStore(net.client(bob))
    a = await a_store.create_database("shop", **SMALL)
    b = await b_store.add_database(a.info)
    await a.add_writer(bytes(bob.public))
    rng = random.Random(5)
    net.set_delay(lambda _r: rng.choice([0.001, 0.002, 0.004]))

    async def writer(db, who: str) -> None:
        for i in range(12):
            await db.append(f"cart@{rng.randrange(4)}", [ev(who=who, i=i), ev(who=who, i=i, part=2)])

    async with trio.open_nursery() as nursery:
        for db, who in [(a, "a"), (a, "a2"), (b, "b"), (b, "b2")]:
            nursery.start_soon(writer, db, who)
    net.set_delay(None)
    log = await check_consistent(a)
    assert len([e for e in log if e.stream.startswith("cart@")]) == 4 * 12 * 2
    await every_md(a, bob.public, owner=alice.public)


async def test_a_writer_added_while_another_makes_new_mds_gets_every_one(net, autojump_clock):
    alice, bob, carol = (Keypair(bytes([0x20 + i]) * 32) for i in range(3))
    a_store = EventStore(net.client(alice))
    a = await a_store.create_database("shop", **SMALL)
    b = await EventStore(net.client(bob)).add_database(a.info)
    c = await EventStore(net.client(carol)).add_database(a.info)
    await a.add_writer(bytes(bob.public))
    rng = random.Random(11)
    net.set_delay(lambda _r: rng.choice([0.0005, 0.001, 0.003]))

    async def new_streams(db, prefix: str) -> None:
        for i in range(10):
            await db.append(f"{prefix}@{i}", [ev(i=i)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(new_streams, b, "bob")  # new MDs all the time, some of them bob's
        nursery.start_soon(new_streams, a, "alice")
        await trio.sleep(0.02)
        nursery.start_soon(a.add_writer, bytes(carol.public))
    net.set_delay(None)
    await every_md(a, carol.public, owner=alice.public)
    for i in range(10):
        await c.append(f"bob@{i}", [ev(by="carol")], expected_version=0)
    await check_consistent(a)


async def test_an_apps_database_is_changed_by_its_account(net, autojump_clock):
    account = net.client(Keypair(b"\x31" * 32))
    await account.create_account()
    app, other = Keypair(b"\x32" * 32), Keypair(b"\x33" * 32)
    await account.ins_auth_key(app.public, 1)
    await account.ins_auth_key(other.public, 2)
    store = EventStore(net.client(app, owner=account.public_key))
    db = await store.create_database("notes", **SMALL)
    await db.append("note@1", [ev()])
    with pytest.raises(NotTheOwner):
        await db.add_writer(bytes(other.public))  # the app's key is not the owner
    await db.add_writer(bytes(other.public), owner=account)
    second = await EventStore(net.client(other, owner=account.public_key)).add_database(db.info)
    await second.append("note@2", [ev()])  # an app of the same account: no hand-over needed
    await every_md(db, other.public, owner=account.public_key)
    await db.remove_writer(bytes(other.public), owner=account)
    with pytest.raises(NotAWriter):
        await second.append("note@1", [ev()])


class _Killed(Exception):
    pass


async def test_a_writer_stopped_before_handing_an_md_over_holds_it_until_it_hands_it_over(net, autojump_clock):
    alice, bob, carol = (Keypair(bytes([0x40 + i]) * 32) for i in range(3))
    a = await EventStore(net.client(alice)).create_database("shop", **SMALL)
    await a.append("order@1", [ev()])
    b = await EventStore(net.client(bob)).add_database(a.info)
    await a.add_writer(bytes(bob.public))

    async def killed(_address, _shell) -> None:
        raise _Killed  # between making the MD and handing it over

    settle = b.writers.settle
    b.writers.settle = killed
    with pytest.raises(_Killed):
        await b.append("order@2", [ev()])  # a new stream: its first segment is bob's
    b.writers.settle = settle
    change = await a.add_writer(bytes(carol.public))
    assert len(change.held) == 1 and change.changed == change.mds - 1
    assert set((await a.store.client.get_mdata_shell(change.held[0])).owners) == {bob.public}
    assert await b.hand_over() == 1
    assert await b.hand_over() == 0
    again = await a.add_writer(bytes(carol.public))
    assert not again.held and again.changed == 0  # bob's hand-over granted carol already
    await every_md(a, carol.public, owner=alice.public)
    await check_consistent(a)  # the killed append is finished by the repair
