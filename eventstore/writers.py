"""Who may append to a database: its writer set, kept in the database itself, and the owner's
means to change it (`Database.add_writer` / `remove_writer`, `safenet es db add-writer`).

A database's MDs belong to its owner — the account (or, without accounts, the key) that
created it — and grant each writer key Insert and nothing else. The writer set is one more
MD of the database, at sha3("writers", namespace), with no permissions at all: only the
owner changes it. One entry per key that was ever a writer: [1 if it is one now, when].
Its owner is the database's owner, which is how a writer of another account learns whom to
hand its new MDs to.

**New MDs.** Any writer may be the one to create an MD (a new stream's first segment, the
next log segment). It grants the MD to the writer set as it last read it, then reads the set
again and brings the MD's grants up to date, and — if the writer acts for another account
than the owner — hands the MD to the owner (`change_owner`); from then on it may only
insert there, like everyone else. Why the second read makes `add_writer` complete: the
owner records a new key *before* it walks the database's MDs. An MD made after the walk
looked at its address was put after the key was recorded, so its maker's second read sees
the key and grants it; any other MD exists when the walk looks, and the walk grants it —
or, while its maker still holds it, waits for the maker's hand-over and grants it then.
Removal is the same with grants taken away.

**What remove cannot undo.** An MD is handed over by a second request after its creation:
a writer killed in between keeps that MD (and, as its owner, every right on it) until it
runs `hand_over` (`safenet es db hand-over`), which walks the database and hands over every
MD it still owns. `add_writer` and `remove_writer` report such MDs as *held*; their walk can
be run again at any time (both are idempotent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import msgpack
import trio

from client.api import DataClient
from node import errors as E
from node.data import Action, Ins, MDataAddress, MutableData, Update, Value
from node.keys import PublicKey

from .errors import CorruptData, NotAWriter, NotTheOwner
from .safe import INSERT_ONLY, TAG, SafeData, gather

if TYPE_CHECKING:
    from .database import Database

WRITERS_TTL = 5.0  # seconds a writer set read before an MD's creation may be reused
HAND_OVER_WAIT = 5.0  # how long a walk waits for a writer to hand over an MD it just made
SETTLE_ATTEMPTS = 8


@dataclass(frozen=True)
class WriterSet:
    """The keys that may append now, and the database's owner (None for a database made
    before writer sets were recorded: its writers are those named at its creation)."""

    owner: PublicKey | None
    keys: frozenset[bytes]


@dataclass(frozen=True)
class WriterChange:
    """What `add_writer` / `remove_writer` did."""

    key: bytes
    added: bool  # True: add_writer; False: remove_writer
    was_writer: bool  # whether the key was in the set before
    mds: int  # MDs of the database walked
    changed: int  # MDs whose grants changed
    held: tuple[MDataAddress, ...]  # MDs held by a writer that never handed them over

    def to_json(self) -> dict[str, object]:
        return {"key": self.key.hex(), "writer": self.added, "was_writer": self.was_writer,
                "mds": self.mds, "changed": self.changed, "held": [bytes(a.name).hex() for a in self.held]}


def _entry(active: bool, when_us: int) -> bytes:
    return msgpack.packb([1 if active else 0, when_us])


def _active(raw: bytes) -> bool:
    try:
        return bool(msgpack.unpackb(raw)[0])
    except (ValueError, TypeError, IndexError, msgpack.ExtraData):
        raise CorruptData("a writer-set entry does not decode") from None


def writer_set(md: MutableData) -> WriterSet:
    if len(md.owners) != 1:
        raise CorruptData("a writer set has one owner")
    (owner,) = md.owners
    return WriterSet(owner, frozenset(k for k, v in md.entries.items() if _active(v.content)))


class Writers:
    """A database's writer set as its MDs' makers use it (the `NewMdPolicy` of its data)."""

    def __init__(self, data: SafeData, address: MDataAddress, database: str, initial: tuple[bytes, ...],
                 now_us: Callable[[], int]) -> None:
        self.data = data
        self.client = data.client
        self.address = address
        self.database = database
        self.initial = frozenset(initial)
        self.now_us = now_us
        self._cached: tuple[float, WriterSet] | None = None

    async def create(self) -> None:
        """Record the initial writers (by the database's creator, before anything else)."""
        md = MutableData(self.address.name, TAG, {k: Value(_entry(True, self.now_us()), 0) for k in self.initial},
                         {}, 0, frozenset({self.client.account_owner}))
        try:
            await self.data.call(lambda: self.client.put_mdata(md))
        except E.DataExists:
            found = await self.current(fresh=True)  # our own put, its reply lost?
            if found.owner != self.client.account_owner or found.keys != self.initial:
                raise CorruptData("the database's writer set is held by another owner") from None

    async def current(self, *, fresh: bool = False) -> WriterSet:
        now = trio.current_time()
        if not fresh and self._cached is not None and now - self._cached[0] < WRITERS_TTL:
            return self._cached[1]
        try:
            md = await self.data.call(lambda: self.client.get_mdata(self.address))
        except E.NoSuchData:
            found = WriterSet(None, self.initial)
        else:
            found = writer_set(md)
        self._cached = (now, found)
        return found

    def forget(self) -> None:
        self._cached = None

    async def may_write(self) -> bool:
        found = await self.current(fresh=True)
        return found.owner is None or bytes(self.client.public_key) in found.keys

    # ------------------------------------------------------------------ NewMdPolicy

    async def grants(self) -> tuple[PublicKey, ...]:
        found = await self.current()
        me = bytes(self.client.public_key)
        if found.owner is not None and me not in found.keys:
            found = await self.current(fresh=True)
            if me not in found.keys:
                raise NotAWriter(self.database, me)
        return tuple(PublicKey(k) for k in sorted(found.keys))

    async def settle(self, address: MDataAddress, shell: MutableData | None) -> None:
        """After this client made the MD at `address`: grant it to the writers of now (see
        the module docstring) and hand it to the database's owner if that is not us."""
        me = self.client.account_owner
        for _ in range(SETTLE_ATTEMPTS):
            found = await self.current(fresh=True)
            if shell is None:
                shell = await self.data.call(lambda: self.client.get_mdata_shell(address))
            if set(shell.owners) != {me}:
                return  # handed over already
            steps = _grant_steps(self.client, address, shell, found.keys)
            if found.owner is not None and found.owner != me:
                steps.append(partial(self.client.change_owner, address, found.owner))
            try:
                for version, step in enumerate(steps, start=shell.version + 1):
                    await self.data.call(partial(step, version))
                return
            except E.InvalidSuccessor:
                shell = None  # a retried request of ours went through: look again
            except E.AccessDenied:
                # Another task of ours handed it over meanwhile? Then it is not ours any more.
                shell = await self.data.call(lambda: self.client.get_mdata_shell(address))
                if set(shell.owners) == {me}:
                    raise
        raise E.QuorumNotReached(f"could not settle the permissions of {address}")


def _grant_steps(client: DataClient, address: MDataAddress, shell: MutableData,
                 writers: frozenset[bytes]) -> list[Callable[[int], Awaitable[None]]]:
    """The permission changes that make `shell` grant exactly `writers` Insert."""
    have = {bytes(user) for user in shell.permissions if isinstance(user, PublicKey)}
    steps: list[Callable[[int], Awaitable[None]]] = []
    for key in sorted(writers - have):
        steps.append(partial(client.set_user_permissions, address, PublicKey(key), INSERT_ONLY))
    for key in sorted(have - writers):
        steps.append(partial(client.del_user_permissions, address, PublicKey(key)))
    return steps


# ---------------------------------------------------------------------- the owner's side


async def database_mds(db: Database) -> list[MDataAddress]:
    """Every MD of the database but its writer set: log segments, the streams the log names
    (system streams too) with all their segments, the categories and their stream indexes."""
    assert db.info is not None
    data, layout = db.data, db.layout

    async def chain(address_of: Callable[[int], MDataAddress]) -> list[MDataAddress]:
        found = []
        segment = 0
        while await data.exists(address_of(segment)):
            found.append(address_of(segment))
            segment += 1
        return found

    out = await chain(layout.log_segment)
    streams: set[str] = set()
    slot = 0
    while True:
        page = await db.log.read(slot, 1000)
        if not page:
            break
        streams.update(db.log.decode(raw).stream for _s, raw in page)
        slot = page[-1][0] + 1
    categories = await db.categories()
    chains: list[Callable[[int], MDataAddress]] = [partial(layout.categories, 0)]
    chains += [partial(layout.stream_segment, name) for name in sorted(streams)]
    chains += [partial(layout.stream_index, c, p) for c in categories for p in range(db.info.partitions)]
    for found in await gather([partial(chain, address_of) for address_of in chains]):
        out.extend(found)
    return out


async def hand_over(db: Database) -> int:
    """Settle every MD of `db` that this writer still owns (made, then killed before handing
    it over): its grants brought up to date, and handed to the owner. Returns how many."""
    await db.open()
    client = db.store.client
    found = await db.writers.current(fresh=True)
    if found.owner is None or found.owner == client.account_owner:
        return 0  # the owner's own MDs need no hand-over
    settled = 0
    for address in await database_mds(db):
        shell = await db.data.call(partial(client.get_mdata_shell, address))
        if set(shell.owners) == {client.account_owner}:
            await db.writers.settle(address, shell)
            settled += 1
    return settled


async def change_writer(db: Database, key: bytes, add: bool, manager: DataClient, *,
                        hand_over_wait: float = HAND_OVER_WAIT) -> WriterChange:
    """Make `key` a writer of `db` (or no longer one): record it in the writer set, then
    grant (or take away) Insert on every MD of the database. `manager` must act with the
    owner's own key. Idempotent: run again, it finishes what a failed run left."""
    await db.open()
    key = bytes(PublicKey(key))
    data = SafeData(manager)
    address = db.layout.writers()
    try:
        found: WriterSet = writer_set(await data.call(lambda: manager.get_mdata(address)))
    except E.NoSuchData:
        # A database made before writer sets were recorded: its creator records it now.
        await Writers(data, address, db.name, tuple(db.writers.initial), db.now_us).create()
        found = WriterSet(manager.account_owner, db.writers.initial)
    if found.owner != manager.public_key:
        owner = "?" if found.owner is None else found.owner.hex()[:16]
        raise NotTheOwner(f"database {db.name!r} belongs to {owner}..; only that key changes its writers "
                          "(an app's database belongs to its account: log in with `safenet account login`)")
    was = key in found.keys
    await _record(data, manager, address, key, add, db.now_us())
    db.writers.forget()
    mds = await database_mds(db)
    results = await gather([partial(_fix, data, manager, a, key, add, found.owner, hand_over_wait) for a in mds])
    held = tuple(a for a, result in zip(mds, results, strict=True) if result == "held")
    return WriterChange(key, add, was, len(mds), results.count("changed"), held)


async def _record(data: SafeData, client: DataClient, address: MDataAddress, key: bytes, add: bool,
                  now_us: int) -> None:
    for _ in range(SETTLE_ATTEMPTS):
        try:
            current = await data.call(lambda: client.get_value(address, key))
        except E.NoSuchEntry:
            current = None
        if current is not None and _active(current.content) == add:
            return
        action = (Ins(_entry(add, now_us)) if current is None
                  else Update(_entry(add, now_us), current.entry_version + 1))
        try:
            await data.call(lambda action=action: client.mutate_entries(address, {key: action}))  # type: ignore[misc]
            return
        except E.InvalidEntryActions:
            continue  # our retried request went through, or the owner races itself: look again
    raise E.QuorumNotReached("could not record the writer")


async def _fix(data: SafeData, client: DataClient, address: MDataAddress, key: bytes, add: bool,
               owner: PublicKey | None, hand_over_wait: float) -> str:
    """Grant (or take away) `key`'s Insert on one MD: "changed", "same" or "held"."""
    waited = 0.0
    while True:
        shell = await data.call(lambda: client.get_mdata_shell(address))
        user = PublicKey(key)
        has = user in shell.permissions
        if has == add and (not add or shell.permissions[user].is_allowed(Action.INSERT)):
            return "same"
        if set(shell.owners) != {owner}:
            # Its maker holds it until it hands it over (see the module docstring).
            if waited >= hand_over_wait:
                return "held"
            await trio.sleep(0.2)
            waited += 0.2
            continue
        version = shell.version + 1
        try:
            if add:
                await data.call(partial(client.set_user_permissions, address, user, INSERT_ONLY, version))
            else:
                await data.call(partial(client.del_user_permissions, address, user, version))
            return "changed"
        except E.InvalidSuccessor:
            continue  # a retried request of ours, or a maker settling it: look again


__all__ = ["WriterChange", "WriterSet", "Writers", "change_writer", "database_mds", "hand_over"]
