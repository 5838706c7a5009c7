"""The one rules engine: what makes a request on SAFE data valid, and what it changes.

Pure functions, no I/O. The real vault, the in-process mock network and the simulator all
decide through here (docs/architecture.md principle 2). Each mutation either returns a new MD
or raises a `ClientError` and changes nothing. The rules are those of docs/data-model.md §1
(routing 0.33-0.37 / safe_vault 0.18), listed with their status in docs/data-rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import errors as E
from .data import (
    ANYONE,
    U64_MAX,
    Action,
    Del,
    EntryAction,
    ImmutableData,
    Ins,
    MutableData,
    PermissionSet,
    Update,
    User,
    Value,
    entry_size,
)
from .keys import NO_OWNER_KEY, PublicKey

MAX_MDATA_ENTRIES = 1000
MAX_MDATA_SIZE = 1024 * 1024  # 1 MiB, measured on the canonical encoding
MAX_IDATA_SIZE = 1024 * 1024 + 10 * 1024  # 1,058,816 bytes
MAX_OWNERS = 1
ACCOUNT_TAG = 1  # reserved by the testbed: account registers (node.accounts)


# ----------------------------------------------------------------------------- permissions


def is_action_allowed(md: MutableData, requester: PublicKey, action: Action) -> bool:
    """Owner > the key's explicit setting > Anyone's explicit setting > deny (§1.4)."""
    # NO_OWNER_KEY has no secret key, so no verified request can come from it; refusing it
    # here too keeps a frozen MD frozen even for a caller that skipped signature checks.
    if requester in md.owners and requester != NO_OWNER_KEY:
        return True
    own = md.permissions.get(requester)
    if own is not None:
        verdict = own.is_allowed(action)
        if verdict is not None:
            return verdict
    anyone = md.permissions.get(ANYONE)
    if anyone is not None:
        verdict = anyone.is_allowed(action)
        if verdict is not None:
            return verdict
    return False


def _require(md: MutableData, requester: PublicKey, action: Action) -> None:
    if not is_action_allowed(md, requester, action):
        raise E.AccessDenied(f"{action.name} is not permitted to {requester.hex()[:12]}..")


def _check_limits(md: MutableData) -> None:
    if len(md.entries) > MAX_MDATA_ENTRIES:
        raise E.TooManyEntries(f"{len(md.entries)} entries, the limit is {MAX_MDATA_ENTRIES}")
    size = md.encoded_size()
    if size > MAX_MDATA_SIZE:
        raise E.DataTooLarge(f"{size} bytes serialised, the limit is {MAX_MDATA_SIZE}")


# ----------------------------------------------------------------------------- IData


def check_idata(data: ImmutableData) -> None:
    if len(data.value) > MAX_IDATA_SIZE:
        raise E.DataTooLarge(f"{len(data.value)} bytes, the IData limit is {MAX_IDATA_SIZE}")


def check_idata_name(name: bytes, value: bytes) -> ImmutableData:
    """A chunk fetched from a peer, accepted only if its bytes hash to the asked name."""
    data = ImmutableData(value)
    if data.name != name:
        raise E.NetworkOther("chunk content does not hash to its name")
    return data


# ----------------------------------------------------------------------------- MD mutations


def validate_new_mdata(md: MutableData, account_owner: PublicKey) -> None:
    """PutMData: exactly one owner, who is the requesting account's owner; within limits."""
    if len(md.owners) > MAX_OWNERS:
        raise E.InvalidOwners(f"{len(md.owners)} owners; an MD has at most {MAX_OWNERS}")
    if set(md.owners) != {account_owner}:
        raise E.InvalidOwners("the MD's owner must be the key of the account that puts it")
    _check_limits(md)


def put_mdata(existing: MutableData | None, md: MutableData, account_owner: PublicKey) -> MutableData:
    validate_new_mdata(md, account_owner)
    if existing is not None:
        raise E.DataExists(f"an MD already exists at {md.address}")
    return md


def mutate_entries(
    md: MutableData, actions: Mapping[bytes, EntryAction], requester: PublicKey
) -> MutableData:
    """All-or-nothing entry batch: permissions, then per-key checks, then limits (§1.3)."""
    needed = {type(a) for a in actions.values()}
    for kind, action in ((Ins, Action.INSERT), (Update, Action.UPDATE), (Del, Action.DELETE)):
        if kind in needed:
            _require(md, requester, action)

    failures: dict[bytes, E.EntryError] = {}
    entries = dict(md.entries)
    for key, act in actions.items():
        current = entries.get(key)
        if isinstance(act, Ins):
            if current is not None:
                failures[key] = E.EntryError.exists(current.entry_version)
            else:
                entries[key] = Value(act.content, act.version)
        elif current is None:
            failures[key] = E.EntryError.no_such_entry()
        elif act.version != current.entry_version + 1:
            failures[key] = E.EntryError.invalid_successor(current.entry_version)
        elif isinstance(act, Update):
            entries[key] = Value(act.content, act.version)
        else:  # Del leaves a tombstone that still counts toward the entry limit
            entries[key] = Value(b"", act.version)
    if failures:
        raise E.InvalidEntryActions(failures)

    new = md.replace(entries=entries, entries_size=_resized(md, entries, actions))
    _check_limits(new)
    return new


def _resized(md: MutableData, entries: Mapping[bytes, Value], changed: Mapping[bytes, object]) -> int:
    """The packed size of `entries`, from `md`'s by the changed keys alone."""
    if md.entries_size is None:
        md.encoded_size()  # makes it known (once per MD value)
    size = md.entries_size
    assert size is not None
    for key in changed:
        old = md.entries.get(key)
        if old is not None:
            size -= entry_size(key, old)
        size += entry_size(key, entries[key])
    return size


def _check_shell_version(md: MutableData, version: int) -> None:
    # At version 2**64 - 1 there is no successor a u64 can hold (nor one the wire can carry).
    if version != md.version + 1 or version > U64_MAX:
        raise E.InvalidSuccessor(md.version)


def set_user_permissions(
    md: MutableData, user: User, permissions: PermissionSet, version: int, requester: PublicKey
) -> MutableData:
    _require(md, requester, Action.MANAGE_PERMISSIONS)
    _check_shell_version(md, version)
    perms = dict(md.permissions)
    perms[user] = permissions
    new = md.replace(permissions=perms, version=version)
    _check_limits(new)
    return new


def del_user_permissions(md: MutableData, user: User, version: int, requester: PublicKey) -> MutableData:
    _require(md, requester, Action.MANAGE_PERMISSIONS)
    _check_shell_version(md, version)
    if user not in md.permissions:
        raise E.NoSuchKey("that user has no permissions on this MD")
    perms = dict(md.permissions)
    del perms[user]
    return md.replace(permissions=perms, version=version)


def change_owner(
    md: MutableData, new_owners: frozenset[PublicKey] | set[PublicKey], version: int, requester: PublicKey
) -> MutableData:
    """Only a current owner may hand the MD on, to exactly one new owner, at version + 1."""
    if requester not in md.owners or requester == NO_OWNER_KEY:
        raise E.AccessDenied("only the MD's owner may change its owner")
    if len(new_owners) != 1:
        raise E.InvalidOwners(f"an MD's new owner set has exactly one key, got {len(new_owners)}")
    _check_shell_version(md, version)
    return md.replace(owners=frozenset(new_owners), version=version)


# ----------------------------------------------------------------------------- replicated state


RECENT_REQUESTS = 64


@dataclass(frozen=True, slots=True)
class MDataState:
    """What an MD's close group agrees on: the MD (or none yet) and the ids of the last
    mutations applied, so that a retried request returns its first answer instead of
    applying twice (conditional mutations would refuse a replay anyway; this makes the
    retry *succeed*, which is what a client that lost the reply needs)."""

    md: MutableData | None = None
    recent: tuple[bytes, ...] = ()

    def remember(self, request_id: bytes) -> tuple[bytes, ...]:
        return (self.recent + (request_id,))[-RECENT_REQUESTS:]
