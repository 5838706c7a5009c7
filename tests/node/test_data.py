"""The data types: canonical encoding, round trips, and decoders that refuse bad input with
ValueError only (docs/data-model.md §1.1, §2.1; the encoding is the testbed's own, see node/data.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    entry_action_from_obj,
    entry_action_to_obj,
    user_from_obj,
    user_to_obj,
)
from node.keys import Keypair
from node.xorname import XorName

NAME = XorName(bytes(range(32)))
KEY_A = Keypair(b"\x0a" * 32).public
KEY_B = Keypair(b"\x0b" * 32).public

# Integers anywhere in msgpack's range: the MD decoders check for bytes before building names
# and keys, so even the huge ones must come back as ValueError.
WIRE_INTS = st.integers(-(2**63), U64_MAX)


# Shared, loaded machine: timing is not what these tests are about.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ============================================================ canonical encoding


def test_encoding_layout_is_the_documented_one():
    md = MutableData(
        NAME, 15000,
        {b"b": Value(b"2", 1), b"a": Value(b"", 4)},
        {KEY_A: PermissionSet(insert=True, delete=False), ANYONE: PermissionSet(update=True)},
        3,
        frozenset([KEY_B]),
    )
    expected = [
        bytes(NAME), 15000, 3, [bytes(KEY_B)],
        [[b"", [None, True, None, None]], [bytes(KEY_A), [True, None, False, None]]],
        [[b"a", b"", 4], [b"b", b"2", 1]],
    ]
    assert md.to_obj() == expected
    assert md.encode() == msgpack.packb(expected, use_bin_type=True)


@RELAXED
@given(data=st.data())
def test_encoding_does_not_depend_on_insertion_order(strat, data):
    md = data.draw(strat.mdata())
    entries = data.draw(st.permutations(list(md.entries.items())))
    perms = data.draw(st.permutations(list(md.permissions.items())))
    owners = data.draw(st.permutations(sorted(md.owners)))
    again = MutableData(md.name, md.tag, dict(entries), dict(perms), md.version, frozenset(owners))
    assert again.encode() == md.encode()
    assert again.digest() == md.digest() == hashlib.sha3_256(md.encode()).digest()
    assert again == md


@RELAXED
@given(data=st.data())
def test_different_mds_encode_differently(strat, data):
    a, b = data.draw(strat.mdata()), data.draw(strat.mdata())
    assert (a.encode() == b.encode()) == (a == b)


# ============================================================ round trips


@RELAXED
@given(data=st.data())
def test_md_round_trips(strat, data):
    md = data.draw(strat.mdata())
    assert MutableData.from_obj(md.to_obj()) == md
    assert MutableData.decode(md.encode()) == md
    wire = msgpack.unpackb(msgpack.packb(md.to_obj(), use_bin_type=True), raw=False)
    assert MutableData.from_obj(wire).encode() == md.encode()
    assert MutableData.from_obj(md.shell().to_obj()) == md.shell()


@RELAXED
@given(data=st.data())
def test_entry_actions_round_trip(strat, data):
    action = data.draw(strat.entry_actions)
    wire = msgpack.unpackb(msgpack.packb(entry_action_to_obj(action), use_bin_type=True), raw=False)
    assert entry_action_from_obj(wire) == action


@RELAXED
@given(data=st.data())
def test_permission_sets_and_users_round_trip(strat, data):
    perms, user = data.draw(strat.permission_sets), data.draw(strat.users)
    assert PermissionSet.from_obj(perms.to_obj()) == perms
    assert user_from_obj(user_to_obj(user)) == user


@RELAXED
@given(st.integers(0, U64_MAX))
def test_address_round_trips(tag):
    addr = MDataAddress(NAME, tag)
    assert MDataAddress.from_obj(addr.to_obj()) == addr
    assert MutableData(NAME, tag).address == addr


def test_anyone_is_a_singleton_that_survives_pickling():
    assert pickle.loads(pickle.dumps(ANYONE)) is ANYONE
    assert user_from_obj(b"") is ANYONE


# ============================================================ decoders refuse junk


def _replace_one_node(obj, index: int, junk):
    """Replace the index-th node (pre-order) of a nested list/dict structure with junk."""
    counter = [0]

    def walk(node):
        if counter[0] == index:
            counter[0] += 1
            return junk
        counter[0] += 1
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return walk(obj)


def _count_nodes(obj) -> int:
    return 1 + (sum(_count_nodes(x) for x in obj) if isinstance(obj, list) else 0)


@RELAXED
@given(data=st.data())
def test_md_from_obj_refuses_junk_with_value_error_only(strat, data):
    junk = data.draw(strat.junk(ints=WIRE_INTS))
    try:
        md = MutableData.from_obj(junk)
    except ValueError:
        return
    assert MutableData.from_obj(md.to_obj()) == md  # junk that happens to be a well-formed MD


@RELAXED
@given(data=st.data())
def test_md_from_obj_refuses_a_corrupted_md_with_value_error_only(strat, data):
    obj = data.draw(strat.mdata()).to_obj()
    index = data.draw(st.integers(0, _count_nodes(obj) - 1))
    bad = _replace_one_node(obj, index, data.draw(strat.junk(ints=WIRE_INTS)))
    try:
        md = MutableData.from_obj(bad)
    except ValueError:
        return
    # whatever is accepted is a well-formed MD whose own encoding decodes to itself
    assert MutableData.decode(md.encode()) == md


@RELAXED
@given(data=st.data())
def test_md_decode_refuses_damaged_bytes_with_value_error_only(strat, data):
    raw = bytearray(data.draw(strat.mdata()).encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    how = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if how == "flip":
        raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del raw[i:]
    else:
        raw = bytearray(data.draw(st.binary(max_size=64)))
    with contextlib.suppress(ValueError):
        MutableData.decode(bytes(raw))


@pytest.mark.parametrize("raw", [
    b"\x81\x90\x00",  # a map keyed by an array: msgpack raises TypeError (unhashable)
    b"\xc1", b"\x92\x01", b"\xa1\xff", b"", b"\x96" + b"\xc0" * 6,
])
def test_md_decode_refuses_bad_bytes_with_value_error(raw):
    with pytest.raises(ValueError):
        MutableData.decode(raw)


def _good_obj():
    return MutableData(
        NAME, 1, {b"k": Value(b"v", 0)}, {KEY_A: PermissionSet(insert=True)}, 0, frozenset([KEY_A])
    ).to_obj()


def _with(index, value):
    obj = _good_obj()
    obj[index] = value
    return obj


@pytest.mark.parametrize(
    "obj",
    [
        None, b"", [], _good_obj()[:5], _good_obj() + [[]],
        _with(0, "a name that is text, not bytes"),
        _with(0, 2**64 - 1),  # bytes(n) would be OverflowError
        _with(0, 32),  # bytes(32) would be a (zero) name
        _with(0, list(range(32))),  # so would a list of 32 small ints
        _with(0, bytes(31)),
        _with(1, -1), _with(1, 2**64), _with(1, True),
        _with(2, -1), _with(2, 1.0),
        _with(3, [2**64 - 1]), _with(3, ["owner"]), _with(3, [bytes(KEY_A), bytes(KEY_A)]),
        _with(3, bytes(KEY_A)),
        _with(4, [[b"", [True, None, None]]]), _with(4, [[b"", [1, None, None, None]]]),
        _with(4, [[b"", [None] * 4], [b"", [True] * 4]]),  # Anyone twice
        _with(4, [[b"x" * 31, [None] * 4]]),
        _with(5, [[b"k", b"v", 0], [b"k", b"w", 1]]),  # key twice
        _with(5, [[b"k", "v", 0]]), _with(5, [[b"k", b"v", -1]]), _with(5, [[b"k", b"v"]]),
        _with(5, {b"k": [b"v", 0]}),
    ],
)
def test_md_from_obj_refuses_malformed_objects(obj):
    with pytest.raises(ValueError):
        MutableData.from_obj(obj)


@pytest.mark.parametrize(
    "obj",
    [
        [True, b"x", 0],  # True == 1 would otherwise read as Update
        [0.0, b"x", 0],
        [2, b"content", 1],  # a Del carries none
        [3, b"", 0], [0, "x", 0], [0, b"x", -1], [0, b"x", 2**64], [0, b"x"], "ins",
    ],
)
def test_entry_action_from_obj_refuses_malformed_objects(obj):
    with pytest.raises(ValueError):
        entry_action_from_obj(obj)


@pytest.mark.parametrize("obj", [None, [NAME], [bytes(NAME), -1], [str(NAME), 0], [2**64 - 1, 0], [32, 0]])
def test_address_from_obj_refuses_malformed_objects(obj):
    with pytest.raises(ValueError):
        MDataAddress.from_obj(obj)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Value("text", 0), lambda: Value(b"x", -1), lambda: Value(b"x", 2**64),
        lambda: Ins(b"x", -1), lambda: Update(b"x", 2**64), lambda: Del(-1), lambda: Ins(None),
    ],
)
def test_values_and_actions_refuse_versions_outside_u64(make):
    # An MD holding such a version would encode, then fail its own decoder on another node.
    with pytest.raises(ValueError):
        make()


# ============================================================ the parts


@RELAXED
@given(data=st.data())
def test_permission_set_builders_match_a_plain_model(strat, data):
    perms = data.draw(strat.permission_sets)
    model = dict(zip(Action, perms.to_obj(), strict=True))
    for _ in range(data.draw(st.integers(0, 6))):
        how = data.draw(st.sampled_from(["allow", "deny", "clear"]))
        actions = data.draw(st.lists(st.sampled_from(list(Action)), max_size=4))
        new = getattr(perms, how)(*actions)
        assert perms.to_obj() == list(model.values())  # builders return a new set
        for a in actions:
            model[a] = {"allow": True, "deny": False, "clear": None}[how]
        perms = new
        assert [perms.is_allowed(a) for a in Action] == list(model.values())


def test_permission_set_flag_order_is_insert_update_delete_manage():
    assert [a.name for a in Action] == ["INSERT", "UPDATE", "DELETE", "MANAGE_PERMISSIONS"]
    assert PermissionSet.allowing(Action.DELETE).to_obj() == [None, None, True, None]


def test_shell_and_live_entries():
    md = MutableData(
        NAME, 7, {b"a": Value(b"x", 0), b"b": Value(b"", 2)}, {ANYONE: PermissionSet()}, 5,
        frozenset([KEY_A]),
    )
    shell = md.shell()
    assert shell.entries == {} and shell.version == 5 and shell.owners == md.owners
    assert shell.permissions == md.permissions and shell.address == md.address
    assert md.live_entries() == {b"a": Value(b"x", 0)}
    assert Value(b"", 9).is_tombstone and not Value(b"\x00", 9).is_tombstone


def test_idata_equality_is_by_content():
    assert ImmutableData(b"x") == ImmutableData(b"x")
    assert ImmutableData(b"x") != ImmutableData(b"y")
    assert ImmutableData(b"").name == hashlib.sha3_256(b"").digest()


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.binary(max_size=300),
                    st.builds(Value, st.binary(max_size=70000 // 40), st.integers(0, 2**64 - 1)),
                    max_size=40),
    st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 2**33)), max_size=20),
)
def test_the_kept_size_always_equals_the_packed_size(entries, changes):
    from node.rules import _resized

    md = MutableData(XorName(bytes(32)), 7, entries, {}, 3, frozenset())
    assert md.encoded_size() == len(md.encode())
    for key, content, version in changes:
        grown = dict(md.entries)
        grown[key] = Value(content, version)
        md = md.replace(entries=grown, entries_size=_resized(md, grown, {key: None}))
        assert md.encoded_size() == len(md.encode())
