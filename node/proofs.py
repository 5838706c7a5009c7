"""Proofs that an MD value is genuine: votes, certificates and derivation steps.

An honest acceptor stores a new MD value only in one of two ways (docs/security.md):

- it derives the value itself, applying client-signed requests that it verified to a value it
  already holds (a *step*: the base digest, the requests, the new members and the digest the
  result must have); or
- the value carries a *certificate*: votes of a majority of each group the value names, each
  vote a node's signature over the MD's key and the value's digest, counting only signers
  that the receiver itself believes may hold the MD.

Honest nodes vote only for values they stored in one of these ways, so a certificate needs
at least one honest voter per majority, and no single Byzantine member (nor any outsider)
can make an honest node store a value that no client signed.

Everything here is pure: keys, bytes and names in, verdicts out.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from .keys import Keypair, PublicKey
from .xorname import XorName, sha3_256

VOTE_DOMAIN = b"safe-testbed/md-vote/1"
MAX_VOTES = 16  # a group is R (5 by default, at most a few dozen) nodes; more is hostile
MAX_HEAD = 1 << 20  # a value's head (Register.head): the MD's shell is bounded well below this


def vote_bytes(key: bytes, digest: bytes) -> bytes:
    return msgpack.packb([VOTE_DOMAIN, key, digest], use_bin_type=True)


def make_vote(keys: Keypair, key: bytes, digest: bytes) -> list[bytes]:
    """This node's vote for the value with `digest` of the MD at `key`: [public key, signature]."""
    return [bytes(keys.public), keys.sign(vote_bytes(key, digest))]


@functools.lru_cache(maxsize=4096)
def signer_name(pk_raw: bytes) -> XorName:
    """The name of the node whose public key is `pk_raw` (a hash: remembered, since the same
    few group members sign every certificate). ValueError if it is no public key."""
    return PublicKey(pk_raw).name


def named_voters(votes: Any) -> list[XorName]:
    """The signers `votes` name, unverified (at most MAX_VOTES; an entry that is no
    [public key, signature] pair is skipped): for counting and choosing, never for trusting."""
    names = []
    for vote in votes[:MAX_VOTES] if isinstance(votes, list) else ():
        if isinstance(vote, list) and len(vote) == 2 and isinstance(vote[0], bytes) and isinstance(vote[1], bytes):
            with contextlib.suppress(ValueError):
                names.append(signer_name(vote[0]))
    return names


def valid_voters(key: bytes, digest: bytes, votes: Any, eligible: set[XorName]) -> set[XorName]:
    """The names among `eligible` whose votes in `votes` are valid signatures over (key, digest).

    Malformed votes, duplicates and signers outside `eligible` are ignored (never an error:
    a certificate is judged by what it proves, and junk proves nothing).
    """
    voters: set[XorName] = set()
    if not isinstance(votes, list):
        return voters
    message = vote_bytes(key, digest)
    for vote in votes[:MAX_VOTES]:
        if not isinstance(vote, list) or len(vote) != 2:
            continue
        pk_raw, sig = vote
        if not isinstance(pk_raw, bytes) or not isinstance(sig, bytes):
            continue
        try:
            name = signer_name(pk_raw)
        except ValueError:
            continue
        if name in voters or name not in eligible:
            continue
        if PublicKey(pk_raw).verify(message, sig):
            voters.add(name)
    return voters


def majority(n: int) -> int:
    """The least number of members that outvote the rest of a group of `n`."""
    return n // 2 + 1


def has_majorities(nodes: set[XorName], quorums: Sequence[Sequence[XorName]]) -> bool:
    """Do `nodes` include a majority of every group in `quorums`?"""
    return bool(quorums) and all(sum(1 for n in group if n in nodes) >= majority(len(group)) for group in quorums)


def looks_certified(votes: Any, quorums: Sequence[Sequence[XorName]]) -> bool:
    """Do `votes` name a majority of each group? Counted, not verified (cheap): for deciding
    what is worth sending or keeping; whoever relies on a certificate calls `certifies`."""
    return has_majorities(set(named_voters(votes)), quorums)


def certifies(key: bytes, digest: bytes, votes: Any, quorums: Sequence[Sequence[XorName]],
              plausible: Callable[[XorName], bool]) -> bool:
    """Do `votes` certify the value with `digest`: valid votes of a majority of each group it
    names, counting only signers the receiver itself finds plausible for the MD?"""
    eligible = {n for group in quorums for n in group if plausible(n)}
    return has_majorities(valid_voters(key, digest, votes, eligible), quorums)


def fingerprint(request_id: bytes, signed: bytes) -> bytes:
    """How a value remembers a request it applied (`MDataState.recent`): its id and a hash of
    what was signed under it."""
    return request_id + sha3_256(signed)[:16]


def ack_field(ack_proof: Any) -> dict[str, Any]:
    """The field a "response" to a client's write carries its proof in (none without one)."""
    return {} if ack_proof is None else {"ack_proof": ack_proof}


def proves_ack(key: bytes, print_: bytes, proof: Any, plausible: Callable[[XorName], bool], need: int) -> bool:
    """Does `proof`, the [head, votes] that came with a member's "ok" to a write, show that at
    least `need` nodes that the asker finds `plausible` voted for a value that took the
    request `print_`?

    The head is what a value's digest hashes (`Register.head`), so votes over that digest
    vouch for the fingerprints of the requests it lists as applied. Junk proves nothing and
    never raises: the answer comes from a member the client does not trust."""
    if not isinstance(proof, list) or len(proof) != 2 or not isinstance(proof[0], bytes):
        return False
    head, votes = proof
    if len(head) > MAX_HEAD:
        return False
    n = len(head)
    try:
        obj = msgpack.unpackb(head, raw=False, strict_map_key=False, max_str_len=n, max_bin_len=n,
                              max_array_len=n, max_map_len=n, max_ext_len=0)
    except Exception:  # whatever msgpack raises on hostile bytes: it proves nothing
        return False
    if not isinstance(obj, list) or len(obj) != 6 or not isinstance(obj[1], list) or print_ not in obj[1]:
        return False
    eligible = {name for name in named_voters(votes) if plausible(name)}
    return len(eligible) >= need and len(valid_voters(key, sha3_256(head)[:16], votes, eligible)) >= need
