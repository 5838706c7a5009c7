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


async def put_md(net: MockNetwork) -> None:
    await net.client(KEYS).put_mdata(MD)


def insertion(n: int = 0) -> Request:
    return Request.signed(MutateEntries(ADDRESS, {b"new %d" % n: Ins(b"v")}), KEYS)


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
@pytest.mark.parametrize("kind", ["put_idata", "mutate_entries"])  # kept as a digest / as the request
async def test_a_remembered_signature_vouches_only_for_the_request_it_signed(change, kind):
    net = MockNetwork()
    await put_md(net)
    signed = mutation() if kind == "put_idata" else insertion()
    net._note_signed(signed)
    if change.get("signature", 0) is None:
        change = {"signature": bytes([signed.signature[0] ^ 1]) + signed.signature[1:]}
    if "op" in change and kind == "mutate_entries":
        change = {"op": MutateEntries(ADDRESS, {b"not mine": Ins(b"v")})}
    before = net.mdata[ADDRESS]
    with pytest.raises(E.InvalidSignature):
        await apply(net, changed(signed, **change))
    assert not net.chunks and net.mdata[ADDRESS] == before
    await apply(net, signed)  # the genuine request still passes (verified in full now)
    assert bytes(ImmutableData(b"mine 0").name) in net.chunks or b"new 0" in net.mdata[ADDRESS].md.entries


async def test_the_memo_holds_no_chunk_and_keeps_to_its_budget():
    from client import mock

    net = MockNetwork()
    net._note_signed(Request.signed(PutIData(ImmutableData(bytes(1 << 20))), KEYS))
    [(entry, size)] = net._own_signatures.values()
    assert isinstance(entry, bytes) and size == len(entry) < 100  # a digest, not the MiB
    big = [Request.signed(MutateEntries(ADDRESS, {b"k%d" % i: Ins(bytes(60_000))}), KEYS) for i in range(200)]
    for request in big:
        net._note_signed(request)
    assert net._own_bytes <= mock._OWN_SIGNATURE_BYTES
    assert 0 < len(net._own_signatures) < 200  # the oldest went
    for request in big[-5:]:  # the newest are still remembered, and each is used once
        assert request.signature in net._own_signatures
        net._verify(Request.from_obj(wire_form(request)))
        assert request.signature not in net._own_signatures
    assert net._own_bytes == sum(size for _entry, size in net._own_signatures.values())


async def test_a_memo_hit_leaves_the_signing_bytes_the_request_has():
    net = MockNetwork()
    op = MutateEntries(ADDRESS, {b"x": Ins(b"y")})
    await net.client(KEYS).put_mdata(MD)
    signed = Request.signed(op, KEYS)
    net._note_signed(signed)
    decoded = Request.from_obj(wire_form(signed))
    net._verify(decoded)
    assert signed.signature not in net._own_signatures  # used once, then forgotten
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
