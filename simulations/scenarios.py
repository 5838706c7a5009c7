"""The named chaos scenarios: which faults, which workload, how hard.

`safenet chaos list` prints this table; `simulations.run.run_sim` plays one scenario for
one seed. A scenario is data, so a new one is a new entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .attackers import ATTACKS, KINDS
from .faults import FAULTS, ChurnConfig, NemesisConfig
from .network import LinkModel
from .workloads import WorkloadConfig

PARTITIONS = {"partition-halves": 1.0, "partition-one": 1.0, "partition-ring": 1.0, "partition-asym": 1.0}
LINKS = {"loss": 1.0, "delay": 1.0, "duplicate": 1.0, "reorder": 1.0, "clog": 1.0, "swizzle": 0.5, "slow-node": 0.5}


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: dict[str, float] = field(default_factory=dict)  # nemesis menu: fault -> weight
    nemesis: NemesisConfig = NemesisConfig()
    churn: ChurnConfig | None = None
    byzantine: int = 0  # how many nodes lie
    byzantine_modes: tuple[str, ...] = ("forge", "stale", "chunks")
    attacks: tuple[str, ...] = ()  # protocol-level attacks (simulations.attackers); none: no attackers
    attackers: tuple[str, ...] = KINDS  # who attacks: outsiders ("ghost", "stranger") and a group "member"
    workload: WorkloadConfig = WorkloadConfig()
    link: LinkModel = LinkModel()
    nodes: int = 16
    duration: float = 60.0
    quiet: float = 30.0  # after the final heal, before the final reads and replica checks

    def injects(self) -> list[str]:
        out = [f"{name} ({FAULTS[name][0]})" for name in sorted(self.faults)]
        if self.churn is not None:
            c = self.churn
            out.append(f"churn ({c.distribution} sessions, mean {c.session_mean:g}s, shape {c.shape:g}; "
                       f"rejoin after ~{c.dead_mean:g}s with a new key)")
        if self.byzantine:
            out.append(f"{self.byzantine} Byzantine node(s) lying in replies: {', '.join(self.byzantine_modes)}")
        if self.attacks:
            out.append(f"attackers ({', '.join(self.attackers)}) sending forged node messages: "
                       f"{', '.join(self.attacks)}")
        return out

    def with_(self, **changes: Any) -> Scenario:
        return replace(self, **changes)


_SCENARIOS = [
    Scenario("calm", "no faults: the baseline every other scenario is compared with"),
    Scenario("partitions", "network partitions of every shape, healed after a few seconds", dict(PARTITIONS)),
    Scenario("kill-restart", "nodes killed (kill -9, unsynced writes lost) and restarted with their disks",
             {"kill": 1.0}, NemesisConfig(interval=3.0)),
    Scenario("disk-loss", "nodes killed with their disks lost; each returns as a new node",
             {"wipe": 1.0, "kill": 0.5}, NemesisConfig(interval=5.0)),
    Scenario("pause", "nodes paused (SIGSTOP) and resumed, their timers overdue", {"pause": 1.0},
             NemesisConfig(interval=3.0)),
    Scenario("links", "message loss, delay spikes, duplication, reordering, clogged paths, swizzle-clogging",
             dict(LINKS)),
    Scenario("churn", "nodes leave for good and new ones join, heavy-tailed (Pareto) sessions",
             {}, churn=ChurnConfig(session_mean=40.0, dead_mean=8.0)),
    Scenario("byzantine", "one node lies in every reply it can (forged and stale MD reads, corrupted chunks), "
             "outsiders posing as nodes and a Byzantine member of an MD's group send forged, replayed and "
             "hostile node messages, while others pause, crash, get cut off or rot (so honest replicas lag "
             "behind the liars' stories)",
             {"corrupt": 1.0, "kill": 0.5, "pause": 1.0, "partition-one": 1.0, "partition-asym": 1.0, "loss": 1.0},
             NemesisConfig(interval=2.0),
             byzantine=1, attacks=tuple(ATTACKS)),
    Scenario("client-crash", "clients killed in the middle of their operations", {"client-crash": 1.0},
             NemesisConfig(interval=2.0)),
    Scenario("corruption", "stored records and chunks corrupted on disk (bit rot)", {"corrupt": 1.0},
             NemesisConfig(interval=3.0)),
    Scenario("eventstore", "event-store appends with expected versions and stream reads, under kills, "
             "pauses and partitions", {"kill": 1.0, "pause": 1.0, "partition-one": 1.0, "partition-halves": 0.5},
             NemesisConfig(interval=4.0),
             workload=WorkloadConfig(processes=1, chunk_processes=0, es_processes=3, es_writers=48)),
    Scenario("mixed", "everything crash-shaped at once: partitions, kills, lost disks, pauses, link faults, "
             "bit rot, client crashes and churn (liars have their own scenario, `byzantine`)",
             {**PARTITIONS, "kill": 1.5, "wipe": 0.5, "pause": 1.0, "corrupt": 0.5, "client-crash": 0.5,
              **{k: v * 0.5 for k, v in LINKS.items()}},
             NemesisConfig(interval=2.5), churn=ChurnConfig(session_mean=300.0, dead_mean=10.0)),
]
_MIXED = _SCENARIOS[-1]
_SCENARIOS.append(_MIXED.with_(
    name="mixed-nopart",
    summary="mixed without the partitions: separates what partitions explain from what they do not",
    faults={k: v for k, v in _MIXED.faults.items() if k not in PARTITIONS},
))

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _SCENARIOS}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
