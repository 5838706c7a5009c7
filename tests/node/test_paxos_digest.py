"""Register digests: incremental updates agree with computing from scratch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.data import MutableData, Value
from node.keys import Keypair
from node.paxos import Register
from node.rules import MDataState
from node.xorname import XorName

OWNER = Keypair().public
NAME = XorName(bytes(32))
entry_maps = st.dictionaries(st.binary(min_size=1, max_size=4),
                             st.builds(Value, st.binary(max_size=8), st.integers(0, 3)), max_size=10)


def _reg(entries, members=(NAME,)) -> Register:
    return Register(MDataState(MutableData(NAME, 1, entries, {}, 0, frozenset({OWNER}))), tuple(members))


@settings(max_examples=200, deadline=None)
@given(st.lists(entry_maps, min_size=1, max_size=5))
def test_derived_digests_equal_fresh_ones(chain):
    value = _reg(chain[0])
    for entries in chain[1:]:
        md = value.state.md.replace(entries=entries)
        value = value.with_state(MDataState(md))
        assert value.digest() == _reg(entries).digest()
    assert Register.decode(value.encode()).digest() == value.digest()


def test_digest_tells_apart_what_replicas_must_agree_on():
    base = _reg({b"a": Value(b"1", 0)})
    assert _reg({b"a": Value(b"1", 1)}).digest() != base.digest()
    assert _reg({b"a": Value(b"2", 0)}).digest() != base.digest()
    assert _reg({b"a": Value(b"1", 0)}, (XorName(b"\x01" * 32),)).digest() != base.digest()
    assert _reg({b"a": Value(b"1", 0), b"b": Value(b"", 0)}).digest() != base.digest()
