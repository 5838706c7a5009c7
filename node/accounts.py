"""Accounts: the ClientManager group's record of who may mutate for a user, and how much.

SAFE kept, on the group closest to each user's name (its ClientManager, the MaidManager
persona), the set of app keys the user authorised and a count of mutations against an
allowance (docs/data-model.md §3.2-3.3). Here an account is a register like any MD — it lives on
the close group of the owner's name and changes through the same consensus — at the reserved
address (sha3(owner key), ACCOUNT_TAG), changed only by the operations below:

- `CreateAccount` (by the owner; AccountExists if there is one),
- `InsAuthKey` / `DelAuthKey` (owner only; `version` must be the key-ops count + 1, else
  InvalidSuccessor; deleting an unknown key is NoSuchKey; inserting twice is harmless),
- `Charge` (node-internal: never accepted from a client; counts successful mutations).

Every mutation a user's keys make (data or key operations) is checked by `AccountGuard`
before it runs: an app key (a request made on behalf of an owner) must be authorised in the
owner's account, else AccessDenied; an account at its allowance gets LowBalance. A client
without an account may still mutate its own data (the testbed's unregistered mode), but an
app may not act for an owner who has none (NoSuchAccount). Successful mutations are charged
to the account afterwards, batched per round, so concurrent mutations can overshoot the
allowance by what is in flight — the price of not putting a second group on every write path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from . import errors as E
from .data import MDataAddress, MutableData, Value, check_u64
from .keys import PublicKey
from .ops import GetMData, MDataOp, expect_args, register_op
from .requests import Request
from .rules import ACCOUNT_TAG, MDataState

if TYPE_CHECKING:
    from .services import NodeServices

DEFAULT_ALLOWANCE = 1000  # docs/data-model.md §3.3: safe_vault 0.16-0.18's DEFAULT_MAX_OPS_COUNT

APPS, DONE, ALLOWANCE = b"apps", b"done", b"allowance"


def account_address(owner: PublicKey) -> MDataAddress:
    return MDataAddress(owner.name, ACCOUNT_TAG)


@dataclass(frozen=True, slots=True)
class AccountInfo:
    owner: PublicKey
    apps: frozenset[PublicKey]
    keys_version: int
    done: int
    allowance: int

    @property
    def available(self) -> int:
        return max(0, self.allowance - self.done)

    @classmethod
    def of(cls, md: MutableData) -> AccountInfo:
        (owner,) = md.owners
        apps = md.entries[APPS]
        return cls(
            owner,
            frozenset(PublicKey(k) for k in msgpack.unpackb(apps.content)),
            apps.entry_version,
            int.from_bytes(md.entries[DONE].content, "big"),
            int.from_bytes(md.entries[ALLOWANCE].content, "big"),
        )

    def to_md(self) -> MutableData:
        return MutableData(
            self.owner.name,
            ACCOUNT_TAG,
            {
                APPS: Value(msgpack.packb(sorted(bytes(k) for k in self.apps)), self.keys_version),
                DONE: Value(self.done.to_bytes(8, "big"), self.done),
                ALLOWANCE: Value(self.allowance.to_bytes(8, "big"), 0),
            },
            {},
            0,
            frozenset({self.owner}),
        )

    def charged(self, count: int = 1) -> AccountInfo:
        return AccountInfo(self.owner, self.apps, self.keys_version, self.done + count, self.allowance)


def _account(state: MDataState) -> AccountInfo:
    if state.md is None:
        raise E.NoSuchAccount("no account for that key")
    return AccountInfo.of(state.md)


def _owner_only(info: AccountInfo, request: Request) -> None:
    if request.requester != info.owner or request.owner not in (None, info.owner):
        raise E.AccessDenied("only the account's owner may change its keys")


def _spend(info: AccountInfo) -> None:
    if info.done >= info.allowance:
        raise E.LowBalance(f"the account has used its {info.allowance} mutations")


class _AccountOp(MDataOp):
    owner: PublicKey

    @property
    def address(self) -> MDataAddress:  # type: ignore[override]
        return account_address(self.owner)


@register_op
@dataclass(frozen=True)
class CreateAccount(_AccountOp):
    KIND = "create_account"
    MUTATES = True
    owner: PublicKey
    allowance: int = DEFAULT_ALLOWANCE

    def args(self) -> list[Any]:
        return [bytes(self.owner), self.allowance]

    @classmethod
    def from_args(cls, args: list[Any]) -> CreateAccount:
        owner, allowance = expect_args(args, 2, cls.KIND)
        return cls(PublicKey(owner), check_u64(allowance, "an allowance"))

    def apply_to(self, state: MDataState, request: Request) -> MutableData:
        if request.requester != self.owner:
            raise E.AccessDenied("an account is created by its owner's key")
        if state.md is not None:
            raise E.AccountExists("an account already exists for that key")
        if self.allowance > DEFAULT_ALLOWANCE:
            # The allowance is the network's to give: a client may ask for less (tests of
            # LowBalance do), never for more.
            raise E.InvalidOperation(f"an account's allowance is at most the network's {DEFAULT_ALLOWANCE} mutations")
        return AccountInfo(self.owner, frozenset(), 0, 1, self.allowance).to_md()


@dataclass(frozen=True)
class _KeyOp(_AccountOp):
    owner: PublicKey
    key: PublicKey
    version: int

    def args(self) -> list[Any]:
        return [bytes(self.owner), bytes(self.key), self.version]

    @classmethod
    def from_args(cls, args: list[Any]) -> _KeyOp:
        owner, key, version = expect_args(args, 3, cls.KIND)
        return cls(PublicKey(owner), PublicKey(key), check_u64(version, "a key-ops version"))

    def _checked(self, state: MDataState, request: Request) -> AccountInfo:
        info = _account(state)
        _owner_only(info, request)
        if self.version != info.keys_version + 1:
            raise E.InvalidSuccessor(info.keys_version)
        _spend(info)
        return info


@register_op
@dataclass(frozen=True)
class InsAuthKey(_KeyOp):
    KIND = "ins_auth_key"
    MUTATES = True

    def apply_to(self, state: MDataState, request: Request) -> MutableData:
        info = self._checked(state, request)
        return AccountInfo(info.owner, info.apps | {self.key}, self.version, info.done + 1, info.allowance).to_md()


@register_op
@dataclass(frozen=True)
class DelAuthKey(_KeyOp):
    KIND = "del_auth_key"
    MUTATES = True

    def apply_to(self, state: MDataState, request: Request) -> MutableData:
        info = self._checked(state, request)
        if self.key not in info.apps:
            raise E.NoSuchKey("that key is not authorised in this account")
        return AccountInfo(info.owner, info.apps - {self.key}, self.version, info.done + 1, info.allowance).to_md()


@register_op
@dataclass(frozen=True)
class Charge(_AccountOp):
    """Node-internal: count `count` successful mutations against the account."""

    KIND = "charge"
    MUTATES = True
    INTERNAL = True
    owner: PublicKey
    count: int = 1

    def args(self) -> list[Any]:
        return [bytes(self.owner), self.count]

    @classmethod
    def from_args(cls, args: list[Any]) -> Charge:
        owner, count = expect_args(args, 2, cls.KIND)
        return cls(PublicKey(owner), check_u64(count, "a count"))

    def apply_to(self, state: MDataState, request: Request) -> MutableData:
        return _account(state).charged(self.count).to_md()


# ----------------------------------------------------------------------------- the guard


def authorise(info: AccountInfo | None, owner: PublicKey, requester: PublicKey) -> None:
    """May `requester` mutate on behalf of `owner`, whose account is `info` (None: none)?"""
    if info is None:
        if requester != owner:
            raise E.NoSuchAccount("an app may only act for an owner who has an account")
        return
    if requester != owner and requester not in info.apps:
        raise E.AccessDenied("this app key is not authorised by the account's owner")
    _spend(info)


class AccountGuard:
    """Checks each mutation against its owner's account before it runs, and charges after.

    Account states are read through a consensus round on the account register (so they are
    current) and cached for `ttl` seconds per node: a revoked app key stops working within
    that time.
    """

    def __init__(self, core: NodeServices, ttl: float = 1.0) -> None:
        self.core = core
        self.ttl = ttl
        self._cache: dict[bytes, tuple[float, AccountInfo | None]] = {}
        self._waiting: dict[bytes, list[Callable[[AccountInfo | None, E.SafeError | None], None]]] = {}

    def check(self, request: Request, proceed: Callable[[Callable[..., None] | None], None],
              fail: Callable[[E.SafeError], None]) -> None:
        """Call `proceed(on_success)` if the request may run, else `fail(error)`."""
        op = request.op
        if not op.MUTATES or isinstance(op, _AccountOp):
            proceed(None)  # reads are free; account operations check themselves
            return
        owner = request.account_owner
        assert owner is not None and request.requester is not None
        requester = request.requester

        def decide(info: AccountInfo | None, error: E.SafeError | None) -> None:
            if error is None:
                try:
                    authorise(info, owner, requester)
                except E.ClientError as exc:
                    error = exc
            if error is not None:
                fail(error)
            else:
                proceed(None if info is None else lambda: self.charge(owner, request))

        self.lookup(owner, decide)

    def lookup(self, owner: PublicKey, done: Callable[[AccountInfo | None, E.SafeError | None], None]) -> None:
        key = bytes(owner)
        cached = self._cache.get(key)
        if cached is not None and self.core.now - cached[0] < self.ttl:
            done(cached[1], None)
            return
        waiting = self._waiting.setdefault(key, [])
        waiting.append(done)
        if len(waiting) > 1:
            return  # a lookup is already running; share its answer

        def answered(result: Any = None, error: E.SafeError | None = None, ack_proof: Any = None) -> None:
            info: AccountInfo | None = None
            if isinstance(error, E.NoSuchData):
                error = None
            elif error is None:
                info = AccountInfo.of(MutableData.from_obj(result))
            if error is None:
                self._cache[key] = (self.core.now, info)
            for callback in self._waiting.pop(key, []):
                callback(info, error)

        self.core.replicator.submit(Request(GetMData(account_address(owner))), answered)

    def charge(self, owner: PublicKey, paid_for: Request) -> None:
        """Count `paid_for` against its owner's account. The charge takes the request's id,
        so a retried request is charged once, and travels with it as proof to the account's
        group if we are not in it."""
        key = bytes(owner)
        cached = self._cache.get(key)
        if cached is not None and cached[1] is not None:
            self._cache[key] = (cached[0], cached[1].charged())
        charge = Request(Charge(owner), request_id=paid_for.request_id)
        self.core.replicator.submit(charge, lambda **_: None, proof=paid_for)
