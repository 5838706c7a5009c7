"""The mock network's short cuts (client/mock.py): each must give exactly what the long way
gives, and none may accept a request the real network would refuse."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from client.mock import MockNetwork, wire_form
from node import errors as E
from node.accounts import CreateAccount, DelAuthKey, InsAuthKey
from node.data import (
    ANYONE,
    Action,
    Del,
    ImmutableData,
    Ins,
    MutableData,
    PermissionSet,
    Update,
    Value,
)
from node.keys import Keypair
from node.requests import (
    ChangeOwner,
    DelUserPermissions,
    GetMData,
    ListEntries,
    MutateEntries,
    PutIData,
    PutMData,
    Request,
    SetUserPermissions,
)
from node.xorname import XorName

KEYS = Keypair(b"\x05" * 32)
OTHER = Keypair(b"\x06" * 32)
MD = MutableData(XorName(b"\x01" * 32), 15001, {b"k": Value(b"v", 0)},
                 {ANYONE: PermissionSet.allowing(Action.INSERT)}, 0, frozenset({KEYS.public}))
ADDRESS = MD.address

OPS = [
    PutIData(ImmutableData(b"chunk")),
    PutMData(MD),
    MutateEntries(ADDRESS, {b"a": Ins(b"1"), b"b": Update(b"2", 3), b"c": Del(4)}),
    SetUserPermissions(ADDRESS, OTHER.public, PermissionSet.allowing(Action.UPDATE), 1),
    DelUserPermissions(ADDRESS, ANYONE, 1),
    ChangeOwner(ADDRESS, frozenset({OTHER.public}), 1),
    CreateAccount(KEYS.public, 10),
    InsAuthKey(KEYS.public, OTHER.public, 1),
    DelAuthKey(KEYS.public, OTHER.public, 2),
    GetMData(ADDRESS),
    ListEntries(ADDRESS),
]


def the_long_way(request: Request) -> dict:
    return msgpack.unpackb(msgpack.packb(request.to_obj(), use_bin_type=True), raw=False)


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.KIND)
@pytest.mark.parametrize("owner", [None, OTHER.public], ids=["own-account", "app-key"])
def test_the_wire_form_is_what_encoding_the_request_gives(op, owner):
    if op.MUTATES:
        request = Request.signed(op, KEYS, owner=owner, network=b"net", expires=1_900_000_000)
    else:
        request = Request(op, KEYS.public)
    wire = wire_form(request)
    assert wire == the_long_way(request)
    decoded = Request.from_obj(wire)
    assert decoded == request
    assert decoded.signing_bytes() == request.signing_bytes()


async def apply(net: MockNetwork, request: Request) -> None:
    await net.handle(wire_form(request))


def mutation(n: int = 0) -> Request:
    return Request.signed(PutIData(ImmutableData(b"mine %d" % n)), KEYS, network=b"", expires=0)


def changed(request: Request, **fields) -> Request:
    return dataclasses.replace(request, **fields)


@pytest.mark.parametrize("change", [
    {"signature": None},  # one bit of the signature flipped (filled in below)
    {"expires": 1},
    {"network": b"elsewhere"},
    {"request_id": b"\x00" * 16},
    {"owner": OTHER.public},
    {"op": PutIData(ImmutableData(b"not mine"))},
])
async def test_a_remembered_signature_vouches_only_for_the_request_it_signed(change):
    net = MockNetwork()
    signed = mutation()
    net._note_signed(signed)
    if change.get("signature", 0) is None:
        change = {"signature": bytes([signed.signature[0] ^ 1]) + signed.signature[1:]}
    with pytest.raises(E.InvalidSignature):
        await apply(net, changed(signed, **change))
    assert not net.chunks
    await apply(net, signed)  # the genuine request still passes (verified in full now)
    assert bytes(ImmutableData(b"mine 0").name) in net.chunks


async def test_a_memo_hit_leaves_the_signing_bytes_the_request_has():
    net = MockNetwork()
    op = MutateEntries(ADDRESS, {b"x": Ins(b"y")})
    await net.client(KEYS).put_mdata(MD)
    signed = Request.signed(op, KEYS)
    net._note_signed(signed)
    decoded = Request.from_obj(wire_form(signed))
    net._verify(decoded)
    assert net._own_signatures.get(signed.signature) is None  # used once, then forgotten
    fresh = Request.from_obj(wire_form(signed))
    assert decoded.signing_bytes() == fresh.signing_bytes() == signed.signing_bytes()


async def test_the_mock_client_appends_with_every_signature_checked_in_full():
    """The same requests, with the memo and without it: the same data."""
    nets = [MockNetwork(), MockNetwork()]
    nets[1]._note_signed = lambda _request: None  # type: ignore[method-assign]
    for net in nets:
        client = net.client(KEYS)
        await client.put_mdata(MD)
        for i in range(5):
            await client.mutate_entries(ADDRESS, {b"e%d" % i: Ins(b"%d" % i)})
        with pytest.raises(E.InvalidEntryActions):
            await client.mutate_entries(ADDRESS, {b"e0": Ins(b"again")})
    assert nets[0].mdata[ADDRESS].md == nets[1].mdata[ADDRESS].md  # (request ids differ)
