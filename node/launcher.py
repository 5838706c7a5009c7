"""The launcher: N node processes on loopback, started, watched and stopped from one dir.

A cluster lives in a data dir (default `./.safenet`):

    DIR/cluster.json     the contacts and settings (`node.clusterfile.ClusterFile`), read by clients
    DIR/admin.key        the admin keypair; each node is started with its name as --admin-key
    DIR/node-<i>/        one node's data dir: node.key, store.sqlite3, node.log (JSON lines),
                         node.json, and the process's stdout.log / stderr.log

`LocalCluster` is the library (the tests and the web UI drive it directly); `safenet cluster`
(`node.cluster_cli`) is the command line on top of it. Process operations (spawn, kill, stop,
down) are synchronous; operations that talk to nodes (up, start, add, status, locate) are
async and run under trio. Clients never need this module: they read the cluster file through
`node.clusterfile`.

It is about 600 lines because `LocalCluster` is most of it: the life of a node process
(spawn, wait for convergence, signal, reap, restart under the same name and port) reads
best as one class.

Why one module of about 700 lines: `LocalCluster` is one object whose operations share the
node table and its invariants (pids, ports, data dirs, the admin key); what grew beside it
lives apart (faults in node/cluster_faults.py, namespaces in node/netns.py, the command line
in node/cluster_cli.py). The seam if it grows further: the process helpers at the top.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio

from . import netns
from .clusterfile import (
    CLUSTER_FILE,
    DEFAULT_DATA_DIR,
    BadClusterFile,
    BadClusterRequest,
    ClusterBusy,
    ClusterError,
    ClusterFile,
    ClusterUnavailable,
    NoCluster,
    NodeEntry,
    NoSuchNode,
    parse_name,
)
from .keys import Keypair
from .tools import UNANSWERED, NodeTools, open_tools
from .xorname import XorName

ADMIN_KEY_FILE = "admin.key"
LOCK_FILE = ".lock"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
NODE_LOG_FILE = "node.log"
NODE_KEY_FILE = "node.key"
FAULTS_FILE = "faults.json"  # the faults in force (node.cluster_faults); gone after `down`

DEFAULT_REPLICATION = 5
ROUTING_K = 20  # the nodes' Kademlia k (NodeConfig.k): a routing table holds at most this many
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.25
# Probed ports stay below Linux's ephemeral range (32768+), so a port recorded for a node
# is not taken by some outgoing connection while the node is down.
PROBE_PORTS = (20000, 32700)

# Sub-processes this interpreter spawned, kept so they can be reaped (a killed child stays a
# zombie, which still "exists", until its parent waits for it) and are not garbage-collected
# while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# =============================================================================== processes


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours that has ended (no-op otherwise)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int | None, data_dir: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, given `data_dir`, is the node of that dir
    (so a recycled pid is not mistaken for the node)."""
    if pid is None or pid <= 0:
        return False
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if data_dir is None:
            return True
        if data_dir in proc.cmdline():  # the node was started with `--data-dir DATA_DIR`
            return True
        # Between fork and exec a child still shows our own command line: a process we just
        # spawned is alive even before its arguments read as a node's.
        return proc.ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def probe_port(taken: set[int], rng: random.Random | None = None, host: str = "127.0.0.1") -> int:
    """A port on `host` that is free now and not in `taken`."""
    rng = rng or random.Random()
    low, high = PROBE_PORTS
    start = rng.randrange(low, high)
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        if port not in taken and _port_free(port, host):
            return port
    raise ClusterBusy(f"no free port on {host} in {low}-{high}")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# =============================================================================== reports


@dataclass
class WaitState:
    """Progress of a wait for nodes to come up, handed to a progress callback."""

    elapsed: float
    total: int
    answering: int
    ready: int
    converged: int
    want_contacts: int
    min_contacts: int | None


Progress = Callable[[WaitState], None]


@dataclass
class NodeReport:
    """One node as `cluster status` shows it; `to_json` is the contract of `status --json`."""

    entry: NodeEntry
    alive: bool
    status: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        s = self.status or {}
        return {
            "index": self.entry.index,
            "id": self.entry.id,
            "address": self.entry.address,
            "pid": self.entry.pid if self.alive else None,
            "alive": self.alive,
            "responding": self.status is not None,
            "ready": s.get("ready"),
            "contacts": s.get("contacts"),
            "chunks": s.get("chunks"),
            "mds": s.get("mds"),
            "bytes": s.get("bytes"),
            "uptime": s.get("uptime"),
            "msgs_in": s.get("msgs_in"),
            "msgs_out": s.get("msgs_out"),
            "client_requests": s.get("client_requests"),
            "latency": s.get("latency"),
            "transport": s.get("transport"),
            "data_dir": self.entry.data_dir,
            "remote": self.entry.remote,
        }


# =============================================================================== the launcher


class LocalCluster:
    """The node processes of one data dir."""

    def __init__(self, data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR, *,
                 python: str | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.python = python or sys.executable  # looked up now, so a test can swap it
        self.rng = random.Random()

    # ------------------------------------------------------------------ the file

    @property
    def file(self) -> Path:
        return self.data_dir / CLUSTER_FILE

    def exists(self) -> bool:
        return self.file.is_file()

    def load(self, *, allow_empty: bool = False) -> ClusterFile:
        if not self.exists():
            raise NoCluster(f"no cluster in {self.data_dir} (start one with `safenet cluster up`)")
        info = ClusterFile.read(self.file)
        if not info.nodes and not allow_empty:
            raise BadClusterFile(f"{self.file} lists no nodes; `safenet cluster down --purge` "
                                 "removes it, then `safenet cluster up` starts afresh")
        return info

    def save(self, info: ClusterFile) -> None:
        # Atomic: a client reading cluster.json never sees half a file.
        tmp = self.file.with_suffix(".json.tmp")
        tmp.write_text(info.to_json())
        tmp.replace(self.file)

    def admin_keys(self) -> Keypair:
        return Keypair.load_or_create(self.data_dir / ADMIN_KEY_FILE)

    def node(self, info: ClusterFile, index: int) -> NodeEntry:
        for entry in info.nodes:
            if entry.index == index:
                return entry
        known = f"0-{len(info.nodes) - 1}" if info.nodes else "none"
        raise NoSuchNode(f"no node {index} in this cluster (nodes: {known})")

    @contextlib.contextmanager
    def locked(self, timeout: float = 30.0) -> Iterator[None]:
        """Serialise commands that change the cluster (two `up`s at once would race)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / LOCK_FILE, "w") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ClusterBusy(f"another cluster command holds {self.data_dir}") from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ processes

    def is_alive(self, entry: NodeEntry) -> bool:
        """True if `entry`'s process runs on this machine (never, for a remote node)."""
        return not entry.remote and process_alive(entry.pid, entry.data_dir)

    def local(self, entry: NodeEntry, what: str) -> NodeEntry:
        """`entry`, or BadClusterRequest when it runs on another machine."""
        if entry.remote:
            raise BadClusterRequest(f"node {entry.index} runs on another machine ({entry.address}): "
                                    f"{what} it there")
        return entry

    def alive(self, info: ClusterFile) -> list[NodeEntry]:
        return [e for e in info.nodes if self.is_alive(e)]

    def _new_entry(self, info: ClusterFile, index: int) -> NodeEntry:
        node_dir = self.data_dir / f"node-{index}"
        keys = Keypair.load_or_create(node_dir / NODE_KEY_FILE)  # so the id is known before start
        host = info.host
        if netns.prefix_of(host) is not None:
            address = netns.add_node(self.data_dir, self._layout(info), index)
            return NodeEntry(index, keys.name.hex(), address, None, str(node_dir))
        if info.base_port is not None:
            port = info.base_port + index
            if not 0 < port < 65536:
                raise BadClusterRequest(f"--base-port {info.base_port} + {index} is not a port")
            if not _port_free(port, host):
                raise ClusterBusy(f"port {port} on {host} is in use (pick another --base-port)")
        else:
            port = probe_port({e.port for e in info.nodes}, self.rng, host)
        return NodeEntry(index, keys.name.hex(), f"{host}:{port}", None, str(node_dir))

    def spawn(self, info: ClusterFile, entry: NodeEntry, bootstrap: list[str]) -> int:
        """Start `entry`'s node process in the background (its own session, output to files
        in its dir); record and return its pid."""
        node_dir = entry.path
        node_dir.mkdir(parents=True, exist_ok=True)
        prefix: list[str] = []
        if netns.prefix_of(info.host) is not None:
            netns.add_node(self.data_dir, self._layout(info), entry.index)  # again after a `down`
            prefix = self._layout(info).exec_prefix(entry.index)
        cmd = [*prefix, self.python, "-m", "node.cli", "node", "run",
               "--data-dir", entry.data_dir, "--listen", entry.address,
               "--replication", str(info.replication), "--admin-key", info.admin]
        for address in bootstrap:
            cmd += ["--bootstrap", address]
        rules = self._fault_rules(info, entry)
        if rules:
            cmd += ["--fault-rules", rules]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(node_dir / STDOUT_FILE, "ab") as out, open(node_dir / STDERR_FILE, "ab") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=node_dir, env=env, start_new_session=True, close_fds=True)
        _CHILDREN[proc.pid] = proc
        entry.pid = proc.pid
        return proc.pid

    def _layout(self, info: ClusterFile) -> netns.Layout:
        """The namespaces of a netns cluster (made again, with the recorded subnet, after a
        `down` removed them)."""
        return netns.Layout.load(self.data_dir) or netns.create(self.data_dir, netns.prefix_of(info.host))

    def _fault_rules(self, info: ClusterFile, entry: NodeEntry) -> str | None:
        """The transport rules node `entry` must start with while faults are in force (a node
        restarted in a partition stays on its side), as JSON; None when there are none."""
        if not (self.data_dir / FAULTS_FILE).exists():
            return None
        from .cluster_faults import ClusterFaults  # it builds on this module

        state = ClusterFaults(self).load()
        state.paused.discard(entry.index)
        return None if state.empty() else json.dumps(state.rules_for(entry.index, info))

    def _wait_gone(self, entries: list[NodeEntry], timeout: float) -> list[NodeEntry]:
        """Wait until the processes have ended; return those still running at the deadline."""
        deadline = time.monotonic() + timeout
        left = [e for e in entries if self.is_alive(e)]
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [e for e in left if self.is_alive(e)]
        return left

    def _signal(self, entry: NodeEntry, sig: int) -> None:
        if not entry.pid or entry.pid <= 0:  # os.kill(0, ...) would signal our own group
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry.pid, sig)

    def kill(self, index: int) -> bool:
        """SIGKILL node `index` (a crash: no clean shutdown). False if it was not running."""
        with self.locked():
            info = self.load()
            entry = self.local(self.node(info, index), "kill")
            if not self.is_alive(entry):
                return False
            self._signal(entry, signal.SIGKILL)
            if self._wait_gone([entry], STOP_TIMEOUT):
                raise ClusterError(f"node {index} (pid {entry.pid}) survived SIGKILL")
            entry.pid = None
            self.save(info)
            return True

    def stop(self, index: int, timeout: float = STOP_TIMEOUT) -> bool:
        """SIGTERM node `index` and wait for it to exit (SIGKILL after `timeout`). False if
        it was not running."""
        with self.locked():
            info = self.load()
            entry = self.local(self.node(info, index), "stop")
            if not self.is_alive(entry):
                return False
            self._terminate([entry], timeout)
            entry.pid = None
            self.save(info)
            return True

    def _terminate(self, entries: list[NodeEntry], timeout: float) -> list[NodeEntry]:
        """SIGTERM, wait, then SIGKILL what is left; return the ones that needed SIGKILL."""
        for entry in entries:
            self._signal(entry, signal.SIGTERM)
        stubborn = self._wait_gone(entries, timeout)
        for entry in stubborn:
            self._signal(entry, signal.SIGKILL)
        self._wait_gone(stubborn, STOP_TIMEOUT)
        return stubborn

    def down(self, timeout: float = STOP_TIMEOUT, *, purge: bool = False) -> list[int]:
        """Stop every node (data kept unless `purge`); return the indexes that were running."""
        with self.locked():
            info = self.load(allow_empty=True)
            running = self.alive(info)
            self._terminate(running, timeout)
            for entry in info.nodes:
                entry.pid = None
            # Faults lived in the processes (or were signals to them): none outlive `down`.
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / FAULTS_FILE).unlink()
            # Nor do the namespaces, links and kernel rules of a netns cluster.
            if netns.prefix_of(info.host) is not None or (self.data_dir / netns.NETNS_FILE).exists():
                netns.destroy(self.data_dir)
            if purge:
                self._purge(info)
            else:
                self.save(info)
            return [e.index for e in running]

    def _purge(self, info: ClusterFile) -> None:
        # Only what the launcher made: the node dirs it recorded and its own files.
        for entry in info.nodes:
            if entry.path.parent == self.data_dir and entry.path.name.startswith("node-"):
                shutil.rmtree(entry.path, ignore_errors=True)
        for name in (CLUSTER_FILE, ADMIN_KEY_FILE, LOCK_FILE, FAULTS_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    def kill_everything(self) -> None:
        """Last-resort cleanup for tests: SIGKILL every recorded node, no questions asked."""
        with contextlib.suppress(ClusterError, OSError):
            for entry in self.load().nodes:
                if self.is_alive(entry):
                    self._signal(entry, signal.SIGKILL)
                    self._wait_gone([entry], STOP_TIMEOUT)
        with contextlib.suppress(ClusterError, OSError, subprocess.SubprocessError):
            if (self.data_dir / netns.NETNS_FILE).exists():
                netns.destroy(self.data_dir)
        # Children of this interpreter for this dir that never made it into cluster.json.
        prefix = str(self.data_dir) + os.sep
        for pid, proc in list(_CHILDREN.items()):
            if any(str(arg).startswith(prefix) for arg in proc.args) and proc.poll() is None:  # type: ignore[union-attr]
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(STOP_TIMEOUT)
            if proc.poll() is not None:
                _CHILDREN.pop(pid, None)

    # ------------------------------------------------------------------ bringing nodes up

    async def up(self, nodes: int | None = None, *, replication: int | None = None,
                 base_port: int | None = None, timeout: float = START_TIMEOUT,
                 progress: Progress | None = None, host: str | None = None,
                 netns_mode: bool = False) -> ClusterFile:
        """Create a cluster of `nodes` nodes, or restart the stopped nodes of the existing
        one; return when every node is ready and routing has converged."""
        with self.locked():
            if self.exists():
                info = self.load()
                if replication is not None and replication != info.replication:
                    raise BadClusterRequest(f"the cluster in {self.data_dir} has replication "
                                       f"{info.replication}; it cannot change to {replication}")
                to_start = [e for e in info.nodes if not e.remote and not self.is_alive(e)]
            else:
                info = self._create(nodes, replication, base_port, host or "127.0.0.1", netns_mode)
                to_start = list(info.nodes)
            await self._start(info, to_start, timeout, progress)
            return info

    def _create(self, nodes: int | None, replication: int | None, base_port: int | None,
                host: str = "127.0.0.1", netns_mode: bool = False) -> ClusterFile:
        count = 8 if nodes is None else nodes
        if count < 1:
            raise BadClusterRequest("a cluster needs at least one node")
        r = DEFAULT_REPLICATION if replication is None else replication
        if r < 1:
            raise BadClusterRequest("replication must be at least 1")
        if count < r:
            raise BadClusterRequest(f"{count} nodes cannot hold {r} copies of each item: start at least "
                               f"{r} nodes, or lower --replication")
        if netns_mode:
            if base_port is not None or host != "127.0.0.1":
                raise BadClusterRequest("--netns picks each node's address and port itself: "
                                        "no --base-port or --host with it")
            netns.check_available()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            host = netns.HOST_MARK + netns.create(self.data_dir).prefix
            base_port = None
        elif base_port is not None:
            if not 0 < base_port < 65536 - count:
                raise BadClusterRequest(f"--base-port {base_port} leaves no room for {count} nodes")
            # Check every port before anything is written, so a refusal leaves no half cluster.
            for port in range(base_port, base_port + count):
                if not _port_free(port, host):
                    raise ClusterBusy(f"port {port} on {host} is in use (pick another --base-port)")
        elif netns.prefix_of(host) is None and not _can_bind(host):
            raise BadClusterRequest(f"cannot listen on {host}: not an address of this machine")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info = ClusterFile([], r, self.admin_keys().name.hex(), base_port, host)
        for index in range(count):
            info.nodes.append(self._new_entry(info, index))
        self.save(info)
        return info

    async def start(self, index: int, *, timeout: float = START_TIMEOUT,
                    progress: Progress | None = None) -> bool:
        """Start stopped node `index` with its data and its port; False if it was running."""
        with self.locked():
            info = self.load()
            entry = self.local(self.node(info, index), "start")
            if self.is_alive(entry):
                return False
            await self._start(info, [entry], timeout, progress)
            return True

    async def add(self, count: int = 1, *, timeout: float = START_TIMEOUT,
                  progress: Progress | None = None) -> list[NodeEntry]:
        """Add `count` new nodes; they join through the live ones."""
        if count < 1:
            raise BadClusterRequest("--nodes must be at least 1")
        with self.locked():
            info = self.load()
            if not self.alive(info):
                raise ClusterUnavailable("no node is running to join through; run `safenet cluster up` first")
            first = max((e.index for e in info.nodes), default=-1) + 1
            new = []
            for index in range(first, first + count):
                entry = self._new_entry(info, index)
                info.nodes.append(entry)
                new.append(entry)
            self.save(info)
            await self._start(info, new, timeout, progress)
            return new

    async def _start(self, info: ClusterFile, entries: list[NodeEntry], timeout: float,
                     progress: Progress | None) -> None:
        """Spawn `entries` and wait for the whole cluster to converge.

        With no node running, the first one is the seed and starts alone; the others start
        together, each bootstrapping through up to three nodes already answering (joining
        through a node that is still starting would only cost a bootstrap timeout).
        """
        for entry in entries:
            self._check_key(entry)
        deadline = trio.current_time() + timeout
        async with open_tools(timeout=2.0) as tools:
            live = [e for e in info.nodes if self.is_alive(e) and e not in entries]
            pending = list(entries)
            if not live and pending:
                seed = pending.pop(0)
                self.spawn(info, seed, [])
                self.save(info)
                await self._wait_converged(tools, info, [seed], deadline, timeout, progress)
                live = [seed]
            for entry in pending:
                contacts = self.rng.sample(live, min(3, len(live)))
                self.spawn(info, entry, [c.address for c in contacts])
            self.save(info)
            # Everyone running, and the new ones even if they died (that is then reported).
            targets = [e for e in info.nodes if e in entries or self.is_alive(e)]
            await self._wait_converged(tools, info, targets, deadline, timeout, progress)

    @staticmethod
    def _check_key(entry: NodeEntry) -> None:
        """A node restarts under the name cluster.json records, or not at all: a node whose
        key is gone would come back as a stranger at the old address."""
        key_file = entry.path / NODE_KEY_FILE
        try:
            name = Keypair.load_or_create(key_file).name.hex() if key_file.exists() else None
        except ValueError as exc:
            raise BadClusterFile(str(exc)) from None
        if name != entry.id:
            raise BadClusterFile(f"node {entry.index}'s key {key_file} is missing or not the one "
                               f"cluster.json records; `safenet cluster down --purge` starts afresh")

    async def wait_converged(self, timeout: float = START_TIMEOUT,
                             progress: Progress | None = None) -> None:
        """Wait until every running node is ready and knows min(n - 1, k) others."""
        info = self.load()
        deadline = trio.current_time() + timeout
        async with open_tools(timeout=2.0) as tools:
            await self._wait_converged(tools, info, self.alive(info), deadline, timeout, progress)

    async def _wait_converged(self, tools: NodeTools, info: ClusterFile, entries: list[NodeEntry],
                              deadline: float, timeout: float, progress: Progress | None) -> None:
        """Poll `entries` until each answers ready with contacts >= min(n - 1, k), where n is
        the number of running nodes. A node whose process died is an error at once."""
        started = trio.current_time()
        while True:
            for entry in entries:
                if entry.pid is not None and not self.is_alive(entry):
                    why = _tail(entry.path / STDERR_FILE) or "no output"
                    raise ClusterUnavailable(f"node {entry.index} exited during start-up: {why}")
            want = min(len(self.alive(info)) - 1, ROUTING_K)
            statuses = await tools.statuses([(e.address, e.name) for e in entries])
            answering = [s for s in statuses if s is not None]
            ready = [s for s in answering if s.get("ready")]
            converged = [s for s in ready if int(s.get("contacts", 0)) >= want]
            state = WaitState(trio.current_time() - started, len(entries), len(answering), len(ready),
                              len(converged), want,
                              min((int(s.get("contacts", 0)) for s in answering), default=None))
            if progress is not None:
                progress(state)
            if len(converged) == len(entries):
                return
            if trio.current_time() >= deadline:
                lagging = [f"{e.index}:{self._describe(s, want)}" for e, s in zip(entries, statuses, strict=True)
                           if s is None or not s.get("ready") or int(s.get("contacts", 0)) < want]
                raise ClusterUnavailable(f"not converged after {timeout:g}s: " + ", ".join(lagging))
            await trio.sleep(POLL_INTERVAL)

    @staticmethod
    def _describe(status: dict[str, Any] | None, want: int) -> str:
        if status is None:
            return "not answering"
        if not status.get("ready"):
            return "joining"
        return f"{status.get('contacts')}/{want} contacts"

    # ------------------------------------------------------------------ looking at it

    async def status(self, tools: NodeTools | None = None) -> list[NodeReport]:
        """Every node of the cluster: alive or not, and its `status` reply when it answers."""
        info = self.load()
        if tools is None:
            async with open_tools(timeout=3.0) as own:
                return await self.status(own)
        alive = [self.is_alive(e) for e in info.nodes]
        asked = [a or e.remote for e, a in zip(info.nodes, alive, strict=True)]
        targets = [(e.address, e.name) for e, a in zip(info.nodes, asked, strict=True) if a]
        answers = iter(await tools.statuses(targets))
        reports = []
        for entry, is_alive, ask in zip(info.nodes, alive, asked, strict=True):
            status = next(answers) if ask else None
            # A remote node's process is out of sight: it is alive when it answers.
            reports.append(NodeReport(entry, is_alive or (entry.remote and status is not None), status))
        return reports

    async def add_remote(self, address: str, *, timeout: float = 10.0) -> NodeEntry:
        """Record the node answering at `address` (on another machine) in cluster.json, so
        clients use it and `status` shows it. It must answer `status` within `timeout`."""
        with self.locked():
            info = self.load()
            if any(e.address == address for e in info.nodes):
                raise BadClusterRequest(f"{address} is already in the cluster")
            async with open_tools(timeout=timeout) as tools:
                status = await tools.try_status(address)
            if status is None:
                raise ClusterUnavailable(f"no node answered at {address} within {timeout:g}s")
            node_id = str(status.get("id", ""))
            if any(e.id == node_id for e in info.nodes):
                raise BadClusterRequest(f"the node at {address} ({node_id[:16]}) is already in the cluster")
            entry = NodeEntry(max((e.index for e in info.nodes), default=-1) + 1, node_id, address,
                              None, "", remote=True)
            entry.name  # noqa: B018 - a malformed id fails here, before it is recorded
            info.nodes.append(entry)
            self.save(info)
            return entry

    async def locate(self, name: str | bytes, tools: NodeTools | None = None) -> dict[str, Any]:
        """The close group of `name` as the network reports it (asked of the live node closest
        to the name) and which of its members hold a copy now (each one asked). The shape is
        the contract of `cluster locate --json`; `others` lists live non-members that still
        hold a copy (a node keeps an item a grace period after leaving its group)."""
        target = parse_name(name)
        if tools is None:
            async with open_tools(timeout=3.0) as own:
                return await self.locate(target, own)
        info = self.load()
        live = sorted([e for e in info.nodes if e.remote or self.is_alive(e)], key=lambda e: e.name.distance(target))
        if not live:
            raise ClusterUnavailable("no node of the cluster is running")
        group: list[XorName] | None = None
        asked = None
        for entry in live:
            with contextlib.suppress(*UNANSWERED):
                group = (await tools.locate(entry.address, target, expect=entry.name)).close_group
                asked = entry
                break
        if group is None or asked is None:
            raise ClusterUnavailable("no running node answered `locate`")
        holds: dict[XorName, bool] = {}

        async def ask(entry: NodeEntry) -> None:
            with contextlib.suppress(*UNANSWERED):
                holds[entry.name] = (await tools.locate(entry.address, target, expect=entry.name)).holds

        async with trio.open_nursery() as nursery:
            for entry in live:
                nursery.start_soon(ask, entry)
        members = set(group)
        return {
            "name": target.hex(),
            "close_group": [n.hex() for n in group],
            "holders": [n.hex() for n in group if holds.get(n)],
            "others": sorted(n.hex() for n, held in holds.items() if held and n not in members),
            "asked": asked.index,
        }


