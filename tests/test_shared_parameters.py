"""One published estimate used in several places is one uncertain parameter
(``distribution.shared``): one draw sets every place, and places that share
a draw must agree."""

from __future__ import annotations

from conftest import BASELINE, scenario_error

from carsim.scenario import load_scenario
from carsim.scenario.parameters import apply_values, uncertain_parameters

MRD_PATHS = ("pathway.relapse.cd19pos.multipliers.mrd_present.value", "pathway.relapse.cd19neg.multipliers.mrd_present.value",
             "pathway.relapse.lineage_switch.multipliers.mrd_present.value")


def test_the_mrd_hazard_ratio_is_one_parameter_on_every_phenotype():
    scenario = load_scenario(BASELINE)
    (mrd,) = [p for p in uncertain_parameters(scenario) if p.uncertainty is not None and p.uncertainty.shared == "mrd_relapse_hr"]
    assert mrd.paths == MRD_PATHS
    drawn = apply_values(scenario, {mrd.path: 7.5})
    relapse = drawn.pathway.relapse
    assert [relapse["cd19pos"].multipliers[1].value, relapse["cd19neg"].multipliers[0].value,
            relapse["lineage_switch"].multipliers[1].value] == [7.5, 7.5, 7.5]
    assert len({p.path for p in uncertain_parameters(drawn)}) == len(uncertain_parameters(drawn))


def test_values_that_share_a_draw_must_agree(tmp_path):
    multipliers = [{"if": "mrd_present", "value": 10.0, "source": "test",
                    "distribution": {"family": "lognormal", "ci": [2.87, 50], "shared": "mrd_relapse_hr"}}]
    message = scenario_error(tmp_path, {"pathway": {"relapse": {"cd19neg": {"multipliers": {"replace": multipliers}}}}})
    assert "pathway.relapse.cd19neg.multipliers[0].distribution.shared" in message, message
    assert "shares the draw 'mrd_relapse_hr'" in message
