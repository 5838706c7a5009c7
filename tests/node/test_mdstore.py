"""Acceptor records on disk: a header per MD plus one record per entry, written as diffs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.data import MutableData, Value
from node.keys import Keypair
from node.mdstore import ENTRIES, HEADERS, RecordStore
from node.paxos import AcceptorRecord, Ballot, Register
from node.rules import MDataState
from node.store import MemoryStore
from node.xorname import XorName

OWNER = Keypair().public
KEY = bytes(32) + (15000).to_bytes(8, "big")
MEMBERS = (XorName(b"\x01" * 32), XorName(b"\x02" * 32))


def _record(entries: dict[bytes, Value], counter: int) -> AcceptorRecord:
    md = MutableData(XorName(KEY[:32]), 15000, entries, {}, counter % 3, frozenset({OWNER}))
    return AcceptorRecord(Ballot(counter + 1, b"p"), Ballot(counter, b"p"),
                          Register(MDataState(md, (b"r" * 16,)), MEMBERS))


entry_maps = st.dictionaries(st.binary(min_size=1, max_size=6),
                             st.builds(Value, st.binary(max_size=20), st.integers(0, 5)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(entry_maps, min_size=1, max_size=6))
def test_any_sequence_of_writes_loads_back_as_the_last(sequence):
    store = MemoryStore()
    disk = RecordStore(store)
    old = None
    for counter, entries in enumerate(sequence):
        new = _record(entries, counter)
        disk.write(KEY, old, new)
        old = new
    store.sync()
    store.crash()  # only what was synced survives; it was all synced
    records, bad = RecordStore(store).load()
    assert not bad
    assert records[KEY] == old
    assert len(store.record_keys(ENTRIES)) == len(sequence[-1])


def test_a_write_touches_only_the_entries_that_changed():
    store = MemoryStore()
    disk = RecordStore(store)
    first = _record({b"k%d" % i: Value(b"v", 0) for i in range(100)}, 0)
    disk.write(KEY, None, first)
    entries = dict(first.value.state.md.entries)
    entries[b"k7"] = Value(b"w", 1)
    second = _record(entries, 1)
    writes = []
    original = store.put_record
    store.put_record = lambda ns, key, value: (writes.append(ns), original(ns, key, value))[1]
    disk.write(KEY, first, second)
    assert sorted(writes) == sorted([ENTRIES, HEADERS])  # one header, one entry of 100


def test_a_corrupt_entry_quarantines_its_md_and_delete_removes_everything():
    store = MemoryStore()
    disk = RecordStore(store)
    record = _record({b"a": Value(b"1", 0), b"b": Value(b"2", 0)}, 0)
    disk.write(KEY, None, record)
    store.sync()
    store.corrupt(ENTRIES, KEY + b"a")
    records, bad = RecordStore(store).load()
    assert bad == {KEY} and KEY not in records
    disk.delete(KEY, record)
    assert store.record_keys(HEADERS) == [] and store.record_keys(ENTRIES) == []
