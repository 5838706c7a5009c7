"""A move never shrinks an MD's group below R (node/proposer.py, `Proposal.compute`).

Byzantine seed 266: a partition left one member's view with four nodes near md0, one of
them far from its name. That member moved md0 to those four; once the partition healed,
the other members placed that node far away, no member could check the move (it names a
member they do not find plausible, `Acceptor.apply_step`) and every honest round on md0
failed for the rest of the run (`placement` and `convergence` invalid, final reads lost).
A view of fewer than R nodes is a cut-down one, and the move now waits for a full view.
"""

from __future__ import annotations

from simulations.run import run_sim
from simulations.scenarios import get_scenario


def test_byzantine_seed_266_settles_md0_in_its_close_group() -> None:
    result = run_sim(get_scenario("byzantine"), 266)
    assert result.valid, result.report.summary()
    assert result.report.checks["placement"].status == "valid"
    assert result.report.checks["convergence"].status == "valid"
