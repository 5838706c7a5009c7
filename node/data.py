"""The two SAFE data types and their parts (docs/data-model.md §1.1, §2.1).

ImmutableData is content addressed. MutableData is a signed-permission key/value map at
(name, type tag). Values here are immutable: the rules engine (`node.rules`) never edits
an MD in place, it returns a new one, so replicas, proposals and caches cannot alias.

Each type has a canonical msgpack-ready form (`to_obj` / `from_obj`): maps are written as
lists sorted by key, so equal data always encodes to equal bytes. The MD size limit is
measured on that encoding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .keys import PublicKey
from .xorname import XorName, sha3_256

U64_MAX = (1 << 64) - 1


def check_u64(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise ValueError(f"{what} must be an unsigned 64-bit integer, got {value!r:.40}")
    return value


def _check_bytes(value: Any, what: str) -> bytes:
    # Checked before XorName()/PublicKey() see a decoded value: they call bytes(value), which
    # turns a str into a TypeError and an int n into an n-byte allocation.
    if not isinstance(value, bytes):
        raise ValueError(f"{what} must be bytes, got {type(value).__name__}")
    return value


class Action(enum.IntEnum):
    """What a PermissionSet can allow or deny."""

    INSERT = 0
    UPDATE = 1
    DELETE = 2
    MANAGE_PERMISSIONS = 3


@dataclass(frozen=True, slots=True)
class PermissionSet:
    """Tri-state flags, one per action: True allow, False deny, None unset."""

    insert: bool | None = None
    update: bool | None = None
    delete: bool | None = None
    manage_permissions: bool | None = None

    _FIELDS = ("insert", "update", "delete", "manage_permissions")

    def _with(self, value: bool | None, actions: Iterable[Action]) -> PermissionSet:
        flags = self.to_obj()
        for a in actions:
            flags[Action(a)] = value
        return PermissionSet(*flags)

    def allow(self, *actions: Action) -> PermissionSet:
        return self._with(True, actions)

    def deny(self, *actions: Action) -> PermissionSet:
        return self._with(False, actions)

    def clear(self, *actions: Action) -> PermissionSet:
        return self._with(None, actions)

    def is_allowed(self, action: Action) -> bool | None:
        return self.to_obj()[Action(action)]

    @classmethod
    def allowing(cls, *actions: Action) -> PermissionSet:
        return cls().allow(*actions)

    def to_obj(self) -> list[bool | None]:
        return [self.insert, self.update, self.delete, self.manage_permissions]

    @classmethod
    def from_obj(cls, obj: Any) -> PermissionSet:
        if not isinstance(obj, list | tuple) or len(obj) != 4:
            raise ValueError("a permission set is a list of four flags")
        for flag in obj:
            if flag is not None and not isinstance(flag, bool):
                raise ValueError("a permission flag is true, false or nil")
        return cls(*obj)

    def __repr__(self) -> str:
        marks = {True: "+", False: "-", None: "."}
        return "PermissionSet(" + " ".join(
            f"{marks[v]}{n}" for n, v in zip(self._FIELDS, self.to_obj(), strict=True)
        ) + ")"


class _Anyone:
    """The `Anyone` user of a permission map (a singleton)."""

    _instance: _Anyone | None = None

    def __new__(cls) -> _Anyone:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANYONE"

    def __reduce__(self) -> str:
        return "ANYONE"


ANYONE = _Anyone()
User = PublicKey | _Anyone


def user_to_obj(user: User) -> bytes:
    return b"" if user is ANYONE else bytes(user)  # type: ignore[arg-type]


def user_from_obj(obj: Any) -> User:
    if not isinstance(obj, bytes):
        raise ValueError("a user is encoded as bytes")
    return ANYONE if obj == b"" else PublicKey(obj)


@dataclass(frozen=True, slots=True)
class Value:
    """An MD entry: its content and its own version (empty content marks a deleted entry)."""

    content: bytes
    entry_version: int

    def __post_init__(self) -> None:
        _check_bytes(self.content, "entry content")
        check_u64(self.entry_version, "an entry version")

    @property
    def is_tombstone(self) -> bool:
        return self.content == b""


# --------------------------------------------------------------------------- entry actions


@dataclass(frozen=True, slots=True)
class Ins:
    """Insert a key that must not exist; `version` is stored as given (clients send 0)."""

    content: bytes
    version: int = 0

    def __post_init__(self) -> None:
        _check_bytes(self.content, "entry content")
        check_u64(self.version, "an entry version")


@dataclass(frozen=True, slots=True)
class Update:
    """Replace an existing key's value; `version` must be the entry's version + 1."""

    content: bytes
    version: int

    def __post_init__(self) -> None:
        _check_bytes(self.content, "entry content")
        check_u64(self.version, "an entry version")


@dataclass(frozen=True, slots=True)
class Del:
    """Delete an existing key (leaves an empty tombstone); `version` must be current + 1."""

    version: int

    def __post_init__(self) -> None:
        check_u64(self.version, "an entry version")


EntryAction = Ins | Update | Del


def entry_action_to_obj(action: EntryAction) -> list[Any]:
    if isinstance(action, Ins):
        return [0, action.content, action.version]
    if isinstance(action, Update):
        return [1, action.content, action.version]
    return [2, b"", action.version]


def entry_action_from_obj(obj: Any) -> EntryAction:
    if not isinstance(obj, list | tuple) or len(obj) != 3:
        raise ValueError("an entry action is [kind, content, version]")
    kind, content, version = obj
    if not isinstance(content, bytes):
        raise ValueError("entry content must be bytes")
    check_u64(version, "an entry version")
    if type(kind) is not int:  # not True/False/0.0, which compare equal to 1 and 0
        raise ValueError(f"an entry action kind is an integer, got {kind!r:.40}")
    if kind == 2 and content:
        raise ValueError("a Del action carries no content")
    if kind == 0:
        return Ins(content, version)
    if kind == 1:
        return Update(content, version)
    if kind == 2:
        return Del(version)
    raise ValueError(f"unknown entry action kind {kind!r}")


# --------------------------------------------------------------------------- packed sizes


def _bin_size(n: int) -> int:
    return n + (2 if n < 0x100 else 3 if n < 0x10000 else 5)


def _uint_size(v: int) -> int:
    return 1 if v < 0x80 else 2 if v < 0x100 else 3 if v < 0x10000 else 5 if v < 0x1_0000_0000 else 9


def array_header_size(n: int) -> int:
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def entry_size(key: bytes, value: Value) -> int:
    """Packed size of one entry, [key, content, version], in the MD's canonical encoding."""
    return 1 + _bin_size(len(key)) + _bin_size(len(value.content)) + _uint_size(value.entry_version)


# --------------------------------------------------------------------------- IData


@dataclass(frozen=True, slots=True)
class ImmutableData:
    """A chunk whose name is SHA3-256 of its bytes: the content validates itself."""

    value: bytes
    name: XorName = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", XorName(sha3_256(self.value)))

    def __repr__(self) -> str:
        return f"ImmutableData({self.name.short()}, {len(self.value)} bytes)"


# --------------------------------------------------------------------------- MD


@dataclass(frozen=True, slots=True)
class MDataAddress:
    name: XorName
    tag: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", XorName(self.name))
        check_u64(self.tag, "a type tag")

    def to_obj(self) -> list[Any]:
        return [bytes(self.name), self.tag]

    @classmethod
    def from_obj(cls, obj: Any) -> MDataAddress:
        if not isinstance(obj, list | tuple) or len(obj) != 2:
            raise ValueError("an MD address is [name, tag]")
        return cls(XorName(_check_bytes(obj[0], "an MD name")), check_u64(obj[1], "a type tag"))

    def __str__(self) -> str:
        return f"{self.name.hex()}:{self.tag}"


@dataclass(frozen=True, slots=True, eq=True)
class MutableData:
    """An MD. `version` counts shell changes (permissions, owners); entries version themselves."""

    name: XorName
    tag: int
    entries: Mapping[bytes, Value] = field(default_factory=dict)
    permissions: Mapping[User, PermissionSet] = field(default_factory=dict)
    version: int = 0
    owners: frozenset[PublicKey] = frozenset()
    # The packed size of all entries, kept so that a mutation checks the 1 MiB limit in
    # time proportional to what it changes (see `rules.mutate_entries`), not to the MD.
    entries_size: int | None = field(default=None, compare=False, repr=False)

    __hash__ = None  # type: ignore[assignment]  # maps inside: compare by value only

    @property
    def address(self) -> MDataAddress:
        return MDataAddress(self.name, self.tag)

    def shell(self) -> MutableData:
        """The MD without its entries."""
        return MutableData(self.name, self.tag, {}, self.permissions, self.version, self.owners)

    def replace(self, **changes: Any) -> MutableData:
        fields: dict[str, Any] = {
            "name": self.name,
            "tag": self.tag,
            "entries": self.entries,
            "permissions": self.permissions,
            "version": self.version,
            "owners": self.owners,
        }
        if "entries" in changes and "entries_size" not in changes:
            changes["entries_size"] = None  # new entries, size unknown: computed when asked
        elif "entries" not in changes:
            changes.setdefault("entries_size", self.entries_size)
        fields.update(changes)
        return MutableData(**fields)

    def live_entries(self) -> dict[bytes, Value]:
        """The entries clients see as present (tombstones skipped)."""
        return {k: v for k, v in self.entries.items() if not v.is_tombstone}

    def to_obj(self) -> list[Any]:
        return [
            bytes(self.name),
            self.tag,
            self.version,
            sorted(bytes(o) for o in self.owners),
            sorted([user_to_obj(u), p.to_obj()] for u, p in self.permissions.items()),
            [[k, v.content, v.entry_version] for k, v in sorted(self.entries.items())],
        ]

    @classmethod
    def from_obj(cls, obj: Any) -> MutableData:
        if not isinstance(obj, list | tuple) or len(obj) != 6:
            raise ValueError("an MD is [name, tag, version, owners, permissions, entries]")
        name, tag, version, owners, perms, entries = obj
        if not isinstance(owners, list | tuple) or not isinstance(perms, list | tuple):
            raise ValueError("MD owners and permissions are lists")
        if not isinstance(entries, list | tuple):
            raise ValueError("MD entries are a list")
        # A repeated key, user or owner would be dropped silently by the maps below, so the
        # decoded MD would not be the one encoded: refuse it instead.
        entry_map: dict[bytes, Value] = {}
        for item in entries:
            if not isinstance(item, list | tuple) or len(item) != 3:
                raise ValueError("an MD entry is [key, content, version]")
            k, content, ev = item
            if not isinstance(k, bytes) or not isinstance(content, bytes):
                raise ValueError("MD entry keys and contents are bytes")
            if k in entry_map:
                raise ValueError(f"MD entry key {k!r:.40} appears twice")
            entry_map[k] = Value(content, check_u64(ev, "an entry version"))
        perm_map: dict[User, PermissionSet] = {}
        for item in perms:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise ValueError("a permission item is [user, flags]")
            user = user_from_obj(item[0])
            if user in perm_map:
                raise ValueError(f"MD permissions name the user {user!r} twice")
            perm_map[user] = PermissionSet.from_obj(item[1])
        owner_keys = [PublicKey(_check_bytes(o, "an owner key")) for o in owners]
        if len(set(owner_keys)) != len(owner_keys):
            raise ValueError("MD owners name a key twice")
        return cls(
            XorName(_check_bytes(name, "an MD name")),
            check_u64(tag, "a type tag"),
            entry_map,
            perm_map,
            check_u64(version, "an MD version"),
            frozenset(owner_keys),
        )

    def encode(self) -> bytes:
        return msgpack.packb(self.to_obj(), use_bin_type=True)

    def encoded_size(self) -> int:
        """Serialised size, the figure the 1 MiB limit applies to (equal to len(encode()))."""
        if self.entries_size is None:
            object.__setattr__(self, "entries_size", sum(entry_size(k, v) for k, v in self.entries.items()))
        shell = self.shell().to_obj()  # not self.to_obj(): that would list every entry
        head = len(msgpack.packb(shell, use_bin_type=True)) - 1
        return head + array_header_size(len(self.entries)) + self.entries_size  # type: ignore[operator]

    def digest(self) -> bytes:
        return sha3_256(self.encode())

    @classmethod
    def decode(cls, raw: bytes) -> MutableData:
        try:
            obj = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)
        except TypeError as exc:  # e.g. a map keyed by an array; msgpack's other errors are ValueErrors
            raise ValueError(f"not an MD encoding: {exc}") from None
        return cls.from_obj(obj)

    def __repr__(self) -> str:
        return (
            f"MutableData({self.name.short()}:{self.tag}, v{self.version}, "
            f"{len(self.entries)} entries, {len(self.permissions)} users)"
        )
