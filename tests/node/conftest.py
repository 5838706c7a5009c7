"""Shared fixtures and Hypothesis strategies for the node tests.

Strategies are handed out through the session-scoped `strat` fixture (drawn with
`st.data()`), not imported: the test directories have no `__init__.py`, so `import conftest`
would pick whichever conftest was imported last.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import strategies as st

from node.data import ANYONE, U64_MAX, Del, Ins, MutableData, PermissionSet, Update, Value
from node.keys import Keypair
from node.requests import ChangeOwner, DelUserPermissions, MutateEntries, Op, SetUserPermissions
from node.xorname import XorName

# Four fixed identities: index 0 usually owns the MD under test.
KEYS = [Keypair(bytes([i + 1]) * 32) for i in range(4)]
PUBLICS = [k.public for k in KEYS]

ENTRY_KEYS = [b"a", b"b", b"c", b"d", b""]  # the empty key is a legal key
NAME = XorName(bytes(range(32)))


def _permission_sets() -> st.SearchStrategy[PermissionSet]:
    flag = st.sampled_from([True, False, None])
    return st.builds(PermissionSet, flag, flag, flag, flag)


def _users() -> st.SearchStrategy:
    return st.sampled_from([ANYONE, *PUBLICS])


def _values() -> st.SearchStrategy[Value]:
    return st.builds(Value, st.binary(max_size=8), st.integers(0, U64_MAX))


def _entry_actions() -> st.SearchStrategy:
    version = st.integers(0, U64_MAX)
    return st.one_of(
        st.builds(Ins, st.binary(max_size=8), version),
        st.builds(Update, st.binary(max_size=8), version),
        st.builds(Del, version),
    )


def _mdata(tag: st.SearchStrategy[int] | None = None, narrow: bool = False) -> st.SearchStrategy[MutableData]:
    """Any MD at NAME (limits aside): random tag unless given, entries, permissions, owners.

    `narrow` draws keys, contents and versions from a handful of values, so that two MDs
    often hold the same key at the same version (what replica merges must break ties on).
    """
    if narrow:
        versions = st.integers(0, 2)
        values = st.builds(Value, st.sampled_from([b"", b"x", b"y"]), versions)
        keys = st.sampled_from(ENTRY_KEYS[:3])
    else:
        versions, values, keys = st.integers(0, U64_MAX), _values(), st.binary(max_size=6)
    return st.builds(
        MutableData,
        name=st.just(NAME),
        tag=tag if tag is not None else st.integers(0, U64_MAX),
        entries=st.dictionaries(keys, values, max_size=6),
        permissions=st.dictionaries(_users(), _permission_sets(), max_size=5),
        version=versions,
        owners=st.frozensets(st.sampled_from(PUBLICS), max_size=2),
    )


# Integers a msgpack frame can carry, minus (2**16, 2**40): XorName(n) / PublicKey(n) call
# bytes(n), which for such an n would allocate and zero up to a terabyte (a bug reported in
# the test files). Bigger ones fail fast with MemoryError/OverflowError and are used on purpose
# only where that bug is the subject.
SAFE_INTS = st.integers(-(2**63), 2**16)


def _junk(ints: st.SearchStrategy[int] = SAFE_INTS, infinities: bool = True) -> st.SearchStrategy:
    """Anything msgpack could hand a decoder."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(allow_nan=True, allow_infinity=infinities),
        st.text(max_size=12),
        st.binary(max_size=40),
        st.sampled_from([b"", bytes(32), "put_mdata", "get_idata", "mutate_entries", 0, 1, 2]),
    )
    keys = st.one_of(st.text(max_size=4), st.binary(max_size=4), st.integers(-5, 5))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=6), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=20,
    )


# ---------------------------------------------------------------- random operation sequences
# A step is plain data; `build_op` turns it into an Op against the MD as it is *now*, so that
# versions are mostly right (offset 1 = the valid successor) and some steps succeed.

OFFSETS = st.sampled_from([1, 1, 1, 0, 2])
CURRENT_OWNER = -1  # a requester index meaning "whoever owns the MD at this step"


def _entry_step() -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("ins"), st.binary(max_size=4), st.sampled_from([0, 0, 1, 7, U64_MAX])),
        st.tuples(st.just("upd"), st.binary(max_size=4), OFFSETS),
        st.tuples(st.just("del"), st.just(b""), OFFSETS),
    )


# A third of the steps come from whoever owns the MD then, so that enough of them succeed.
ANY_REQUESTER = st.sampled_from([CURRENT_OWNER, CURRENT_OWNER, 0, 1, 2, 3])


def _steps(requesters: st.SearchStrategy[int] = ANY_REQUESTER, max_size: int = 25):
    users = st.integers(0, 4)  # 0 is ANYONE, i is PUBLICS[i - 1]
    entries = st.tuples(
        st.just("entries"),
        requesters,
        st.dictionaries(st.sampled_from(ENTRY_KEYS), _entry_step(), min_size=1, max_size=3),
    )
    return st.lists(
        st.one_of(
            entries,
            entries,  # twice: entry batches are what most requests are
            st.tuples(st.just("set"), requesters, users, _permission_sets(), OFFSETS),
            st.tuples(st.just("del_perm"), requesters, users, OFFSETS),
            st.tuples(st.just("owner"), requesters, st.frozensets(st.integers(0, 3), max_size=2), OFFSETS),
        ),
        max_size=max_size,
    )


def _start_md() -> st.SearchStrategy[MutableData]:
    """An MD owned by KEYS[0] with a random permission map and a few entries (some deleted)."""
    value = st.builds(Value, st.sampled_from([b"", b"x", b"yy"]), st.integers(0, 3))
    return st.builds(
        MutableData,
        name=st.just(NAME),
        tag=st.just(15000),
        entries=st.dictionaries(st.sampled_from(ENTRY_KEYS[:3]), value, max_size=3),
        permissions=st.dictionaries(_users(), _permission_sets(), max_size=5),
        version=st.integers(0, 3),
        owners=st.just(frozenset([PUBLICS[0]])),
    )


def build_op(md: MutableData, step: tuple) -> tuple[Keypair, Op]:
    kind, who, *rest = step
    if who == CURRENT_OWNER:
        who = next((i for i, p in enumerate(PUBLICS) if p in md.owners), 0)
    addr = md.address
    if kind == "entries":
        actions = {}
        for key, (act, content, n) in rest[0].items():
            if act == "ins":
                actions[key] = Ins(content, n)
                continue
            current = md.entries.get(key)
            version = min((current.entry_version if current else 0) + n, U64_MAX)
            actions[key] = Update(content, version) if act == "upd" else Del(version)
        return KEYS[who], MutateEntries(addr, actions)
    version = min(md.version + rest[-1], U64_MAX)
    if kind == "set":
        return KEYS[who], SetUserPermissions(addr, _user(rest[0]), rest[1], version)
    if kind == "del_perm":
        return KEYS[who], DelUserPermissions(addr, _user(rest[0]), version)
    return KEYS[who], ChangeOwner(addr, frozenset(PUBLICS[i] for i in rest[0]), version)


def _user(index: int):
    return ANYONE if index == 0 else PUBLICS[index - 1]


@pytest.fixture(scope="session")
def strat() -> SimpleNamespace:
    return SimpleNamespace(
        permission_sets=_permission_sets(),
        users=_users(),
        values=_values(),
        entry_actions=_entry_actions(),
        mdata=_mdata,
        junk=_junk,
        steps=_steps,
        start_md=_start_md(),
    )


@pytest.fixture(scope="session")
def keys() -> list[Keypair]:
    return KEYS


@pytest.fixture(scope="session")
def op_for():
    """`op_for(md, step) -> (keypair, op)`: a drawn step made concrete against `md`."""
    return build_op
