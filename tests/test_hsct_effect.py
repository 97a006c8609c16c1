"""The effective relapse hazard ratio of consolidative HSCT, measured on the
simulated cohort the way the publications compared transplanted with
untransplanted responders (same patients under hsct_all and observe, from
the day of HSCT, cause-specific Cox in lifelines)."""

from __future__ import annotations

import pytest

from carsim.calibration.recovery import consolidative_hsct_effect
from carsim.model.definition import ModelDefinition

A = "test"


def test_a_proportional_hsct_effect_comes_back_out(derived_scenario):
    """Relapse hazards that read nothing but the transplant (x 0.25): the
    measured HR is 0.25 whatever B-cell aplasia did, within the 95% CI."""
    only_hsct = [{"if": "transplanted", "value": 0.25, "assumption": A}]
    scenario = derived_scenario({"pathway": {"relapse": {
        name: {"law": {"family": "exponential", "rate": rate, "unit": "years", "assumption": A},
               "multipliers": only_hsct}
        for name, rate in (("cd19pos", 0.6), ("cd19neg", 0.3), ("lineage_switch", 0.05))}}})
    effect = consolidative_hsct_effect(ModelDefinition(scenario), 4000, 5)
    for group in ("overall", "bca_lost", "bca_intact"):
        measured = effect[group]
        assert measured["events"] > 100, group
        assert measured["lower"] < 0.25 < measured["upper"], (group, measured)
    assert effect["overall"]["hr"] == pytest.approx(0.25, rel=0.2)
