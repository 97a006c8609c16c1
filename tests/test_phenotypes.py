"""Relapse phenotypes come from the scenario: a phenotype added in a scenario
file (here ``isolated_cns``) gets its metrics, outcome choices and
calibration outputs with no code change.

The metric layer is checked on a small synthetic patient table whose values
are known; the end-to-end tests run ``carsim run`` and ``carsim psa`` on the
baseline extended with the phenotype."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BASELINE, ROOT, write_scenario

from carsim.calibration.outputs import UnknownOutput, compute_output, model_outputs, resolve_output
from carsim.calibration.spec import load_calibration
from carsim.cli import main
from carsim.errors import CarsimError, ScenarioError
from carsim.experiment.metrics import (
    TIMES_MONTHS,
    cause_codes,
    compute_metrics,
    death_in_remission_code,
    endpoint_arrays,
    metric_origins,
)
from carsim.experiment.outcomes import resolve_outcome
from carsim.scenario import load_scenario
from carsim.scenario.loader import resolve_extends

CNS = {
    "name": "cns_phenotype",
    "cohort": {"covariates": {"cns_involvement": {"descriptive": False}}},  # it acts here
    "pathway": {
        "relapse": {"isolated_cns": {
            "law": {"family": "exponential", "rate": 0.05, "unit": "years", "assumption": "example"},
            "multipliers": [{"if": "cns_involvement", "value": 3.0, "assumption": "example"}]}},
        "post_relapse": {"survival": {"isolated_cns": {
            "family": "exponential", "median": 30, "unit": "months", "assumption": "example"}}},
    },
}
BUILT_IN = ("cd19pos", "cd19neg", "lineage_switch")
WITH_CNS = (*BUILT_IN, "isolated_cns")
HORIZON_DAYS = 5 * 365.25


@pytest.fixture(scope="module")
def cns_path(tmp_path_factory):
    return write_scenario(tmp_path_factory.mktemp("cns"), CNS, "cns.yaml")


# ------------------------------------------------------------------ the metric layer, synthetic table

def synthetic_table() -> dict:
    """Ten infused responders followed 2,000 days from infusion on day 30:
    relapses on days 100-300 after infusion (two CD19+, one CD19-, three
    isolated CNS), one death in remission (day 400), three censored."""
    n = 10
    infusion = np.full(n, 30.0)
    phenotype = np.array(["cd19pos", "cd19pos", "cd19neg", "isolated_cns", "isolated_cns", "isolated_cns",
                          "none", "none", "none", "none"], dtype=object)
    relapse = np.where(phenotype != "none", infusion + 100.0 + 40.0 * np.arange(n), np.nan)
    death = np.full(n, np.nan)
    death[6] = infusion[6] + 400.0
    end = np.where(np.isnan(death), infusion + 2000.0, death)
    return {
        "infused": np.ones(n, bool), "infusion_day": infusion, "cr": np.ones(n, bool),
        "response_day": infusion + 28.0, "pathway_exit_day": np.full(n, np.nan),
        "relapse_day": relapse, "relapse_phenotype": phenotype, "death_day": death,
        "death_cause": np.where(np.isnan(death), "none", "non_relapse").astype(object), "end_day": end,
        "manufacturing_failure": np.zeros(n, bool), "manufacturing_attempts": np.ones(n, int),
        "wait_manufacturing_days": np.zeros(n), "vein_to_vein_days": np.full(n, 25.0),
        "hsct_count": np.zeros(n, int), "hsct_death": np.zeros(n, bool), "hsct_bed_wait_days": np.full(n, np.nan),
        "reinfusions": np.zeros(n, int),
    }


def _by_key(rows):
    return {(metric, origin, None if np.isnan(t) else t): (value, n) for metric, origin, t, value, n in rows}


def test_cause_codes_follow_the_scenario_order():
    assert cause_codes(WITH_CNS) == {"cd19pos": 1, "cd19neg": 2, "lineage_switch": 3, "isolated_cns": 4}
    assert death_in_remission_code(WITH_CNS) == 5
    assert cause_codes(("isolated_cns", "cd19pos")) == {"isolated_cns": 1, "cd19pos": 2}
    p = synthetic_table()
    _mask, _durations, codes = endpoint_arrays(p, "cir", "infusion", phenotypes=WITH_CNS)
    assert list(codes) == [1, 1, 2, 4, 4, 4, 5, 0, 0, 0]


def test_metrics_of_an_added_phenotype_on_a_synthetic_table():
    rows = _by_key(compute_metrics(synthetic_table(), HORIZON_DAYS, phenotypes=WITH_CNS))
    assert rows[("relapse_share_isolated_cns", "infusion", None)] == (pytest.approx(0.5), 6)
    assert rows[("relapse_share_cd19pos", "infusion", None)] == (pytest.approx(2 / 6), 6)
    assert rows[("relapse_share_lineage_switch", "infusion", None)][0] == 0.0
    for origin in ("infusion", "enrollment"):
        for t in TIMES_MONTHS:
            # Every relapse is before 12 months and nobody is censored before 60: plain shares of ten.
            expected = {"cir_isolated_cns": 0.3, "cir_cd19pos": 0.2, "cir_cd19neg": 0.1, "cir_lineage_switch": 0.0,
                        "cir": 0.6} if t >= 12 else None
            if expected is None:
                continue
            for metric, value in expected.items():
                assert rows[(metric, origin, float(t))] == (pytest.approx(value), 10), (metric, origin, t)
    # One row per metric and origin the scenario's phenotypes define, in the same order.
    keys = list(dict.fromkeys((m, o) for m, o, _t in rows))
    assert set(keys) == {(m, o) for m, origins in metric_origins(WITH_CNS).items() for o in origins}
    share_rows = [m for m, _ in keys if m.startswith("relapse_share_")]
    assert share_rows == [f"relapse_share_{name}" for name in WITH_CNS]


def test_bootstrap_weights_give_the_added_phenotype_per_resample():
    p = synthetic_table()
    weights = np.ones((3, 10))
    weights[1, 3:6] = 0.0  # resample 1 without the isolated CNS relapses
    rows = _by_key(compute_metrics(p, HORIZON_DAYS, weights, phenotypes=WITH_CNS))
    share, _n = rows[("relapse_share_isolated_cns", "infusion", None)]
    np.testing.assert_allclose(share, [0.5, 0.0, 0.5])
    cir, _ = rows[("cir_isolated_cns", "infusion", 24.0)]
    np.testing.assert_allclose(cir, [0.3, 0.0, 0.3])


def test_a_phenotype_missing_from_the_given_ones_is_an_error():
    with pytest.raises(ValueError, match="isolated_cns"):
        compute_metrics(synthetic_table(), HORIZON_DAYS, phenotypes=BUILT_IN)
    with pytest.raises(ValueError, match="phenotypes"):
        endpoint_arrays(synthetic_table(), "cir", "infusion")


# ------------------------------------------------------------------ outcome choices and calibration outputs

def test_the_scenario_names_the_phenotypes_and_their_outcomes(cns_path):
    scenario = load_scenario(cns_path)
    assert scenario.relapse_phenotypes == WITH_CNS
    phenotypes = scenario.relapse_phenotypes
    outcome = resolve_outcome("cir_isolated_cns", 24, phenotypes=phenotypes)
    assert (outcome.origin, outcome.time_months) == ("infusion", 24.0)
    assert outcome.label == "CIR_ISOLATED_CNS at 24 months from infusion"
    share = resolve_outcome("relapse_share_isolated_cns", None, phenotypes=phenotypes)
    assert share.time_months is None and share.label == "relapse_share_isolated_cns"
    with pytest.raises(CarsimError, match="unknown outcome 'cir_isolated_cns'"):
        resolve_outcome("cir_isolated_cns", 24, phenotypes=load_scenario(BASELINE).relapse_phenotypes)


def test_calibration_outputs_follow_the_phenotypes():
    p = synthetic_table()
    outputs = model_outputs(WITH_CNS)
    assert {"cir_isolated_cns", "relapse_share_isolated_cns", "cir_lineage_switch"} <= set(outputs)
    assert "cir_isolated_cns" not in model_outputs(BUILT_IN)
    assert compute_output(p, "relapse_share_isolated_cns", phenotypes=WITH_CNS) == pytest.approx(0.5)
    assert compute_output(p, "cir_isolated_cns", "infusion", 24, phenotypes=WITH_CNS) == pytest.approx(0.3)
    assert compute_output(p, "cir", "infusion", 24, phenotypes=WITH_CNS) == pytest.approx(0.6)
    # An output for one named phenotype needs it in the scenario.
    with pytest.raises(UnknownOutput, match="needs the relapse phenotype 'cd19neg'"):
        resolve_output("cd19neg_share_of_relapses_with_bca", ("cd19pos", "isolated_cns"))
    with pytest.raises(UnknownOutput, match="'isolated_cns' is not a relapse phenotype"):
        resolve_output("relapse_share_isolated_cns", BUILT_IN)


def test_a_target_naming_a_missing_phenotype_is_a_one_line_error(tmp_path):
    raw, _ = resolve_extends(BASELINE)  # the baseline without CD19-negative relapse
    del raw["pathway"]["relapse"]["cd19neg"]
    del raw["pathway"]["post_relapse"]["survival"]["cd19neg"]
    scenario = tmp_path / "no_cd19neg.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_scenario(scenario).relapse_phenotypes == ("cd19pos", "lineage_switch")
    spec = {"name": "x", "scenario": str(scenario), "writes": "fitted.yaml", "report": "report",
            "targets_file": str(ROOT / "calibration" / "targets.yaml"),
            "targets": [{"id": "relapse_with_bca_cd19neg", "output": "cd19neg_share_of_relapses_with_bca"}],
            "stages": [{"name": "one", "targets": ["relapse_with_bca_cd19neg"], "parameters": [
                {"path": "pathway.response.complete_remission.value", "bounds": [0.5, 0.999]}]}]}
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ScenarioError) as error:
        load_calibration(path)
    message = str(error.value)
    assert "targets[0].output" in message and "'relapse_with_bca_cd19neg'" in message and "cd19neg" in message
    assert "\n" not in message


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def cns_run(cns_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cns_run") / "results"
    with contextlib.redirect_stdout(io.StringIO()):
        status = main(["run", str(cns_path), "--patients", "1500", "--no-events", "--quiet", "--out", str(folder)])
    assert status == 0
    return pd.read_csv(folder / "summary.csv")


def test_carsim_run_reports_the_added_phenotype(cns_run):
    summary = cns_run
    policies = list(summary.policy.unique())
    for policy in policies:
        rows = summary[summary.policy == policy]
        cir = rows[rows.metric == "cir_isolated_cns"]
        assert sorted(set(cir.origin)) == ["enrollment", "infusion"]
        assert sorted(cir[cir.origin == "infusion"].time_months) == [float(t) for t in TIMES_MONTHS]
        share = rows[rows.metric == "relapse_share_isolated_cns"]
        assert len(share) == 1 and share.origin.iloc[0] == "infusion"
    shares = summary[summary.metric.str.startswith("relapse_share_")]
    totals = shares.groupby("policy").estimate.sum()
    np.testing.assert_allclose(totals, 1.0)


def test_the_engine_simulates_the_added_phenotype(cns_run):
    summary = cns_run
    share = summary[summary.metric == "relapse_share_isolated_cns"].estimate
    cir = summary[(summary.metric == "cir_isolated_cns") & (summary.origin == "infusion")
                  & (summary.time_months == 24.0)].estimate
    # About 0.06 per year among responders (CNS involvement triples it), against much faster
    # marrow relapse: a few percent of relapses.
    assert (share > 0.005).all() and (share < 0.5).all(), share
    assert (cir > 0.002).all() and (cir < 0.3).all(), cir


def test_psa_outcome_can_be_the_added_phenotype(cns_path, tmp_path):
    out = tmp_path / "psa"
    with contextlib.redirect_stdout(io.StringIO()):
        status = main(["psa", str(cns_path), "--draws", "2", "--patients", "150", "--n-jobs", "1", "--quiet",
                       "--outcome", "cir_isolated_cns", "--time", "24", "--out", str(out)])
    assert status == 0
    draws = pd.read_csv(out / "psa_draws.csv")
    assert {"cir_isolated_cns", "relapse_share_isolated_cns"} <= set(draws.metric)
