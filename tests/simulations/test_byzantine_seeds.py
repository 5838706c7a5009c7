"""Byzantine seeds that once failed, replayed with the real node code in the simulator.

Seed 266 (node/proposer.py, `Proposal.compute`: a move never shrinks a group below R): a
partition left one member's view with four nodes near md0, one of them far from its name.
That member moved md0 to those four; once the partition healed, the other members placed
that node far away, no member could check the move (it names a member they do not find
plausible, `Acceptor.apply_step`) and every honest round on md0 failed for the rest of the
run (`placement` and `convergence` invalid, final reads lost).
"""

from __future__ import annotations

import pytest

from simulations.run import run_sim
from simulations.scenarios import get_scenario


@pytest.mark.parametrize("seed", [266])
def test_a_byzantine_seed_that_once_failed_is_valid(seed: int) -> None:
    result = run_sim(get_scenario("byzantine"), seed)
    assert result.valid, result.report.summary()
    for check in ("placement", "convergence", "conflicting_acks", "linearizable"):
        assert result.report.checks[check].status == "valid", check
