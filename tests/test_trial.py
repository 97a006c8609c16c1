"""Simulated randomised trials (``carsim trial``).

The analysis code (randomisation, administrative censoring at the analysis
time, tests) is checked against closed forms with a stand-in outcome source
(two exponential arms, uniform accrual, fixed follow-up), which goes through
exactly the same code as the model:

* type I error: both arms the same policy, rejection rate within 3 binomial
  standard errors of alpha;
* power: Schoenfeld (1981, Biometrika 68:316-319), for a log-rank test with
  allocation share p and d expected events,
  power = Phi(sqrt(d p (1 - p)) |log HR| - z_{1 - alpha / sides}),
  where d is computed exactly from the accrual and follow-up;
* the mean number of events equals d (administrative censoring is right).

Runs of the real model check seeding, worker-count invariance, the null arm
and the results folder; bad trial files end with one line and exit status 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BASELINE
from scipy.stats import norm

from carsim._units import DAYS_PER_MONTH
from carsim.cli import main
from carsim.experiment.trial.design import TrialDesign, allocation
from carsim.experiment.trial.simulate import (
    run_trial_file,
    simulate_outcomes,
    simulate_trial,
    simulate_trials,
)
from carsim.experiment.trial.sources import ExponentialOutcomes, ScenarioOutcomes, prepare_scenario
from carsim.experiment.trial.statistics import logrank
from carsim.scenario import load_scenario

LAMBDA0 = 0.05  # control deaths per month
HR = 0.6
ACCRUAL = 10.0  # patients a month
FOLLOW_UP = 12.0  # months after the last enrolment


def expected_events(n: int, share: float, hr: float) -> float:
    """Exact expected deaths at the analysis: patient i enrols at (i+1)/ACCRUAL
    months and is followed until n/ACCRUAL + FOLLOW_UP."""
    follow = n / ACCRUAL + FOLLOW_UP - (np.arange(n) + 1) / ACCRUAL
    return float(np.sum((1 - share) * (1 - np.exp(-LAMBDA0 * follow))
                        + share * (1 - np.exp(-LAMBDA0 * hr * follow))))


def exponential_design(**kw) -> TrialDesign:
    base = {"arms": ("control", "experimental"), "sample_sizes": (200,), "follow_up_months": FOLLOW_UP,
            "endpoint": "os", "origin": "infusion", "trials": 1500, "seed": 11}
    return TrialDesign(**{**base, **kw})


def exponential_source(hr: float = HR) -> ExponentialOutcomes:
    return ExponentialOutcomes({"control": LAMBDA0, "experimental": LAMBDA0 * hr}, ACCRUAL, seed=11)


# ------------------------------------------------------------------ analysis against closed forms


def test_logrank_matches_lifelines_with_ties():
    from lifelines.statistics import logrank_test

    rng = np.random.default_rng(4)
    for _ in range(5):
        n = 150
        t = np.round(rng.exponential(8, n))  # whole days: many ties
        e = rng.random(n) < 0.7
        g = rng.random(n) < 0.4
        o1, e1, v, total = logrank(t, e, g)
        reference = logrank_test(t[g], t[~g], e[g], e[~g])
        assert (o1 - e1) ** 2 / v == pytest.approx(reference.test_statistic, rel=1e-9)
        assert total == e.sum() and o1 == (e & g).sum()


# Schoenfeld's formula is exact in the limit for equal allocation; with 2:1
# allocation it is itself off by about 0.03 here (power 0.715 in 8,000
# simulated trials against 0.746), so that case gets a wider tolerance.
@pytest.mark.parametrize("ratio, sides, alpha, approximation", [((1, 1), 2, 0.05, 0.015),
                                                               ((1, 1), 1, 0.025, 0.015),
                                                               ((2, 1), 2, 0.05, 0.045)])
def test_power_matches_schoenfeld_and_events_match_accrual(ratio, sides, alpha, approximation):
    design = exponential_design(ratio=ratio, sides=sides, alpha=alpha)
    result = simulate_trials(design, [exponential_source()])
    row = result.power.iloc[0]
    share = ratio[1] / sum(ratio)
    d = expected_events(200, share, HR)
    # censoring at (analysis time - enrolment): the mean number of deaths is d
    events = result.trials.events
    assert abs(events.mean() - d) < 4 * events.std() / math.sqrt(len(events)), (events.mean(), d)
    schoenfeld = norm.cdf(math.sqrt(d * share * (1 - share)) * abs(math.log(HR)) - norm.ppf(1 - alpha / sides))
    se = math.sqrt(schoenfeld * (1 - schoenfeld) / design.trials)
    assert abs(row.rejection_rate - schoenfeld) < 3 * se + approximation, (row.rejection_rate, schoenfeld)
    assert row.rate_lower < row.rejection_rate < row.rate_upper
    assert row.median_hr == pytest.approx(HR, abs=0.05)
    assert row.analysis_months == pytest.approx(200 / ACCRUAL + FOLLOW_UP)


def test_type_one_error_with_both_arms_the_same_policy():
    design = exponential_design(arms=("control", "control"), trials=2000, seed=5)
    result = simulate_trials(design, [exponential_source()])
    assert list(result.power.hypothesis) == ["H0"]
    rate = result.power.rejection_rate.iloc[0]
    assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / design.trials), rate
    assert result.power.median_hr.iloc[0] == pytest.approx(1.0, abs=0.03)
    # the same with 'null: true' on a design with a real difference: the null rows
    design = exponential_design(trials=2000, seed=5, null=True)
    power = simulate_trials(design, [exponential_source()]).power.set_index("hypothesis")
    assert abs(power.rejection_rate["H0"] - 0.05) < 3 * math.sqrt(0.05 * 0.95 / design.trials)
    assert power.rejection_rate["H1"] > 0.6


def test_cox_and_landmark_tests():
    source = exponential_source()
    logrank_rows = simulate_trials(exponential_design(trials=40), [source]).trials
    cox = simulate_trials(exponential_design(trials=40, test="cox"), [source])
    # Wald (Cox) and score (log-rank) statistics agree closely for one binary covariate
    assert np.max(np.abs(cox.trials.z - logrank_rows.z)) < 0.2
    assert cox.power.median_hr.iloc[0] == pytest.approx(HR, abs=0.08)
    at = 12.0
    landmark = simulate_trials(exponential_design(trials=300, test="landmark", landmark_months=at), [source])
    truth = math.exp(-LAMBDA0 * HR * at) - math.exp(-LAMBDA0 * at)
    differences = landmark.trials.difference
    assert abs(differences.mean() - truth) < 4 * differences.std() / math.sqrt(len(differences))
    assert "mean_difference" in landmark.power.columns


def test_allocation_blocks_and_prefix():
    design = TrialDesign(arms=("a", "b", "c"), sample_sizes=(60,), follow_up_months=1, ratio=(2, 1, 1),
                         block_size=8, seed=3)
    arms = allocation(design, trial=7, n=60)
    for start in range(0, 56, 8):  # every complete block holds the ratio exactly
        assert np.bincount(arms[start:start + 8], minlength=3).tolist() == [4, 2, 2]
    assert np.array_equal(allocation(design, 7, 20), arms[:20])
    assert not np.array_equal(allocation(design, 8, 60), arms)  # each trial its own sequence
    simple = TrialDesign(arms=("a", "b"), sample_sizes=(4000,), follow_up_months=1, ratio=(3, 1),
                         method="simple", seed=3)
    assert np.mean(allocation(simple, 0, 4000) == 1) == pytest.approx(0.25, abs=0.02)


class _FixedSource:
    """Four patients with known times (days since enrolment)."""

    independent_patients = True

    def arrival_days(self, replication, n):
        return np.array([0.0, 10.0, 20.0, 30.0])[:n]

    def outcomes(self, policies, replication, n, horizon_days):
        nan = np.nan
        columns = {"arrival_day": self.arrival_days(replication, n), "infused": np.ones(4, bool),
                   "cr": np.ones(4, bool), "infusion_day": np.array([5.0, 5.0, 5.0, 50.0]),
                   "response_day": np.array([33.0, 33.0, 33.0, 78.0]), "pathway_exit_day": np.full(4, nan),
                   "relapse_day": np.full(4, nan), "death_day": np.array([nan, 30.0, 100.0, 10.0]),
                   "end_day": np.array([500.0, 30.0, 100.0, 10.0])}
        return {policy: columns for policy in policies}


@pytest.mark.parametrize("origin, analysed, events", [("infusion", 3, 1), ("enrollment", 4, 2)])
def test_administrative_censoring_at_the_analysis_time(origin, analysed, events):
    # analysis at day 30 + 40: patients are followed 70, 60, 50 and 40 days after enrolment;
    # patient 3 is infused on his day 50 (after the analysis) and patient 2 dies on his day 100
    design = TrialDesign(arms=("a", "a"), sample_sizes=(4,), follow_up_months=40 / DAYS_PER_MONTH,
                         endpoint="os", origin=origin, seed=1)
    (row,) = simulate_trial(_FixedSource(), design, trial=0)
    assert row[5] == pytest.approx(70.0)  # analysis day
    assert (row[6], row[7]) == (analysed, events)


# ------------------------------------------------------------------ the model: seeds, workers, files


def write_trial(directory: Path, name: str = "trial.yaml", **overrides) -> Path:
    data = {"scenario": str(BASELINE), "arms": ["observe", "risk_triggered"], "accrual": {"per_month": 20},
            "sample_sizes": [12, 24], "follow_up_months": 6, "endpoint": {"name": "efs", "origin": "enrollment"},
            "trials": 4, "seed": 7, "null": True,
            "grid": {"pathway.response.complete_remission.value": [0.5, 0.96]}}
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_seeded_identical_for_any_workers_and_written(tmp_path, capsys):
    trial = write_trial(tmp_path)
    _, one = run_trial_file(trial, n_jobs=1)
    out = tmp_path / "out"
    assert main(["trial", str(trial), "--n-jobs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rate = type I error" in printed and f"results: {out}" in printed
    for name in ("power.csv", "power.md", "power.tex", "trials.csv", "power.png", "manifest.json"):
        assert (out / name).is_file(), name
    written = pd.read_csv(out / "trials.csv")
    pd.testing.assert_frame_equal(written, one.trials, check_dtype=False)  # n_jobs 1 == n_jobs 2
    power = pd.read_csv(out / "power.csv")
    assert list(power.columns[:4]) == ["pathway.response.complete_remission.value", "n_total", "comparison",
                                       "hypothesis"]
    assert {"rejection_rate", "rate_lower", "rate_upper", "mean_events", "median_hr"} <= set(power.columns)
    assert len(power) == 2 * 2 * 2  # grid values x sample sizes x (H1, H0)
    assert set(power.hypothesis) == {"H1", "H0"}  # read back as text, not as missing values
    assert json.loads((out / "manifest.json").read_text())["design"]["seed"] == 7
    # common random numbers across the grid: the same accrual in every combination ...
    t = one.trials
    a, b = (t[t.combination == c].reset_index(drop=True) for c in (0, 1))
    assert np.array_equal(a.analysis_day, b.analysis_day)
    # ... and the grid value changes the outcomes
    assert not np.array_equal(a.events, b.events)
    _, other = run_trial_file(trial, n_jobs=1, seed=8)
    assert not np.array_equal(other.trials.z, one.trials.z)


def test_null_rows_are_the_control_policy_in_both_arms(tmp_path):
    _, with_null = run_trial_file(write_trial(tmp_path, grid=None), n_jobs=1)
    _, both_observe = run_trial_file(write_trial(tmp_path, "null.yaml", arms=["observe", "observe"], grid=None,
                                                 null=None), n_jobs=1)
    null_rows = with_null.trials[with_null.trials.hypothesis == "H0"].reset_index(drop=True)
    same = both_observe.trials
    assert (same.hypothesis == "H0").all()
    for column in ("analysis_day", "analysed", "events", "z", "p_value"):
        np.testing.assert_array_equal(null_rows[column], same[column])


def test_example_trial_files_load():
    from carsim.experiment.trial.schema import load_trial

    root = BASELINE.parent
    for name in ("trial_surveillance_hsct.yaml", "trial_null.yaml"):
        loaded = load_trial(root / name)
        assert loaded.spec.arms[0] == "observe"
    assert load_trial(root / "trial_surveillance_hsct.yaml").spec.null is True  # 'null:' read as a key


# ------------------------------------------------------------------ bad trial files


BAD = [
    ({"folow_up_months": 12}, "folow_up_months", ["unknown key 'folow_up_months'", "did you mean 'follow_up_months'"]),
    ({"arms": ["observe", "risk_trigered"]}, "arms[1]", ["unknown policy 'risk_trigered'",
                                                         "did you mean 'risk_triggered'"]),
    ({"grid": {"pathway.relapse.cd19pos.multipliers.12.value": [3, 5]}},
     "grid.pathway.relapse.cd19pos.multipliers.12.value", ["unknown parameter path", "positions 0..10"]),
    ({"grid": {"pathway.relapse.cd19pos.multipliers.0.value": [3, 5]}},
     "grid.pathway.relapse.cd19pos.multipliers.0.value",
     ["by its position", "use its label: pathway.relapse.cd19pos.multipliers.bca_lost.value"]),
    ({"grid": {"pathway.hsct.transplant_death.value": [0.1]}}, "grid.pathway.hsct.transplant_death.value",
     ["no key 'transplant_death'"]),
    ({"grid": {"surveillance.mrd.sensitivity.value": [0.8, 1.5]}}, "grid.surveillance.mrd.sensitivity.value",
     ["value 1.5 is not valid", "probability"]),
    ({"grid": {"cohort.size": [100]}}, "grid.cohort.size", ["the trial sets this key"]),
    ({"endpoint": {"name": "efs", "test": "landmark"}}, "endpoint.landmark_months", ["landmark_months"]),
    ({"endpoint": {"name": "pfs"}}, "endpoint.name", ["unknown value 'pfs'", "efs, os, rfs"]),
    ({"endpoint": {"name": "efs", "orgin": "infusion"}}, "endpoint.orgin", ["did you mean 'origin'"]),
    ({"randomisation": {"ratio": [1, 1, 1]}}, "randomisation.ratio", ["one ratio per arm"]),
    ({"accrual": None}, "accrual", ["missing required key"]),
    ({"scenario": "no_such.yaml"}, "scenario", ["expected an existing scenario file", "not found"]),
]


@pytest.mark.parametrize("overrides, key, fragments", BAD, ids=[b[1] for b in BAD])
def test_bad_trial_file_is_one_line(tmp_path, capsys, overrides, key, fragments):
    trial = write_trial(tmp_path, **overrides)
    out = tmp_path / "out"
    try:
        status = main(["trial", str(trial), "--out", str(out)])
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    head = f"carsim: error: {trial.resolve()}: {key}: "
    assert lines[0].startswith(head), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()


def test_engines_give_the_same_trials(tmp_path):
    trial = write_trial(tmp_path, grid=None, trials=3)
    _, fast = run_trial_file(trial, n_jobs=1, engine="vectorised")
    _, reference = run_trial_file(trial, n_jobs=1, engine="simpy")
    for column in ("analysis_day", "analysed", "events"):
        np.testing.assert_array_equal(fast.trials[column], reference.trials[column])
    np.testing.assert_allclose(fast.trials.z, reference.trials.z, atol=1e-9)


@pytest.mark.parametrize("capacity", [None, 40])  # independent patients (largest trial only); queues (every size)
def test_trials_simulated_together_analyse_as_one_by_one(capacity):
    """Trials simulated in one batch, followed to the latest analysis of the
    batch, give exactly the rows of trials simulated one at a time."""
    scenario = load_scenario(BASELINE, {"resources.manufacturing.capacity": capacity,
                                        "resources.apheresis.capacity": capacity,
                                        "resources.hsct_beds.capacity": None})
    source = ScenarioOutcomes(prepare_scenario(scenario, ["observe", "risk_triggered"], 20), seed=3)
    design = TrialDesign(arms=("observe", "risk_triggered"), sample_sizes=(30, 60), follow_up_months=6,
                         endpoint="efs", origin="enrollment", trials=4, seed=3)
    assert source.independent_patients == (capacity is None)
    trials = [0, 1, 2, 3]
    together = [row for trial, simulated in zip(trials, simulate_outcomes(source, design, trials), strict=True)
                for row in simulate_trial(source, design, trial, simulated=simulated)]
    alone = [row for trial in trials for row in simulate_trial(source, design, trial)]
    assert len(together) == len(alone) == 4 * 2 * 1
    assert together == alone


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (412, 1000), (1, 20000)])
def test_clopper_pearson_is_scipys_beta_quantiles(k, n):
    """The exact binomial interval: the beta quantiles scipy.stats.beta.ppf gives (to rounding)."""
    from scipy import stats

    from carsim.experiment.trial.statistics import clopper_pearson

    lower, upper = clopper_pearson(k, n)
    assert lower == pytest.approx(float(stats.beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0, rel=1e-12, abs=0)
    assert upper == pytest.approx(float(stats.beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0, rel=1e-12, abs=0)
    assert lower <= k / n <= upper
