"""The cluster file: how a client finds a cluster, with no process machinery attached.

A cluster lives in a data dir (default `./.safenet`); its `cluster.json` lists the nodes'
names and addresses and the cluster's settings (see `ClusterFile`). Clients, the event store
and the web UI read it through this module, which imports neither psutil nor subprocess:
launching and watching node processes is `node.launcher`'s business.

Clients find a cluster with `resolve_cluster_file`: `--cluster PATH`, then the
`SAFENET_CLUSTER` variable, then `./.safenet/cluster.json`.

`ClusterError` and its subclasses are problems a user can fix; each subclass names a kind
of failure, which the command line turns into an exit code (`node.exitcodes`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .xorname import XorName

DEFAULT_DATA_DIR = Path(".safenet")
CLUSTER_FILE = "cluster.json"
ENV_VAR = "SAFENET_CLUSTER"


class ClusterError(Exception):
    """A problem a user can fix; the command line prints it as one line, no traceback."""


class NoCluster(ClusterError):
    """There is no cluster file where the user pointed (or by default)."""


class BadClusterFile(ClusterError):
    """The cluster file cannot be read as one: not UTF-8, not JSON, fields missing, no nodes."""


class BadClusterRequest(ClusterError):
    """A request the cluster cannot take as asked: a bad count, port or setting."""


class InvalidName(BadClusterRequest, ValueError):
    """Text that is not a 64-hex-digit name."""


class NoSuchNode(ClusterError):
    """The cluster has no node of that index."""


class ClusterBusy(ClusterError):
    """Something else holds what the request needs: the cluster's lock, a port."""


class ClusterUnavailable(ClusterError):
    """The nodes are not there to answer: none running, one died, or they did not converge."""


@dataclass
class NodeEntry:
    """One node as cluster.json records it."""

    index: int
    id: str  # 64 hex: the node's name, SHA3-256 of its public key
    address: str  # "127.0.0.1:port", fixed for the node's life so restarts keep it
    pid: int | None
    data_dir: str  # absolute ("" for a remote node)
    remote: bool = False  # runs on another machine: reached over the network, never signalled

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def name(self) -> XorName:
        return XorName.from_hex(self.id)

    @property
    def path(self) -> Path:
        return Path(self.data_dir)


@dataclass
class ClusterFile:
    """The contents of cluster.json: a contract for clients and scripts."""

    nodes: list[NodeEntry]
    replication: int
    admin: str  # 64 hex: the name of the admin key
    base_port: int | None = None  # when set, node i listens on base_port + i
    host: str = "127.0.0.1"  # the address the launcher's own nodes listen on

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "cluster.json") -> ClusterFile:
        try:
            raw = json.loads(text)
            nodes = [NodeEntry(int(n["index"]), str(n["id"]), str(n["address"]),
                               None if n.get("pid") is None else int(n["pid"]), str(n.get("data_dir") or ""),
                               bool(n.get("remote", False)))
                     for n in raw["nodes"]]
            return cls(nodes, int(raw["replication"]), str(raw["admin"]),
                       None if raw.get("base_port") is None else int(raw["base_port"]),
                       str(raw.get("host") or "127.0.0.1"))
        except (ValueError, KeyError, TypeError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise BadClusterFile(f"{source} is not a valid cluster file ({why[:100]})") from None

    @classmethod
    def read(cls, path: Path) -> ClusterFile:
        """Read and parse `path`; every way it can fail is a ClusterError."""
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise BadClusterFile(f"{path} is not a cluster file (not UTF-8 text)") from None
        except FileNotFoundError:
            raise NoCluster(f"no cluster file at {path}") from None
        except OSError as exc:
            raise BadClusterFile(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls.from_json(text, str(path))

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]


def resolve_cluster_file(cluster: str | os.PathLike[str] | None = None,
                         env: Mapping[str, str] | None = None) -> Path:
    """Where a client finds its cluster: `cluster` (a cluster.json or the dir holding it),
    else $SAFENET_CLUSTER, else ./.safenet/cluster.json. Raises NoCluster if there is no
    cluster file there."""
    env = os.environ if env is None else env
    if cluster is not None:
        chosen, how = Path(cluster), "--cluster"
    elif env.get(ENV_VAR):
        chosen, how = Path(env[ENV_VAR]), f"${ENV_VAR}"
    else:
        chosen, how = DEFAULT_DATA_DIR / CLUSTER_FILE, "the default"
    path = chosen / CLUSTER_FILE if chosen.is_dir() else chosen
    if not path.is_file():
        raise NoCluster(f"no cluster at {path} ({how}); start one with `safenet cluster up` "
                        f"or point --cluster / ${ENV_VAR} at its cluster.json")
    return path


def load_cluster_file(cluster: str | os.PathLike[str] | None = None) -> tuple[Path, ClusterFile]:
    """The resolved cluster file and its contents (see `resolve_cluster_file`). A file that
    lists no nodes is refused: a client could reach nobody through it."""
    path = resolve_cluster_file(cluster)
    info = ClusterFile.read(path)
    if not info.nodes:
        raise BadClusterFile(f"{path} lists no nodes; start them with `safenet cluster up`")
    return path, info


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The dir `cluster` commands use without --cluster: the one $SAFENET_CLUSTER points
    into when set, else ./.safenet."""
    env = os.environ if env is None else env
    if env.get(ENV_VAR):
        return cluster_dir(env[ENV_VAR])
    return DEFAULT_DATA_DIR


def cluster_dir(given: str | os.PathLike[str]) -> Path:
    """The cluster's dir from a path to it or to its cluster.json."""
    chosen = Path(given)
    return chosen if chosen.is_dir() or chosen.suffix != ".json" else chosen.parent


def parse_name(name: str | bytes) -> XorName:
    """A 64-hex-digit name (or 32 raw bytes) as an XorName; InvalidName otherwise."""
    if isinstance(name, bytes | bytearray) and len(name) == 32:
        return XorName(bytes(name))
    try:
        return XorName.from_hex(name if isinstance(name, str) else bytes(name).decode())
    except (ValueError, UnicodeDecodeError):
        raise InvalidName(f"{str(name)[:80]!r} is not a name: a name is 64 hex digits") from None


def human_bytes(n: int | None, none: str = "-") -> str:
    """1536 -> '1.5 KiB'; shared by the CLI tables and the web UI."""
    if n is None:
        return none
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
