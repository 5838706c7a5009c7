"""The SAFE mapping: where a database lives in MutableData and ImmutableData, and the few
data operations the event store is built from. Everything above this module speaks of
streams, logs and indexes; everything below it is `client.api.DataClient`, so the same store
runs on the mock network and on a real cluster.

Addresses are derived, never stored: sha3 over a domain tag, the database's namespace and
the part's own name and number (`derive_name`). Two writers therefore compute the same
address for "segment 3 of stream order@42" without reading a pointer, and no pointer ever
needs an Update. Every MD is owned by the account owner and grants the app's key Insert and
nothing else: once written, an entry can never change.

    app container   sha3("app-container", app key)              tag 15000 (DIR_TAG)
    categories      sha3("categories", ns, partition, segment)  tag 15001
    stream index    sha3("streams", ns, category, partition, segment)
    stream segment  sha3("stream", ns, stream, segment)         entries: version -> record
    log segment     sha3("log", ns, segment)                    entries: slot -> intent
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, NoReturn, Protocol, TypeVar

import msgpack
import trio

from client.api import DataClient
from client.blobs import fetch_blob, pack_data_map, store_blob, unpack_data_map
from client.selfenc import SMALL_FILE_LIMIT, encrypt_bytes
from node import errors as E
from node.data import Action, Ins, MDataAddress, MutableData, PermissionSet, Value
from node.keys import PublicKey
from node.rules import MAX_MDATA_ENTRIES, MAX_MDATA_SIZE, is_action_allowed
from node.xorname import XorName, sha3_256

from .errors import CorruptData
from .privacy import Sealer

TAG = 15001  # every event-store MD (SAFE.EventStore's tag)
CONTAINER_TAG = 15000  # DIR_TAG: app containers, as safe_authenticator made them
RETRIES = 4  # attempts after a network error before it reaches the caller
# Room left in an MD for its shell and msgpack framing when sizing segments.
MD_HEADROOM = 16 * 1024

T = TypeVar("T")

# The app's key may Insert and nothing else: an event, once written, stays as written.
INSERT_ONLY = PermissionSet.allowing(Action.INSERT).deny(Action.UPDATE, Action.DELETE, Action.MANAGE_PERMISSIONS)


def derive_name(kind: str, *parts: bytes | str | int) -> XorName:
    return XorName(sha3_256(msgpack.packb(["safenet-es/1", kind, *parts], use_bin_type=True)))


def entry_limit(segment_size: int) -> int:
    """The largest entry value that lets `segment_size` entries fit in one MD."""
    return (MAX_MDATA_SIZE - MD_HEADROOM) // segment_size - 32


@dataclass(frozen=True)
class Layout:
    """The addresses of one database's MDs (see the module docstring)."""

    namespace: bytes  # the database id, or a keyed hash of it for a private database
    sealer: Sealer
    # Every append derives its stream segment's and the log segment's address (a hash
    # each): the last few thousand are kept. Addresses never change, so nothing goes stale.
    _addresses: dict[tuple[str | int, ...], MDataAddress] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def categories(self, partition: int, segment: int) -> MDataAddress:
        return MDataAddress(derive_name("categories", self.namespace, partition, segment), TAG)

    def stream_index(self, category: str, partition: int, segment: int) -> MDataAddress:
        name = self.sealer.name(category)
        return MDataAddress(derive_name("streams", self.namespace, name, partition, segment), TAG)

    def stream_segment(self, stream: str, segment: int) -> MDataAddress:
        found = self._addresses.get((stream, segment))
        if found is None:
            name = self.sealer.name(stream)
            found = self._keep((stream, segment), derive_name("stream", self.namespace, name, segment))
        return found

    def log_segment(self, segment: int) -> MDataAddress:
        found = self._addresses.get((segment,))
        if found is None:
            found = self._keep((segment,), derive_name("log", self.namespace, segment))
        return found

    def _keep(self, key: tuple[str | int, ...], name: XorName) -> MDataAddress:
        if len(self._addresses) >= 8192:
            self._addresses.clear()  # cheaper than an LRU, and refilled by one hash each
        address = self._addresses[key] = MDataAddress(name, TAG)
        return address

    def writers(self) -> MDataAddress:
        """The database's writer set (eventstore.writers), changed by its owner alone."""
        return MDataAddress(derive_name("writers", self.namespace), TAG)


class NewMdPolicy(Protocol):
    """Who a database's new MDs are granted to, and what happens once one is made
    (eventstore.writers.Writers)."""

    async def grants(self) -> tuple[PublicKey, ...]: ...

    async def settle(self, address: MDataAddress, shell: MutableData | None) -> None: ...


class Clash(Exception):
    """An insert met keys that already exist (EntryExists); nothing of it was applied."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys
        super().__init__(f"{len(keys)} keys exist")


K = TypeVar("K")
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """Values that never change (chunks, full segments), least recently used first out,
    bounded by their total size in bytes (as the caller measures it). A value bigger than
    an eighth of the budget is not kept: one huge read must not empty the cache."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> None:
        """Keep `value` (replacing what `key` held: a newer listing of a growing segment)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old[1]
        if size > self.budget // 8:
            return
        self._items[key] = (value, size)
        self.used += size
        while self.used > self.budget:
            _key, (_old, old_size) = self._items.popitem(last=False)
            self.used -= old_size


class SafeData:
    """Append-only MDs and blobs over a DataClient, with bounded retries of network errors.

    A retried request may already have been applied (the reply was lost): an insert that
    then meets its own entries raises `Clash`, and every caller resolves a clash by reading
    what is there — which is why the store's entries carry enough to recognise their writer.
    """

    def __init__(self, client: DataClient, *, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.client = client
        # The app keys that get Insert on the MDs this makes (a database's writers).
        self.grants: tuple[PublicKey, ...] = (client.public_key,)
        # A database's view: the writer set of the moment decides the grants of a new MD,
        # and the MD is settled (re-granted, handed to the owner) once made.
        self.policy: NewMdPolicy | None = None
        self._blobs: ByteLRU[bytes, bytes] = ByteLRU(cache_bytes)
        self._stored: OrderedDict[bytes, XorName] = OrderedDict()  # sha3(plain) -> map name
        self._owned: set[MDataAddress] = set()
        self.stats: Counter[str] = Counter()  # chunk_gets: chunks fetched from the network

    def for_database(self, policy: NewMdPolicy) -> SafeData:
        """The same client and caches, making MDs as `policy` says (a database's writers)."""
        view = copy.copy(self)
        view.policy = policy
        return view

    def new_md(
        self,
        address: MDataAddress,
        entries: Mapping[bytes, bytes],
        permissions: PermissionSet = INSERT_ONLY,
        grants: tuple[PublicKey, ...] | None = None,
    ) -> MutableData:
        return MutableData(
            address.name,
            address.tag,
            {k: Value(v, 0) for k, v in entries.items()},
            dict.fromkeys(self.grants if grants is None else grants, permissions),
            0,
            frozenset({self.client.account_owner}),
        )

    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried on network errors like every request of the store."""
        return await self._retrying(call)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(RETRIES + 1):
            try:
                return await call()
            except E.NetworkError:
                if attempt == RETRIES:
                    raise
                await trio.sleep(0.02 * 2**attempt)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ MD writes

    async def insert(
        self, address: MDataAddress, entries: Mapping[bytes, bytes], permissions: PermissionSet = INSERT_ONLY
    ) -> None:
        """Insert every entry or none; create the MD (holding them) if it does not exist.

        Raises Clash for keys that exist, TooManyEntries / DataTooLarge when the MD is full.
        """
        actions = {k: Ins(v) for k, v in entries.items()}
        for _ in range(RETRIES + 1):
            try:
                await self._retrying(lambda: self.client.mutate_entries(address, actions))
                return
            except E.InvalidEntryActions as exc:
                clashing = [k for k, e in exc.errors.items() if e.kind == E.EntryErrorKind.ENTRY_EXISTS]
                if clashing:
                    raise Clash(clashing) from None
                raise
            except E.NoSuchData:
                pass
            try:
                grants = None if self.policy is None else await self.policy.grants()
                md = self.new_md(address, entries, permissions, grants)
                await self._retrying(partial(self.client.put_mdata, md))
                self._owned.add(address)
                if self.policy is not None:
                    await self.policy.settle(address, md)
                return
            except E.DataExists:
                # Created meanwhile (by a rival, or by our own attempt whose reply was lost):
                # make sure it is ours, then insert into it.
                await self.check_owner(address)
        raise E.QuorumNotReached(f"could not insert into {address} after {RETRIES + 1} attempts")

    async def check_owner(self, address: MDataAddress) -> None:
        if address in self._owned:
            return
        shell = await self._retrying(lambda: self.client.get_mdata_shell(address))
        # Ours, or made by another writer of the database who lets us insert (a database
        # with several writers: whichever came first created the MD). Anything else is
        # someone squatting on the address.
        ours = set(shell.owners) == {self.client.account_owner}
        if not ours and not is_action_allowed(shell, self.client.public_key, Action.INSERT):
            raise CorruptData(f"the address {address} is held by another owner")
        if ours and self.policy is not None:
            await self.policy.settle(address, shell)  # our own put, its reply lost
        self._owned.add(address)

    # ------------------------------------------------------------------ MD reads

    async def entries(self, address: MDataAddress) -> dict[bytes, bytes] | None:
        """Every entry of an MD (None if the MD does not exist)."""
        try:
            found = await self._retrying(lambda: self.client.list_entries(address))
        except E.NoSuchData:
            return None
        return {k: v.content for k, v in found.items()}

    async def keys(self, address: MDataAddress) -> set[bytes] | None:
        try:
            return await self._retrying(lambda: self.client.list_keys(address))
        except E.NoSuchData:
            return None

    async def value(self, address: MDataAddress, key: bytes) -> bytes | None:
        """One entry's content (None if the MD or the entry does not exist)."""
        try:
            found = await self._retrying(lambda: self.client.get_value(address, key))
        except (E.NoSuchData, E.NoSuchEntry):
            return None
        return found.content

    async def exists(self, address: MDataAddress) -> bool:
        try:
            await self._retrying(lambda: self.client.get_mdata_version(address))
        except E.NoSuchData:
            return False
        return True

    # ------------------------------------------------------------------ blobs

    async def _put_chunk(self, value: bytes) -> XorName:
        return await self._retrying(lambda: self.client.put_idata(value))

    async def _get_chunk(self, name: XorName) -> bytes:
        cached = self._blobs.get(bytes(name))
        if cached is not None:
            return cached
        value = await self._retrying(lambda: self.client.get_idata(name))
        self._blobs.put(bytes(name), value, len(value) + 32)
        self.stats["chunk_gets"] += 1
        return value

    async def put_chunk(self, value: bytes) -> bytes:
        """Store `value` as one raw chunk (a pack of payloads, an intent's records); return
        its name, the SHA3-256 of its bytes. Kept in the cache: its writer often reads it."""
        name = sha3_256(value)
        if name in self._blobs:
            return name  # stored (or read) recently: the network holds it already
        if await self._put_chunk(value) != name:
            raise CorruptData("the network named a chunk other than by its hash")
        self._blobs.put(name, value, len(value) + 32)
        return name

    async def get_chunk(self, name: bytes) -> bytes:
        """A raw chunk by name (cached), checked against its name."""
        try:
            value = await self._get_chunk(XorName(name))
        except E.NoSuchData:
            raise CorruptData(f"the chunk {bytes(name).hex()[:12]}.. is missing") from None
        if sha3_256(value) != bytes(name):
            raise CorruptData(f"the chunk {bytes(name).hex()[:12]}.. does not match its name")
        return value

    async def put_blob(self, data: bytes) -> XorName:
        """Self-encrypt and store `data`; return its data-map name. A blob this client stored
        recently is not stored again (the network would deduplicate it, but charge a PUT)."""
        digest = sha3_256(data)
        known = self._stored.get(digest)
        if known is not None:
            self._stored.move_to_end(digest)
            return known
        if len(data) < SMALL_FILE_LIMIT:
            # Small payloads (most events) sit inline in their data map: make it with the
            # synchronous self-encryptor and store one chunk, skipping the streaming machinery.
            data_map, chunks = encrypt_bytes(data)
            value, extra = pack_data_map(data_map)
            for _name, chunk in [*chunks, *extra]:
                await self._put_chunk(chunk)
            name = XorName(await self._put_chunk(value))
            if name != sha3_256(value):
                raise CorruptData("the network named a chunk other than by its hash")
        else:
            name = await store_blob(self._put_chunk, data)
        self._stored[digest] = name
        if len(self._stored) > 8192:
            self._stored.popitem(last=False)
        return name

    async def get_blob(self, name: bytes) -> bytes:
        try:
            wrapper = await self._get_chunk(XorName(name))
            if sha3_256(wrapper) == name:
                try:
                    data_map = unpack_data_map(wrapper, _no_chunk)
                except _NeedsChunks:
                    data_map = None
                if data_map is not None and not data_map.chunks:
                    return data_map.content or b""
            return await fetch_blob(self._get_chunk, XorName(name))
        except E.NoSuchData:
            raise CorruptData(f"the blob {bytes(name).hex()[:12]}.. is missing") from None


class _NeedsChunks(Exception):
    pass


def _no_chunk(_name: XorName) -> bytes:
    raise _NeedsChunks


async def gather(calls: Sequence[Callable[[], Awaitable[T]]], limit: int = 16) -> list[T]:
    """Run the calls at most `limit` at a time; results in the calls' order."""
    if len(calls) == 1:
        return [await calls[0]()]
    results: list[T | None] = [None] * len(calls)
    slots = trio.Semaphore(limit)

    async def run(i: int) -> None:
        async with slots:
            results[i] = await calls[i]()

    try:
        async with trio.open_nursery() as nursery:
            for i in range(len(calls)):
                nursery.start_soon(run, i)
    except BaseExceptionGroup as group:
        raise_one(group)
    return results  # type: ignore[return-value]


def raise_one(group: BaseExceptionGroup) -> NoReturn:
    """One failure cancels the rest of a nursery's calls; hand it on as itself, so callers can
    catch it (a `RequestTimeout`, say). Two calls that failed at once (two reads that met the
    same network trouble) are handed on as the first, when both are ordinary errors."""
    leaves = _leaves(group)
    if len(leaves) == 1 or all(isinstance(e, Exception) for e in leaves):
        raise leaves[0] from None
    raise group


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]


# ---------------------------------------------------------------------- index sets


# What one insert into an index segment came to, per name.
ADDED, THERE = "added", "there"
FULL = "full"  # no room for it by bytes (a shorter name may still fit)
FULL_BY_COUNT = "full by count"  # no room for any name: its keys never change


@dataclass
class _Batch:
    entries: dict[bytes, bytes] = field(default_factory=dict)
    outcomes: dict[bytes, str] = field(default_factory=dict)
    error: BaseException | None = None
    done: trio.Event = field(default_factory=trio.Event)


class IndexSet:
    """A set of names (categories, or a category's stream keys) in append-only MDs.

    A name goes to one of `partitions` partitions by its hash; a partition is a chain of
    segments, and an add walks the chain from the first segment: a segment that holds the
    name ends the walk (EntryExists: already there), the first one with room takes it. Per
    key, EntryExists is decided before the size limits, so even a full segment says whether
    it holds the name. Segments only grow, so "no room for this name" never reverts, and two
    writers adding the same name end their walks in the same segment: one succeeds, the
    other gets EntryExists. Hence a true set, without duplicates, as long as segments last.
    """

    def __init__(
        self,
        data: SafeData,
        sealer: Sealer,
        address: Callable[[int, int], MDataAddress],
        partitions: int,
    ) -> None:
        self.data = data
        self.sealer = sealer
        self.address = address
        self.partitions = partitions
        # The keys of segments full by count, which never change: a name is looked up there
        # locally (it may already be in one) and inserted past them. A segment full by bytes
        # is not cached, as it may still take a shorter name.
        self._full: dict[tuple[int, int], frozenset[bytes]] = {}
        self._forming: dict[MDataAddress, _Batch] = {}
        self._locks: dict[MDataAddress, trio.Lock] = {}

    def _partition(self, key: bytes) -> int:
        return int.from_bytes(sha3_256(key)[:8], "big") % self.partitions

    async def add(self, name: str) -> bool:
        """Add `name`; False if it was there already."""
        key = self.sealer.name(name)
        value = self.sealer.seal(name.encode())
        partition = self._partition(key)
        segment = 0
        while True:
            full = self._full.get((partition, segment))
            if full is None:
                address = self.address(partition, segment)
                outcome = await self._insert(address, key, value)
                if outcome in (ADDED, THERE):
                    return outcome == ADDED
                if outcome == FULL_BY_COUNT:
                    keys = await self.data.keys(address) or set()
                    full = self._full[(partition, segment)] = frozenset(keys)
            if full is not None and key in full:
                return False
            segment += 1

    async def _insert(self, address: MDataAddress, key: bytes, value: bytes) -> str:
        """Insert one name into one segment, together with the names other tasks of this
        process are adding to it meanwhile (one mutation for them all, as the log's claims
        share theirs): a burst of new streams in a category costs a round or two, not a
        consensus round each, one after the other. Returns ADDED, THERE, FULL or FULL_BY_COUNT."""
        batch = self._forming.get(address)
        if batch is None:
            batch = self._forming[address] = _Batch()
            leading = True
        else:
            leading = False
        batch.entries[key] = value
        if leading:
            try:
                async with self._locks.setdefault(address, trio.Lock()):
                    # The batch kept forming while the previous one to this segment ran.
                    if self._forming.get(address) is batch:
                        del self._forming[address]
                    batch.outcomes = await self._insert_all(address, dict(batch.entries))
            except BaseException as exc:
                batch.error = exc
                raise
            finally:
                if self._forming.get(address) is batch:
                    del self._forming[address]
                batch.done.set()
        else:
            await batch.done.wait()
        if key in batch.outcomes:
            return batch.outcomes[key]
        if isinstance(batch.error, trio.Cancelled) or batch.error is None:
            return await self._insert(address, key, value)  # its leader was cancelled: again
        raise batch.error

    async def _insert_all(self, address: MDataAddress, entries: dict[bytes, bytes]) -> dict[bytes, str]:
        outcomes: dict[bytes, str] = {}
        while entries:
            try:
                await self.data.insert(address, entries)
                outcomes.update(dict.fromkeys(entries, ADDED))
                return outcomes
            except Clash as clash:
                for k in clash.keys:
                    outcomes[k] = THERE
                    entries.pop(k, None)
            except (E.TooManyEntries, E.DataTooLarge) as exc:
                if len(entries) > 1:
                    # The segment may have room for some of them: each on its own.
                    for k, v in entries.items():
                        outcomes.update(await self._insert_all(address, {k: v}))
                    return outcomes
                outcomes.update(dict.fromkeys(entries, FULL_BY_COUNT if isinstance(exc, E.TooManyEntries) else FULL))
                return outcomes
        return outcomes

    async def pages(self) -> AsyncIterator[list[str]]:
        """The names, one page per segment, each page sorted."""
        for partition in range(self.partitions):
            segment = 0
            while True:
                found = await self.data.entries(self.address(partition, segment))
                if found is None:
                    break
                names = sorted(self.sealer.unseal(v).decode() for v in found.values())
                if names:
                    yield names
                size = sum(len(k) + len(v) + 16 for k, v in found.items())
                # A segment with room left for the longest name cannot have a successor.
                if len(found) < MAX_MDATA_ENTRIES and size < MAX_MDATA_SIZE - MD_HEADROOM:
                    break
                segment += 1

    async def all(self) -> list[str]:
        names: list[str] = []
        async for page in self.pages():
            names.extend(page)
        return sorted(names)
