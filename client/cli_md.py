"""The `safenet md` and `safenet account` commands.

`md` works on public MutableData: create one, read it, insert / update / delete entries,
list and set permissions, change its owner. Versions default to "the next one" (read, then
+1), so the common case needs no bookkeeping; pass `--version` to make the write
conditional on what you last saw. Keys and values are UTF-8 text, or hex with `--hex`.

`account` is the authenticator: create an account from a locator and a password, log in
(on any machine: the same secrets give the same keys), authorise apps and revoke them. A
logged-in session is kept in ~/.safenet/session (mode 0600; $SAFENET_SESSION moves it);
`md` commands act as the logged-in user if there is one, else with the tool's own key.

Every command takes `--cluster PATH` or `--mock FILE`, and `--json`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import msgpack

from node import errors as E
from node import exitcodes
from node.clikit import (
    CONTEXT,
    SafenetGroup,
    cluster_option,
    fail,
    json_option,
    mock_option,
    run_async,
)
from node.data import (
    ANYONE,
    Action,
    Del,
    Ins,
    MDataAddress,
    MutableData,
    PermissionSet,
    Update,
    User,
)
from node.keys import Keypair, PublicKey
from node.xorname import XorName

from .api import DataClient
from .authenticator import AppGrant, Authenticator, KdfCost
from .connect import connect

DEFAULT_TAG = 15001  # tags up to 15000 are, by convention, SAFE's own (docs/data-model.md §1.8)
SESSION_ENV = "SAFENET_SESSION"
KDF_ENV = "SAFENET_KDF"  # "fast" for tests: Argon2id at its minimum cost
F = TypeVar("F", bound=Callable[..., Any])


# ================================================================================ plumbing


def _explain(exc: BaseException) -> str | None:
    """Words for the refusals a user of `md` meets; None leaves the generic ones."""
    if isinstance(exc, E.InvalidSuccessor):
        return f"wrong version: the current one is {exc.current} (pass --version {exc.current + 1}, or leave it out)"
    if isinstance(exc, E.InvalidEntryActions):
        return "refused: " + "; ".join(f"{_show(k)}: {_entry_error(err)}" for k, err in exc.errors.items())
    return None


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    async def main() -> Any:
        with E.single_errors():
            return await fn(*args)

    return run_async(main, explain=_explain)


def _entry_error(err: E.EntryError) -> str:
    if err.kind is E.EntryErrorKind.ENTRY_EXISTS:
        return f"already exists (entry version {err.version})"
    if err.kind is E.EntryErrorKind.NO_SUCH_ENTRY:
        return "no such entry"
    return f"wrong version: the current one is {err.version} (pass --version {(err.version or 0) + 1}, or leave it out)"


def _show(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.hex()


def _common(fn: F) -> F:
    @cluster_option
    @mock_option
    @json_option
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _session_path() -> Path:
    return Path(os.environ.get(SESSION_ENV) or Path.home() / ".safenet" / "session")


def _cost() -> KdfCost:
    return KdfCost.fast() if os.environ.get(KDF_ENV) == "fast" else KdfCost.interactive()


def _save_session(auth: Authenticator, locator: str) -> None:
    path = _session_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    from .authenticator import info_to_obj

    obj = {
        "locator": locator,
        "seed": auth.secrets.keys.seed,
        "session": bytes(auth.secrets.session_name),
        "packet_key": auth.secrets.packet_key,
        "containers": {n: info_to_obj(i) for n, i in auth.containers.items()},
        "access": info_to_obj(auth.access) if auth.access else None,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgpack.packb(obj, use_bin_type=True))
    tmp.chmod(0o600)
    tmp.replace(path)


def _load_session(cluster: str | None, mock: str | None) -> tuple[Authenticator, str] | None:
    path = _session_path()
    if not path.exists():
        return None
    from .authenticator import Secrets, info_from_obj

    try:
        obj = msgpack.unpackb(path.read_bytes(), raw=False)
        secrets = Secrets(Keypair(obj["seed"]), XorName(obj["session"]), obj["packet_key"])
        auth = Authenticator(_factory(cluster, mock), secrets,
                             {n: info_from_obj(i) for n, i in obj["containers"].items()},
                             info_from_obj(obj["access"]) if obj["access"] else None)
        return auth, obj["locator"]
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
        fail(f"the session in {path} is damaged; `safenet account logout` removes it", exitcodes.USAGE)


def logged_in(cluster: str | None, mock: str | None) -> Authenticator | None:
    """The account logged in on this machine (`safenet account login`), or None; for other
    tools that act for it (`safenet es`, the NoteBook, the UI)."""
    session = _load_session(cluster, mock)
    return None if session is None else session[0]


def _factory(cluster: str | None, mock: str | None) -> Callable[..., Any]:
    return lambda keys=None, owner=None: connect(cluster, mock, keys, owner)


@contextlib.asynccontextmanager
async def _client(cluster: str | None, mock: str | None) -> AsyncIterator[DataClient]:
    session = _load_session(cluster, mock)
    async with connect(cluster, mock, session[0].secrets.keys if session else None) as client:
        yield client


def _address(name: str, tag: int | None) -> MDataAddress:
    if ":" in name:
        name, _, tag_text = name.partition(":")
        tag = int(tag_text)
    try:
        xor = XorName.from_hex(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    return MDataAddress(xor, DEFAULT_TAG if tag is None else tag)


def _bytes(text: str, as_hex: bool) -> bytes:
    if not as_hex:
        return text.encode()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"not hex: {text!r}") from None


def _user(text: str) -> User:
    if text.lower() == "anyone":
        return ANYONE
    try:
        return PublicKey(bytes.fromhex(text))
    except ValueError:
        raise click.BadParameter("a user is 'anyone' or a 64-hex public key", param_hint="USER") from None


def _permission_set(text: str) -> PermissionSet:
    """'insert,update,-delete' allows insert and update and denies delete."""
    perms = PermissionSet()
    for word in filter(None, (w.strip().lower() for w in text.split(","))):
        deny = word.startswith("-")
        name = word.lstrip("-+").replace("-", "_")
        try:
            action = Action[name.upper()]
        except KeyError:
            raise click.BadParameter(f"unknown action {word!r}; use insert, update, delete, manage_permissions",
                                     param_hint="PERMS") from None
        perms = perms.deny(action) if deny else perms.allow(action)
    return perms


def _perm_text(perms: PermissionSet) -> str:
    marks = []
    for action in Action:
        verdict = perms.is_allowed(action)
        if verdict is not None:
            marks.append(("" if verdict else "-") + action.name.lower())
    return ",".join(marks) or "(none)"


def _md_json(md: MutableData) -> dict[str, Any]:
    return {
        "name": md.name.hex(),
        "tag": md.tag,
        "version": md.version,
        "owners": [o.hex() for o in md.owners],
        "permissions": {("anyone" if u is ANYONE else bytes(u).hex()): _perm_text(p)  # type: ignore[arg-type]
                        for u, p in md.permissions.items()},
        "entries": {_show(k): {"value": _show(v.content), "version": v.entry_version, "deleted": v.is_tombstone}
                    for k, v in sorted(md.entries.items())},
    }


def _out(as_json: bool, obj: Any, text: str) -> None:
    click.echo(json.dumps(obj, indent=2) if as_json else text)


# ================================================================================ md


@click.group(cls=SafenetGroup, context_settings=CONTEXT)
def md() -> None:
    """MutableData: create, read, write entries, permissions and owners."""


@md.command("create")
@click.option("--tag", type=int, default=DEFAULT_TAG, show_default=True, help="The MD's type tag.")
@click.option("--name", "name_hex", default=None, metavar="HEX", help="Its name (default: random).")
@click.option("--anyone", default="", metavar="PERMS", help="What anyone may do, e.g. 'insert' for an append-only log.")
@_common
def md_create(
    tag: int, name_hex: str | None, anyone: str, cluster: str | None, mock: str | None, as_json: bool
) -> None:
    """Create a public MD owned by you; prints NAME:TAG."""
    name = XorName.from_hex(name_hex) if name_hex else XorName.random()
    perms: dict[User, PermissionSet] = {ANYONE: _permission_set(anyone)} if anyone else {}

    async def go() -> MDataAddress:
        async with _client(cluster, mock) as client:
            await client.put_mdata(MutableData(name, tag, {}, perms, 0, frozenset({client.account_owner})))
            return MDataAddress(name, tag)

    address = _run(go)
    _out(as_json, {"name": address.name.hex(), "tag": address.tag}, f"{address.name.hex()}:{address.tag}")


@md.command("get")
@click.argument("name")
@click.option("--tag", type=int, default=None, help=f"Type tag (default {DEFAULT_TAG}; or write NAME:TAG).")
@_common
def md_get(name: str, tag: int | None, cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Show an MD: version, owner, permissions and entries."""
    address = _address(name, tag)

    async def go() -> MutableData:
        async with _client(cluster, mock) as client:
            return await client.get_mdata(address)

    data: MutableData = _run(go)
    if as_json:
        _out(True, _md_json(data), "")
        return
    info = _md_json(data)
    lines = [f"{address}  version {data.version}  owner {', '.join(info['owners'])}"]
    lines += [f"  permission {u}: {p}" for u, p in info["permissions"].items()]
    lines += [f"  {k} = {v['value']!r} (v{v['version']}{', deleted' if v['deleted'] else ''})"
              for k, v in info["entries"].items()]
    click.echo("\n".join(lines))


async def _write_entry(client: DataClient, address: MDataAddress, key: bytes, value: bytes | None,
                       version: int | None, kind: str) -> int:
    if kind == "insert":
        await client.mutate_entries(address, {key: Ins(value or b"")})
        return 0
    if version is None:
        version = (await client.get_value(address, key)).entry_version + 1
    action = Update(value or b"", version) if kind == "update" else Del(version)
    await client.mutate_entries(address, {key: action})
    return version


def _entry(kind: str, name: str, key: str, value: str | None, tag: int | None, version: int | None,
           as_hex: bool, cluster: str | None, mock: str | None, as_json: bool) -> None:
    address, raw_key = _address(name, tag), _bytes(key, as_hex)
    raw_value = None if value is None else _bytes(value, as_hex)

    async def go() -> int:
        async with _client(cluster, mock) as client:
            return await _write_entry(client, address, raw_key, raw_value, version, kind)

    new_version = _run(go)
    _out(as_json, {"key": key, "version": new_version}, f"{kind}d {key!r} (entry version {new_version})"
         if kind != "insert" else f"inserted {key!r}")


_tag_option = click.option("--tag", type=int, default=None,
                           help=f"Type tag (default {DEFAULT_TAG}; or write NAME:TAG).")
_hex_option = click.option("--hex", "as_hex", is_flag=True, help="KEY and VALUE are hex.")
_version_option = click.option("--version", type=int, default=None,
                               help="The entry version to write (default: the current one + 1).")


@md.command("insert")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@_tag_option
@_hex_option
@_common
def md_insert(name: str, key: str, value: str, tag: int | None, as_hex: bool,
              cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Insert KEY = VALUE (the key must not exist yet)."""
    _entry("insert", name, key, value, tag, None, as_hex, cluster, mock, as_json)


@md.command("update")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@_tag_option
@_version_option
@_hex_option
@_common
def md_update(name: str, key: str, value: str, tag: int | None, version: int | None, as_hex: bool,
              cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Update KEY to VALUE at its next version."""
    _entry("update", name, key, value, tag, version, as_hex, cluster, mock, as_json)


@md.command("delete")
@click.argument("name")
@click.argument("key")
@_tag_option
@_version_option
@_hex_option
@_common
def md_delete(name: str, key: str, tag: int | None, version: int | None, as_hex: bool,
              cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Delete KEY (an empty tombstone stays, at the next version)."""
    _entry("delete", name, key, None, tag, version, as_hex, cluster, mock, as_json)


@md.command("permissions")
@click.argument("name")
@click.option("--tag", type=int, default=None, help=f"Type tag (default {DEFAULT_TAG}).")
@_common
def md_permissions(name: str, tag: int | None, cluster: str | None, mock: str | None, as_json: bool) -> None:
    """List who may do what on an MD."""
    address = _address(name, tag)

    async def go() -> dict[User, PermissionSet]:
        async with _client(cluster, mock) as client:
            return await client.list_permissions(address)

    perms = _run(go)
    table = {("anyone" if u is ANYONE else bytes(u).hex()): _perm_text(p) for u, p in perms.items()}  # type: ignore[arg-type]
    _out(as_json, table, "\n".join(f"{u}: {p}" for u, p in table.items()) or "(nobody but the owner)")


@md.command("set-permissions")
@click.argument("name")
@click.argument("user")
@click.argument("perms")
@click.option("--tag", type=int, default=None, help=f"Type tag (default {DEFAULT_TAG}).")
@click.option("--version", type=int, default=None, help="The MD version to write (default: current + 1).")
@_common
def md_set_permissions(name: str, user: str, perms: str, tag: int | None, version: int | None,
                       cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Set USER's permissions ('anyone' or a 64-hex key) to PERMS, e.g. 'insert,-update'."""
    address, who, permission_set = _address(name, tag), _user(user), _permission_set(perms)

    async def go() -> int:
        async with _client(cluster, mock) as client:
            v = version if version is not None else await client.get_mdata_version(address) + 1
            await client.set_user_permissions(address, who, permission_set, v)
            return v

    v = _run(go)
    _out(as_json, {"version": v}, f"permissions of {user} set to {_perm_text(permission_set)} (MD version {v})")


@md.command("change-owner")
@click.argument("name")
@click.argument("new_owner")
@click.option("--tag", type=int, default=None, help=f"Type tag (default {DEFAULT_TAG}).")
@click.option("--version", type=int, default=None, help="The MD version to write (default: current + 1).")
@_common
def md_change_owner(name: str, new_owner: str, tag: int | None, version: int | None,
                    cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Hand the MD to NEW_OWNER (a 64-hex public key; 64 zeros freezes it for ever)."""
    address = _address(name, tag)
    owner = _user(new_owner)
    if owner is ANYONE:
        raise click.BadParameter("an owner is a key", param_hint="NEW_OWNER")

    async def go() -> int:
        async with _client(cluster, mock) as client:
            v = version if version is not None else await client.get_mdata_version(address) + 1
            await client.change_owner(address, owner, v)  # type: ignore[arg-type]
            return v

    v = _run(go)
    _out(as_json, {"version": v}, f"owner changed (MD version {v})")


# ================================================================================ account


@click.group(cls=SafenetGroup, context_settings=CONTEXT)
def account() -> None:
    """Your account: create, log in, authorise and revoke apps."""


def _secrets(locator: str | None, password: str | None, confirm: bool) -> tuple[str, str]:
    locator = locator or click.prompt("Locator")
    password = password or os.environ.get("SAFENET_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=confirm)
    return locator, password


@account.command("create")
@click.option("--locator", default=None, help="Your account's public half (like a user name).")
@click.option("--password", default=None, help="Its secret half (prompted if left out; or $SAFENET_PASSWORD).")
@click.option("--allowance", type=int, default=None,
              help="Mutations the network grants (must match the network's; default 1000).")
@_common
def account_create(locator: str | None, password: str | None, allowance: int | None,
                   cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Create an account and its default containers, and log in."""
    locator, password = _secrets(locator, password, confirm=True)
    auth = _run(lambda: Authenticator.create_account(_factory(cluster, mock), locator, password,
                                                     allowance=allowance, cost=_cost()))
    _save_session(auth, locator)
    key = auth.public_key.hex()
    _out(as_json, {"locator": locator, "public_key": key, "containers": sorted(auth.containers)},
         f"account created; logged in as {locator} (key {key[:16]}..)")


@account.command("login")
@click.option("--locator", default=None, help="Your account's locator.")
@click.option("--password", default=None, help="Its password (prompted if left out; or $SAFENET_PASSWORD).")
@_common
def account_login(
    locator: str | None, password: str | None, cluster: str | None, mock: str | None, as_json: bool
) -> None:
    """Log in with your secrets (on any machine)."""
    locator, password = _secrets(locator, password, confirm=False)
    auth = _run(lambda: Authenticator.login(_factory(cluster, mock), locator, password, cost=_cost()))
    _save_session(auth, locator)
    _out(as_json, {"locator": locator, "public_key": auth.public_key.hex()}, f"logged in as {locator}")


@account.command("logout")
@json_option
def account_logout(as_json: bool) -> None:
    """Forget the session kept on this machine."""
    path = _session_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    _out(as_json, {"logged_out": existed}, "logged out")


def _auth(cluster: str | None, mock: str | None) -> Authenticator:
    session = _load_session(cluster, mock)
    if session is None:
        fail("not logged in: run `safenet account login` (or `account create`) first")
    return session[0]


@account.command("info")
@_common
def account_info(cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Mutations used and left, and the apps' keys."""
    auth = _auth(cluster, mock)

    async def go() -> Any:
        async with auth.client() as client:
            return await client.account_info()

    info = _run(go)
    _out(as_json, {"done": info.done, "available": info.available, "allowance": info.allowance,
                   "apps": sorted(k.hex() for k in info.apps)},
         f"{info.done} of {info.allowance} mutations used, {info.available} left; {len(info.apps)} app key(s)")


@account.command("apps")
@_common
def account_apps(cluster: str | None, mock: str | None, as_json: bool) -> None:
    """The apps you have authorised."""
    auth = _auth(cluster, mock)
    grants: list[AppGrant] = _run(auth.apps)
    rows: list[dict[str, Any]] = [{"app_id": g.app_id, "key": g.keys.public.hex(),
                                   "containers": {n: sorted(p) for n, p in g.permissions.items()}}
                                  for g in grants]
    lines = []
    for row in rows:
        granted = "; ".join(f"{name} ({', '.join(perms)})" for name, perms in row["containers"].items())
        lines.append(f"{row['app_id']}: {granted}")
    _out(as_json, rows, "\n".join(lines) or "(no apps)")


@account.command("authorise")
@click.argument("app_id")
@click.option("--container", "containers", multiple=True, metavar="NAME:PERMS",
              help="A container and what the app may do there, e.g. _documents:read,insert (repeatable).")
@click.option("--no-own-container", is_flag=True, help="Do not create apps/APP_ID for it.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also export the app's credentials to this file (mode 0600) for a program of yours "
                   "to load with client.authenticator.AppGrant.from_bytes. Nothing in safenet reads it: "
                   "the grant is kept in your account (see `account apps`).")
@_common
def account_authorise(app_id: str, containers: tuple[str, ...], no_own_container: bool, out_file: Path | None,
                      cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Give an app a key of its own and permissions on your containers."""
    wanted: dict[str, set[str]] = {}
    for item in containers:
        name, _, perms = item.partition(":")
        wanted[name] = {p.strip() for p in perms.split(",") if p.strip()} or {"read"}
    auth = _auth(cluster, mock)
    grant: AppGrant = _run(lambda: auth.authorise(app_id, wanted, own_container=not no_own_container))
    if out_file is not None:
        out_file.write_bytes(grant.to_bytes())
        out_file.chmod(0o600)
    _out(as_json, {"app_id": app_id, "key": grant.keys.public.hex(),
                   "grant_file": None if out_file is None else str(out_file),
                   "containers": {n: sorted(p) for n, p in grant.permissions.items()}},
         f"authorised {app_id} (key {grant.keys.public.hex()[:16]}..)"
         + ("" if out_file is None else f"; its credentials are in {out_file}"))


@account.command("revoke")
@click.argument("app_id")
@_common
def account_revoke(app_id: str, cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Take an app's key out of your account and off every container it was given."""
    auth = _auth(cluster, mock)
    _run(auth.revoke, app_id)
    _out(as_json, {"app_id": app_id, "revoked": True}, f"revoked {app_id}")
