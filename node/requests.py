"""Client requests: the operations on data, their canonical encoding, signatures, and the
dispatch of each operation to the rules engine.

A mutating request is signed by the requester's ed25519 key over a canonical msgpack
encoding of (operation, its arguments, requester, acting-for owner, request id). A node
verifies that signature itself before anything else (docs/data-model.md preamble: the data's
close group checks each client's signature).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from . import errors as E
from . import rules
from .data import (
    EntryAction,
    ImmutableData,
    MDataAddress,
    MutableData,
    PermissionSet,
    User,
    Value,
    check_u64,
    entry_action_from_obj,
    entry_action_to_obj,
    user_from_obj,
    user_to_obj,
)
from .keys import Keypair, PublicKey
from .xorname import XorName, sha3_256

REQUEST_ID_LEN = 16
SIGNING_DOMAIN = b"safenet-request-v1"


def new_request_id() -> bytes:
    return os.urandom(REQUEST_ID_LEN)


# ============================================================================ operations


class Op:
    """One operation on one item. Subclasses name their kind and (de)serialise their args."""

    KIND: ClassVar[str]
    MUTATES: ClassVar[bool] = False
    IDATA: ClassVar[bool] = False  # addresses an IData chunk rather than an MD
    INTERNAL: ClassVar[bool] = False  # made by nodes only; a client sending one is refused

    @property
    def name(self) -> XorName:
        """The XorName whose close group handles this operation."""
        raise NotImplementedError

    def args(self) -> list[Any]:
        raise NotImplementedError

    def signed_args(self) -> list[Any]:
        """What the requester's signature covers; the arguments, unless something shorter
        binds them as tightly (an IData's name is the hash of its value)."""
        return self.args()

    @classmethod
    def from_args(cls, args: list[Any]) -> Op:
        raise NotImplementedError

    def encode_result(self, result: Any) -> Any:
        return None

    def decode_result(self, obj: Any) -> Any:
        return None


class MDataOp(Op):
    address: MDataAddress

    @property
    def name(self) -> XorName:
        return self.address.name


_OPS: dict[str, type[Op]] = {}


def _op(cls: type[Op]) -> type[Op]:
    _OPS[cls.KIND] = cls
    return cls


register_op = _op  # for operations defined in other modules (node.accounts)


def _one(args: list[Any], n: int, kind: str) -> list[Any]:
    if not isinstance(args, list) or len(args) != n:
        raise ValueError(f"{kind} takes {n} arguments")
    return args


# ---------------------------------------------------------------------------- IData


@_op
@dataclass(frozen=True)
class PutIData(Op):
    KIND = "put_idata"
    MUTATES = True
    IDATA = True
    data: ImmutableData

    @property
    def name(self) -> XorName:
        return self.data.name

    def args(self) -> list[Any]:
        return [self.data.value]

    def signed_args(self) -> list[Any]:
        # Signing 1 MiB costs more than hashing it, and every node of the group verifies it.
        return [bytes(self.data.name)]

    @classmethod
    def from_args(cls, args: list[Any]) -> PutIData:
        (value,) = _one(args, 1, cls.KIND)
        if not isinstance(value, bytes):
            raise ValueError("IData value must be bytes")
        return cls(ImmutableData(value))


@_op
@dataclass(frozen=True)
class GetIData(Op):
    KIND = "get_idata"
    IDATA = True
    chunk: XorName

    @property
    def name(self) -> XorName:
        return self.chunk

    def args(self) -> list[Any]:
        return [bytes(self.chunk)]

    @classmethod
    def from_args(cls, args: list[Any]) -> GetIData:
        (name,) = _one(args, 1, cls.KIND)
        return cls(XorName(name))

    def encode_result(self, result: ImmutableData) -> Any:
        return result.value

    def decode_result(self, obj: Any) -> ImmutableData:
        # The client trusts no node: a chunk is accepted only if it hashes to its name.
        return rules.check_idata_name(self.chunk, obj)


# ---------------------------------------------------------------------------- MD mutations


@_op
@dataclass(frozen=True)
class PutMData(MDataOp):
    KIND = "put_mdata"
    MUTATES = True
    md: MutableData

    @property
    def address(self) -> MDataAddress:  # type: ignore[override]
        return self.md.address

    def args(self) -> list[Any]:
        return [self.md.to_obj()]

    @classmethod
    def from_args(cls, args: list[Any]) -> PutMData:
        (md,) = _one(args, 1, cls.KIND)
        return cls(MutableData.from_obj(md))


@_op
@dataclass(frozen=True)
class MutateEntries(MDataOp):
    KIND = "mutate_entries"
    MUTATES = True
    address: MDataAddress
    actions: dict[bytes, EntryAction]

    def args(self) -> list[Any]:
        return [
            self.address.to_obj(),
            [[k, entry_action_to_obj(a)] for k, a in sorted(self.actions.items())],
        ]

    @classmethod
    def from_args(cls, args: list[Any]) -> MutateEntries:
        addr, acts = _one(args, 2, cls.KIND)
        if not isinstance(acts, list) or not acts:
            raise ValueError("mutate_entries needs at least one action")
        actions: dict[bytes, EntryAction] = {}
        for item in acts:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes):
                raise ValueError("an entry action item is [key, action]")
            if item[0] in actions:
                raise ValueError("one action per key per request")
            actions[item[0]] = entry_action_from_obj(item[1])
        return cls(MDataAddress.from_obj(addr), actions)


@_op
@dataclass(frozen=True)
class SetUserPermissions(MDataOp):
    KIND = "set_user_permissions"
    MUTATES = True
    address: MDataAddress
    user: User
    permissions: PermissionSet
    version: int

    def args(self) -> list[Any]:
        return [self.address.to_obj(), user_to_obj(self.user), self.permissions.to_obj(), self.version]

    @classmethod
    def from_args(cls, args: list[Any]) -> SetUserPermissions:
        addr, user, perms, version = _one(args, 4, cls.KIND)
        return cls(
            MDataAddress.from_obj(addr),
            user_from_obj(user),
            PermissionSet.from_obj(perms),
            check_u64(version, "an MD version"),
        )


@_op
@dataclass(frozen=True)
class DelUserPermissions(MDataOp):
    KIND = "del_user_permissions"
    MUTATES = True
    address: MDataAddress
    user: User
    version: int

    def args(self) -> list[Any]:
        return [self.address.to_obj(), user_to_obj(self.user), self.version]

    @classmethod
    def from_args(cls, args: list[Any]) -> DelUserPermissions:
        addr, user, version = _one(args, 3, cls.KIND)
        return cls(MDataAddress.from_obj(addr), user_from_obj(user), check_u64(version, "an MD version"))


@_op
@dataclass(frozen=True)
class ChangeOwner(MDataOp):
    KIND = "change_owner"
    MUTATES = True
    address: MDataAddress
    new_owners: frozenset[PublicKey]
    version: int

    def args(self) -> list[Any]:
        return [self.address.to_obj(), sorted(bytes(o) for o in self.new_owners), self.version]

    @classmethod
    def from_args(cls, args: list[Any]) -> ChangeOwner:
        addr, owners, version = _one(args, 3, cls.KIND)
        if not isinstance(owners, list):
            raise ValueError("new owners are a list of keys")
        return cls(
            MDataAddress.from_obj(addr),
            frozenset(PublicKey(o) for o in owners),
            check_u64(version, "an MD version"),
        )


# ---------------------------------------------------------------------------- MD reads


@dataclass(frozen=True)
class _AddressRead(MDataOp):
    address: MDataAddress

    def args(self) -> list[Any]:
        return [self.address.to_obj()]

    @classmethod
    def from_args(cls, args: list[Any]) -> Op:
        (addr,) = _one(args, 1, cls.KIND)
        return cls(MDataAddress.from_obj(addr))

    def read(self, md: MutableData) -> Any:
        raise NotImplementedError


@_op
@dataclass(frozen=True)
class GetMData(_AddressRead):
    KIND = "get_mdata"

    def read(self, md: MutableData) -> MutableData:
        return md

    def encode_result(self, result: MutableData) -> Any:
        return result.to_obj()

    def decode_result(self, obj: Any) -> MutableData:
        md = MutableData.from_obj(obj)
        if md.address != self.address:
            raise E.NetworkOther("answer is for a different MD")
        return md


@_op
@dataclass(frozen=True)
class GetMDataShell(GetMData):
    KIND = "get_mdata_shell"

    def read(self, md: MutableData) -> MutableData:
        return md.shell()


@_op
@dataclass(frozen=True)
class GetMDataVersion(_AddressRead):
    KIND = "get_mdata_version"

    def read(self, md: MutableData) -> int:
        return md.version

    def encode_result(self, result: int) -> Any:
        return result

    def decode_result(self, obj: Any) -> int:
        return check_u64(obj, "an MD version")


def _value_from_obj(obj: Any) -> Value:
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[0], bytes):
        raise ValueError("a value is [content, entry_version]")
    return Value(obj[0], check_u64(obj[1], "an entry version"))


def _entries_to_obj(entries: dict[bytes, Value]) -> list[Any]:
    return [[k, v.content, v.entry_version] for k, v in sorted(entries.items())]


def _entries_from_obj(obj: Any) -> dict[bytes, Value]:
    if not isinstance(obj, list):
        raise ValueError("entries are a list")
    out: dict[bytes, Value] = {}
    for item in obj:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], bytes):
            raise ValueError("an entry is [key, content, entry_version]")
        out[item[0]] = _value_from_obj(item[1:])
    return out


@_op
@dataclass(frozen=True)
class ListEntries(_AddressRead):
    KIND = "list_entries"

    def read(self, md: MutableData) -> dict[bytes, Value]:
        return dict(md.entries)

    def encode_result(self, result: dict[bytes, Value]) -> Any:
        return _entries_to_obj(result)

    def decode_result(self, obj: Any) -> dict[bytes, Value]:
        return _entries_from_obj(obj)


@_op
@dataclass(frozen=True)
class ListKeys(_AddressRead):
    KIND = "list_keys"

    def read(self, md: MutableData) -> set[bytes]:
        return set(md.entries)

    def encode_result(self, result: set[bytes]) -> Any:
        return sorted(result)

    def decode_result(self, obj: Any) -> set[bytes]:
        if not isinstance(obj, list) or not all(isinstance(k, bytes) for k in obj):
            raise ValueError("keys are a list of bytes")
        return set(obj)


@_op
@dataclass(frozen=True)
class ListValues(_AddressRead):
    KIND = "list_values"

    def read(self, md: MutableData) -> list[Value]:
        return [v for _, v in sorted(md.entries.items())]

    def encode_result(self, result: list[Value]) -> Any:
        return [[v.content, v.entry_version] for v in result]

    def decode_result(self, obj: Any) -> list[Value]:
        if not isinstance(obj, list):
            raise ValueError("values are a list")
        return [_value_from_obj(v) for v in obj]


@_op
@dataclass(frozen=True)
class ListPermissions(_AddressRead):
    KIND = "list_permissions"

    def read(self, md: MutableData) -> dict[User, PermissionSet]:
        return dict(md.permissions)

    def encode_result(self, result: dict[User, PermissionSet]) -> Any:
        return sorted([user_to_obj(u), p.to_obj()] for u, p in result.items())

    def decode_result(self, obj: Any) -> dict[User, PermissionSet]:
        return dict(MutableData.from_obj([bytes(32), 0, 0, [], obj, []]).permissions)


@_op
@dataclass(frozen=True)
class GetValue(MDataOp):
    KIND = "get_value"
    address: MDataAddress
    key: bytes

    def args(self) -> list[Any]:
        return [self.address.to_obj(), self.key]

    @classmethod
    def from_args(cls, args: list[Any]) -> GetValue:
        addr, key = _one(args, 2, cls.KIND)
        if not isinstance(key, bytes):
            raise ValueError("an entry key is bytes")
        return cls(MDataAddress.from_obj(addr), key)

    def read(self, md: MutableData) -> Value:
        value = md.entries.get(self.key)
        if value is None:
            raise E.NoSuchEntry(f"no entry {self.key!r:.60}")
        return value

    def encode_result(self, result: Value) -> Any:
        return [result.content, result.entry_version]

    def decode_result(self, obj: Any) -> Value:
        return _value_from_obj(obj)


@_op
@dataclass(frozen=True)
class ListUserPermissions(MDataOp):
    KIND = "list_user_permissions"
    address: MDataAddress
    user: User

    def args(self) -> list[Any]:
        return [self.address.to_obj(), user_to_obj(self.user)]

    @classmethod
    def from_args(cls, args: list[Any]) -> ListUserPermissions:
        addr, user = _one(args, 2, cls.KIND)
        return cls(MDataAddress.from_obj(addr), user_from_obj(user))

    def read(self, md: MutableData) -> PermissionSet:
        perms = md.permissions.get(self.user)
        if perms is None:
            raise E.NoSuchKey("that user has no permissions on this MD")
        return perms

    def encode_result(self, result: PermissionSet) -> Any:
        return result.to_obj()

    def decode_result(self, obj: Any) -> PermissionSet:
        return PermissionSet.from_obj(obj)


READ_OPS = tuple(
    cls for cls in _OPS.values() if not cls.MUTATES and not cls.IDATA
)


def op_to_obj(op: Op) -> list[Any]:
    return [op.KIND, op.args()]


def op_from_obj(obj: Any) -> Op:
    """Decode an operation from the wire; any malformation is a ProtocolError."""
    try:
        kind, args = obj
        if kind not in _OPS:
            # Account operations live in their own module (which imports this one); they
            # register when it is imported, so make sure it is before judging a kind unknown.
            importlib.import_module(".accounts", __package__)
        cls = _OPS[kind]
        return cls.from_args(args)
    except E.SafeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise E.ProtocolError(f"malformed operation: {exc}") from None


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
        return cls(op, keys.public, unsigned.request_id, owner, keys.sign(unsigned.signing_bytes()), network, expires)

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
    seen = request.request_id + sha3_256(request.signing_bytes())[:16]
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
    if not isinstance(op, _AddressRead | GetValue | ListUserPermissions):
        raise E.InvalidOperation(f"{op.KIND} is not an MD read")
    if md is None:
        raise E.NoSuchData(f"no MD at {op.address}")
    return op.read(md)

