"""One-way sensitivity analysis: input ordering, tornado order, common random
numbers (inert parameters swing exactly zero), a known direction, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import BASELINE

from carsim.errors import CarsimError
from carsim.experiment.dsa import outcome_value, parse_compare, run_dsa
from carsim.experiment.evaluate import evaluate_policies
from carsim.experiment.outcomes import resolve_outcome
from carsim.scenario import load_scenario
from carsim.scenario.parameters import uncertain_parameters

PATIENTS, SEED = 200, 777
PHENOTYPES = load_scenario(BASELINE).relapse_phenotypes
TRM = "pathway.hsct.transplant_related_death.value"
POST_RELAPSE = [f"pathway.post_relapse.survival.{p}.median" for p in ("cd19pos", "cd19neg", "lineage_switch")]


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(BASELINE)


@pytest.fixture(scope="module")
def dsa(scenario):
    os24 = resolve_outcome("os", 24, "infusion", phenotypes=PHENOTYPES)
    return run_dsa(scenario, os24, ("hsct_all", "observe"), n_patients=PATIENTS,
                   seed=SEED, n_jobs=2, progress=False)


def test_every_parameter_is_varied_low_below_base_below_high(dsa, scenario):
    tornado = dsa.tornado
    assert sorted(tornado["parameter"]) == sorted(p.path for p in uncertain_parameters(scenario))
    calibrated = tornado["parameter"].isin([p.path for p in uncertain_parameters(scenario) if p.draws])
    assert (tornado["low_value"] < tornado["high_value"]).all()
    # stated intervals hold their point; a calibrated range is stretched to include the fitted value
    assert (tornado["low_value"] < tornado["base_value"])[~calibrated].all()
    assert (tornado["base_value"] < tornado["high_value"])[~calibrated].all()
    assert (tornado["low_value"] <= tornado["base_value"]).all() and (tornado["base_value"] <= tornado["high_value"]).all()
    runs = dsa.runs
    assert set(runs["level"]) == {"base", "low", "high"}
    assert runs.groupby(["parameter", "level"]).ngroups == 1 + 2 * len(tornado)
    assert set(runs["policy"]) == {"hsct_all", "observe"}  # only the compared policies are simulated


def test_tornado_is_sorted_by_swing(dsa):
    tornado = dsa.tornado
    swing = tornado["swing"].to_numpy()
    assert np.all(np.diff(swing) <= 0)
    np.testing.assert_allclose(swing, np.abs(tornado["outcome_high"] - tornado["outcome_low"]))
    assert swing[0] > 0
    assert (tornado["outcome_base"] == dsa.base).all()


def test_higher_transplant_mortality_lowers_the_os_gain_of_hsct_for_all(dsa):
    row = dsa.tornado.set_index("parameter").loc[TRM]
    assert row["outcome_high"] < row["outcome_base"] < row["outcome_low"]
    assert dsa.tornado["parameter"].iloc[0] == TRM  # HSCT for all vs observe: TRM dominates


def test_post_relapse_survival_cannot_change_event_free_survival(dsa):
    """EFS ends at relapse, so survival after relapse cannot move it: with
    common random numbers the EFS difference is exactly the base case."""
    runs = dsa.runs
    efs = resolve_outcome("efs", 24, "infusion", phenotypes=PHENOTYPES)
    base = outcome_value(runs[runs.level == "base"], efs, ("hsct_all", "observe"))
    for path in POST_RELAPSE:
        for level in ("low", "high"):
            rows = runs[(runs.parameter == path) & (runs.level == level)]
            assert outcome_value(rows, efs, ("hsct_all", "observe")) == base, (path, level)
    # ...while OS does move with the CD19+ survival median
    os_row = dsa.tornado.set_index("parameter").loc[POST_RELAPSE[0]]
    assert os_row["swing"] > 0


def test_base_case_is_the_full_scenario_on_the_same_patients(dsa, scenario):
    expected = pd.DataFrame(evaluate_policies(scenario, 0, SEED, PATIENTS),
                            columns=["policy", "metric", "origin", "time_months", "value", "n"])
    expected = expected[expected.policy.isin(["hsct_all", "observe"])].reset_index(drop=True)
    base = dsa.runs[dsa.runs.level == "base"].sort_values("policy", key=lambda s: s.map({"observe": 0,
                                                                                        "hsct_all": 1}),
                                                           kind="stable").reset_index(drop=True)
    np.testing.assert_array_equal(base["value"].to_numpy(), expected["value"].to_numpy())


def test_single_policy_outcome(dsa):
    runs = dsa.runs
    base_rows = runs[runs.level == "base"]
    os24 = resolve_outcome("os", 24, "infusion", phenotypes=PHENOTYPES)
    value = outcome_value(base_rows, os24, ("observe",))
    hsct = outcome_value(base_rows, os24, ("hsct_all",))
    assert hsct - value == pytest.approx(dsa.base)


def test_parse_compare(scenario):
    assert parse_compare(None, scenario) == ("hsct_all", "observe")
    assert parse_compare("risk_triggered:observe", scenario) == ("risk_triggered", "observe")
    assert parse_compare("reinfuse", scenario) == ("reinfuse",)
    for bad in ("nope:observe", "observe:observe", "a:b:c", ":observe"):
        with pytest.raises(CarsimError):
            parse_compare(bad, scenario)


def _carsim(*args):
    return subprocess.run([sys.executable, "-m", "carsim", *map(str, args)], check=False,
                          capture_output=True, text=True, timeout=180)


def test_cli_writes_the_tornado(tmp_path):
    out = tmp_path / "dsa"
    result = _carsim("dsa", BASELINE, "--outcome", "os", "--time", "24", "--compare", "risk_triggered:observe",
                     "--patients", "40", "--n-jobs", "1", "--seed", "5", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "swing" in result.stdout and f"results: {out}" in result.stdout
    for name in ("tornado.csv", "tornado.md", "tornado.tex", "tornado.png", "dsa_runs.csv", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    tornado = pd.read_csv(out / "tornado.csv")
    assert list(tornado.columns) == ["parameter", "low_value", "base_value", "high_value", "outcome_low",
                                     "outcome_base", "outcome_high", "swing"]
    assert tornado["swing"].is_monotonic_decreasing


def test_cli_bad_policy_is_a_one_line_error(tmp_path, capsys):
    from carsim.cli import main

    assert main(["dsa", str(BASELINE), "--compare", "nope:observe", "--patients", "10",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown policy 'nope'" in err
    assert not (tmp_path / "x").exists()
