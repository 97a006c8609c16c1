"""Report times: survival and incidence at any months within follow-up
(``--time``, ``run.report_times``), and one-line errors beyond it."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import BASELINE

from carsim.cli import main
from carsim.errors import CarsimError
from carsim.experiment.evaluate import evaluate_policies
from carsim.experiment.outcomes import load_with_outcome, resolve_outcome

PHENOTYPES = ("cd19pos", "cd19neg", "lineage_switch")


def test_run_time_18_gives_18_month_rows_between_12_and_24(baseline_run):
    _, _, folder = baseline_run
    summary = pd.read_csv(folder / "summary.csv")
    for metric in ("efs", "os", "rfs", "cir"):
        rows = summary[(summary.metric == metric) & (summary.origin == "infusion")]
        at = rows.pivot(index="policy", columns="time_months", values="estimate")
        assert at[18.0].notna().all(), metric
        if metric == "cir":  # incidence rises, survival falls
            assert (at[12.0] <= at[18.0] + 1e-12).all() and (at[18.0] <= at[24.0] + 1e-12).all()
        else:
            assert (at[12.0] >= at[18.0] - 1e-12).all() and (at[18.0] >= at[24.0] - 1e-12).all()
    comparison = pd.read_csv(folder / "comparison.csv")
    assert len(comparison[(comparison.metric == "os") & (comparison.time_months == 18.0)]) == 3 * 2


@pytest.mark.parametrize("argv, expected", [
    (["--time", "999"], "--time 999: beyond the follow-up of 60 months"),
    (["--time", "0"], "--time 0: expected months after the time origin"),
])
def test_run_time_beyond_follow_up_is_one_line_exit_2(tmp_path, capsys, argv, expected):
    assert main(["run", str(BASELINE), "--patients", "50", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("carsim: error: " + expected) and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_scenario_report_times_beyond_follow_up_refused(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(f"extends: {BASELINE}\nrun: {{report_times: [18, 72]}}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (f"carsim: error: {path}: run.report_times: 72 months is beyond the "
                                               "follow-up (60 months, run.horizon_years)")


def test_outcome_at_any_time_within_follow_up():
    assert resolve_outcome("os", 18, phenotypes=PHENOTYPES, follow_up_months=60).time_months == 18.0
    with pytest.raises(CarsimError, match="beyond the follow-up of 60 months"):
        resolve_outcome("os", 61, phenotypes=PHENOTYPES, follow_up_months=60)


def test_sensitivity_outcome_at_30_months_is_evaluated():
    scenario, outcome = load_with_outcome(BASELINE, "cir", 30, None, {"cohort.size": 300})
    assert scenario.run.report_times == [6.0, 12.0, 24.0, 30.0, 36.0, 60.0]
    rows = pd.DataFrame(evaluate_policies(scenario, 0),
                        columns=["policy", "metric", "origin", "time_months", "value", "n"])
    at = outcome.rows(rows).set_index("policy")["value"]
    assert list(at.index) == scenario.policy_names
    cir = rows[(rows.metric == "cir") & (rows.origin == "infusion")].pivot(index="policy", columns="time_months",
                                                                           values="value")
    at = at.reindex(cir.index)
    assert ((cir[24.0] <= at) & (at <= cir[36.0])).all()


def test_large_cohorts_delta_method_intervals_are_at_the_report_times_too(monkeypatch):
    """The delta-method branch (one replication of ANALYTIC_FROM patients or
    more) reads the same report times as the bootstrap branch."""
    import numpy as np

    from carsim.analysis import summary as summary_module
    from carsim.experiment.runner import run_experiment
    from carsim.scenario import load_scenario

    scenario = load_scenario(BASELINE, {"cohort.size": 400, "run.report_times": [6, 18], "run.policies": ["observe"]})
    result = run_experiment(scenario, n_jobs=1)
    bootstrap, _ = summary_module.summarise(result)
    monkeypatch.setattr(summary_module, "ANALYTIC_FROM", 100)
    analytic, _ = summary_module.summarise(result)
    key = ["policy", "metric", "origin", "time_months"]
    assert set(analytic["time_months"].dropna()) == set(bootstrap["time_months"].dropna())
    assert 18.0 in set(analytic["time_months"]) and 12.0 not in set(analytic["time_months"])
    both = bootstrap.merge(analytic, on=key, suffixes=("_b", "_a"))
    assert len(both) == len(bootstrap) == len(analytic)
    np.testing.assert_allclose(both["estimate_a"], both["estimate_b"], equal_nan=True)
    at18 = analytic[(analytic["metric"] == "os") & (analytic["time_months"] == 18)]
    assert len(at18) == 2 and (at18["lower"] < at18["estimate"]).all() and (at18["estimate"] < at18["upper"]).all()
