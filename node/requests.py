"""Client requests: an operation (node/ops.py) with who asks and for whom, its canonical
encoding and signature, and the dispatch of each operation to the rules engine.

A mutating request is signed by the requester's ed25519 key over a canonical msgpack
encoding of (operation, its arguments, requester, acting-for owner, request id). A node
verifies that signature itself before anything else (docs/data-model.md preamble: the data's
close group checks each client's signature).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import msgpack

from . import errors as E
from . import rules
from .data import (
    MDataAddress,
    MutableData,
    check_u64,
)
from .keys import Keypair, PublicKey
from .ops import (  # noqa: F401  (the operations are part of this module's interface)
    OPS,
    READ_OPS,
    ChangeOwner,
    DelUserPermissions,
    GetIData,
    GetMData,
    GetMDataShell,
    GetMDataVersion,
    GetValue,
    ListEntries,
    ListKeys,
    ListPermissions,
    ListUserPermissions,
    ListValues,
    MDataOp,
    MDataRead,
    MutateEntries,
    Op,
    PutIData,
    PutMData,
    SetUserPermissions,
    expect_args,
    op_from_obj,
    op_to_obj,
    register_op,
)
from .proofs import fingerprint

REQUEST_ID_LEN = 16
SIGNING_DOMAIN = b"safenet-request-v1"


def new_request_id() -> bytes:
    return os.urandom(REQUEST_ID_LEN)



# ============================================================================ signed requests


@dataclass(frozen=True)
class Request:
    """An operation with who asks, on whose behalf, and a unique id; signed if it mutates."""

    op: Op
    requester: PublicKey | None = None
    request_id: bytes = field(default_factory=new_request_id)
    owner: PublicKey | None = None  # the account the requester acts for (None: itself)
    signature: bytes = b""
    # Bound into the signature: the network it is for (a request signed for one network is
    # refused by every other) and when it stops being valid (Unix seconds), so a request that
    # was refused or lost cannot be replayed much later by whoever saw it. 0 / b"": unbound,
    # which nodes refuse for mutations (see NodeCore.check_fresh).
    network: bytes = b""
    expires: int = 0

    @property
    def account_owner(self) -> PublicKey | None:
        return self.owner if self.owner is not None else self.requester

    def signing_bytes(self) -> bytes:
        """What the signature covers. Computed once per request: signing, verifying, the
        replay window and the proofs each ask for it (a frozen request never changes)."""
        cached = self.__dict__.get("_signing")
        if cached is None:
            cached = self._encode_signed()
            object.__setattr__(self, "_signing", cached)
        return cached

    def _encode_signed(self) -> bytes:
        return msgpack.packb(
            [
                SIGNING_DOMAIN,
                [self.op.KIND, self.op.signed_args()],
                b"" if self.requester is None else bytes(self.requester),
                b"" if self.owner is None else bytes(self.owner),
                self.request_id,
                self.network,
                self.expires,
            ],
            use_bin_type=True,
        )

    @classmethod
    def signed(cls, op: Op, keys: Keypair, *, owner: PublicKey | None = None,
               request_id: bytes | None = None, network: bytes = b"", expires: int = 0) -> Request:
        unsigned = cls(op, keys.public, request_id or new_request_id(), owner, b"", network, expires)
        signing = unsigned.signing_bytes()
        request = cls(op, keys.public, unsigned.request_id, owner, keys.sign(signing), network, expires)
        object.__setattr__(request, "_signing", signing)  # the signature is not part of it
        return request

    def verify(self) -> None:
        """Raise InvalidSignature unless a mutation is validly signed by its requester."""
        if len(self.request_id) != REQUEST_ID_LEN:
            raise E.ProtocolError(f"a request id is {REQUEST_ID_LEN} bytes")
        if not self.op.MUTATES or self.op.INTERNAL:
            return  # reads are open to all; internal operations never come from clients
        if self.requester is None or not self.signature:
            raise E.InvalidSignature("a mutation must be signed by its requester")
        if not self.requester.verify(self.signing_bytes(), self.signature):
            raise E.InvalidSignature("the request's signature does not verify")

    def to_obj(self) -> dict[str, Any]:
        return {
            "op": op_to_obj(self.op),
            "rq": b"" if self.requester is None else bytes(self.requester),
            "rid": self.request_id,
            "own": b"" if self.owner is None else bytes(self.owner),
            "sig": self.signature,
            "net": self.network,
            "exp": self.expires,
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Request:
        if not isinstance(obj, dict):
            raise E.ProtocolError("a request is a map")
        try:
            op = op_from_obj(obj["op"])
            rq, rid, own, sig = obj["rq"], obj["rid"], obj.get("own", b""), obj.get("sig", b"")
            net, exp = obj.get("net", b""), obj.get("exp", 0)
            if not all(isinstance(x, bytes) for x in (rq, rid, own, sig, net)):
                raise ValueError("request fields are bytes")
            if len(net) > 64:
                raise ValueError("a network id is at most 64 bytes")
            return cls(op, PublicKey(rq) if rq else None, rid, PublicKey(own) if own else None, sig, net,
                       check_u64(exp, "an expiry"))
        except E.SafeError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise E.ProtocolError(f"malformed request: {exc}") from None


# ============================================================================ dispatch


def apply_mutation(state: rules.MDataState, request: Request) -> rules.MDataState:
    """Apply a (verified) MD mutation to the agreed state, or raise the rule it breaks.

    A request id already applied returns the state unchanged: the retry succeeds and the
    mutation is not applied twice.
    """
    op = request.op
    # The window remembers each id with a digest of what was signed under it: a retry of the
    # same request succeeds unchanged, another request under a remembered id is refused
    # (acknowledging it would lose it).
    seen = fingerprint(request.request_id, request.signing_bytes())
    if seen in state.recent:
        return state
    if any(r[:REQUEST_ID_LEN] == request.request_id for r in state.recent):
        raise E.InvalidOperation("that request id was used for a different request")
    apply_to = getattr(op, "apply_to", None)
    if apply_to is not None:  # an operation that carries its own rules (accounts)
        return rules.MDataState(apply_to(state, request), state.remember(seen))
    requester = request.requester
    if requester is None:
        raise E.InvalidSignature("a mutation must name its requester")
    md = state.md
    address = getattr(op, "address", None)
    if not isinstance(address, MDataAddress):
        raise E.InvalidOperation(f"{op.KIND} is not an MD mutation")
    if md is not None and md.address != address:
        raise E.InvalidOperation(f"{op.KIND} for {address} applied to the state of {md.address}")
    if address.tag == rules.ACCOUNT_TAG:
        raise E.InvalidOperation("accounts change only through account operations")
    if isinstance(op, PutMData):
        owner = request.account_owner
        assert owner is not None
        new = rules.put_mdata(md, op.md, owner)
    else:
        if md is None:
            raise E.NoSuchData(f"no MD at {op.address}")  # type: ignore[attr-defined]
        if isinstance(op, MutateEntries):
            new = rules.mutate_entries(md, op.actions, requester)
        elif isinstance(op, SetUserPermissions):
            new = rules.set_user_permissions(md, op.user, op.permissions, op.version, requester)
        elif isinstance(op, DelUserPermissions):
            new = rules.del_user_permissions(md, op.user, op.version, requester)
        elif isinstance(op, ChangeOwner):
            new = rules.change_owner(md, op.new_owners, op.version, requester)
        else:
            raise E.InvalidOperation(f"{op.KIND} is not an MD mutation")
    return rules.MDataState(new, state.remember(seen))


def read_mdata(md: MutableData | None, op: Op) -> Any:
    """Answer an MD read from a state; reads are open to anyone (§1.4)."""
    if not isinstance(op, MDataRead):
        raise E.InvalidOperation(f"{op.KIND} is not an MD read")
    if md is None:
        raise E.NoSuchData(f"no MD at {op.address}")
    return op.read(md)

