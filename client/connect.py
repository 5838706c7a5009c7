"""How command-line tools reach a network and who they act as.

- `connect(cluster, mock, keys)` opens a DataClient: on the mock network persisted in the
  file `mock` (shared safely by several processes), or on the cluster that `cluster`,
  $SAFENET_CLUSTER or ./.safenet/cluster.json names.
- `key_file(mock)` is where a tool's own stable key lives: $SAFENET_CLIENT_KEY, else next to
  the mock file, else ~/.safenet/client.key (made on first use, mode 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from node.keys import Keypair, PublicKey

from .api import DataClient
from .mock import MockNetwork

KEY_ENV = "SAFENET_CLIENT_KEY"


class FileMockNetwork(MockNetwork):
    """A mock network in a file that several processes share: each request runs under an
    exclusive lock on the file and first reloads it if another process changed it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        self._lock_path = path.with_name(path.name + ".lock")
        with self._locked():
            super().__init__(path)
            self._stamp = self._current_stamp()

    @contextlib.contextmanager
    def _locked(self) -> Any:
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _current_stamp(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    async def handle(self, wire_request: dict[str, Any]) -> Any:
        with self._locked():
            if self._current_stamp() != self._stamp:
                assert self.path is not None
                fresh = MockNetwork(self.path)
                self.chunks, self.mdata = fresh.chunks, fresh.mdata
            try:
                return await super().handle(wire_request)
            finally:
                self._stamp = self._current_stamp()


def key_file(mock: str | None) -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    if mock is not None:
        path = Path(mock)
        return path.with_name(path.name + ".client.key")
    return Path.home() / ".safenet" / "client.key"


@contextlib.asynccontextmanager
async def connect(cluster: str | None, mock: str | None, keys: Keypair | None = None,
                  owner: PublicKey | None = None) -> AsyncIterator[DataClient]:
    """A client acting as `keys` (default: the tool's own key) on the mock file or a cluster.

    Raises node.clusterfile.ClusterError when no cluster can be found.
    """
    keys = keys or Keypair.load_or_create(key_file(mock))
    if mock is not None:
        yield FileMockNetwork(Path(mock)).client(keys, owner=owner)
        return
    from node.clusterfile import load_cluster_file

    from .network import NetworkClient

    _path, info = load_cluster_file(cluster)
    async with NetworkClient.open(info.addresses, keys, owner=owner, replication=info.replication) as client:
        yield client
