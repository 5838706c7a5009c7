"""The `safenet data` commands: put, get and cat files of any size on a cluster.

Files go through self-encryption (`client.selfenc`): a file becomes encrypted chunks plus
a data map, all stored as ImmutableData, and the data map's name is what `put` prints and
`get` / `cat` take. Files stream in and out a few chunks at a time, so their size is not
limited by memory.

Each invocation acts with a fresh client key (accounts come later); reads need no key, and
storing IData is open to anyone. The cluster is found with `--cluster PATH`, then
$SAFENET_CLUSTER, then ./.safenet/cluster.json (`node.clusterfile.resolve_cluster_file`);
`--mock FILE` uses a mock network kept in FILE instead.
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
from pathlib import Path
from typing import Any, BinaryIO

import click

from node import errors as E
from node.clikit import CONTEXT, SafenetGroup, cluster_option, json_option, mock_option, run_async
from node.clusterfile import parse_name
from node.keys import Keypair
from node.xorname import XorName

from .api import DataClient
from .blobs import fetch_blob_to, store_blob
from .connect import connect
from .selfenc import SelfEncryptionError

# Files at least this big get a progress bar on stderr (when stderr is a terminal).
PROGRESS_THRESHOLD = 1024 * 1024


# ================================================================================ plumbing


@asynccontextmanager
async def open_client(cluster: str | None, mock: str | None = None) -> AsyncIterator[DataClient]:
    """A client with a fresh key on the cluster `cluster` resolves to, or on the mock
    network kept in the file `mock`."""
    async with connect(cluster, mock, Keypair()) as client:
        yield client


def _explain(exc: BaseException) -> str | None:
    """Words for the errors a user of `data` meets; None leaves the generic ones."""
    if isinstance(exc, E.NoSuchData):
        return "no such data on the network (was that name printed by `safenet data put`?)"
    if isinstance(exc, SelfEncryptionError):
        return f"that name is not a file stored by `safenet data put` ({exc})"
    if isinstance(exc, E.RequestTimeout | E.QuorumNotReached):
        return f"the network did not answer in time: {exc} (is the cluster up? try `safenet cluster status`)"
    return None


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return run_async(fn, *args, explain=_explain, **kwargs)


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
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


@click.group(cls=SafenetGroup, context_settings=CONTEXT)
def data() -> None:
    """Store and fetch files of any size on a cluster (self-encrypted ImmutableData).

    \b
    NAME=$(safenet data put photo.jpg)    store; prints the data-map name last
    safenet data get $NAME -o copy.jpg    fetch to a file
    safenet data cat $NAME | head         fetch to stdout

    Each command acts with a fresh key; --mock FILE uses a mock network kept in FILE.
    """


# ================================================================================ put


async def put_file(cluster: str | None, source: Path | BinaryIO,
                   progress: Callable[[int, int], None] | None = None, mock: str | None = None) -> XorName:
    """Self-encrypt and store `source`; return the data-map name."""
    async with open_client(cluster, mock) as client:
        return await store_blob(client.put_idata, source, progress=progress, offload=True)


@data.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@cluster_option
@mock_option
@json_option
@quiet_option
def put(file: Path, cluster: str | None, mock: str | None, as_json: bool, quiet: bool) -> None:
    """Store FILE ('-' for stdin); print its data-map name (64 hex) as the last line."""
    started = time.monotonic()
    with _source(file) as (source, size), _progress("put", not quiet) as progress:
        name = _run(put_file, cluster, source, progress, mock)
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
        shutil.copyfileobj(sys.stdin.buffer, spool)
        size = spool.tell()
        spool.seek(0)
        yield spool, size


# ================================================================================ get / cat


async def get_to(cluster: str | None, name: XorName, sink: BinaryIO,
                 progress: Callable[[int, int], None] | None = None, mock: str | None = None) -> int:
    """Fetch the file named `name` into `sink` chunk by chunk; return its size."""
    async with open_client(cluster, mock) as client:
        return await fetch_blob_to(client.get_idata, name, sink, progress=progress, offload=True)


@data.command()
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=None, help="Write to this file ('-' or none: stdout).")
@cluster_option
@mock_option
@json_option
@quiet_option
def get(name: str, output: Path | None, cluster: str | None, mock: str | None, as_json: bool,
        quiet: bool) -> None:
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
            size = _run(get_to, cluster, target, sys.stdout.buffer, progress, mock)
        return
    assert output is not None
    partial_path = output.with_name(output.name + ".part")
    try:
        with open(partial_path, "wb") as sink, _progress("get", not quiet) as progress:
            size = _run(get_to, cluster, target, sink, progress, mock)
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
@mock_option
@json_option
def cat(name: str, cluster: str | None, mock: str | None, as_json: bool) -> None:
    """Print the file NAME to stdout.

    With --json, print {"name", "size", "encoding", "content"}: the content as text when it
    is UTF-8, else base64 (the whole file is held in memory for this).
    """
    target = _name(name)
    if not as_json:
        _run(get_to, cluster, target, sys.stdout.buffer, None, mock)
        return
    buffer = io.BytesIO()
    size = _run(get_to, cluster, target, buffer, None, mock)
    raw = buffer.getvalue()
    try:
        encoding, content = "utf-8", raw.decode("utf-8")
    except UnicodeDecodeError:
        encoding, content = "base64", base64.b64encode(raw).decode("ascii")
    click.echo(json.dumps({"name": target.hex(), "size": size, "encoding": encoding, "content": content}))
