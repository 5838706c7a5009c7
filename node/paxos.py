"""Per-MD consensus: the acceptor side of CASPaxos, and the value a close group agrees on.

Each MD is one replicated register. Its value (`Register`) is the MD state together with
the close group that holds it (`members`), so membership changes are agreed exactly like
data changes. A proposer reads the highest accepted value from a majority of members
(prepare/promise), applies a change with the rules engine, and writes the result to a
majority (accept). See docs/replication.md for the protocol, its proof sketch and the
fast path (the accept of ballot b doubles as the promise of b's successor).

Everything here is pure: records in, records and replies out. The node core persists the
records (`encode`/`decode`) and moves the messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .data import MDataAddress, MutableData, Value
from .rules import MDataState
from .xorname import XorName, sha3_256

# Ballot counters stay far below 2**64 (MessagePack's largest integer): a hostile prepare
# with counter 2**64 - 1 would otherwise make every later ballot of the node unencodable.
# A counter may not jump more than MAX_JUMP past the highest this node has seen either, so
# one peer cannot spend an MD's ballot space in one message (see Replicator.check_ballot).
MAX_COUNTER = 2**62
MAX_JUMP = 2**32
NAME_LEN = 32


@dataclass(frozen=True, order=True, slots=True)
class Ballot:
    """A proposal number: a counter, ties broken by the proposer's name."""

    counter: int
    proposer: bytes = b""

    def successor(self) -> Ballot:
        """The ballot the same proposer may use next without a prepare (the fast path)."""
        return Ballot(self.counter + 1, self.proposer)

    def to_obj(self) -> list[Any]:
        return [self.counter, self.proposer]

    @classmethod
    def from_obj(cls, obj: Any) -> Ballot:
        if not isinstance(obj, list) or len(obj) != 2:
            raise ValueError("a ballot is [counter, proposer]")
        counter, proposer = obj
        if not isinstance(counter, int) or isinstance(counter, bool) or not 0 <= counter <= MAX_COUNTER:
            raise ValueError(f"a ballot counter is an integer in [0, 2**62], got {counter!r:.40}")
        if not isinstance(proposer, bytes) or len(proposer) > NAME_LEN:
            raise ValueError("a ballot's proposer is a name of at most 32 bytes")
        return cls(counter, proposer)

    def __str__(self) -> str:
        return f"{self.counter}.{self.proposer.hex()[:6]}"


ZERO = Ballot(0, b"")


def item_key(address: MDataAddress) -> bytes:
    """The store key of an MD: its name and its tag."""
    return bytes(address.name) + address.tag.to_bytes(8, "big")


_MOD = 1 << 256


def _entry_hash(key: bytes, value: Value) -> int:
    raw = msgpack.packb([key, value.content, value.entry_version], use_bin_type=True)
    return int.from_bytes(sha3_256(raw), "big")


def _entries_hash(entries: Mapping[bytes, Value]) -> int:
    return sum(_entry_hash(k, v) for k, v in entries.items()) % _MOD


@dataclass(frozen=True, slots=True)
class Register:
    """The agreed value of one MD: its state and the members of its close group.

    Its digest is what replicas compare. Entries enter it through an additive hash (the sum
    of each entry's SHA3 mod 2^256), so a value derived from another by changing a few
    entries gets its digest in time proportional to the change, not to the MD's size.
    """

    state: MDataState
    members: tuple[XorName, ...]
    # The group this value moves the MD away from, while a membership change is not known to
    # be complete; () when there is none. A value counts as chosen only when accepted by a
    # majority of `members` and, if `prev` is set, a majority of `prev` too (joint quorums).
    prev: tuple[XorName, ...] = ()
    # How many accepted rounds led to this value since the MD was created. Every round that
    # writes adds one, so an honest acceptor's copy never goes back to an older value (a
    # replayed, certified old value is refused: see Replicator.adopt_certified).
    seq: int = 0
    _encoded: bytes | None = field(default=None, compare=False, repr=False)
    _ehash: int | None = field(default=None, compare=False, repr=False)
    _parent: tuple[Mapping[bytes, Value], int] | None = field(default=None, compare=False, repr=False)
    _digest: bytes | None = field(default=None, compare=False, repr=False)

    def encode(self) -> bytes:
        if self._encoded is None:
            md = self.state.md
            raw = msgpack.packb(
                [
                    None if md is None else md.to_obj(),
                    list(self.state.recent),
                    [bytes(m) for m in self.members],
                    [bytes(m) for m in self.prev],
                    self.seq,
                ],
                use_bin_type=True,
            )
            object.__setattr__(self, "_encoded", raw)
        return self._encoded  # type: ignore[return-value]

    def entries_hash(self) -> int:
        if self._ehash is None:
            md = self.state.md
            entries: Mapping[bytes, Value] = {} if md is None else md.entries
            if self._parent is not None and self._parent[0] is not entries:
                before, value = self._parent
                for key, entry in entries.items():
                    old = before.get(key)
                    if old is not entry:
                        if old is not None:
                            value -= _entry_hash(key, old)
                        value += _entry_hash(key, entry)
                for key in before.keys() - entries.keys():
                    value -= _entry_hash(key, before[key])
                ehash = value % _MOD
            elif self._parent is not None:
                ehash = self._parent[1]
            else:
                ehash = _entries_hash(entries)
            object.__setattr__(self, "_ehash", ehash)
            object.__setattr__(self, "_parent", None)
        return self._ehash  # type: ignore[return-value]

    def head(self) -> bytes:
        """What the digest hashes: the MD without its entries (a hash of them instead), the
        fingerprints of the requests applied lately, the groups and the count. Small, so a
        client can be shown it to check that a value took its request (node/proofs.py)."""
        md = self.state.md
        return msgpack.packb(
            [
                None if md is None else md.shell().to_obj(),
                list(self.state.recent),
                [bytes(m) for m in self.members],
                [bytes(m) for m in self.prev],
                self.entries_hash().to_bytes(32, "big"),
                self.seq,
            ],
            use_bin_type=True,
        )

    def digest(self) -> bytes:
        if self._digest is None:
            object.__setattr__(self, "_digest", sha3_256(self.head())[:16])
        return self._digest  # type: ignore[return-value]

    @classmethod
    def decode(cls, raw: bytes) -> Register:
        try:
            obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            raise ValueError(f"a register that does not decode: {exc!r:.80}") from None
        if not isinstance(obj, list) or len(obj) not in (4, 5):
            raise ValueError("a register is [md, recent, members, prev, seq]")
        md_obj, recent, members, prev = obj[:4]
        seq = obj[4] if len(obj) == 5 else 0
        md = None if md_obj is None else MutableData.from_obj(md_obj)
        return cls(MDataState(md, check_recent(recent)), check_names(members), check_names(prev),
                   check_seq(seq), raw)

    def _lineage(self) -> tuple[Mapping[bytes, Value], int] | None:
        md = self.state.md
        return None if md is None else (md.entries, self.entries_hash())

    def with_state(self, state: MDataState) -> Register:
        return Register(state, self.members, self.prev, self.seq, _parent=self._lineage())

    def with_members(self, members: tuple[XorName, ...], prev: tuple[XorName, ...] = ()) -> Register:
        return Register(self.state, members, prev, self.seq, _parent=self._lineage())

    def with_seq(self, seq: int) -> Register:
        return Register(self.state, self.members, self.prev, seq, _parent=self._lineage())

    @property
    def quorums(self) -> tuple[tuple[XorName, ...], ...]:
        """The groups of which a majority must accept a value derived from this one."""
        return (self.members, self.prev) if self.prev and self.prev != self.members else (self.members,)


@dataclass(frozen=True, slots=True)
class AcceptorRecord:
    """What one acceptor keeps, durably, for one MD."""

    promised: Ballot = ZERO
    accepted: Ballot = ZERO
    value: Register | None = None

    def encode(self) -> bytes:
        return msgpack.packb(
            [
                self.promised.to_obj(),
                self.accepted.to_obj(),
                None if self.value is None else self.value.encode(),
            ],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, raw: bytes) -> AcceptorRecord:
        try:
            obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            raise ValueError(f"an acceptor record that does not decode: {exc!r:.80}") from None
        if not isinstance(obj, list) or len(obj) != 3:
            raise ValueError("an acceptor record is [promised, accepted, value]")
        value = None if obj[2] is None else Register.decode(obj[2])
        return cls(Ballot.from_obj(obj[0]), Ballot.from_obj(obj[1]), value)

    @property
    def digest(self) -> bytes:
        return b"" if self.value is None else self.value.digest()


def check_names(obj: Any, limit: int = 64) -> tuple[XorName, ...]:
    """A short list of 32-byte names, as a register's members are."""
    if not isinstance(obj, list) or len(obj) > limit:
        raise ValueError(f"a list of at most {limit} names")
    return tuple(XorName(m) for m in obj)


def check_recent(obj: Any) -> tuple[bytes, ...]:
    if not isinstance(obj, list) or len(obj) > 1024 or not all(isinstance(r, bytes) and len(r) <= 64 for r in obj):
        raise ValueError("recent request ids are a short list of short byte strings")
    return tuple(obj)


def check_seq(obj: Any) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj <= MAX_COUNTER:
        raise ValueError("a register's seq is an integer in [0, 2**62]")
    return obj


# ------------------------------------------------------------------------- acceptor rules


def on_prepare(record: AcceptorRecord, ballot: Ballot) -> tuple[AcceptorRecord, bool]:
    """Promise `ballot` unless a higher one was promised. Returns (record, promised?)."""
    if ballot < record.promised:
        return record, False
    if ballot == record.promised:
        return record, True  # a retransmitted prepare gets the same promise again
    return AcceptorRecord(ballot, record.accepted, record.value), True


def on_accept(
    record: AcceptorRecord, ballot: Ballot, value: Register, *, fast: bool
) -> tuple[AcceptorRecord, bool]:
    """Accept `value` at `ballot` unless a higher ballot was promised.

    With `fast`, the acceptance also promises the proposer's next ballot, so its next
    change to this MD can skip the prepare round (CASPaxos's one-round-trip optimisation:
    the acceptor has then accepted `ballot`, which is all a prepare would have reported).
    """
    if ballot < record.promised:
        return record, False
    promised = ballot.successor() if fast else ballot
    return AcceptorRecord(max(promised, record.promised), ballot, value), True
