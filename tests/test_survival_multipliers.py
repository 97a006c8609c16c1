"""Proportional-hazards multipliers on survival laws: T = H^-1(E / m), so
for an exponential law every time is divided by m exactly."""

from __future__ import annotations

import numpy as np
import pytest

from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_cohort


def _post_relapse_days(derived_scenario, value, engine):
    multiplier = [{"per": "prior_lines", "centre": 2.5, "value": value, "assumption": "test"}]
    scenario = derived_scenario({
        "cohort": {"size": 400, "fixed": {"prior_lines": 4}},
        "pathway": {"post_relapse": {"survival": {"cd19neg": {
            "family": "exponential", "median": 9.7, "unit": "months", "assumption": "test",
            "multipliers": multiplier}}}},
    })
    model = ModelDefinition(scenario)
    if engine == "simpy":
        out = simulate_cohort(model, "observe", 0, 400, seed=4).outcomes
    else:
        from carsim.model.simulation import simulate_replications

        out = simulate_replications(model, ["observe"], [0], 400, 4, engine="vectorised")[0].outcomes
    died = (out["relapse_phenotype"] == "cd19neg") & (out["death_cause"] == "post_relapse") \
        & (out["hsct_count"] == 0)
    return out["death_day"][died] - out["relapse_day"][died], died


@pytest.mark.parametrize("engine", ["vectorised", "simpy"])
def test_a_per_line_multiplier_divides_exponential_survival_exactly(derived_scenario, engine):
    base, died_base = _post_relapse_days(derived_scenario, 1.0, engine)
    scaled, died_scaled = _post_relapse_days(derived_scenario, 2.0, engine)
    both = died_base & died_scaled
    assert both.sum() > 10
    ratio = scaled[both[died_scaled]] / base[both[died_base]]
    np.testing.assert_allclose(ratio, 2.0 ** -(4 - 2.5), rtol=1e-9)


def test_centre_needs_per(tmp_path):
    from conftest import scenario_error

    message = scenario_error(tmp_path, {"pathway": {"relapse": {"cd19neg": {"multipliers": {"replace": [
        {"if": "kmt2a", "centre": 1, "value": 2, "assumption": "x"}]}}}}})
    assert "'centre' goes with 'per" in message
