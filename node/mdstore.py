"""How an acceptor's MD records sit on disk: a small header per MD and one record per entry.

An MD can hold 1,000 entries and 1 MiB, and an event stream MD takes one entry per event:
writing the whole MD again for every accepted change would cost O(size) per mutation on
every replica. So the header (promise, accepted ballot, the shell, recent request ids,
members) is one record, and each entry is its own record keyed by the MD's key and the
entry's key; an accept rewrites the header and only the entries that changed. All of it
lands in the store's current transaction, which the node host commits before anything is
acknowledged, so a record is never half written.
"""

from __future__ import annotations

from typing import Any

import msgpack

from . import errors as E
from .data import MutableData, Value
from .paxos import AcceptorRecord, Ballot, Register, check_names, check_recent, check_seq
from .rules import MDataState
from .store import Store

HEADERS = "md"
ENTRIES = "mde"
KEY_LEN = 40  # an MD's item key: name (32) + tag (8)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _header(record: AcceptorRecord) -> bytes:
    value = record.value
    body = None
    if value is not None:
        md = value.state.md
        shell = None if md is None else md.shell().to_obj()
        body = [shell, list(value.state.recent), [bytes(m) for m in value.members], [bytes(m) for m in value.prev],
                value.seq]
    return _pack([record.promised.to_obj(), record.accepted.to_obj(), body])


class RecordStore:
    """Loads and saves acceptor records on a node's `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self) -> tuple[dict[bytes, AcceptorRecord], set[bytes]]:
        """Every record on disk, and the keys of MDs whose records failed their checksums."""
        bad: set[bytes] = {key[:KEY_LEN] for ns, key in self.store.quarantined() if ns in (HEADERS, ENTRIES)}
        entries: dict[bytes, dict[bytes, Value]] = {}
        for full_key in self.store.record_keys(ENTRIES):
            item = full_key[:KEY_LEN]
            try:
                raw = self.store.get_record(ENTRIES, full_key)
            except E.CorruptRecord:
                bad.add(item)
                continue
            if raw is not None:
                try:
                    content, version = msgpack.unpackb(raw)
                    entries.setdefault(item, {})[full_key[KEY_LEN:]] = Value(content, version)
                except (msgpack.UnpackException, ValueError, TypeError):
                    bad.add(item)
        records: dict[bytes, AcceptorRecord] = {}
        for key in self.store.record_keys(HEADERS):
            try:
                raw = self.store.get_record(HEADERS, key)
            except E.CorruptRecord:
                bad.add(key)
                continue
            if raw is not None and key not in bad:
                try:
                    records[key] = self._decode(raw, entries.get(key, {}))
                except (msgpack.UnpackException, ValueError, TypeError, E.SafeError):
                    # A record this code cannot read (hostile numbers stored by an older
                    # version, a bug) is quarantined and repaired from the group like a
                    # corrupt one: a node always starts again from the store it wrote.
                    bad.add(key)
        for key in bad:
            records.pop(key, None)
        return records, bad

    @staticmethod
    def _decode(raw: bytes, entries: dict[bytes, Value]) -> AcceptorRecord:
        promised, accepted, body = msgpack.unpackb(raw, raw=False)
        value = None
        if body is not None:
            shell, recent, members, prev = body[:4]
            seq = body[4] if len(body) > 4 else 0
            md = None
            if shell is not None:
                md = MutableData.from_obj(shell).replace(entries=entries)
            value = Register(MDataState(md, check_recent(recent)), check_names(members), check_names(prev),
                             check_seq(seq))
        return AcceptorRecord(Ballot.from_obj(promised), Ballot.from_obj(accepted), value)

    def write(self, key: bytes, old: AcceptorRecord | None, new: AcceptorRecord) -> None:
        """Save `new` over `old`: the header, and the entries that differ."""
        self.store.put_record(HEADERS, key, _header(new))
        before = _entries(old)
        after = _entries(new)
        if after is before:
            return
        for entry_key, value in after.items():
            previous = before.get(entry_key)
            if previous is not value and previous != value:
                self.store.put_record(ENTRIES, key + entry_key, _pack([value.content, value.entry_version]))
        for entry_key in before.keys() - after.keys():
            self.store.delete_record(ENTRIES, key + entry_key)

    def delete(self, key: bytes, record: AcceptorRecord | None) -> None:
        for entry_key in _entries(record):
            self.store.delete_record(ENTRIES, key + entry_key)
        self.store.delete_record(HEADERS, key)


_NONE: dict[bytes, Value] = {}


def _entries(record: AcceptorRecord | None) -> Any:
    if record is None or record.value is None or record.value.state.md is None:
        return _NONE
    return record.value.state.md.entries
