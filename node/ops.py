"""The operations a client can ask of the network: their kinds, arguments and results.

Each `Op` names the item it is for (its close group handles it), how its arguments travel
(`args` / `from_args`, canonical msgpack-ready lists) and how its result does. Operations
register by kind so the wire can name them (`op_to_obj`, `op_from_obj`); the account
operations live in node/accounts.py and register the same way. node/requests.py wraps an
operation in a signed request and dispatches it to the rules engine.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

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
from .keys import PublicKey
from .xorname import XorName

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


OPS: dict[str, type[Op]] = {}


def register_op(cls: type[Op]) -> type[Op]:
    OPS[cls.KIND] = cls
    return cls




def expect_args(args: list[Any], n: int, kind: str) -> list[Any]:
    if not isinstance(args, list) or len(args) != n:
        raise ValueError(f"{kind} takes {n} arguments")
    return args


# ---------------------------------------------------------------------------- IData


@register_op
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
        (value,) = expect_args(args, 1, cls.KIND)
        if not isinstance(value, bytes):
            raise ValueError("IData value must be bytes")
        return cls(ImmutableData(value))


@register_op
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
        (name,) = expect_args(args, 1, cls.KIND)
        return cls(XorName(name))

    def encode_result(self, result: ImmutableData) -> Any:
        return result.value

    def decode_result(self, obj: Any) -> ImmutableData:
        # The client trusts no node: a chunk is accepted only if it hashes to its name.
        return rules.check_idata_name(self.chunk, obj)


# ---------------------------------------------------------------------------- MD mutations


@register_op
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
        (md,) = expect_args(args, 1, cls.KIND)
        return cls(MutableData.from_obj(md))


@register_op
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
        addr, acts = expect_args(args, 2, cls.KIND)
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


@register_op
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
        addr, user, perms, version = expect_args(args, 4, cls.KIND)
        return cls(
            MDataAddress.from_obj(addr),
            user_from_obj(user),
            PermissionSet.from_obj(perms),
            check_u64(version, "an MD version"),
        )


@register_op
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
        addr, user, version = expect_args(args, 3, cls.KIND)
        return cls(MDataAddress.from_obj(addr), user_from_obj(user), check_u64(version, "an MD version"))


@register_op
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
        addr, owners, version = expect_args(args, 3, cls.KIND)
        if not isinstance(owners, list):
            raise ValueError("new owners are a list of keys")
        return cls(
            MDataAddress.from_obj(addr),
            frozenset(PublicKey(o) for o in owners),
            check_u64(version, "an MD version"),
        )


# ---------------------------------------------------------------------------- MD reads


class MDataRead(MDataOp):
    """A read of one MD, answered from a state by `read` (open to anyone, §1.4)."""

    def read(self, md: MutableData) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _AddressRead(MDataRead):
    """A read whose only argument is the MD's address."""

    address: MDataAddress

    def args(self) -> list[Any]:
        return [self.address.to_obj()]

    @classmethod
    def from_args(cls, args: list[Any]) -> Op:
        (addr,) = expect_args(args, 1, cls.KIND)
        return cls(MDataAddress.from_obj(addr))


@register_op
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


@register_op
@dataclass(frozen=True)
class GetMDataShell(GetMData):
    KIND = "get_mdata_shell"

    def read(self, md: MutableData) -> MutableData:
        return md.shell()


@register_op
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


@register_op
@dataclass(frozen=True)
class ListEntries(_AddressRead):
    KIND = "list_entries"

    def read(self, md: MutableData) -> dict[bytes, Value]:
        return dict(md.entries)

    def encode_result(self, result: dict[bytes, Value]) -> Any:
        return _entries_to_obj(result)

    def decode_result(self, obj: Any) -> dict[bytes, Value]:
        return _entries_from_obj(obj)


@register_op
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


@register_op
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


@register_op
@dataclass(frozen=True)
class ListPermissions(_AddressRead):
    KIND = "list_permissions"

    def read(self, md: MutableData) -> dict[User, PermissionSet]:
        return dict(md.permissions)

    def encode_result(self, result: dict[User, PermissionSet]) -> Any:
        return sorted([user_to_obj(u), p.to_obj()] for u, p in result.items())

    def decode_result(self, obj: Any) -> dict[User, PermissionSet]:
        return dict(MutableData.from_obj([bytes(32), 0, 0, [], obj, []]).permissions)


@register_op
@dataclass(frozen=True)
class GetValue(MDataRead):
    KIND = "get_value"
    address: MDataAddress
    key: bytes

    def args(self) -> list[Any]:
        return [self.address.to_obj(), self.key]

    @classmethod
    def from_args(cls, args: list[Any]) -> GetValue:
        addr, key = expect_args(args, 2, cls.KIND)
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


@register_op
@dataclass(frozen=True)
class ListUserPermissions(MDataRead):
    KIND = "list_user_permissions"
    address: MDataAddress
    user: User

    def args(self) -> list[Any]:
        return [self.address.to_obj(), user_to_obj(self.user)]

    @classmethod
    def from_args(cls, args: list[Any]) -> ListUserPermissions:
        addr, user = expect_args(args, 2, cls.KIND)
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
    cls for cls in OPS.values() if not cls.MUTATES and not cls.IDATA
)


def op_to_obj(op: Op) -> list[Any]:
    return [op.KIND, op.args()]


def op_from_obj(obj: Any) -> Op:
    """Decode an operation from the wire; any malformation is a ProtocolError."""
    try:
        kind, args = obj
        if kind not in OPS:
            # Account operations live in their own module (which imports this one); they
            # register when it is imported, so make sure it is before judging a kind unknown.
            importlib.import_module(".accounts", __package__)
        cls = OPS[kind]
        return cls.from_args(args)
    except E.SafeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise E.ProtocolError(f"malformed operation: {exc}") from None
