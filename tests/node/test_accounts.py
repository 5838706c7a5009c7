"""Accounts on the owner's ClientManager group: app keys, the allowance, and what the data
groups refuse because of them — on the mock network and on real node cores."""

from __future__ import annotations

import contextlib

import pytest
import trio

from client.localnet import LocalNetwork
from client.mock import MockNetwork
from node import ANYONE, Action, Ins, Keypair, MutableData, PermissionSet, XorName
from node import errors as E
from node.core import NodeConfig


@contextlib.asynccontextmanager
async def _network(kind: str, allowance: int = 1000):
    if kind == "mock":
        net = MockNetwork()

        @contextlib.asynccontextmanager
        async def make(keys=None, owner=None):
            yield net.client(keys, owner=owner)

        yield make
    else:
        async with LocalNetwork.start(nodes=6, seed=21, config=NodeConfig()) as local:
            yield lambda keys=None, owner=None: local.client(keys, owner=owner)


async def _settle(kind: str) -> None:
    if kind == "localnet":
        await trio.sleep(2)  # virtual seconds: every test here runs under autojump_clock


@pytest.fixture(params=["mock", "localnet"])
def kind(request):
    return request.param


async def test_app_keys_authorise_and_revoke(kind, autojump_clock):
    async with _network(kind) as make:
        user, app_keys = Keypair(), Keypair()
        async with make(user) as owner, make(app_keys, user.public) as app:
            md = MutableData(XorName.hash_of(b"container"), 15000, {},
                             {app_keys.public: PermissionSet.allowing(Action.INSERT)}, 0, frozenset({user.public}))
            await owner.put_mdata(md)  # unregistered mode: an owner may act without an account
            with pytest.raises(E.NoSuchAccount):
                await app.mutate_entries(md.address, {b"a": Ins(b"1")})
            await owner.create_account()
            await _settle(kind)  # nodes cache "no account" for a second
            with pytest.raises(E.AccountExists):
                await owner.create_account()
            with pytest.raises(E.AccessDenied):
                await app.mutate_entries(md.address, {b"a": Ins(b"1")})
            await owner.ins_auth_key(app_keys.public, 1)
            with pytest.raises(E.InvalidSuccessor):
                await owner.ins_auth_key(app_keys.public, 1)
            await _settle(kind)
            await app.mutate_entries(md.address, {b"a": Ins(b"1")})
            info = await owner.account_info()
            assert app_keys.public in info.apps and info.keys_version == 1
            await owner.del_auth_key(app_keys.public, 2)
            await _settle(kind)  # the data group's cached view of the account expires
            with pytest.raises(E.AccessDenied):
                await app.mutate_entries(md.address, {b"b": Ins(b"2")})
            with pytest.raises(E.NoSuchKey):
                await owner.del_auth_key(app_keys.public, 3)
            with pytest.raises(E.AccessDenied):  # an app cannot manage keys
                await app.ins_auth_key(app_keys.public, 3)


async def test_allowance_runs_out(kind, autojump_clock):
    async with _network(kind) as make:
        user = Keypair()
        async with make(user) as owner:
            await owner.create_account(allowance=1000)
            md = MutableData(XorName.hash_of(b"busy"), 15000, {}, {ANYONE: PermissionSet.allowing(Action.INSERT)},
                             0, frozenset({user.public}))
            await owner.put_mdata(md)
            done = (await owner.account_info()).done
            with pytest.raises(E.LowBalance):
                for i in range(1000):
                    await owner.mutate_entries(md.address, {b"k%d" % i: Ins(b"v")})
            info = await owner.account_info()
            assert info.done >= info.allowance > done
            assert len(await owner.list_keys(md.address)) <= 1000 - done + 1
