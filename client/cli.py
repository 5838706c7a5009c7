"""The `safenet data` commands: put, get and cat files of any size on a cluster.

Files go through self-encryption (`client.selfenc`): a file becomes encrypted chunks plus
a data map, all stored as ImmutableData, and the data map's name is what `put` prints and
`get` / `cat` take. Files stream in and out a few chunks at a time, so their size is not
limited by memory.

Each invocation acts with a fresh client key (accounts come later); reads need no key, and
storing IData is open to anyone. The cluster is found with `--cluster PATH`, then
$SAFENET_CLUSTER, then ./.safenet/cluster.json (`node.clusterfile.resolve_cluster_file`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import click
import trio

from node import errors as E
from node.clusterfile import ENV_VAR, ClusterError, load_cluster_file, parse_name
from node.keys import Keypair
from node.xorname import XorName

from .network import NetworkClient
from .selfenc import SelfEncryptionError, fetch_blob_to, store_blob

# Files at least this big get a progress bar on stderr (when stderr is a terminal).
PROGRESS_THRESHOLD = 1024 * 1024


class DataCommandError(Exception):
    """A failure the user can act on, printed as one line."""


# ================================================================================ plumbing


@asynccontextmanager
async def open_client(cluster: str | None) -> AsyncIterator[NetworkClient]:
    """A NetworkClient on the cluster `cluster` resolves to, with a fresh key."""
    _path, info = load_cluster_file(cluster)
    async with NetworkClient.open(info.addresses, Keypair(), replication=info.replication) as client:
        yield client


def _explain(exc: BaseException) -> str:
    """One line for an error a user can meet."""
    if isinstance(exc, ClusterError | DataCommandError):
        return str(exc)
    if isinstance(exc, E.NoSuchData):
        return "no such data on the network (was that name printed by `safenet data put`?)"
    if isinstance(exc, SelfEncryptionError):
        return f"that name is not a file stored by `safenet data put` ({exc})"
    if isinstance(exc, E.RequestTimeout | E.QuorumNotReached):
        return f"the network did not answer in time: {exc} (is the cluster up? try `safenet cluster status`)"
    if isinstance(exc, E.SafeError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return repr(exc)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return trio.run(partial(fn, *args, **kwargs))
    except (ClusterError, DataCommandError, E.SafeError, OSError) as exc:
        click.echo(f"safenet data: {_explain(exc)}", err=True)
        sys.exit(1)
    except BaseExceptionGroup as group:  # a lone failure inside a nursery
        leaf = _first_leaf(group)
        click.echo(f"safenet data: {_explain(leaf)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("safenet data: interrupted", err=True)
        sys.exit(130)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if not isinstance(exc, ClusterError | DataCommandError | E.SafeError | OSError):
        raise group
    return exc


class _ProgressBar:
    """A `progress(done, total)` callback drawing a bar on stderr once the total is known
    to be large. Nothing is drawn when stderr is not a terminal: click would print the
    label alone there, which is noise in logs."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < PROGRESS_THRESHOLD:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         show_pos=False, show_percent=True, show_eta=True)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[_ProgressBar]:
    bar = _ProgressBar(label, enabled)
    try:
        yield bar
    finally:
        bar.close()


def _name(text: str) -> XorName:
    try:
        return parse_name(text)
    except ClusterError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


cluster_option = click.option(
    "--cluster", "cluster", type=click.Path(path_type=str), default=None, metavar="PATH",
    help=f"The cluster's cluster.json (or its dir) [default: ${ENV_VAR}, else ./.safenet/cluster.json].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Store and fetch files of any size on a cluster (self-encrypted ImmutableData).

    \b
    NAME=$(safenet data put photo.jpg)    store; prints the data-map name last
    safenet data get $NAME -o copy.jpg    fetch to a file
    safenet data cat $NAME | head         fetch to stdout
    """


# ================================================================================ put


async def put_file(cluster: str | None, source: Path | BinaryIO,
                   progress: Callable[[int, int], None] | None = None) -> XorName:
    """Self-encrypt and store `source`; return the data-map name."""
    async with open_client(cluster) as client:
        return await store_blob(client.put_idata, source, progress=progress, offload=True)


@data.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@cluster_option
@json_option
@quiet_option
def put(file: Path, cluster: str | None, as_json: bool, quiet: bool) -> None:
    """Store FILE ('-' for stdin); print its data-map name (64 hex) as the last line."""
    started = time.monotonic()
    with _source(file) as (source, size), _progress("put", not quiet) as progress:
        name = _run(put_file, cluster, source, progress)
    seconds = time.monotonic() - started
    if as_json:
        click.echo(json.dumps({"name": name.hex(), "size": size, "file": str(file),
                               "seconds": round(seconds, 3)}))
        return
    if not quiet:
        click.echo(f"stored {file} ({size:,} bytes) in {seconds:.1f}s", err=True)
    click.echo(name.hex())


@contextmanager
def _source(file: Path) -> Iterator[tuple[Path | BinaryIO, int]]:
    """The file to encrypt and its size; stdin is spooled to a temporary file first,
    because self-encryption reads its source more than once."""
    if str(file) != "-":
        yield file, file.stat().st_size
        return
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(click.get_binary_stream("stdin"), spool)
        size = spool.tell()
        spool.seek(0)
        yield spool, size


# ================================================================================ get / cat


async def get_to(cluster: str | None, name: XorName, sink: BinaryIO,
                 progress: Callable[[int, int], None] | None = None) -> int:
    """Fetch the file named `name` into `sink` chunk by chunk; return its size."""
    async with open_client(cluster) as client:
        return await fetch_blob_to(client.get_idata, name, sink, progress=progress, offload=True)


@data.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=None, help="Write to this file ('-' or none: stdout).")
@cluster_option
@json_option
@quiet_option
def get(name: str, output: Path | None, cluster: str | None, as_json: bool, quiet: bool) -> None:
    """Fetch the file NAME (a data-map name from `put`) to -o FILE or stdout.

    The file is written as NAME arrives and renamed into place when complete, so a failed
    get leaves no half-written FILE behind.
    """
    target = _name(name)
    to_stdout = output is None or str(output) == "-"
    if as_json and to_stdout:
        raise click.UsageError("--json reports on a file written with -o FILE")
    started = time.monotonic()
    if to_stdout:
        with _progress("get", not quiet) as progress:
            size = _run(get_to, cluster, target, click.get_binary_stream("stdout"), progress)
        return
    assert output is not None
    partial_path = output.with_name(output.name + ".part")
    try:
        with open(partial_path, "wb") as sink, _progress("get", not quiet) as progress:
            size = _run(get_to, cluster, target, sink, progress)
        os.replace(partial_path, output)
    finally:
        if partial_path.exists():
            partial_path.unlink()
    seconds = time.monotonic() - started
    if as_json:
        click.echo(json.dumps({"name": target.hex(), "size": size, "file": str(output),
                               "seconds": round(seconds, 3)}))
    elif not quiet:
        click.echo(f"wrote {output} ({size:,} bytes) in {seconds:.1f}s", err=True)


@data.command()
@click.argument("name")
@cluster_option
@json_option
def cat(name: str, cluster: str | None, as_json: bool) -> None:
    """Print the file NAME to stdout.

    With --json, print {"name", "size", "encoding", "content"}: the content as text when it
    is UTF-8, else base64 (the whole file is held in memory for this).
    """
    target = _name(name)
    if not as_json:
        _run(get_to, cluster, target, click.get_binary_stream("stdout"))
        return
    buffer = io.BytesIO()
    size = _run(get_to, cluster, target, buffer)
    raw = buffer.getvalue()
    try:
        encoding, content = "utf-8", raw.decode("utf-8")
    except UnicodeDecodeError:
        encoding, content = "base64", base64.b64encode(raw).decode("ascii")
    click.echo(json.dumps({"name": target.hex(), "size": size, "encoding": encoding, "content": content}))
