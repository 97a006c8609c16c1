"""The delta-method intervals that the summary uses for large cohorts:
influence functions of the survival estimators (carsim.experiment.survival)
and of every metric (carsim.experiment.metrics), checked against Greenwood's
formula, against the known truth of synthetic cohorts (coverage) and against
the patient bootstrap on a simulated cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from carsim.experiment.survival import (
    competing_risks,
    competing_risks_influence,
    kaplan_meier,
    kaplan_meier_ci,
    kaplan_meier_influence,
    restricted_mean,
)

Z = 1.959963984540054
BASELINE = Path(__file__).resolve().parents[1] / "scenarios" / "baseline.yaml"


def standard_error(influence):
    return np.sqrt((np.asarray(influence) ** 2).sum(axis=-1)) / np.shape(influence)[-1]


def test_kaplan_meier_influence_gives_greenwood_on_a_subgroup_with_ties():
    rng = np.random.default_rng(3)
    n_cohort = 900
    member = rng.random(n_cohort) < 0.6
    durations = np.round(rng.exponential(1.0, member.sum()), 1)  # tied events and censorings
    events = rng.random(member.sum()) < 0.7
    times = np.array([0.05, 0.3, 1.0, 2.5])
    influence = kaplan_meier_influence(durations, events, times, n_cohort, member)
    assert influence.shape == (4, n_cohort) and (influence[:, ~member] == 0).all()
    assert_allclose(influence.sum(axis=1), 0, atol=1e-9)
    estimate, lower, _ = kaplan_meier_ci(durations, events, times)
    # Greenwood's standard error from the log(-log) interval: se = S |log S| shift / z
    greenwood = -estimate * np.log(estimate) * np.log(np.log(lower) / np.log(estimate)) / Z
    assert_allclose(standard_error(influence), greenwood, rtol=1e-9)  # whatever the cohort around the subgroup


def synthetic(rng, n):
    """Two causes (exponential hazards 0.6 and 0.3), uniform censoring on
    [0, 4]; and a second "policy" on the same subjects whose cause-1 hazard
    is halved for a random half of them."""
    flag = rng.random(n) < 0.5
    one, two, censor = rng.exponential(1 / 0.6, n), rng.exponential(1 / 0.3, n), rng.uniform(0, 4, n)
    out = []
    for first in (one, np.where(flag, one * 2, one)):
        time = np.minimum(np.minimum(first, two), censor)
        cause = np.where(time == censor, 0, np.where(time == first, 1, 2))
        out.append((time, cause))
    return out


def truth(t):
    """S(t), F_1(t) and the restricted mean to t of each policy (both halves for the second)."""
    def one(rate1, rate2=0.3):
        total = rate1 + rate2
        return np.exp(-total * t), rate1 / total * (1 - np.exp(-total * t)), (1 - np.exp(-total * t)) / total
    a = one(0.6)
    b = [(x + y) / 2 for x, y in zip(one(0.6), one(0.3), strict=True)]
    return np.array(a), np.array(b)


def test_delta_method_intervals_cover_the_truth():
    """95% intervals from the influence functions cover the true survival,
    incidence and restricted mean, and their paired differences, in 95% of
    cohorts (binomial tolerance for 500 cohorts: a standard error too small
    or too large by a fifth fails)."""
    rng = np.random.default_rng(11)
    t, n, cohorts = 1.5, 400, 500
    true_a, true_b = truth(t)
    covered = np.zeros((2, 3))
    for _ in range(cohorts):
        (ta, ca), (tb, cb) = synthetic(rng, n)
        estimates, influences = [], []
        for time, cause in ((ta, ca), (tb, cb)):
            s_if, f_if = competing_risks_influence(time, cause, 2, [t])
            _, rmst_if = kaplan_meier_influence(time, cause > 0, [t], tau=t)
            s, f = competing_risks(time, cause, 2, [t])
            estimates.append(np.array([s[0], f[0, 0], restricted_mean(time, cause > 0, t)]))
            influences.append(np.array([s_if[0], f_if[0, 0], rmst_if]))
        se = standard_error(influences[1])
        covered[0] += np.abs(estimates[1] - true_b) <= Z * se
        difference_se = standard_error(influences[1] - influences[0])
        covered[1] += np.abs(estimates[1] - estimates[0] - (true_b - true_a)) <= Z * difference_se
    coverage = covered / cohorts
    assert ((coverage > 0.925) & (coverage < 0.975)).all(), coverage


def test_influence_variance_matches_the_bootstrap_on_a_cohort():
    """The bootstrap's standard errors of S(t), F(t) and the restricted mean
    agree with the delta method's (2,000 resamples: within 6%)."""
    from carsim.experiment.survival import bootstrap_weights

    (time, cause), _ = synthetic(np.random.default_rng(5), 3000)
    times = np.array([0.5, 1.0, 2.0])
    weights = bootstrap_weights(np.random.default_rng(6), time.size, 2000).astype(float)
    s_if, f_if = competing_risks_influence(time, cause, 2, times)
    _, rmst_if = kaplan_meier_influence(time, cause > 0, times, tau=2.0)
    s_boot, f_boot = competing_risks(time, cause, 2, times, weights)
    assert_allclose(standard_error(s_if), s_boot.std(axis=0), rtol=0.06)
    assert_allclose(standard_error(f_if), f_boot.std(axis=0), rtol=0.06)
    assert_allclose(standard_error(rmst_if), restricted_mean(time, cause > 0, 2.0, weights).std(), rtol=0.06)
    assert_allclose(kaplan_meier(time, cause > 0, times), 1 - f_boot.mean(axis=0).sum(axis=0), atol=0.01)


def test_influence_functions_give_the_estimates_of_the_curves_bit_for_bit():
    """The estimate returned beside an influence function comes from the
    same risk table and is the curve the estimators give, to the last bit
    (the summary reports it)."""
    from carsim.experiment.survival import competing_risks_curves, kaplan_meier_curve

    member = np.random.default_rng(9).random(2500) < 0.8  # a subgroup of a cohort of 2,500
    (time, cause), _ = synthetic(np.random.default_rng(8), member.sum())
    time = np.round(time, 2)  # ties
    times = np.array([0.25, 1.0, 2.0, 3.5])
    curve, _, _ = kaplan_meier_influence(time, cause > 0, times, 2500, member, tau=3.0, curve=True)
    expected = kaplan_meier_curve(time, cause > 0, 3.5)
    np.testing.assert_array_equal(curve.at(times), expected.at(times))
    assert curve.restricted_mean(3.0) == expected.restricted_mean(3.0)
    curves, _, _ = competing_risks_influence(time, cause, 2, times, 2500, member, curves=True)
    for got, want in zip(curves.at(times), competing_risks_curves(time, cause, 2, 3.5).at(times), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def summaries():
    """A simulated baseline cohort summarised both ways (bootstrap of 400 resamples)."""
    from carsim.analysis import summary
    from carsim.experiment.runner import run_experiment
    from carsim.scenario import load_scenario

    scenario = load_scenario(BASELINE, {"cohort.size": 4000, "run.write_events": False})
    result = run_experiment(scenario, n_jobs=1)
    bootstrap = summary.summarise(result, n_boot=400)
    threshold = summary.ANALYTIC_FROM
    summary.ANALYTIC_FROM = 4000
    try:
        analytic = summary.summarise(result)
    finally:
        summary.ANALYTIC_FROM = threshold
    return bootstrap, analytic


@pytest.mark.parametrize("table", [0, 1], ids=["summary", "comparison"])
def test_summary_delta_method_intervals_agree_with_the_bootstrap(summaries, table):
    keys = ["policy", "metric", "origin", "time_months"]
    bootstrap, analytic = (frame[table] for frame in summaries)
    value = "estimate" if table == 0 else "difference"
    assert_allclose(analytic[value], bootstrap[value], rtol=0, atol=0)  # the estimates are the same
    both = bootstrap.merge(analytic, on=keys, suffixes=("_boot", "_delta"))
    width = {k: both[f"upper_{k}"] - both[f"lower_{k}"] for k in ("boot", "delta")}
    wide = (width["boot"] > 1e-9) & both["metric"].map(lambda m: not m.startswith("utilisation"))
    ratio = (width["delta"] / width["boot"])[wide]
    assert len(ratio) > 50
    # 400 resamples: a width is known to about 5%; every metric within a third, the typical one within 5%
    assert 0.95 < ratio.median() < 1.05, ratio.describe()
    assert ((ratio > 0.75) & (ratio < 1.33)).all(), both[wide][(ratio < 0.75) | (ratio > 1.33)]
    # where the bootstrap has no spread (a share of 0, a median on a point mass), neither has the delta method
    assert (width["delta"][~wide & (width["boot"] <= 1e-9)] <= 1e-9).all()
