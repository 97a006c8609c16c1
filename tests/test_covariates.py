"""Every covariate of a shipped scenario either acts through an effect (a
hazard multiplier or odds ratio that reads it, or the pathway itself) or is
declared ``descriptive``; a descriptive covariate cannot be given an effect."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import scenario_error

from carsim.scenario import load_scenario
from carsim.scenario.conditions import parse_condition
from carsim.scenario.loader import iter_multipliers
from carsim.scenario.vocabulary import REQUIRED_COVARIATES

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(p for p in [*(ROOT / "scenarios").glob("*.yaml"), *(ROOT / "calibration" / "fitted").glob("*.yaml")]
                   if not p.name.startswith("trial_"))


def covariates_with_an_effect(scenario) -> set[str]:
    used = set(REQUIRED_COVARIATES)  # read by the pathway itself (access, bridging, blasts at infusion)
    for _loc, multiplier in iter_multipliers(scenario):
        if multiplier.when_true is not None:
            used |= parse_condition(multiplier.when_true).names
        else:
            used.add(multiplier.per)
    return used


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_covariate_acts_or_is_descriptive(path):
    scenario = load_scenario(path)
    acting = covariates_with_an_effect(scenario)
    idle = sorted(name for name, spec in scenario.cohort.covariates.items()
                  if not spec.descriptive and name not in acting)
    assert not idle, f"{path.name}: covariates without an effect and not marked descriptive: {idle}"


def test_a_descriptive_covariate_cannot_be_given_an_effect(tmp_path):
    multipliers = [{"if": "tp53", "value": 2.0, "assumption": "test"}]
    message = scenario_error(tmp_path, {"pathway": {"relapse": {"cd19neg": {"multipliers": {"replace": multipliers}}}}})
    assert "pathway.relapse.cd19neg.multipliers[0].if" in message or "multipliers.0.if" in message, message
    assert "'tp53' is marked 'descriptive: true'" in message
