"""The pathway is extended by the scenario alone: a relapse phenotype with
its own hazard, covariate effect and post-relapse survival runs on both
engines, the covariate's hazard ratio is what the scenario says (re-estimated
by a cause-specific Cox model, lifelines, as a paper would), and an event
kind no patient reaches changes no other random draw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import BASELINE
from lifelines import CoxPHFitter

from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_policies
from carsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
CNS = ROOT / "scenarios" / "cns_phenotype.yaml"


def test_the_shipped_cns_scenario_adds_a_phenotype():
    scenario = load_scenario(CNS)
    assert scenario.relapse_phenotypes == ("cd19pos", "cd19neg", "lineage_switch", "isolated_cns")


def test_both_engines_simulate_the_added_phenotype_alike():
    model = ModelDefinition(load_scenario(CNS))
    fast = simulate_policies(model, ["observe", "hsct_all"], 0, 400, 3, engine="vectorised")
    reference = simulate_policies(model, ["observe", "hsct_all"], 0, 400, 3, engine="simpy")
    for a, b in zip(fast, reference, strict=True):
        np.testing.assert_array_equal(a.outcomes["relapse_phenotype"], b.outcomes["relapse_phenotype"])
        np.testing.assert_allclose(a.outcomes["relapse_day"], b.outcomes["relapse_day"], atol=1e-9, equal_nan=True)
        np.testing.assert_array_equal(a.events["detail"].astype(str), b.events["detail"].astype(str))
        np.testing.assert_allclose(a.events["time_days"], b.events["time_days"], atol=1e-9)
    assert (fast[0].outcomes["relapse_phenotype"] == "isolated_cns").sum() > 0


def test_the_covariate_effect_is_the_hazard_ratio_the_scenario_gives(derived_scenario):
    """Isolated CNS relapse at a constant 0.4/year, x3 with CNS involvement
    (half the cohort); other relapses and deaths censor it.  A cause-specific
    Cox model from the response assessment recovers HR 3: the 95% interval
    of the estimate (about +-20% at these counts) must contain it."""
    scenario = derived_scenario({
        "cohort": {"covariates": {"cns_involvement": {"bernoulli": 0.5, "descriptive": False, "assumption": "test"}}},
        "pathway": {"relapse": {"isolated_cns": {
            "law": {"family": "exponential", "rate": 0.4, "unit": "years", "assumption": "test"},
            "multipliers": [{"if": "cns_involvement", "value": 3.0, "assumption": "test"}]}},
            "post_relapse": {"survival": {"isolated_cns": {"family": "exponential", "median": 30, "unit": "months",
                                                           "assumption": "test"}}}}})
    (result,) = simulate_policies(ModelDefinition(scenario), ["observe"], 0, 4000, 21, record_events=False)
    o, cov = result.outcomes, result.covariates
    cr = o["cr"]
    end = np.where(np.isnan(o["relapse_day"]), o["end_day"], o["relapse_day"])
    data = {"T": (end - o["response_day"])[cr],
            "E": (o["relapse_phenotype"] == "isolated_cns")[cr].astype(int),
            "cns": cov["cns_involvement"][cr].astype(float)}
    fit = CoxPHFitter().fit(pd.DataFrame(data), "T", "E")
    low, high = np.exp(fit.confidence_intervals_.loc["cns"]).to_numpy()
    assert data["E"].sum() > 300
    assert low < 3.0 < high, (low, high)


def _run(scenario: Path, out: Path):
    subprocess.run([sys.executable, "-m", "carsim", "run", str(scenario), "--out", str(out), "--patients", "300",
                    "--n-jobs", "1", "--quiet"], check=True, cwd=ROOT, capture_output=True)
    return (out / "patients.parquet").read_bytes()


def test_an_unused_event_kind_changes_no_other_draw(tmp_path):
    """A relapse phenotype that never fires (rate 0) is a new named stream:
    every other draw, and so patients.parquet, stays byte for byte the same."""
    unused = tmp_path / "unused_kind.yaml"
    unused.write_text(f"""extends: {BASELINE}
pathway:
  relapse:
    never_seen:
      law: {{family: exponential, rate: 0.0, unit: years, assumption: "an event kind no patient reaches"}}
  post_relapse:
    survival:
      never_seen: {{family: exponential, median: 12, unit: months, assumption: "unused"}}
""")
    assert _run(BASELINE, tmp_path / "a") == _run(unused, tmp_path / "b")
