"""Signed requests: wire round trips, signature checks, the wire decoder on junk, and the
dispatch of mutations (`apply_mutation`) with its replay protection (docs/data-model.md §3.1;
docs/architecture.md principle 4).
"""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_scalar_reduce, crypto_scalarmult_ed25519_base_noclamp

from node import errors as E
from node import requests as R
from node.accounts import Charge, CreateAccount, DelAuthKey, InsAuthKey
from node.data import (
    ANYONE,
    U64_MAX,
    Action,
    Del,
    ImmutableData,
    Ins,
    MDataAddress,
    MutableData,
    PermissionSet,
    Update,
    Value,
)
from node.keys import NO_OWNER_KEY, Keypair
from node.requests import (
    ChangeOwner,
    DelUserPermissions,
    GetIData,
    GetMData,
    GetValue,
    ListUserPermissions,
    MutateEntries,
    PutIData,
    PutMData,
    Request,
    SetUserPermissions,
    apply_mutation,
    op_from_obj,
    op_to_obj,
    read_mdata,
)
from node.rules import RECENT_REQUESTS, MDataState
from node.xorname import XorName

NAME = XorName(bytes(range(32)))
TAG = 15000
ADDR = MDataAddress(NAME, TAG)


def wire(obj):
    """What the other side of a connection sees."""
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False, strict_map_key=False)


def _op_strategies(strat, keys) -> dict[str, st.SearchStrategy]:
    names = st.binary(min_size=32, max_size=32).map(XorName)
    addrs = st.builds(MDataAddress, st.one_of(st.just(NAME), names), st.integers(0, U64_MAX))
    u64 = st.integers(0, U64_MAX)
    publics = st.sampled_from([k.public for k in keys])
    reads = {cls.KIND: st.builds(cls, addrs) for cls in R.READ_OPS
             if cls not in (GetValue, ListUserPermissions)}
    return {
        **reads,
        "put_idata": st.builds(PutIData, st.builds(ImmutableData, st.binary(max_size=64))),
        "get_idata": st.builds(GetIData, names),
        "put_mdata": st.builds(PutMData, strat.mdata()),
        "mutate_entries": st.builds(MutateEntries, addrs, st.dictionaries(
            st.binary(max_size=6), strat.entry_actions, min_size=1, max_size=4)),
        "set_user_permissions": st.builds(
            SetUserPermissions, addrs, strat.users, strat.permission_sets, u64),
        "del_user_permissions": st.builds(DelUserPermissions, addrs, strat.users, u64),
        "change_owner": st.builds(
            ChangeOwner, addrs, st.frozensets(publics, max_size=2), u64),
        "get_value": st.builds(GetValue, addrs, st.binary(max_size=6)),
        "list_user_permissions": st.builds(ListUserPermissions, addrs, strat.users),
        # the account layer's operations (node.accounts) travel in the same requests
        "create_account": st.builds(CreateAccount, publics, u64),
        "ins_auth_key": st.builds(InsAuthKey, publics, publics, u64),
        "del_auth_key": st.builds(DelAuthKey, publics, publics, u64),
        "charge": st.builds(Charge, publics, u64),
    }


def test_there_is_a_strategy_for_every_op_kind(strat, keys):
    assert set(_op_strategies(strat, keys)) == set(R.OPS)  # a new kind must be tested too


def _mutating(strat, keys):
    """Operations a client signs (Charge is node-internal: verify() lets it through unsigned)."""
    return st.one_of(*(s for k, s in _op_strategies(strat, keys).items()
                       if R.OPS[k].MUTATES and not R.OPS[k].INTERNAL))


def _signed(data, strat, keys) -> Request:
    op = data.draw(_mutating(strat, keys))
    kp = data.draw(st.sampled_from(keys))
    owner = data.draw(st.one_of(st.none(), st.sampled_from([k.public for k in keys])))
    return Request.signed(op, kp, owner=owner)


# Shared, loaded machine: timing is not what these tests are about.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ============================================================ round trips


@pytest.mark.parametrize("kind", sorted(R.OPS))
@RELAXED
@given(data=st.data())
def test_every_op_kind_round_trips_through_a_request(strat, keys, kind, data):
    op = data.draw(_op_strategies(strat, keys)[kind])
    assert op_from_obj(wire(op_to_obj(op))) == op
    if op.MUTATES:
        kp = data.draw(st.sampled_from(keys))
        owner = data.draw(st.one_of(st.none(), st.sampled_from([k.public for k in keys])))
        request = Request.signed(op, kp, owner=owner)
    else:
        request = Request(op)
    back = Request.from_obj(wire(request.to_obj()))
    assert back == request
    assert back.signing_bytes() == request.signing_bytes()
    back.verify()


def test_a_request_keeps_its_given_id(keys):
    rid = bytes(range(16))
    request = Request.signed(GetMData(ADDR), keys[0], request_id=rid)
    assert request.request_id == rid and Request.from_obj(wire(request.to_obj())).request_id == rid


# ============================================================ signatures


@RELAXED
@given(data=st.data())
def test_a_signed_mutation_verifies_only_over_its_exact_bytes(strat, keys, data):
    request = _signed(data, strat, keys)
    request.verify()
    signed = request.signing_bytes()
    i = data.draw(st.integers(0, len(signed) - 1))
    changed = signed[:i] + bytes([signed[i] ^ data.draw(st.integers(1, 255))]) + signed[i + 1:]
    assert not request.requester.verify(changed, request.signature)


@RELAXED
@given(data=st.data())
def test_any_changed_signature_byte_is_refused(strat, keys, data):
    request = _signed(data, strat, keys)
    sig = bytearray(request.signature)
    sig[data.draw(st.integers(0, 63))] ^= data.draw(st.integers(1, 255))
    forged = Request(request.op, request.requester, request.request_id, request.owner, bytes(sig))
    with pytest.raises(E.InvalidSignature):
        forged.verify()


@RELAXED
@given(data=st.data())
def test_changing_any_signed_field_breaks_the_signature(strat, keys, data):
    request = _signed(data, strat, keys)
    other_op = data.draw(_mutating(strat, keys).filter(lambda op: op != request.op))
    others = [k.public for k in keys if k.public != request.requester]
    variants = [
        Request(other_op, request.requester, request.request_id, request.owner, request.signature),
        Request(request.op, data.draw(st.sampled_from(others)), request.request_id, request.owner,
                request.signature),
        Request(request.op, request.requester, bytes(16) if request.request_id != bytes(16)
                else b"\x01" * 16, request.owner, request.signature),
        Request(request.op, request.requester, request.request_id,
                data.draw(st.sampled_from([None, *others]).filter(lambda o: o != request.owner)),
                request.signature),
    ]
    for forged in variants:
        with pytest.raises(E.InvalidSignature):
            forged.verify()


def test_a_signature_by_another_key_is_refused(keys):
    op = MutateEntries(ADDR, {b"k": Ins(b"v")})
    genuine = Request.signed(op, keys[1])
    claimed = Request(op, keys[0].public, genuine.request_id, None, genuine.signature)
    with pytest.raises(E.InvalidSignature):
        claimed.verify()


@pytest.mark.parametrize("signature", [b"", bytes(64), b"\x01" * 63, b"\x01" * 65])
def test_a_missing_or_malformed_signature_is_refused(keys, signature):
    good = Request.signed(MutateEntries(ADDR, {b"k": Ins(b"v")}), keys[0])
    bad = Request(good.op, good.requester, good.request_id, None, signature)
    with pytest.raises(E.InvalidSignature):
        bad.verify()
    unsigned = Request(good.op, None, good.request_id)  # nobody named
    with pytest.raises(E.InvalidSignature):
        unsigned.verify()


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_a_request_id_of_the_wrong_length_is_refused(keys, length):
    for request in (
        Request.signed(MutateEntries(ADDR, {b"k": Ins(b"v")}), keys[0], request_id=b"\x07" * length),
        Request(GetMData(ADDR), request_id=b"\x07" * length),
    ):
        if length == 0:  # `signed` replaces an empty id with a fresh one
            request = Request(request.op, request.requester, b"", request.owner, request.signature)
        with pytest.raises(E.ProtocolError):
            request.verify()


@pytest.mark.parametrize("cls", R.READ_OPS, ids=lambda c: c.KIND)
def test_reads_need_no_signature(cls):
    extra = {GetValue: (b"k",), ListUserPermissions: (ANYONE,)}.get(cls, ())
    op = cls(ADDR, *extra)
    Request(op).verify()
    Request(op, requester=Keypair(b"\x09" * 32).public, signature=b"junk").verify()
    Request(GetIData(NAME)).verify()


def test_nobody_can_sign_as_the_no_owner_key():
    """The zero key has small order: for one in 8 messages, R = s*B is a valid-looking
    signature under the bare ed25519 equation [s]B = R + [h]A (h*A vanishes when 8 | h).
    libsodium refuses small-order keys, so none of these forgeries verifies."""
    order = 2**252 + 27742317777372353535851937790883648493
    rng = random.Random(1)
    op = ChangeOwner(ADDR, frozenset([Keypair(b"\x05" * 32).public]), 1)
    tried = 0
    for _ in range(200):
        s = crypto_core_ed25519_scalar_reduce(rng.randbytes(64))
        r = crypto_scalarmult_ed25519_base_noclamp(s)
        request = Request(op, NO_OWNER_KEY, rng.randbytes(16), None, r + s)
        h = int.from_bytes(hashlib.sha512(r + bytes(NO_OWNER_KEY) + request.signing_bytes()).digest(),
                           "little") % order
        if h % 8:
            continue
        tried += 1
        with pytest.raises(E.InvalidSignature):
            request.verify()
    assert tried >= 5


# ============================================================ the wire decoder


def _corrupt(obj, index: int, junk):
    counter = [0]

    def walk(node):
        here = counter[0]
        counter[0] += 1
        if here == index:
            return junk
        if isinstance(node, list):
            return [walk(x) for x in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    return walk(obj)


def _size(obj) -> int:
    if isinstance(obj, list):
        return 1 + sum(_size(x) for x in obj)
    if isinstance(obj, dict):
        return 1 + sum(_size(x) for x in obj.values())
    return 1


@RELAXED
@given(data=st.data())
def test_op_from_obj_on_junk_raises_only_protocol_error(strat, data):
    junk = data.draw(strat.junk())
    try:
        op = op_from_obj(junk)
    except E.ProtocolError:
        return
    assert op_from_obj(op_to_obj(op)) == op


@settings(RELAXED, max_examples=300)
@given(data=st.data())
def test_op_from_obj_on_a_corrupted_op_raises_only_protocol_error(strat, keys, data):
    kind = data.draw(st.sampled_from(sorted(R.OPS)))
    obj = wire(op_to_obj(data.draw(_op_strategies(strat, keys)[kind])))
    bad = _corrupt(obj, data.draw(st.integers(0, _size(obj) - 1)), data.draw(strat.junk()))
    try:
        op = op_from_obj(bad)
    except E.ProtocolError:
        return
    assert op_from_obj(op_to_obj(op)) == op


@settings(RELAXED, max_examples=200)
@given(data=st.data())
def test_request_from_obj_on_a_corrupted_request_raises_only_protocol_error(strat, keys, data):
    obj = wire(_signed(data, strat, keys).to_obj())
    bad = _corrupt(obj, data.draw(st.integers(0, _size(obj) - 1)), data.draw(strat.junk()))
    try:
        request = Request.from_obj(bad)
    except E.ProtocolError:
        return
    if request.to_obj() == obj:  # the junk happened to equal what it replaced
        request.verify()
    else:  # anything else that decodes must fail the signature (or the id length) check
        with pytest.raises((E.InvalidSignature, E.ProtocolError)):
            request.verify()


def test_an_entry_batch_on_the_wire_has_one_action_per_key_and_at_least_one():
    addr = ADDR.to_obj()
    with pytest.raises(E.ProtocolError):
        op_from_obj(["mutate_entries", [addr, [[b"k", [0, b"v", 0]], [b"k", [2, b"", 1]]]]])
    with pytest.raises(E.ProtocolError):
        op_from_obj(["mutate_entries", [addr, []]])
    op = op_from_obj(["mutate_entries", [addr, [[b"k", [0, b"v", 0]], [b"j", [2, b"", 1]]]]])
    assert op == MutateEntries(ADDR, {b"k": Ins(b"v", 0), b"j": Del(1)})


HUGE_NAME_FIELDS = [
    ["get_idata", [2**64 - 1]],  # bytes(n): OverflowError
    ["get_idata", [2**62]],  # bytes(n): MemoryError (an n of 2**33 would zero 8 GiB first)
    ["change_owner", [[bytes(32), 1], [2**63], 1]],  # the same in PublicKey(...)
]


@pytest.mark.parametrize("obj", HUGE_NAME_FIELDS)
def test_a_huge_int_in_a_name_field_is_a_protocol_error(obj):
    with pytest.raises(E.ProtocolError):
        op_from_obj(obj)


@pytest.mark.parametrize("name", [32, list(range(32))])
def test_a_name_must_be_bytes_on_the_wire(name):
    with pytest.raises(E.ProtocolError):
        op_from_obj(["get_idata", [name]])


# ============================================================ apply_mutation


@pytest.fixture
def put_state(keys):
    md = MutableData(NAME, TAG, {b"k": Value(b"v", 0)}, {ANYONE: PermissionSet.allowing(Action.INSERT)},
                     0, frozenset([keys[0].public]))
    return apply_mutation(MDataState(), Request.signed(PutMData(md), keys[0]))


def test_put_then_mutate(put_state, keys):
    assert put_state.md.entries == {b"k": Value(b"v", 0)}
    state = apply_mutation(put_state, Request.signed(MutateEntries(ADDR, {b"n": Ins(b"x")}), keys[2]))
    assert state.md.entries[b"n"] == Value(b"x", 0)
    with pytest.raises(E.DataExists):
        apply_mutation(state, Request.signed(PutMData(MutableData(NAME, TAG, owners=frozenset(
            [keys[0].public]))), keys[0]))


def test_mutating_a_missing_md_is_no_such_data(keys):
    with pytest.raises(E.NoSuchData):
        apply_mutation(MDataState(), Request.signed(MutateEntries(ADDR, {b"k": Ins(b"v")}), keys[0]))


def test_apply_mutation_refuses_what_is_not_an_md_mutation(put_state, keys):
    with pytest.raises(E.InvalidOperation):
        apply_mutation(put_state, Request.signed(GetMData(ADDR), keys[0]))
    with pytest.raises(E.InvalidSignature):  # a mutation that names no requester
        apply_mutation(put_state, Request(MutateEntries(ADDR, {b"n": Ins(b"x")})))


def test_apply_mutation_refuses_an_idata_put(put_state, keys):
    with pytest.raises(E.InvalidOperation):
        apply_mutation(put_state, Request.signed(PutIData(ImmutableData(b"x")), keys[0]))


def test_put_mdata_owner_must_be_the_account_acted_for(keys):
    md = MutableData(NAME, TAG, owners=frozenset([keys[0].public]))
    with pytest.raises(E.InvalidOwners):  # an app key putting the user's MD as itself
        apply_mutation(MDataState(), Request.signed(PutMData(md), keys[1]))
    # Acting for the owner is accepted on the requester's word: checking that keys[1] is an
    # authorised app of keys[0]'s account is the account layer's job (docs/data-rules.md).
    state = apply_mutation(MDataState(), Request.signed(PutMData(md), keys[1], owner=keys[0].public))
    assert state.md == md


def test_a_retried_request_succeeds_without_applying_twice(put_state, keys):
    request = Request.signed(MutateEntries(ADDR, {b"n": Ins(b"x")}), keys[2])
    once = apply_mutation(put_state, request)
    twice = apply_mutation(once, request)
    assert twice == once and twice.md.entries[b"n"] == Value(b"x", 0)


def test_a_failed_request_is_not_remembered(put_state, keys):
    request = Request.signed(MutateEntries(ADDR, {b"k": Update(b"x", 7)}), keys[0])
    for _ in range(2):  # a remembered failure would turn the retry into a silent success
        with pytest.raises(E.InvalidEntryActions):
            apply_mutation(put_state, request)


def _push_window(state, keys, n=RECENT_REQUESTS):
    for i in range(n):
        state = apply_mutation(state, Request.signed(
            MutateEntries(ADDR, {b"fill%d" % i: Ins(b"")}), keys[0]))
    return state


def test_the_window_of_recent_requests_keeps_the_newest(put_state, keys):
    first = Request.signed(MutateEntries(ADDR, {b"first": Ins(b"")}), keys[0])
    state = apply_mutation(put_state, first)
    state = _push_window(state, keys, RECENT_REQUESTS - 1)
    assert apply_mutation(state, first) is state  # still inside the window: deduplicated
    last = Request.signed(MutateEntries(ADDR, {b"last": Ins(b"")}), keys[0])
    state = apply_mutation(state, last)  # pushes `first` out
    assert len(state.recent) == RECENT_REQUESTS
    assert apply_mutation(state, last) is state
    with pytest.raises(E.InvalidEntryActions):  # forgotten: now the rules answer
        apply_mutation(state, first)


def test_a_replay_beyond_the_window_is_refused_by_the_versions(put_state, keys):
    owner, heir = keys[0], keys[1]
    history = [  # (signer, op, what a replay at the end meets)
        (owner, MutateEntries(ADDR, {b"k": Update(b"w", 1)}),
         E.InvalidEntryActions({b"k": E.EntryError.invalid_successor(2)})),
        (owner, MutateEntries(ADDR, {b"n": Ins(b"x")}),
         E.InvalidEntryActions({b"n": E.EntryError.exists(1)})),
        (owner, SetUserPermissions(ADDR, heir.public, PermissionSet.allowing(Action.UPDATE), 1),
         E.InvalidSuccessor(4)),
        (owner, MutateEntries(ADDR, {b"n": Del(1), b"k": Del(2)}),
         E.InvalidEntryActions({b"n": E.EntryError.invalid_successor(1),
                                b"k": E.EntryError.invalid_successor(2)})),
        (owner, ChangeOwner(ADDR, frozenset([heir.public]), 2), E.InvalidSuccessor(4)),
        (heir, DelUserPermissions(ADDR, heir.public, 3), E.AccessDenied()),
        (heir, ChangeOwner(ADDR, frozenset([owner.public]), 4), E.AccessDenied()),
    ]
    state, sent = put_state, []
    for signer, op, _ in history:
        sent.append(Request.signed(op, signer))
        state = apply_mutation(state, sent[-1])
    # The ownership went A -> B -> A; A's old ChangeOwner(v2) is refused by the version alone.
    state = _push_window(state, [owner])  # every id in `sent` has left the window
    for request, (_, _, expected) in zip(sent, history, strict=True):
        with pytest.raises(type(expected)) as info:
            apply_mutation(state, request)
        assert info.value.payload() == expected.payload()


def test_replaying_around_a_tombstone(put_state, keys):
    """Ins after Del meets the tombstone; Update can revive a tombstone only at its version
    + 1, and every step moved the key's version on, so no replay of any of them applies."""
    o = keys[0]
    history = [
        Request.signed(MutateEntries(ADDR, {b"t": Ins(b"one")}), o),  # t@0
        Request.signed(MutateEntries(ADDR, {b"t": Update(b"two", 1)}), o),  # t@1
        Request.signed(MutateEntries(ADDR, {b"t": Del(2)}), o),  # tombstone t@2
        Request.signed(MutateEntries(ADDR, {b"t": Update(b"back", 3)}), o),  # revived t@3
        Request.signed(MutateEntries(ADDR, {b"t": Del(4)}), o),  # tombstone t@4
    ]
    state = put_state
    for request in history:
        state = apply_mutation(state, request)
    forgotten = MDataState(state.md, ())  # as if every id had left the window
    expected = [E.EntryError.exists(4)] + [E.EntryError.invalid_successor(4)] * 4
    for request, error in zip(history, expected, strict=True):
        with pytest.raises(E.InvalidEntryActions) as info:
            apply_mutation(forgotten, request)
        assert info.value.errors == {b"t": error}


def test_a_refused_request_applies_later_if_its_condition_comes_true(put_state, keys):
    """Finding, not a bug of the rules: a signed request has no expiry. One that was refused
    (or never delivered) still applies whenever its versions become right, e.g. when
    replayed by whoever kept a copy."""
    early = Request.signed(MutateEntries(ADDR, {b"k": Update(b"from the past", 2)}), keys[0])
    with pytest.raises(E.InvalidEntryActions):
        apply_mutation(put_state, early)
    state = apply_mutation(put_state, Request.signed(MutateEntries(ADDR, {b"k": Update(b"now", 1)}),
                                                     keys[0]))
    assert apply_mutation(state, early).md.entries[b"k"] == Value(b"from the past", 2)


def test_a_reused_request_id_is_not_acknowledged_for_a_different_request(put_state, keys):
    first = Request.signed(MutateEntries(ADDR, {b"a": Ins(b"1")}), keys[2])
    state = apply_mutation(put_state, first)
    other = Request.signed(MutateEntries(ADDR, {b"b": Ins(b"2")}), keys[0], request_id=first.request_id)
    try:
        after = apply_mutation(state, other)
    except E.InvalidOperation:
        return  # refused: fine
    assert b"b" in after.md.entries  # or applied: fine; acknowledged-and-dropped is not


@settings(RELAXED, max_examples=150)
@given(data=st.data())
def test_replayed_mutations_never_apply_twice(strat, op_for, data):
    """Every successful request, replayed at once (inside the window) or after every id has
    been forgotten, leaves the state as it was."""
    state = MDataState(data.draw(strat.start_md))
    applied = []
    for step in data.draw(strat.steps(requesters=st.sampled_from([-1, -1, -1, 1, 2]))):
        kp, op = op_for(state.md, step)
        request = Request.signed(op, kp)
        try:
            new = apply_mutation(state, request)
        except E.ClientError:
            continue
        assert apply_mutation(new, request) == new
        applied.append(request)
        state = new
    forgotten = MDataState(state.md, ())
    for request in applied:
        with pytest.raises(E.ClientError):
            apply_mutation(forgotten, request)


# ============================================================ reads


@pytest.fixture
def locked_md(keys):
    """An MD that denies everything to everyone but its owner."""
    deny = PermissionSet().deny(*Action)
    return MutableData(NAME, TAG, {b"t": Value(b"", 1), b"k": Value(b"v", 2)},  # not sorted
                       {ANYONE: deny, keys[1].public: deny}, 4, frozenset([keys[0].public]))


def test_reads_are_never_permission_checked(locked_md, keys):
    answers = {
        GetMData(ADDR): locked_md,
        R.GetMDataShell(ADDR): locked_md.shell(),
        R.GetMDataVersion(ADDR): 4,
        R.ListEntries(ADDR): dict(locked_md.entries),
        R.ListKeys(ADDR): {b"k", b"t"},
        R.ListValues(ADDR): [Value(b"v", 2), Value(b"", 1)],
        R.ListPermissions(ADDR): dict(locked_md.permissions),
        GetValue(ADDR, b"k"): Value(b"v", 2),
        ListUserPermissions(ADDR, ANYONE): PermissionSet().deny(*Action),
    }
    assert {type(op) for op in answers} == set(R.READ_OPS)
    for op, expected in answers.items():
        result = read_mdata(locked_md, op)
        assert result == expected
        assert op.decode_result(wire(op.encode_result(result))) == expected


def test_read_errors(locked_md):
    with pytest.raises(E.NoSuchEntry):
        read_mdata(locked_md, GetValue(ADDR, b"absent"))
    with pytest.raises(E.NoSuchKey):
        read_mdata(locked_md, ListUserPermissions(ADDR, Keypair(b"\x03" * 32).public))
    with pytest.raises(E.NoSuchData):
        read_mdata(None, GetMData(ADDR))
    with pytest.raises(E.InvalidOperation):
        read_mdata(locked_md, MutateEntries(ADDR, {b"k": Del(3)}))


def test_clients_check_what_a_node_answers(locked_md):
    chunk = ImmutableData(b"payload")
    op = GetIData(chunk.name)
    assert op.decode_result(op.encode_result(chunk)) == chunk
    with pytest.raises(E.NetworkOther):
        op.decode_result(b"not the payload")
    other = MutableData(XorName(bytes(32)), TAG)
    with pytest.raises(E.NetworkOther):
        GetMData(ADDR).decode_result(other.to_obj())
