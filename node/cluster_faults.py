"""Faults on a running local cluster: partitions, paused processes, loss, delay, clogged links.

`safenet cluster fault ...` and the web UI's network page both use `ClusterFaults`. The
faults in force are kept in `DIR/faults.json`, so `cluster status`, the UI and a later
`heal` all see the same picture, and a node that restarts gets its rules back.

Each node enforces its share through its transport's fault hook (`node.fault_rules`), set
over the admin channel with the cluster's admin key: a cut link A -> B is in A's `block_out`
and B's `block_in` (so it holds even if one side restarted without its rules yet), loss and
delay are per node, a clogged link is a `slow` entry on both ends. Pause and resume are
SIGSTOP and SIGCONT to the process.

The state is a small JSON object:

    {"cuts": [[0, 3], [3, 0], ...],       directed links cut: 0's messages to 3 are dropped
     "partition": {...} | null,           how the cuts were asked for, for people to read
     "clogs": [[a, b, seconds], ...],     links whose messages wait `seconds` each way
     "loss": {"2": 0.1}, "delay": {"2": [0.05, 0.15]},  per node index
     "paused": [4]}
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from . import netns
from .clusterfile import BadClusterRequest, ClusterFile, NodeEntry
from .launcher import FAULTS_FILE, LocalCluster
from .tools import UNANSWERED, NodeTools, open_tools

DEFAULT_CLOG_SECONDS = 5.0
MAX_DELAY_MS = 60_000


@dataclass
class FaultState:
    """The faults in force on a cluster (see the module docstring for the file's shape)."""

    cuts: set[tuple[int, int]] = field(default_factory=set)
    partition: dict[str, Any] | None = None
    clogs: dict[tuple[int, int], float] = field(default_factory=dict)
    loss: dict[int, float] = field(default_factory=dict)
    delay: dict[int, tuple[float, float]] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "cuts": sorted([a, b] for a, b in self.cuts),
            "partition": self.partition,
            "clogs": sorted([a, b, s] for (a, b), s in self.clogs.items()),
            "loss": {str(i): p for i, p in sorted(self.loss.items())},
            "delay": {str(i): list(d) for i, d in sorted(self.delay.items())},
            "paused": sorted(self.paused),
        }

    @classmethod
    def from_json(cls, raw: Any) -> FaultState:
        try:
            return cls(
                {(int(a), int(b)) for a, b in raw.get("cuts", [])},
                raw.get("partition"),
                {(int(a), int(b)): float(s) for a, b, s in raw.get("clogs", [])},
                {int(i): float(p) for i, p in raw.get("loss", {}).items()},
                {int(i): (float(d[0]), float(d[1])) for i, d in raw.get("delay", {}).items()},
                {int(i) for i in raw.get("paused", [])},
            )
        except (AttributeError, TypeError, ValueError, IndexError):
            return cls()  # a damaged file is no fault at all, which `heal` would leave too

    def empty(self) -> bool:
        return not (self.cuts or self.clogs or self.loss or self.delay or self.paused)

    def rules_for(self, index: int, info: ClusterFile) -> dict[str, Any]:
        """Node `index`'s transport rules (the `configure` shape of `FaultRules`)."""
        ids = {e.index: e.id for e in info.nodes}
        slow: dict[str, float] = {}
        for (a, b), seconds in self.clogs.items():
            other = b if a == index else a if b == index else None
            if other is not None and other in ids:
                slow[ids[other]] = max(seconds, slow.get(ids[other], 0.0))
        return {
            "block_out": sorted(ids[b] for a, b in self.cuts if a == index and b in ids),
            "block_in": sorted(ids[a] for a, b in self.cuts if b == index and a in ids),
            "loss": self.loss.get(index, 0.0),
            "delay": list(self.delay.get(index, (0.0, 0.0))),
            "slow": slow,
        }

    def describe(self) -> list[str]:
        """One line per fault, for people."""
        lines: list[str] = []
        if self.partition is not None:
            kind = self.partition.get("kind")
            if kind == "isolate":
                lines.append(f"node {self.partition['node']} isolated")
            else:
                sides = " | ".join(",".join(map(str, g)) for g in self.partition.get("groups", []))
                arrow = " (one way: messages from the first side to the others are dropped)" \
                    if self.partition.get("one_way") else ""
                lines.append(f"partition {sides}{arrow}")
        for (a, b), s in sorted(self.clogs.items()):
            lines.append(f"link {a}-{b} clogged ({s:g} s a message)")
        if self.loss:
            lines.append("loss " + _by_value(self.loss, lambda p: f"{p * 100:g}%"))
        if self.delay:
            lines.append("delay " + _by_value(self.delay, lambda d: f"{d[0] * 1000:g}-{d[1] * 1000:g} ms"))
        if self.paused:
            lines.append("paused " + ", ".join(map(str, sorted(self.paused))))
        return lines


def _by_value(per_node: dict[int, Any], show: Any) -> str:
    """{0: x, 1: x, 2: y} -> 'x on nodes 0,1; y on node 2'."""
    groups: dict[str, list[int]] = {}
    for index, value in sorted(per_node.items()):
        groups.setdefault(show(value), []).append(index)
    return "; ".join(f"{text} on node{'s' if len(nodes) > 1 else ''} {','.join(map(str, nodes))}"
                     for text, nodes in groups.items())


def parse_group(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; BadClusterRequest on anything else."""
    try:
        group = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadClusterRequest(f"{text!r} is not a list of node indexes like 0,1,2") from None
    if not group or any(i < 0 for i in group):
        raise BadClusterRequest(f"{text!r} is not a list of node indexes like 0,1,2")
    return group


class ClusterFaults:
    """Faults on the cluster in `lc`'s dir: change them, apply them, show them."""

    def __init__(self, lc: LocalCluster) -> None:
        self.lc = lc

    @property
    def file(self) -> Path:
        return self.lc.data_dir / FAULTS_FILE

    def load(self) -> FaultState:
        try:
            return FaultState.from_json(json.loads(self.file.read_text()))
        except (OSError, ValueError):
            return FaultState()

    def save(self, state: FaultState) -> None:
        if state.empty():
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()
            return
        tmp = self.file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        tmp.replace(self.file)

    # ------------------------------------------------------------------ checks

    def _indexes(self, info: ClusterFile, indexes: Iterable[int]) -> list[int]:
        known = {e.index for e in info.nodes}
        out = []
        for i in indexes:
            if i not in known:
                self.lc.node(info, i)  # raises NoSuchNode with the valid range
            if i not in out:
                out.append(i)
        return out

    # ------------------------------------------------------------------ changes

    async def partition(self, groups: Sequence[Sequence[int]], *, one_way: bool = False) -> dict[str, Any]:
        """Cut every link between different groups (from the first group to the others only,
        with `one_way`). Nodes named in no group form one more group. Replaces the partition
        in force (clogs, loss, delay and pauses stay)."""
        info = self.lc.load()
        sides = [self._indexes(info, g) for g in groups]
        seen: set[int] = set()
        for side in sides:
            if seen & set(side):
                raise BadClusterRequest(f"node {sorted(seen & set(side))[0]} is on two sides of the partition")
            seen |= set(side)
        rest = [e.index for e in info.nodes if e.index not in seen]
        if rest:
            sides.append(rest)
        if len(sides) < 2:
            raise BadClusterRequest("a partition needs two sides (every node is on one side)")
        side_of = {i: n for n, side in enumerate(sides) for i in side}
        cuts = {(a, b) for a in side_of for b in side_of if side_of[a] != side_of[b]}
        if one_way:
            cuts = {(a, b) for a, b in cuts if side_of[a] == 0}
        def apply(s: FaultState) -> None:
            s.cuts, s.partition = cuts, {"kind": "partition", "groups": sides, "one_way": one_way}
        return await self._change(apply)

    async def isolate(self, index: int) -> dict[str, Any]:
        """Cut node `index` off from every other node, both ways."""
        info = self.lc.load()
        self._indexes(info, [index])
        others = [e.index for e in info.nodes if e.index != index]
        cuts = {(index, o) for o in others} | {(o, index) for o in others}
        def apply(s: FaultState) -> None:
            s.cuts, s.partition = cuts, {"kind": "isolate", "node": index}
        return await self._change(apply)

    async def clog(self, a: int, b: int, seconds: float = DEFAULT_CLOG_SECONDS) -> dict[str, Any]:
        """Every message between `a` and `b` (both ways) waits `seconds` more."""
        info = self.lc.load()
        self._indexes(info, [a, b])
        if a == b:
            raise BadClusterRequest("clog needs two different nodes")
        if not 0 < seconds <= 3600:
            raise BadClusterRequest(f"a clog holds messages 0 < seconds <= 3600, got {seconds:g}")
        key = (min(a, b), max(a, b))
        return await self._change(lambda s: s.clogs.__setitem__(key, seconds))

    async def loss(self, percent: float, nodes: Sequence[int] | None = None) -> dict[str, Any]:
        """Drop `percent` of the messages the nodes (default: all) send; 0 lifts it."""
        if not 0 <= percent <= 100:
            raise BadClusterRequest(f"loss is a percentage 0..100, got {percent:g}")
        info = self.lc.load()
        chosen = self._indexes(info, nodes) if nodes else [e.index for e in info.nodes]

        def apply(s: FaultState) -> None:
            for i in chosen:
                if percent:
                    s.loss[i] = percent / 100
                else:
                    s.loss.pop(i, None)
        return await self._change(apply)

    async def delay(self, ms: float, jitter_ms: float = 0.0, nodes: Sequence[int] | None = None) -> dict[str, Any]:
        """Hold every message the nodes (default: all) send MS +- JITTER milliseconds; 0 lifts it."""
        if not 0 <= ms <= MAX_DELAY_MS or not 0 <= jitter_ms <= MAX_DELAY_MS:
            raise BadClusterRequest(f"delay and jitter are 0..{MAX_DELAY_MS} ms, got {ms:g} and {jitter_ms:g}")
        info = self.lc.load()
        chosen = self._indexes(info, nodes) if nodes else [e.index for e in info.nodes]
        window = (max(0.0, ms - jitter_ms) / 1000, (ms + jitter_ms) / 1000)

        def apply(s: FaultState) -> None:
            for i in chosen:
                if window[1] > 0:
                    s.delay[i] = window
                else:
                    s.delay.pop(i, None)
        return await self._change(apply)

    def pause(self, index: int) -> bool:
        """SIGSTOP node `index`. False if it was already paused; ClusterError if not running."""
        return self._signal(index, signal.SIGSTOP, pause=True)

    def resume(self, index: int) -> bool:
        """SIGCONT node `index`. False if it was not paused."""
        return self._signal(index, signal.SIGCONT, pause=False)

    def _signal(self, index: int, sig: int, *, pause: bool) -> bool:
        with self.lc.locked():
            info = self.lc.load()
            entry = self.lc.local(self.lc.node(info, index), "pause or resume")
            state = self.load()
            if not self.lc.is_alive(entry):
                state.paused.discard(index)
                self.save(state)
                if pause:
                    raise BadClusterRequest(f"node {index} is not running "
                                            f"(start it with `safenet cluster start {index}`)")
                return False
            was = index in state.paused
            if pause == was:
                return False
            assert entry.pid is not None and entry.pid > 0
            os.kill(entry.pid, sig)
            (state.paused.add if pause else state.paused.discard)(index)
            self.save(state)
            return True

    async def heal(self) -> dict[str, Any]:
        """Lift every fault: partitions, clogs, loss, delay; resume paused nodes."""
        state = self.load()
        for index in sorted(state.paused):
            with contextlib.suppress(Exception):
                self.resume(index)
        def clear(s: FaultState) -> None:
            s.cuts, s.partition, s.clogs, s.loss, s.delay = set(), None, {}, {}, {}
        return await self._change(clear)

    async def _change(self, edit: Any) -> dict[str, Any]:
        with self.lc.locked():
            state = self.load()
            edit(state)
            self.save(state)
            info = self.lc.load()
        return await self.apply(info, state)

    # ------------------------------------------------------------------ enforcing

    async def apply(self, info: ClusterFile | None = None, state: FaultState | None = None,
                    tools: NodeTools | None = None) -> dict[str, Any]:
        """Push each running, unpaused node its rules; report who took them."""
        info = info or self.lc.load()
        state = state or self.load()
        if tools is None:
            async with open_tools(self.lc.admin_keys(), timeout=3.0) as own:
                return await self.apply(info, state, own)
        applied: list[int] = []
        missed: list[int] = []
        layout = self._layout(info)

        async def push(entry: NodeEntry) -> None:
            rules = state.rules_for(entry.index, info)
            if layout is not None and not entry.remote:
                # Cuts and loss by the kernel in the node's namespace; the rest stays in the
                # transport (the kernel has no delay here, and a clog is per peer).
                kernel = _kernel_part(rules, info)
                await trio.to_thread.run_sync(partial(netns.apply_kernel, layout, entry.index, **kernel))
                rules = _transport_part(rules)
            if await _set(tools, entry, rules) is None:
                missed.append(entry.index)
            else:
                applied.append(entry.index)

        async with trio.open_nursery() as nursery:
            for entry in info.nodes:
                if entry.index not in state.paused and (entry.remote or self.lc.is_alive(entry)):
                    nursery.start_soon(push, entry)
        return {"faults": state.to_json(), "summary": state.describe(),
                "applied": sorted(applied), "unanswered": sorted(missed)}

    async def status(self, tools: NodeTools | None = None) -> dict[str, Any]:
        """The faults recorded, and each running node's rules in force (asked, not assumed)."""
        info = self.lc.load()
        state = self.load()
        if tools is None:
            async with open_tools(self.lc.admin_keys(), timeout=3.0) as own:
                return await self.status(own)
        in_force: dict[int, dict[str, Any] | None] = {}

        async def ask(entry: NodeEntry) -> None:
            # An empty change answers with the rules in force and changes nothing.
            in_force[entry.index] = await _set(tools, entry, {})

        async with trio.open_nursery() as nursery:
            for entry in info.nodes:
                if entry.index not in state.paused and (entry.remote or self.lc.is_alive(entry)):
                    nursery.start_soon(ask, entry)
        by_id = {e.id: e.index for e in info.nodes}
        layout = self._layout(info)
        by_host = {e.address.rpartition(":")[0]: e.index for e in info.nodes}
        nodes = []
        for entry in info.nodes:
            rules = in_force.get(entry.index)
            want = state.rules_for(entry.index, info)
            kernel = None
            in_force_now: bool | None
            out: list[int] | None
            into: list[int] | None
            if layout is not None and not entry.remote and rules is not None:
                kernel = await trio.to_thread.run_sync(netns.kernel_rules, layout, entry.index)
                in_force_now = kernel is not None and kernel == _kernel_part(want, info) \
                    and _matches(rules, _transport_part(want))
                out = [by_host.get(a, -1) for a in (kernel or {}).get("block_out", [])]
                into = [by_host.get(a, -1) for a in (kernel or {}).get("block_in", [])]
            else:
                in_force_now = None if rules is None else _matches(rules, want)
                out = None if rules is None else [by_id.get(n, -1) for n in rules.get("block_out", [])]
                into = None if rules is None else [by_id.get(n, -1) for n in rules.get("block_in", [])]
            nodes.append({
                "index": entry.index,
                "paused": entry.index in state.paused,
                "answering": rules is not None,
                "in_force": in_force_now,
                "blocked_out": None if out is None else sorted(out),
                "blocked_in": None if into is None else sorted(into),
                "by": "kernel" if kernel is not None else "transport",
            })
        return {"faults": state.to_json(), "summary": state.describe(), "links_cut": len(state.cuts),
                "mode": "netns" if layout is not None else "transport", "nodes": nodes}

    def _layout(self, info: ClusterFile) -> netns.Layout | None:
        if netns.prefix_of(info.host) is None:
            return None
        return netns.Layout.load(self.lc.data_dir)


def _kernel_part(rules: dict[str, Any], info: ClusterFile) -> dict[str, Any]:
    """The cuts (as the peers' IP addresses) and the loss, for nftables."""
    host_of = {e.id: e.address.rpartition(":")[0] for e in info.nodes}
    return {"block_out": sorted(host_of[n] for n in rules["block_out"] if n in host_of),
            "block_in": sorted(host_of[n] for n in rules["block_in"] if n in host_of),
            "loss": round(float(rules["loss"]), 3)}


def _transport_part(rules: dict[str, Any]) -> dict[str, Any]:
    """What stays in the transport in netns mode: delay and clogged links."""
    return dict(rules, block_out=[], block_in=[], loss=0.0)


ATTEMPTS = 4  # a reply can be lost to the very loss in force on that node


async def _set(tools: NodeTools, entry: NodeEntry, rules: dict[str, Any]) -> dict[str, Any] | None:
    """Set (or, with {}, read) `entry`'s rules; the rules in force, or None if it never answered.
    Setting the same rules twice is harmless, so a lost reply is simply asked again."""
    for _attempt in range(ATTEMPTS):
        try:
            return await tools.set_fault(entry.address, rules, expect=entry.name)
        except UNANSWERED:
            pass
    return None


def _matches(got: dict[str, Any], want: dict[str, Any]) -> bool:
    return (sorted(got.get("block_out", [])) == want["block_out"]
            and sorted(got.get("block_in", [])) == want["block_in"]
            and abs(float(got.get("loss", 0)) - want["loss"]) < 1e-9
            and [round(float(x), 9) for x in got.get("delay", [0, 0])] == [round(x, 9) for x in want["delay"]]
            and {k: round(float(v), 9) for k, v in (got.get("slow") or {}).items()}
            == {k: round(v, 9) for k, v in want["slow"].items()})
