"""The node protocol's message kinds, and the replication messages as named records.

Kinds are the `"k"` of every message (node/wire.py has the envelope). The replication
messages carry lists of items, one per MD; each item is a record here with `to_wire()` and
`from_wire()`. `from_wire` is where hostile shapes stop: a field of the wrong type or size
raises ValueError (which the node core answers with a ProtocolError and nothing changes).
Ballots are read by a function the caller passes, since reading one depends on what the
reader has seen (node/replication.py, `Replicator.ballot`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .paxos import Ballot

# Client <-> node
REQUEST, RESPONSE, ERROR = "request", "response", "error"
READ, READ_REPLY = "read", "read_reply"
LOCATE, LOCATED = "locate", "located"
STATUS, ADMIN, ADMIN_OK = "status", "admin", "admin_ok"
# Routing
PING, PONG, FIND_NODE, NODES = "ping", "pong", "find_node", "nodes"
# Chunks
CHUNK_PUT, CHUNK_OK, CHUNK_GET, CHUNK, CHUNK_HAS, CHUNK_HAVE = (
    "chunk_put", "chunk_ok", "chunk_get", "chunk", "chunk_has", "chunk_have")
# MD replication (CASPaxos per MD, docs/replication.md; proofs, docs/security.md)
PREPARE, PROMISE, ACCEPT, ACCEPTED = "prepare", "promise", "accept", "accepted"
SYNC, SYNC_DIFF, COMMIT, MD_REQUEST = "sync", "sync_diff", "commit", "md_request"

KEY_LEN = 40  # an MD's item key: name (32) + tag (8)
MAX_DIGEST = 64

ReadBallot = Callable[[Any], Ballot]

# Promise / accept statuses. NOT_MEMBER: the sender is not one of the nodes the receiver
# believes may hold the MD, so what it says about the MD counts for nothing.
OK, REJECTED, NEED_STATE, NOT_READY, NOT_MEMBER = 0, 1, 2, 3, 4

# Accept payloads: how the acceptor gets the proposed value (node/proofs.py).
FULL = 0  # [FULL, value]: take it on faith (only with a test-only break)
STEP = 1  # [STEP, step]: apply the step to the value it holds
CERTIFIED = 2  # [CERTIFIED, base, votes, step]: adopt a certified base, then apply the step
TWO_STEPS = 3  # [TWO_STEPS, step to base, step]: a base nobody certified yet, derived from ours
# [CERTIFIED_PARENT, parent, votes, step to base, step]: a base nobody certified yet, derived
# from a certified parent (for a member that holds neither, such as a new one)
CERTIFIED_PARENT = 4
# [CHAIN, anchor, votes, steps, step]: the last certified value the base's holder knew, and the
# steps from it to the base (a base left by rounds that were cut short)
CHAIN = 5
MAX_CHAIN = 16
ALL_PROOFS = frozenset({CERTIFIED, TWO_STEPS, CERTIFIED_PARENT, CHAIN})
MAX_ITEMS = 512  # items in one prepare / accept
MAX_COMMITS = 64  # commit items in one message (a commit, or riding in an accept)
MAX_BATCH = 1024  # requests in one step


def _key(obj: Any) -> bytes:
    if not isinstance(obj, bytes) or len(obj) != KEY_LEN:
        raise ValueError(f"an MD key is {KEY_LEN} bytes")
    return obj


def _digest(obj: Any) -> bytes:
    if not isinstance(obj, bytes) or len(obj) > MAX_DIGEST:
        raise ValueError("a digest is a short byte string")
    return obj


def _fields(obj: Any, least: int, most: int, what: str) -> list[Any]:
    if not isinstance(obj, list) or not least <= len(obj) <= most:
        raise ValueError(f"a {what} item is a list of {least} to {most} fields")
    return obj + [None] * (most - len(obj))


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1: promise `ballot` for the MD at `key`. `hint`: the digest of the value the
    proposer holds, so an acceptor holding the same one need not send it back."""

    key: bytes
    ballot: Ballot
    hint: bytes = b""

    def to_wire(self) -> list[Any]:
        return [self.key, self.ballot.to_obj(), self.hint]

    @classmethod
    def from_wire(cls, obj: Any, ballot: ReadBallot) -> Prepare:
        key, raw_ballot, hint = _fields(obj, 3, 3, PREPARE)
        return cls(_key(key), ballot(raw_ballot), _digest(hint))


@dataclass(frozen=True, slots=True)
class Promise:
    """An acceptor's answer to a prepare: its promise (or why not), what it accepted, the
    value if the proposer lacks it, and what proves that value (node/proofs.py): its vote,
    the step that derived the value, the certificate it knows. `near`: holding nothing, the
    nodes it would ask (so a proposer with a poor view finds the group)."""

    key: bytes
    status: int
    promised: Ballot | None = None
    accepted: Ballot | None = None
    digest: bytes = b""
    value: bytes | None = None
    near: list[Any] | None = None
    vote: Any = None
    step: Any = None
    cert: Any = None
    chain: Any = None

    def to_wire(self) -> list[Any]:
        return [self.key, self.status, None if self.promised is None else self.promised.to_obj(),
                None if self.accepted is None else self.accepted.to_obj(), self.digest, self.value,
                self.near or [], self.vote, self.step, self.cert, self.chain]

    @classmethod
    def from_wire(cls, obj: Any, ballot: ReadBallot) -> Promise:
        key, status, promised, accepted, digest, value, near, vote, step, cert, chain = _fields(obj, 6, 11, PROMISE)
        if not isinstance(status, int) or value is not None and not isinstance(value, bytes):
            raise ValueError("a promise's status is an int and its value bytes")
        return cls(_key(key), status, None if promised is None else ballot(promised),
                   None if accepted is None else ballot(accepted), _digest(digest or b""), value,
                   near if isinstance(near, list) else None, vote, step, cert, chain)


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2: accept a value at `ballot`; `fast`: and promise the proposer's next ballot.
    `payload` says how the acceptor gets the value: see node/replication.py (STEP, ...)."""

    key: bytes
    ballot: Ballot
    fast: bool
    payload: list[Any]

    def to_wire(self) -> list[Any]:
        return [self.key, self.ballot.to_obj(), self.fast, self.payload]

    @classmethod
    def from_wire(cls, obj: Any, ballot: ReadBallot) -> Accept:
        key, raw_ballot, fast, payload = _fields(obj, 4, 4, ACCEPT)
        if not isinstance(payload, list) or not payload:
            raise ValueError("an accept's payload is [mode, ...]")
        return cls(_key(key), ballot(raw_ballot), bool(fast), payload)


@dataclass(frozen=True, slots=True)
class Accepted:
    """An acceptor's answer to an accept, with its vote for the value when it took it."""

    key: bytes
    status: int
    promised: Ballot | None = None
    vote: Any = None

    def to_wire(self) -> list[Any]:
        return [self.key, self.status, None if self.promised is None else self.promised.to_obj(), self.vote]

    @classmethod
    def from_wire(cls, obj: Any, ballot: ReadBallot) -> Accepted:
        key, status, promised, vote = _fields(obj, 2, 4, ACCEPTED)
        if not isinstance(status, int):
            raise ValueError("an accepted's status is an int")
        return cls(_key(key), status, None if promised is None else ballot(promised), vote)


@dataclass(frozen=True, slots=True)
class SyncItem:
    """Anti-entropy: what the coordinator holds of one MD, for a member to compare."""

    key: bytes
    accepted: Ballot
    digest: bytes

    def to_wire(self) -> list[Any]:
        return [self.key, self.accepted.to_obj(), self.digest]

    @classmethod
    def from_wire(cls, obj: Any, ballot: ReadBallot) -> SyncItem:
        key, accepted, digest = _fields(obj, 3, 3, SYNC)
        return cls(_key(key), ballot(accepted), _digest(digest))


@dataclass(frozen=True, slots=True)
class Commit:
    """A proposer's word that the value with `digest` was chosen, with the votes that say so."""

    key: bytes
    digest: bytes
    votes: list[Any]

    def to_wire(self) -> list[Any]:
        return [self.key, self.digest, self.votes]

    @classmethod
    def from_wire(cls, obj: Any, ballot: ReadBallot) -> Commit:
        key, digest, votes = _fields(obj, 3, 3, COMMIT)
        if not isinstance(votes, list):
            raise ValueError("a commit's votes are a list")
        return cls(_key(key), _digest(digest), votes[:16])


def read_items(msg: dict[str, Any], kind: type[Any], ballot: ReadBallot, limit: int) -> list[Any]:
    """The items of a replication message as records of `kind`; ValueError if any is malformed."""
    items = msg.get("items")
    if not isinstance(items, list) or len(items) > limit:
        raise ValueError(f"items: a list of at most {limit}")
    return [kind.from_wire(item, ballot) for item in items]


def first_item(reply: dict[str, Any] | None, expect: str, kind: type[Any], ballot: ReadBallot) -> Any:
    """The first item of a reply of kind `expect`, or None (no reply, another kind, malformed)."""
    if reply is None or reply.get("k") != expect:
        return None
    items = reply.get("items")
    if not isinstance(items, list) or not items:
        return None
    return kind.from_wire(items[0], ballot)
