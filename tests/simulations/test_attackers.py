"""The simulator's protocol-level attackers, and the integrity checks that name their harm.

Whether the network *resists* the attackers is for the `byzantine` chaos scenario and the
trust breaks of test_breaks.py; here: the attackers really speak the protocol (their messages
reach nodes and get answers), they are deterministic, and each integrity check fails when
its kind of harm is put straight into a node.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.data import Value
from node.paxos import Ballot, item_key
from node.rules import MDataState
from simulations.attackers import ATTACKS, KINDS
from simulations.run import run_sim
from simulations.scenarios import SCENARIOS, get_scenario
from simulations.simulator import Simulator
from simulations.workloads import Workload

SMALL = {"nodes": 8, "duration": 12.0, "quiet": 10.0}
STEPS = 100_000


def test_only_the_byzantine_scenario_attacks() -> None:
    assert set(get_scenario("byzantine").attacks) == set(ATTACKS)
    assert set(get_scenario("byzantine").attackers) == set(KINDS)
    assert [name for name, s in SCENARIOS.items() if s.attacks] == ["byzantine"]


def test_attackers_speak_the_protocol_and_replay_exactly() -> None:
    scenario = get_scenario("byzantine").with_(**SMALL)
    # Every attack of the menu is made within a few seeds (the hostile ballots as prepares and
    # as accepts); which seed makes which depends on what the honest nodes hold at the time.
    sent: set[str] = set()
    for seed in (3, 4, 5):
        run = run_sim(scenario, seed, max_steps=STEPS)
        sent |= {k.split(":")[1].rsplit(":", 1)[0] for k in run.byzantine
                 if k.startswith("attack:") and k.endswith(":sent")}
    for attack in ("forge", "handoff", "stale-prepare", "chunk", "sync"):
        assert attack in sent, sorted(sent)
    assert {"huge-prepare", "huge-accept"} & sent
    first = run_sim(scenario, 3, max_steps=STEPS)
    # ...and the nodes answered them: these are real node messages, not noise.
    answered = [k for k in first.byzantine if k.startswith("attack:") and not k.endswith((":sent", ":unsendable"))]
    assert answered, sorted(first.byzantine)
    assert any(e.what == "attacker" and e.details["role"] == "member" for e in first.events)
    again = run_sim(scenario, 3, max_steps=STEPS)
    assert again.digest == first.digest
    assert again.byzantine == first.byzantine


def _tampered(tamper, scenario_name: str = "calm"):  # type: ignore[no-untyped-def]
    """A short honest run whose nodes are tampered with just before the checks."""

    def inspect(sim: Simulator, workload: Workload) -> None:
        tamper(sim, workload)

    return run_sim(get_scenario(scenario_name).with_(**SMALL), 2, inspect=inspect, max_steps=STEPS)


def _holder(sim: Simulator, workload: Workload):  # type: ignore[no-untyped-def]
    key = item_key(workload.mds[0].address)
    for node in sim.close_group(workload.mds[0].name):
        record = node.core.replicator.records.get(key) if node.core is not None else None
        if record is not None and record.value is not None and record.value.state.md is not None:
            return node, key, record
    raise AssertionError("no copy of md0")


def _kinds(result, check: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {a.kind for a in result.report.checks[check].anomalies}


def test_an_honest_run_passes_the_integrity_checks() -> None:
    result = _tampered(lambda sim, workload: None)
    for check in ("md_integrity", "store_integrity", "unpaid_chunks"):
        assert result.report.checks[check].valid, result.report.checks[check].summary()


def test_a_forged_owner_and_entry_in_one_replica_are_named() -> None:
    def tamper(sim: Simulator, workload: Workload) -> None:
        node, key, record = _holder(sim, workload)
        md = record.value.state.md
        forged = md.replace(owners=frozenset({sim.nodes[0].keys.public}),
                            entries={**md.entries, b"k0": Value(b"never written", 9)})
        node.core.replicator.records[key] = replace(record, value=record.value.with_state(MDataState(forged)))

    assert {"forged-owner", "forged-entry"} <= _kinds(_tampered(tamper), "md_integrity")


def test_forged_members_and_an_md_from_nothing_are_named() -> None:
    def tamper(sim: Simulator, workload: Workload) -> None:
        node, key, record = _holder(sim, workload)
        stranger = bytes(32)
        node.core.replicator.records[key] = replace(record, value=record.value.with_members(
            (type(record.value.members[0])(stranger),) + record.value.members[1:]))
        other = bytes([key[0] ^ 0xFF]) + key[1:]
        md = record.value.state.md.replace(name=type(record.value.members[0])(other[:32]))
        node.core.replicator.records[other] = replace(record, value=record.value.with_state(MDataState(md)))

    assert {"forged-members", "md-from-nothing"} <= _kinds(_tampered(tamper), "md_integrity")


@pytest.mark.parametrize("counter", [2**63, 2**64 - 1])
def test_a_huge_ballot_in_a_record_is_named(counter: int) -> None:
    def tamper(sim: Simulator, workload: Workload) -> None:
        node, key, record = _holder(sim, workload)
        node.core.replicator.records[key] = replace(record, promised=Ballot(counter, b"x"))

    assert "unbounded-ballot" in _kinds(_tampered(tamper), "store_integrity")


def test_an_unencodable_record_an_unreadable_disk_and_a_dead_node_are_named() -> None:
    def tamper(sim: Simulator, workload: Workload) -> None:
        node, key, record = _holder(sim, workload)
        node.core.replicator.records[key] = replace(record, promised=Ballot(2**64, b"x"))
        other = sim.nodes[-1]
        other.store.put_record("md", key, b"\xc1 not msgpack")
        other.store.sync()
        sim.crash(sim.nodes[0])

    result = _tampered(tamper)
    kinds = _kinds(result, "store_integrity")
    assert {"unencodable-record", "node-down"} <= kinds
    # The garbage record on the last node's disk does not stop it: it is quarantined at
    # start (and repaired from the group), so its disk still loads.
    assert "unreadable-store" not in kinds


def test_a_chunk_nobody_put_is_named() -> None:
    def tamper(sim: Simulator, workload: Workload) -> None:
        store = sim.nodes[1].store
        from node.xorname import sha3_256

        store.put_chunk(sha3_256(b"unpaid"), b"unpaid")
        store.sync()

    assert "unpaid-chunk" in _kinds(_tampered(tamper), "unpaid_chunks")
