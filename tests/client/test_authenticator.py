"""Accounts from a user's secrets, app authorisation and revocation, on the mock network
and on real node cores in memory."""

from __future__ import annotations

import contextlib

import pytest
import trio

from client.authenticator import AppGrant, Authenticator, KdfCost
from client.localnet import LocalNetwork
from client.mock import MockNetwork
from node import Ins
from node import errors as E

FAST = KdfCost.fast()


@contextlib.asynccontextmanager
async def _factory(kind):
    if kind == "mock":
        net = MockNetwork()

        @contextlib.asynccontextmanager
        async def make(keys=None, owner=None):
            yield net.client(keys, owner=owner)

        yield make, 0
    else:
        async with LocalNetwork.start(nodes=6, seed=31) as local:
            yield (lambda keys=None, owner=None: local.client(keys, owner=owner)), 2


@pytest.mark.parametrize("kind", ["mock", "localnet"])
async def test_create_login_authorise_revoke(kind, autojump_clock):
    async with _factory(kind) as (make, settle):
        auth = await Authenticator.create_account(make, "alice", "s3cret", cost=FAST)
        with pytest.raises(E.AccountExists):
            await Authenticator.create_account(make, "alice", "s3cret", cost=FAST)
        with pytest.raises(E.AccessDenied):
            await Authenticator.login(make, "alice", "wrong password", cost=FAST)
        with pytest.raises(E.NoSuchAccount):
            await Authenticator.login(make, "bob", "s3cret", cost=FAST)
        # Another machine: the same secrets give the same key and the same containers.
        again = await Authenticator.login(make, "alice", "s3cret", cost=FAST)
        assert again.public_key == auth.public_key and again.containers == auth.containers

        grant = await auth.authorise("notebook", {"_documents": {"insert"}})
        grant = AppGrant.from_bytes(grant.to_bytes())  # what an app would load from disk
        assert [g.app_id for g in await again.apps()] == ["notebook"]
        await trio.sleep(settle)
        docs = grant.containers["_documents"]
        own = grant.containers["apps/notebook"]
        async with make(grant.keys, grant.owner) as app:
            await app.mutate_entries(docs.address, docs.encrypt_actions({b"note": Ins(b"hello")}))
            await app.mutate_entries(own.address, own.encrypt_actions({b"state": Ins(b"1")}))
            with pytest.raises(E.AccessDenied):  # _public was not granted
                await app.mutate_entries(auth.containers["_public"].address, {b"x": Ins(b"1")})
            await again.revoke("notebook")
            await trio.sleep(settle)
            with pytest.raises(E.AccessDenied):
                await app.mutate_entries(own.address, own.encrypt_actions({b"later": Ins(b"2")}))
        assert await auth.apps() == []
        regrant = await auth.authorise("notebook", {"_documents": {"insert", "update"}})
        assert regrant.keys.public != grant.keys.public
