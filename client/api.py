"""The client's data API: one async surface over SAFE data, the same against the real
network and the in-process mock network.

`DataClient` builds and signs the requests; a subclass only says how a request reaches
the network (`_send`). Every method raises the typed errors of the rules engine
(`node.errors`), so code written against the mock runs unchanged on a real cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from node.data import (
    EntryAction,
    ImmutableData,
    MDataAddress,
    MutableData,
    PermissionSet,
    User,
    Value,
)
from node.keys import Keypair, PublicKey

if TYPE_CHECKING:
    from node.accounts import AccountInfo
from node.requests import (
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
    MutateEntries,
    Op,
    PutIData,
    PutMData,
    Request,
    SetUserPermissions,
)
from node.rules import check_idata
from node.xorname import XorName


class DataClient:
    """Signed requests on IData and MD. Subclasses implement `_send`."""

    # How long a signed request stays valid: long enough for every retry of it, short enough
    # that a request seen on the wire cannot be replayed much later.
    request_ttl = 600

    def __init__(self, keys: Keypair | None = None, *, owner: PublicKey | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys or Keypair()
        # The account this client acts for: itself, or (for an app key) the user's key.
        self.owner = owner
        # The network requests are signed for (learned from the nodes when connecting) and the
        # wall clock their expiries come from (the simulator hands in its virtual one).
        self.network_id = b""
        self.clock = clock

    @property
    def public_key(self) -> PublicKey:
        return self.keys.public

    @property
    def account_owner(self) -> PublicKey:
        return self.owner or self.keys.public

    async def _send(self, request: Request) -> Any:
        """Deliver one request and return its decoded result, or raise its typed error."""
        raise NotImplementedError

    def _sign(self, op: Op, request_id: bytes | None = None) -> Request:
        """`op` signed for this network, valid for `request_ttl` seconds from now."""
        return Request.signed(op, self.keys, owner=self.owner, request_id=request_id,
                              network=self.network_id, expires=int(self.clock()) + self.request_ttl)

    async def call(self, op: Op, *, request_id: bytes | None = None) -> Any:
        """Send one operation (signed if it mutates) and return its decoded result. A
        mutation sent again with the same `request_id` is applied at most once."""
        request = self._sign(op, request_id) if op.MUTATES else Request(op, self.keys.public)
        return await self._send(request)

    # ----------------------------------------------------------------- IData

    async def put_idata(self, value: bytes) -> XorName:
        """Store a chunk (idempotent) and return its name, the SHA3-256 of its bytes."""
        data = ImmutableData(bytes(value))
        check_idata(data)
        await self.call(PutIData(data))
        return data.name

    async def get_idata(self, name: bytes) -> bytes:
        data: ImmutableData = await self.call(GetIData(XorName(name)))
        return data.value

    # ----------------------------------------------------------------- MD mutations

    async def put_mdata(self, md: MutableData) -> None:
        await self.call(PutMData(md))

    async def mutate_entries(self, address: MDataAddress, actions: Mapping[bytes, EntryAction]) -> None:
        await self.call(MutateEntries(address, dict(actions)))

    async def set_user_permissions(
        self, address: MDataAddress, user: User, permissions: PermissionSet, version: int
    ) -> None:
        await self.call(SetUserPermissions(address, user, permissions, version))

    async def del_user_permissions(self, address: MDataAddress, user: User, version: int) -> None:
        await self.call(DelUserPermissions(address, user, version))

    async def change_owner(self, address: MDataAddress, new_owner: PublicKey, version: int) -> None:
        await self.call(ChangeOwner(address, frozenset({PublicKey(new_owner)}), version))

    # ----------------------------------------------------------------- MD reads (open to all)

    async def get_mdata(self, address: MDataAddress) -> MutableData:
        return await self.call(GetMData(address))

    async def get_mdata_shell(self, address: MDataAddress) -> MutableData:
        return await self.call(GetMDataShell(address))

    async def get_mdata_version(self, address: MDataAddress) -> int:
        return await self.call(GetMDataVersion(address))

    async def list_entries(self, address: MDataAddress) -> dict[bytes, Value]:
        return await self.call(ListEntries(address))

    async def list_keys(self, address: MDataAddress) -> set[bytes]:
        return await self.call(ListKeys(address))

    async def list_values(self, address: MDataAddress) -> list[Value]:
        return await self.call(ListValues(address))

    async def get_value(self, address: MDataAddress, key: bytes) -> Value:
        return await self.call(GetValue(address, key))

    async def list_permissions(self, address: MDataAddress) -> dict[User, PermissionSet]:
        return await self.call(ListPermissions(address))

    async def list_user_permissions(self, address: MDataAddress, user: User) -> PermissionSet:
        return await self.call(ListUserPermissions(address, user))

    # ----------------------------------------------------------------- payloads of any size

    async def put_blob(
        self,
        source: bytes | BinaryIO | str,
        *,
        progress: Callable[[int, int], None] | None = None,
        map_key: bytes | None = None,
    ) -> XorName:
        """Self-encrypt `source` (bytes, a binary file or a path) into chunks; return the
        data-map name. Large files stream: never more than a few chunks in memory."""
        from .blobs import store_blob

        return await store_blob(self.put_idata, source, progress=progress, map_key=map_key)

    async def get_blob(self, name: bytes, *, map_key: bytes | None = None) -> bytes:
        from .blobs import fetch_blob

        return await fetch_blob(self.get_idata, XorName(name), map_key=map_key)

    async def get_blob_to(
        self,
        name: bytes,
        sink: BinaryIO,
        *,
        progress: Callable[[int, int], None] | None = None,
        map_key: bytes | None = None,
    ) -> int:
        """Stream a blob into `sink` chunk by chunk; returns the bytes written."""
        from .blobs import fetch_blob_to

        return await fetch_blob_to(self.get_idata, XorName(name), sink, progress=progress, map_key=map_key)

    async def read_blob(self, name: bytes, offset: int, length: int, *, map_key: bytes | None = None) -> bytes:
        """Bytes [offset, offset+length) of a blob, fetching only the chunks that cover them."""
        from .blobs import read_range

        return await read_range(self.get_idata, XorName(name), offset, length, map_key=map_key)

    # ----------------------------------------------------------------- accounts (ClientManager)

    async def create_account(self, allowance: int | None = None) -> None:
        """Register this key's account: its app keys and mutation allowance live on the close
        group of its name. `allowance` must match the network's (default 1000)."""
        from node.accounts import DEFAULT_ALLOWANCE, CreateAccount

        await self.call(CreateAccount(self.keys.public, DEFAULT_ALLOWANCE if allowance is None else allowance))

    async def account_info(self, owner: PublicKey | None = None) -> AccountInfo:
        from node.accounts import AccountInfo, account_address

        return AccountInfo.of(await self.get_mdata(account_address(owner or self.account_owner)))

    async def ins_auth_key(self, key: PublicKey, version: int) -> None:
        """Authorise an app key to mutate for this account (`version` = key-ops count + 1)."""
        from node.accounts import InsAuthKey

        await self.call(InsAuthKey(self.account_owner, PublicKey(key), version))

    async def del_auth_key(self, key: PublicKey, version: int) -> None:
        from node.accounts import DelAuthKey

        await self.call(DelAuthKey(self.account_owner, PublicKey(key), version))
