"""The authenticator: a user's account from their secrets, and the apps they authorise.

As SAFE's authenticator did (docs/data-model.md §3.3-3.4), it turns a user's two secrets into
their keys, keeps their containers, and grants apps a key of their own:

    auth = await Authenticator.create_account(client_factory, "alice@example", "correct horse")
    grant = await auth.authorise("notebook", {"_documents": {"insert", "update"}})
    # on any machine, later:
    auth = await Authenticator.login(client_factory, "alice@example", "correct horse")
    await auth.revoke("notebook")

`client_factory(keys, owner=None)` returns an async context manager of a DataClient (a
MockNetwork's `client`, `NetworkClient.open` bound to contacts, `LocalNetwork.client`).

What lives where:
- the user's signing key is derived with Argon2id from the password, salted by the locator,
  so logging in on another machine derives the same key (nothing secret is stored);
- the session packet — an MD at a name derived from the locator alone, tag 0 — holds the
  encrypted list of the user's containers and its access container;
- the default containers (`_documents`, `_downloads`, `_music`, `_videos`, `_publicNames`
  private, `_public` public) and the access container are MDs owned by the user;
- the account on the user's ClientManager group holds the authorised app keys;
- each app's access-container entry holds what was granted to it, encrypted.
Revocation removes the app key from the account and from every container it was given;
re-encrypting the private containers it could read (SAFE's two-phase re-encryption) is not
done here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nacl.pwhash
from nacl.secret import SecretBox

from node import errors as E
from node.data import Action, Del, Ins, MutableData, PermissionSet, Update, Value
from node.keys import Keypair, PublicKey
from node.xorname import XorName, sha3_256

from .api import DataClient
from .private import MDataInfo

DIR_TAG = 15000
SESSION_TAG = 0
PRIVATE_CONTAINERS = ("_documents", "_downloads", "_music", "_videos", "_publicNames")
PUBLIC_CONTAINERS = ("_public",)
ACTIONS = {
    "insert": Action.INSERT,
    "update": Action.UPDATE,
    "delete": Action.DELETE,
    "manage_permissions": Action.MANAGE_PERMISSIONS,
}

ClientFactory = Callable[..., contextlib.AbstractAsyncContextManager[DataClient]]


@dataclass(frozen=True)
class KdfCost:
    """Argon2id work factors. `interactive` is for people; `fast` only for tests."""

    ops: int
    mem: int

    @classmethod
    def interactive(cls) -> KdfCost:
        return cls(nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE)

    @classmethod
    def fast(cls) -> KdfCost:
        return cls(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)


def _kdf(secret: str, salt_text: bytes, cost: KdfCost) -> bytes:
    salt = sha3_256(salt_text)[: nacl.pwhash.argon2id.SALTBYTES]
    return nacl.pwhash.argon2id.kdf(32, secret.encode(), salt, opslimit=cost.ops, memlimit=cost.mem)


@dataclass(frozen=True)
class Secrets:
    """What a user's two secrets derive to."""

    keys: Keypair
    session_name: XorName
    packet_key: bytes

    @classmethod
    def derive(cls, locator: str, password: str, cost: KdfCost | None = None) -> Secrets:
        if not locator or not password:
            raise ValueError("a locator and a password are both needed")
        cost = cost or KdfCost.interactive()
        seed = _kdf(password, b"safenet-user-key|" + locator.encode(), cost)
        session = _kdf(locator, b"safenet-session|" + locator.encode(), cost)
        packet_key = _kdf(password, b"safenet-packet|" + locator.encode(), cost)
        return cls(Keypair(seed), XorName(sha3_256(session)), packet_key)


def info_to_obj(info: MDataInfo) -> list[Any]:
    """An `MDataInfo` as msgpack-ready data (the session packet and the CLI's state file)."""
    return [bytes(info.name), info.tag, info.enc_key, info.enc_nonce]


def info_from_obj(obj: Any) -> MDataInfo:
    return MDataInfo(XorName(obj[0]), obj[1], obj[2], obj[3])


def _seal(key: bytes, plain: bytes) -> bytes:
    return bytes(SecretBox(key).encrypt(plain))


def _open(key: bytes, sealed: bytes) -> bytes:
    try:
        return bytes(SecretBox(key).decrypt(sealed))
    except Exception:  # nacl raises CryptoError; a wrong password lands here
        raise E.AccessDenied("the secrets do not open this account") from None


@dataclass(frozen=True)
class AppGrant:
    """What an authorised app receives: its own key and the containers it may use."""

    app_id: str
    keys: Keypair
    owner: PublicKey
    containers: dict[str, MDataInfo]
    permissions: dict[str, frozenset[str]]

    def to_obj(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "seed": self.keys.seed,
            "owner": bytes(self.owner),
            "containers": {n: info_to_obj(i) for n, i in self.containers.items()},
            "permissions": {n: sorted(p) for n, p in self.permissions.items()},
        }

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> AppGrant:
        return cls(
            obj["app_id"],
            Keypair(obj["seed"]),
            PublicKey(obj["owner"]),
            {n: info_from_obj(i) for n, i in obj["containers"].items()},
            {n: frozenset(p) for n, p in obj["permissions"].items()},
        )

    def to_bytes(self) -> bytes:
        return msgpack.packb(self.to_obj(), use_bin_type=True)

    @classmethod
    def from_bytes(cls, raw: bytes) -> AppGrant:
        return cls.from_obj(msgpack.unpackb(raw, raw=False))


@dataclass
class Authenticator:
    """A logged-in user. Every operation opens a client with the user's key."""

    factory: ClientFactory
    secrets: Secrets
    containers: dict[str, MDataInfo] = field(default_factory=dict)
    access: MDataInfo | None = None

    @property
    def public_key(self) -> PublicKey:
        return self.secrets.keys.public

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[DataClient]:
        """A client of the network acting with the account's own keys (not an app's)."""
        async with self.factory(self.secrets.keys) as client:
            yield client

    # ---------------------------------------------------------------- account

    @classmethod
    async def create_account(cls, factory: ClientFactory, locator: str, password: str, *,
                             allowance: int | None = None, cost: KdfCost | None = None) -> Authenticator:
        auth = cls(factory, Secrets.derive(locator, password, cost))
        async with auth.client() as client:
            await client.create_account(allowance)
            me = client.public_key
            for name in PRIVATE_CONTAINERS:
                auth.containers[name] = await _new_container(client, MDataInfo.random_private(DIR_TAG), me)
            for name in PUBLIC_CONTAINERS:
                auth.containers[name] = await _new_container(client, MDataInfo.random_public(DIR_TAG), me)
            auth.access = await _new_container(client, MDataInfo.random_private(DIR_TAG), me)
            packet = MutableData(auth.secrets.session_name, SESSION_TAG, {}, {}, 0, frozenset({me}))
            try:
                await client.put_mdata(packet)
            except E.DataExists:
                raise E.AccountExists("an account with that locator exists") from None
            await client.mutate_entries(packet.address, {b"Login": Ins(auth._packet())})
        return auth

    @classmethod
    async def login(cls, factory: ClientFactory, locator: str, password: str, *,
                    cost: KdfCost | None = None) -> Authenticator:
        auth = cls(factory, Secrets.derive(locator, password, cost))
        async with auth.client() as client:
            try:
                value = await client.get_value(
                    MutableData(auth.secrets.session_name, SESSION_TAG).address, b"Login")
            except (E.NoSuchData, E.NoSuchEntry):
                raise E.NoSuchAccount("no account with that locator") from None
        obj = msgpack.unpackb(_open(auth.secrets.packet_key, value.content), raw=False)
        auth.containers = {n: info_from_obj(i) for n, i in obj["containers"].items()}
        auth.access = info_from_obj(obj["access"])
        return auth

    def _packet(self) -> bytes:
        assert self.access is not None
        obj = {"containers": {n: info_to_obj(i) for n, i in self.containers.items()},
               "access": info_to_obj(self.access)}
        return _seal(self.secrets.packet_key, msgpack.packb(obj, use_bin_type=True))

    # ---------------------------------------------------------------- apps

    async def authorise(self, app_id: str, containers: Mapping[str, Iterable[str]] | None = None, *,
                        own_container: bool = True) -> AppGrant:
        """Grant an app a key of its own and the named permissions on named containers."""
        if not app_id or "/" in app_id:
            raise ValueError("an app id is a non-empty name without '/'")
        assert self.access is not None
        wanted = {name: frozenset(perms) for name, perms in (containers or {}).items()}
        for name, perms in wanted.items():
            if name not in self.containers:
                raise E.NoSuchData(f"no container named {name!r}")
            unknown = set(perms) - set(ACTIONS) - {"read"}
            if unknown:
                raise ValueError(f"unknown permissions {sorted(unknown)}; choose from read, {', '.join(ACTIONS)}")
        app_keys = Keypair()
        async with self.client() as client:
            previous = await self._raw_entry(client, app_id)
            if previous is not None and previous.content:
                raise E.DataExists(f"app {app_id!r} is already authorised; revoke it first")
            info = await client.account_info()
            await client.ins_auth_key(app_keys.public, info.keys_version + 1)
            granted = {}
            for name, perms in wanted.items():
                container = self.containers[name]
                actions = [ACTIONS[p] for p in perms if p in ACTIONS]
                if actions:
                    version = await client.get_mdata_version(container.address)
                    await client.set_user_permissions(
                        container.address, app_keys.public, PermissionSet.allowing(*actions), version + 1)
                granted[name] = container
            if own_container:
                own = MDataInfo.random_private(DIR_TAG)
                await client.put_mdata(MutableData(
                    own.name, own.tag, {}, {app_keys.public: PermissionSet.allowing(*ACTIONS.values())},
                    0, frozenset({client.public_key})))
                granted[f"apps/{app_id}"] = own
                wanted[f"apps/{app_id}"] = frozenset(ACTIONS) | {"read"}
            grant = AppGrant(app_id, app_keys, client.public_key, granted, wanted)
            # A revoked app left a tombstone: its entry is revived at the next version.
            action = Ins(grant.to_bytes()) if previous is None else Update(grant.to_bytes(), previous.entry_version + 1)
            await client.mutate_entries(self.access.address, self.access.encrypt_actions({app_id.encode(): action}))
        return grant

    async def apps(self) -> list[AppGrant]:
        """The apps authorised now (revoked ones leave an empty tombstone, skipped here)."""
        assert self.access is not None
        async with self.client() as client:
            entries = await client.list_entries(self.access.address)
        grants = []
        for value in self.access.decrypt_entries(entries).values():
            if value.content:
                grants.append(AppGrant.from_bytes(value.content))
        return sorted(grants, key=lambda g: g.app_id)

    async def revoke(self, app_id: str) -> None:
        """The app key loses its account authorisation and every container permission."""
        assert self.access is not None
        async with self.client() as client:
            found = await self._entry(client, app_id)
            if found is None:
                raise E.NoSuchKey(f"no app {app_id!r} is authorised")
            grant, entry_version = found
            info = await client.account_info()
            if grant.keys.public in info.apps:
                await client.del_auth_key(grant.keys.public, info.keys_version + 1)
            for name, container in grant.containers.items():
                if name.startswith("apps/"):
                    continue  # the app's own container stays; only its key loses access
                perms = await client.list_permissions(container.address)
                if grant.keys.public in perms:
                    version = await client.get_mdata_version(container.address)
                    await client.del_user_permissions(container.address, grant.keys.public, version + 1)
            await client.mutate_entries(self.access.address,
                                        {self.access.encrypt_key(app_id.encode()): Del(entry_version + 1)})

    async def _raw_entry(self, client: DataClient, app_id: str) -> Value | None:
        assert self.access is not None
        try:
            return await client.get_value(self.access.address, self.access.encrypt_key(app_id.encode()))
        except E.NoSuchEntry:
            return None

    async def _entry(self, client: DataClient, app_id: str) -> tuple[AppGrant, int] | None:
        assert self.access is not None
        value = await self._raw_entry(client, app_id)
        if value is None or not value.content:
            return None
        return AppGrant.from_bytes(self.access.decrypt_value(value.content)), value.entry_version


async def _new_container(client: DataClient, info: MDataInfo, owner: PublicKey) -> MDataInfo:
    await client.put_mdata(MutableData(info.name, info.tag, {}, {}, 0, frozenset({owner})))
    return info


__all__ = ["AppGrant", "Authenticator", "KdfCost", "Secrets"]
