"""One data-API suite, run against every back-end a user can pick: the in-process mock
network, real node cores in one process (an in-memory network under MockClock), and a real
8-node cluster of processes on loopback. The rules are the same everywhere, so every
assertion holds on each."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio
import trio.testing

from client.localnet import LocalNetwork
from client.mock import MockNetwork
from client.network import NetworkClient
from client.private import MDataInfo
from node import (
    ANYONE,
    NO_OWNER_KEY,
    Action,
    Del,
    Ins,
    Keypair,
    MutableData,
    PermissionSet,
    Update,
    XorName,
)
from node import errors as E

SALT = os.urandom(8)  # names differ on every run: the session cluster outlives one test


@contextlib.asynccontextmanager
async def _backend(kind: str, cluster=None):
    """Yields a factory of clients that all see one network."""
    if kind == "mock":
        net = MockNetwork()

        @contextlib.asynccontextmanager
        async def make(keys=None):
            yield net.client(keys)

        yield make
    elif kind == "localnet":
        async with LocalNetwork.start(nodes=6, seed=11) as local:
            yield local.client
    else:
        addresses = cluster.addresses()
        yield lambda keys=None: NetworkClient.open(addresses, keys)


@pytest.fixture(params=["mock", "localnet", pytest.param("cluster", marks=pytest.mark.cluster)])
def backend(request):
    return request.param


@pytest.fixture
def clock(backend):
    """Virtual time in one process; real time against real processes. (pytest-trio takes
    the clock from a Clock that the test function itself receives.)"""
    return None if backend == "cluster" else trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def cluster(backend, request):
    # A sync fixture: starting or healing the process cluster runs its own trio loop.
    return request.getfixturevalue("healthy_cluster") if backend == "cluster" else None


@pytest.fixture
async def clients(backend, cluster):
    async with _backend(backend, cluster) as make:
        yield make


def _md(owner, name=b"md", perms=None, entries=None):
    return MutableData(XorName.hash_of(name + SALT), 15001, entries or {}, perms or {}, 0, frozenset({owner}))


async def test_idata_round_trip_and_dedup(clients, clock):
    async with clients() as alice, clients() as bob:
        name = await alice.put_idata(b"payload")
        assert name == XorName.hash_of(b"payload")
        assert await bob.put_idata(b"payload") == name  # storing again is a no-op
        assert await bob.get_idata(name) == b"payload"
        with pytest.raises(E.NoSuchData):
            await bob.get_idata(XorName.hash_of(b"never stored"))
        with pytest.raises(E.DataTooLarge):
            await alice.put_idata(b"x" * (1_058_816 + 1))


async def test_md_lifecycle(clients, clock):
    async with clients() as alice:
        md = _md(alice.public_key)
        await alice.put_mdata(md)
        with pytest.raises(E.DataExists):
            await alice.put_mdata(md)
        await alice.mutate_entries(md.address, {b"a": Ins(b"1"), b"b": Ins(b"2")})
        await alice.mutate_entries(md.address, {b"a": Update(b"1'", 1), b"b": Del(1)})
        entries = await alice.list_entries(md.address)
        assert entries[b"a"].content == b"1'" and entries[b"a"].entry_version == 1
        assert entries[b"b"].content == b"" and entries[b"b"].entry_version == 1  # tombstone
        assert await alice.list_keys(md.address) == {b"a", b"b"}
        assert [v.content for v in await alice.list_values(md.address)] == [b"1'", b""]
        assert (await alice.get_mdata_shell(md.address)).entries == {}
        assert await alice.get_mdata_version(md.address) == 0
        with pytest.raises(E.NoSuchEntry):
            await alice.get_value(md.address, b"zzz")


async def test_batches_are_all_or_nothing(clients, clock):
    async with clients() as alice:
        md = _md(alice.public_key, b"atomic")
        await alice.put_mdata(md)
        await alice.mutate_entries(md.address, {b"a": Ins(b"1")})
        with pytest.raises(E.InvalidEntryActions) as info:
            await alice.mutate_entries(md.address, {b"a": Ins(b"x"), b"new": Ins(b"y"), b"gone": Update(b"z", 1)})
        assert {k: e.kind.name for k, e in info.value.errors.items()} == {
            b"a": "ENTRY_EXISTS", b"gone": "NO_SUCH_ENTRY"}
        assert await alice.list_keys(md.address) == {b"a"}


async def test_permissions_and_owner(clients, clock):
    async with clients() as alice, clients() as bob:
        md = _md(alice.public_key, b"perms", {ANYONE: PermissionSet.allowing(Action.INSERT)})
        await alice.put_mdata(md)
        await bob.mutate_entries(md.address, {b"bob": Ins(b"hi")})
        with pytest.raises(E.AccessDenied):
            await bob.mutate_entries(md.address, {b"bob": Update(b"changed", 1)})
        await alice.set_user_permissions(md.address, bob.public_key, PermissionSet.allowing(Action.UPDATE), 1)
        await bob.mutate_entries(md.address, {b"bob": Update(b"changed", 1)})
        with pytest.raises(E.InvalidSuccessor) as info:
            await alice.set_user_permissions(md.address, bob.public_key, PermissionSet(), 1)
        assert info.value.current == 1
        assert (await bob.list_user_permissions(md.address, bob.public_key)).update is True
        with pytest.raises(E.AccessDenied):
            await bob.change_owner(md.address, bob.public_key, 2)
        await alice.change_owner(md.address, NO_OWNER_KEY, 2)
        with pytest.raises(E.AccessDenied):  # nobody owns it now: frozen for ever
            await alice.change_owner(md.address, alice.public_key, 3)
        assert (await bob.get_mdata(md.address)).owners == frozenset({NO_OWNER_KEY})


async def test_signed_by_someone_else_is_refused(clients, clock):
    async with clients() as alice:
        stranger = Keypair()
        with pytest.raises(E.InvalidOwners):
            await alice.put_mdata(_md(stranger.public, b"not mine"))


async def test_private_md_keys_can_still_be_looked_up(clients, clock):
    async with clients() as alice:
        info = MDataInfo.random_private(15000)
        await alice.put_mdata(MutableData(info.name, info.tag, {}, {}, 0, frozenset({alice.public_key})))
        await alice.mutate_entries(info.address, info.encrypt_actions({b"diary": Ins(b"dear diary")}))
        stored = await alice.list_entries(info.address)
        assert b"diary" not in stored and all(b"dear diary" not in v.content for v in stored.values())
        value = await alice.get_value(info.address, info.encrypt_key(b"diary"))
        assert info.decrypt_value(value.content) == b"dear diary"
        assert info.decrypt_entries(stored)[b"diary"].content == b"dear diary"


async def test_blobs_of_any_size(clients, clock):
    async with clients() as alice, clients() as bob:
        for size in (0, 100, 5000, 3 * 1024 * 1024 + 7):
            blob = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            name = await alice.put_blob(blob)
            assert await bob.get_blob(name) == blob
        assert await bob.read_blob(name, 2 * 1024 * 1024, 10) == blob[2 * 1024 * 1024: 2 * 1024 * 1024 + 10]


async def test_concurrent_inserts_one_winner(clients, clock):
    async with clients() as alice, clients() as bob:
        md = _md(alice.public_key, b"race", {ANYONE: PermissionSet.allowing(Action.INSERT)})
        await alice.put_mdata(md)
        wins = []

        async def insert(client, tag):
            with contextlib.suppress(E.InvalidEntryActions):
                await client.mutate_entries(md.address, {b"slot": Ins(tag)})
                wins.append(tag)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(insert, alice, b"alice")
            nursery.start_soon(insert, bob, b"bob")
        assert len(wins) == 1
        assert (await bob.get_value(md.address, b"slot")).content == wins[0]
