"""Kernel-level network faults: each node of a cluster in its own Linux network namespace.

`safenet cluster up --netns` (Linux, root, `ip` and `nft`) gives every node a namespace of its
own with one interface on a bridge and its own address on a private /24, as if each were a
host on a LAN. The bridge itself holds the subnet's .1, so the launcher, `cluster status`,
the UI and clients in the ordinary namespace reach every node; the nodes reach each other
only across the bridge. `cluster fault` then cuts links and drops packets with nftables
inside the namespaces (the kernel drops them: TCP sees real timeouts and retransmissions),
while delay and clogged links stay in the transport's fault layer.

Names are made from a tag derived from the cluster's data dir, so two clusters never share
them: namespaces `sf<tag>-<i>`, the bridge `sfb<tag>`, host-side veths `sfv<tag><i>`. What
was made is recorded in `DIR/netns.json` before it is made, and `destroy` removes what the
file names and anything else carrying the tag, so `cluster down` cleans up after a crash
too. Nothing here sends traffic anywhere but to the namespaces it created.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .clusterfile import BadClusterRequest, ClusterError

NETNS_FILE = "netns.json"
NODE_PORT = 7000  # every node has its own address, so they can all use one port
FIRST_HOST = 10  # node i is .(10 + i); .1 is the bridge
MAX_NODES = 240
TABLE = "safenet"
HOST_MARK = "netns:"  # ClusterFile.host of a netns cluster: "netns:10.A.B"


class NetnsUnavailable(BadClusterRequest):
    """Namespaces cannot be made here: not Linux, not root, or `ip` / `nft` missing."""


def missing() -> str | None:
    """Why netns mode cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or without --netns)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install -y {package})"
    return None


def check_available() -> None:
    why = missing()
    if why is not None:
        raise NetnsUnavailable(f"--netns: {why}")


def _run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise ClusterError(f"`{' '.join(args[:6])}` failed: {(result.stderr or result.stdout).strip()[:200]}")
    return result


def tag_for(data_dir: Path) -> str:
    return hashlib.sha256(str(Path(data_dir).absolute()).encode()).hexdigest()[:6]


@dataclass
class Layout:
    """What a netns cluster is made of (DIR/netns.json)."""

    tag: str
    prefix: str  # "10.A.B": the /24 the nodes live on
    bridge: str
    namespaces: dict[int, str] = field(default_factory=dict)
    veths: dict[int, str] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    def address_of(self, index: int) -> str:
        return f"{self.prefix}.{FIRST_HOST + index}"

    def namespace(self, index: int) -> str:
        return f"sf{self.tag}-{index}"

    def exec_prefix(self, index: int) -> list[str]:
        """The command prefix that runs a program inside node `index`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(index)]

    def save(self, data_dir: Path) -> None:
        tmp = data_dir / (NETNS_FILE + ".tmp")
        raw = asdict(self)
        raw["namespaces"] = {str(k): v for k, v in self.namespaces.items()}
        raw["veths"] = {str(k): v for k, v in self.veths.items()}
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        tmp.replace(data_dir / NETNS_FILE)

    @classmethod
    def load(cls, data_dir: Path) -> Layout | None:
        try:
            raw = json.loads((data_dir / NETNS_FILE).read_text())
            return cls(str(raw["tag"]), str(raw["prefix"]), str(raw["bridge"]),
                       {int(k): str(v) for k, v in raw.get("namespaces", {}).items()},
                       {int(k): str(v) for k, v in raw.get("veths", {}).items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def _subnet_free(prefix: str) -> bool:
    net = ipaddress.ip_network(f"{prefix}.0/24")
    routes = _run("ip", "-4", "route", "show", "table", "all", check=False).stdout
    for word in routes.split():
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(word, strict=False).overlaps(net) and word not in ("default",):
                return False
    return True


def pick_prefix(tag: str) -> str:
    """A 10.A.B /24 no route of this machine touches, starting from one the tag picks."""
    start = int(tag, 16)
    for step in range(4096):
        n = (start + step * 7919) % (250 * 250)
        prefix = f"10.{1 + n // 250}.{n % 250}"
        if _subnet_free(prefix):
            return prefix
    raise ClusterError("no free 10.x.y.0/24 for the cluster's namespaces")


def prefix_of(host: str) -> str | None:
    return host[len(HOST_MARK):] if host.startswith(HOST_MARK) else None


def create(data_dir: Path, prefix: str | None = None) -> Layout:
    """The bridge (and netns.json) for a netns cluster in `data_dir`; nodes come with
    `add_node`. `prefix` reuses a cluster's recorded subnet (a restart after `down`)."""
    check_available()
    tag = tag_for(data_dir)
    layout = Layout.load(data_dir) or Layout(tag, prefix or pick_prefix(tag), f"sfb{tag}")
    layout.save(data_dir)  # recorded before it exists: a crash midway is still cleaned up
    if _run("ip", "link", "show", layout.bridge, check=False).returncode != 0:
        _run("ip", "link", "add", layout.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{layout.gateway}/24", "dev", layout.bridge)
        _run("ip", "link", "set", layout.bridge, "up")
    return layout


def add_node(data_dir: Path, layout: Layout, index: int) -> str:
    """Node `index`'s namespace, wired to the bridge (made if missing); its HOST:PORT."""
    if not 0 <= index < MAX_NODES:
        raise BadClusterRequest(f"a netns cluster holds at most {MAX_NODES} nodes")
    ns, veth, peer = layout.namespace(index), f"sfv{layout.tag}{index}", f"sfp{layout.tag}{index}"
    layout.namespaces[index], layout.veths[index] = ns, veth
    layout.save(data_dir)
    if ns not in _run("ip", "netns", "list").stdout.split():
        _run("ip", "netns", "add", ns)
    if _run("ip", "link", "show", veth, check=False).returncode != 0:
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", ns)
        _run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{layout.address_of(index)}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "set", veth, "master", layout.bridge)
        _run("ip", "link", "set", veth, "up")
    return f"{layout.address_of(index)}:{NODE_PORT}"


def leftovers(tag: str) -> list[str]:
    """Namespaces and links carrying `tag` that exist now (empty after `destroy`)."""
    found = [f"netns {n}" for n in _run("ip", "netns", "list", check=False).stdout.split()
             if n.startswith(f"sf{tag}-")]
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name in (f"sfb{tag}",) or name.startswith((f"sfv{tag}", f"sfp{tag}")):
                found.append(f"link {name}")
    return found


def destroy(data_dir: Path) -> list[str]:
    """Remove every namespace, veth and bridge of the cluster in `data_dir` (the nft rules
    live in the namespaces and go with them) and netns.json; return what was removed."""
    if missing() is not None and not (data_dir / NETNS_FILE).exists():
        return []
    layout = Layout.load(data_dir)
    tag = layout.tag if layout is not None else tag_for(data_dir)
    removed = []
    for item in leftovers(tag):
        kind, name = item.split(" ", 1)
        if kind == "netns":
            _run("ip", "netns", "del", name, check=False)
            removed.append(item)
    for item in leftovers(tag):  # veths die with their namespace's end; the bridge stays
        _, name = item.split(" ", 1)
        _run("ip", "link", "del", name, check=False)
        removed.append(item)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / NETNS_FILE).unlink()
    return removed


# ------------------------------------------------------------------------------ faults


def nft_script(block_out: list[str], block_in: list[str], loss: float, gateway: str) -> str:
    """The node namespace's whole `safenet` table: drops to and from the cut peers' addresses,
    and random loss on what it sends to other nodes (never to the bridge's address, where
    the launcher and the tools talk to it)."""
    out_rules, in_rules = [], []
    if block_out:
        out_rules.append(f"ip daddr {{ {', '.join(sorted(block_out))} }} drop")
    if loss > 0:
        out_rules.append(f"ip daddr != {gateway} numgen random mod 1000 < {round(loss * 1000)} drop")
    if block_in:
        in_rules.append(f"ip saddr {{ {', '.join(sorted(block_in))} }} drop")
    body = "\n".join(f"    {r}" for r in out_rules)
    body_in = "\n".join(f"    {r}" for r in in_rules)
    return (f"table inet {TABLE} {{}}\n"
            f"delete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n"
            f"  chain output {{\n    type filter hook output priority 0; policy accept;\n{body}\n  }}\n"
            f"  chain input {{\n    type filter hook input priority 0; policy accept;\n{body_in}\n  }}\n"
            f"}}\n")


def apply_kernel(layout: Layout, index: int, block_out: list[str], block_in: list[str], loss: float) -> None:
    """Replace node `index`'s nftables rules (atomically: `nft -f` applies a script whole)."""
    script = nft_script(block_out, block_in, loss, layout.gateway)
    _run(*layout.exec_prefix(index), "nft", "-f", "-", stdin=script)


def kernel_rules(layout: Layout, index: int) -> dict[str, Any] | None:
    """What node `index`'s namespace drops now: addresses cut each way, loss; None if its
    namespace is gone."""
    result = _run(*layout.exec_prefix(index), "nft", "-j", "list", "table", "inet", TABLE, check=False)
    if result.returncode != 0:
        return None if layout.namespace(index) not in _run("ip", "netns", "list").stdout.split() \
            else {"block_out": [], "block_in": [], "loss": 0.0}
    out: dict[str, Any] = {"block_out": [], "block_in": [], "loss": 0.0}
    for item in json.loads(result.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            match = expr.get("match")
            if not match:
                continue
            field_name = match.get("left", {}).get("payload", {}).get("field")
            right = match.get("right")
            if match.get("op") == "==" and field_name in ("daddr", "saddr"):
                values = right.get("set", []) if isinstance(right, dict) else [right]
                key = "block_out" if field_name == "daddr" else "block_in"
                out[key] += [v for v in values if isinstance(v, str)]
            if match.get("op") == "<" and "numgen" in match.get("left", {}):
                out["loss"] = int(right) / 1000
    out["block_out"].sort()
    out["block_in"].sort()
    return out
