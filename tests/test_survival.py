"""Tests for carsim.experiment.survival.

The reference implementation is lifelines 0.30, used here only:
``KaplanMeierFitter`` (``survival_function_``, ``confidence_interval_``),
``AalenJohansenFitter(calculate_variance=False)`` (``cumulative_density_``)
and ``lifelines.utils.restricted_mean_survival_time``.  Analytic checks on
large exponential cohorts guard against both implementations sharing a bug.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from lifelines.utils import restricted_mean_survival_time
from numpy.testing import assert_allclose, assert_array_equal

from carsim.experiment.survival import (
    bootstrap_weights,
    competing_risks,
    competing_risks_curves,
    cumulative_incidence,
    kaplan_meier,
    kaplan_meier_ci,
    kaplan_meier_curve,
    restricted_mean,
)

HORIZON = 2.0
TOLERANCE = 1e-10


def cohort(seed: int, n: int = 300, decimals: int | None = None):
    """Exponential event and censoring times, administratively censored at HORIZON.

    Everyone still followed at the horizon is censored there, so those
    censorings are tied.  Rounding to ``decimals`` adds tied events and
    events tied with censorings.
    """
    rng = np.random.default_rng(seed)
    event_time = rng.exponential(1.0, n)
    censor_time = rng.exponential(2.5, n)
    durations = np.minimum(event_time, censor_time)
    events = event_time <= censor_time
    beyond = durations >= HORIZON
    durations[beyond] = HORIZON
    events[beyond] = False
    if decimals is not None:
        # Kept above 0 so that every curve has a stretch before its first event.
        durations = np.maximum(np.round(durations, decimals), 10.0**-decimals)
    return durations, events


def competing_cohort(seed: int, n: int = 300):
    """Three exponential causes plus exponential and administrative censoring; no tied events."""
    rng = np.random.default_rng(seed)
    cause_times = rng.exponential([1.5, 2.5, 4.0], size=(n, 3))
    censor_time = rng.exponential(3.0, n)
    first_cause = cause_times.argmin(axis=1)
    durations = np.minimum(cause_times.min(axis=1), censor_time)
    causes = np.where(cause_times.min(axis=1) <= censor_time, first_cause + 1, 0)
    beyond = durations >= HORIZON
    durations[beyond] = HORIZON
    causes[beyond] = 0
    # lifelines jitters tied event times, which would change the reference.
    assert np.unique(durations[causes > 0]).size == np.count_nonzero(causes)
    return durations, causes


def evaluation_times(durations, events):
    """Times that probe the edges: 0, before the first event, exactly at events, the horizon, beyond."""
    event_times = np.unique(durations[events != 0])
    return np.sort(
        [
            0.0,
            event_times[0] / 2,
            event_times[0],
            event_times[5],
            (event_times[10] + event_times[11]) / 2,
            1.0,
            event_times[-1],
            HORIZON,
            HORIZON + 1.0,
        ]
    )


def step_value_at(frame, times):
    """Right-continuous lookup in a one-column lifelines estimate indexed by time (from 0)."""
    index = frame.index.to_numpy(dtype=float)
    return frame.to_numpy()[np.searchsorted(index, times, side="right") - 1, 0]


def test_kaplan_meier_by_hand_with_ties():
    # At t=1: 5 at risk (the censoring at 1 counts), 1 dies -> 4/5.
    # At t=2: 3 at risk, 1 dies -> 4/5 * 2/3.  At t=3: the last one dies -> 0.
    durations = [1.0, 1.0, 2.0, 2.0, 3.0]
    events = [True, False, True, False, True]
    times = [0.0, 0.999, 1.0, 1.5, 2.0, 2.999, 3.0, 10.0]
    expected = [1.0, 1.0, 0.8, 0.8, 0.8 * 2 / 3, 0.8 * 2 / 3, 0.0, 0.0]
    assert_allclose(kaplan_meier(durations, events, times), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_kaplan_meier_matches_lifelines(decimals):
    durations, events = cohort(seed=1, decimals=decimals)
    times = evaluation_times(durations, events)
    reference = KaplanMeierFitter().fit(durations, events, timeline=times).survival_function_
    assert_allclose(
        kaplan_meier(durations, events, times), reference.to_numpy()[:, 0], rtol=0, atol=TOLERANCE
    )


def test_weighted_kaplan_meier_matches_lifelines():
    durations, events = cohort(seed=2, decimals=2)
    weights = np.random.default_rng(3).integers(0, 4, durations.size)
    times = evaluation_times(durations, events)
    reference = KaplanMeierFitter().fit(durations, events, timeline=times, weights=weights)
    assert_allclose(
        kaplan_meier(durations, events, times, weights),
        reference.survival_function_.to_numpy()[:, 0],
        rtol=0,
        atol=TOLERANCE,
    )


@pytest.mark.parametrize("alpha", [0.05, 0.2])
@pytest.mark.parametrize("decimals", [None, 1])
def test_kaplan_meier_ci_matches_lifelines(alpha, decimals):
    durations, events = cohort(seed=4, decimals=decimals)
    times = evaluation_times(durations, events)
    reference = KaplanMeierFitter(alpha=alpha).fit(durations, events, timeline=times)
    estimate, lower, upper = kaplan_meier_ci(durations, events, times, alpha=alpha)
    assert_allclose(estimate, reference.survival_function_.to_numpy()[:, 0], rtol=0, atol=TOLERANCE)
    assert_allclose(lower, reference.confidence_interval_.to_numpy()[:, 0], rtol=0, atol=TOLERANCE)
    assert_allclose(upper, reference.confidence_interval_.to_numpy()[:, 1], rtol=0, atol=TOLERANCE)
    before_first_event = times < durations[events].min()
    assert before_first_event.any()
    assert (estimate[before_first_event] == 1).all()
    assert (lower[before_first_event] == 1).all() and (upper[before_first_event] == 1).all()
    assert (lower[~before_first_event] < estimate[~before_first_event]).all()


def test_kaplan_meier_ci_where_survival_reaches_zero():
    # No administrative censoring: the risk set thins to two, one dies, then
    # the last one dies, so S reaches 0.  Every step is compared.
    rng = np.random.default_rng(5)
    durations = np.minimum(rng.exponential(1.0, 60), rng.exponential(3.0, 60))
    events = durations < rng.exponential(3.0, 60)
    events[np.argsort(durations)[-2:]] = True  # leaves 1 survivor, then none
    times = np.append(np.unique(durations), durations.max() + 1.0)
    reference = KaplanMeierFitter().fit(durations, events, timeline=times)
    with np.errstate(all="raise"):  # a division by zero or NaN inside would raise here
        estimate, lower, upper = kaplan_meier_ci(durations, events, times)
    assert_allclose(estimate, reference.survival_function_.to_numpy()[:, 0], rtol=0, atol=TOLERANCE)
    assert_allclose(lower, reference.confidence_interval_.to_numpy()[:, 0], rtol=0, atol=TOLERANCE)
    assert_allclose(upper, reference.confidence_interval_.to_numpy()[:, 1], rtol=0, atol=TOLERANCE)
    assert (estimate[-2:] == 0).all() and (lower[-2:] == 0).all() and (upper[-2:] == 0).all()
    assert estimate[-3] > 0  # the step just before the end is still inside (0, 1)


@pytest.mark.parametrize("cause", [1, 2, 3])
def test_cumulative_incidence_matches_lifelines(cause):
    durations, causes = competing_cohort(seed=6)
    times = evaluation_times(durations, causes)
    fitter = AalenJohansenFitter(calculate_variance=False).fit(durations, causes, event_of_interest=cause)
    expected = step_value_at(fitter.cumulative_density_, times)
    assert_allclose(cumulative_incidence(durations, causes, cause, times), expected, rtol=0, atol=TOLERANCE)


def test_cumulative_incidences_and_survival_sum_to_one():
    durations, causes = competing_cohort(seed=7)
    times = evaluation_times(durations, causes)
    weights = bootstrap_weights(np.random.default_rng(8), durations.size, 20)
    total = kaplan_meier(durations, causes != 0, times, weights)
    for cause in (1, 2, 3):
        total = total + cumulative_incidence(durations, causes, cause, times, weights)
    assert_allclose(total, 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tau_kind", ["before first event", "at an event", "mid", "horizon", "beyond"])
@pytest.mark.parametrize("decimals", [None, 1])
def test_restricted_mean_matches_lifelines(tau_kind, decimals):
    durations, events = cohort(seed=9, decimals=decimals)
    event_times = np.unique(durations[events])
    tau = {
        "before first event": event_times[0] / 2,
        "at an event": event_times[7],
        "mid": 1.234,
        "horizon": HORIZON,
        "beyond": HORIZON + 1.5,
    }[tau_kind]
    expected = restricted_mean_survival_time(KaplanMeierFitter().fit(durations, events), t=tau)
    result = restricted_mean(durations, events, tau)
    assert isinstance(result, float)
    assert abs(result - expected) < TOLERANCE


def test_batched_weights_match_one_row_at_a_time():
    durations, events = cohort(seed=10, decimals=2)
    causes = np.where(events, np.random.default_rng(11).integers(1, 3, durations.size), 0)
    times = evaluation_times(durations, events)
    weights = bootstrap_weights(np.random.default_rng(12), durations.size, 6)
    weights[0, durations > 1.0] = 0  # a resample whose risk set empties before the horizon

    survival = kaplan_meier(durations, events, times, weights)
    incidence = cumulative_incidence(durations, causes, 2, times, weights)
    rmst = restricted_mean(durations, events, 1.5, weights)
    assert survival.shape == incidence.shape == (6, times.size)
    assert rmst.shape == (6,)
    for row, row_weights in enumerate(weights):
        assert_allclose(
            survival[row], kaplan_meier(durations, events, times, row_weights), rtol=0, atol=1e-14
        )
        assert_allclose(
            incidence[row], cumulative_incidence(durations, causes, 2, times, row_weights), rtol=0, atol=1e-14
        )
        assert abs(rmst[row] - restricted_mean(durations, events, 1.5, row_weights)) < 1e-14
    assert not np.allclose(survival[0], survival[1])  # the rows really are different resamples


def test_integer_weights_equal_repeated_rows():
    durations, events = cohort(seed=13, decimals=2)
    causes = np.where(events, np.random.default_rng(14).integers(1, 3, durations.size), 0)
    times = evaluation_times(durations, events)
    counts = np.random.default_rng(15).integers(0, 4, durations.size)
    repeated = np.repeat(durations, counts), np.repeat(events, counts), np.repeat(causes, counts)

    assert_allclose(
        kaplan_meier(durations, events, times, counts),
        kaplan_meier(repeated[0], repeated[1], times),
        rtol=0,
        atol=1e-12,
    )
    assert_allclose(
        cumulative_incidence(durations, causes, 1, times, counts),
        cumulative_incidence(repeated[0], repeated[2], 1, times),
        rtol=0,
        atol=1e-12,
    )
    assert (
        abs(restricted_mean(durations, events, 1.7, counts) - restricted_mean(repeated[0], repeated[1], 1.7))
        < 1e-12
    )
    # Only relative weights matter, fractional ones included.
    assert_allclose(
        kaplan_meier(durations, events, times, 0.37 * counts),
        kaplan_meier(durations, events, times, counts),
        rtol=0,
        atol=1e-12,
    )


def test_kaplan_meier_recovers_exponential_median():
    rate = 0.3
    durations = np.random.default_rng(16).exponential(1 / rate, 20_000)
    events = np.ones(durations.size, dtype=bool)
    median = math.log(2) / rate
    assert abs(kaplan_meier(durations, events, [median])[0] - 0.5) < 0.02
    # RMST to the median: integral of exp(-rate t) from 0 to ln2/rate = 0.5/rate.
    assert abs(restricted_mean(durations, events, median) - 0.5 / rate) < 0.02 * median


def test_cumulative_incidence_recovers_competing_exponentials():
    rate_a, rate_b, censor_rate = 0.4, 0.8, 0.3
    rng = np.random.default_rng(17)
    time_a = rng.exponential(1 / rate_a, 20_000)
    time_b = rng.exponential(1 / rate_b, 20_000)
    censor_time = rng.exponential(1 / censor_rate, 20_000)
    durations = np.minimum.reduce([time_a, time_b, censor_time])
    causes = np.select([durations == time_a, durations == time_b], [1, 2], 0)
    times = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    truth = rate_a / (rate_a + rate_b) * (1 - np.exp(-(rate_a + rate_b) * times))
    assert np.abs(cumulative_incidence(durations, causes, 1, times) - truth).max() < 0.02


def test_bootstrap_weights_are_multinomial_counts():
    n, n_boot = 300, 500
    weights = bootstrap_weights(np.random.default_rng(18), n, n_boot)
    assert weights.shape == (n_boot, n)
    assert np.issubdtype(weights.dtype, np.integer)
    assert (weights >= 0).all() and (weights.sum(axis=1) == n).all()
    assert np.array_equal(weights, bootstrap_weights(np.random.default_rng(18), n, n_boot))
    # Each subject is left out of a resample with probability (1 - 1/n)^n ~ 1/e.
    assert abs(np.mean(weights == 0) - (1 - 1 / n) ** n) < 0.01


def test_invalid_weights_are_rejected():
    durations, events = cohort(seed=19, n=20)
    with pytest.raises(ValueError, match="shape"):
        kaplan_meier(durations, events, [1.0], np.ones(19))
    with pytest.raises(ValueError, match="non-negative"):
        kaplan_meier(durations, events, [1.0], -np.ones(20))


def test_import_does_not_pull_in_pandas_or_lifelines():
    repo_root = Path(__file__).resolve().parents[1]
    code = "import sys, carsim.experiment.survival; print(sorted({'pandas', 'lifelines'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_competing_risks_matches_the_single_cause_estimators():
    """One risk table for all causes gives each cause's Aalen-Johansen
    incidence and the Kaplan-Meier of any event; together they sum to one."""
    from carsim.experiment.survival import competing_risks

    rng = np.random.default_rng(8)
    n = 400
    durations = np.round(rng.exponential(1.0, n), 2)  # ties included
    causes = rng.integers(0, 4, n)
    times = np.array([0.1, 0.5, 1.0, 2.5])
    survival, incidence = competing_risks(durations, causes, 3, times)
    np.testing.assert_allclose(survival, kaplan_meier(durations, causes > 0, times), atol=1e-12)
    for k in range(3):
        np.testing.assert_allclose(incidence[k], cumulative_incidence(durations, causes, k + 1, times), atol=1e-12)
    np.testing.assert_allclose(survival + incidence.sum(axis=0), 1.0, atol=1e-12)
    weights = bootstrap_weights(rng, n, 4)
    survival_b, incidence_b = competing_risks(durations, causes, 3, times, weights)
    assert survival_b.shape == (4, 4) and incidence_b.shape == (4, 3, 4)
    np.testing.assert_allclose(incidence_b[:, 2], cumulative_incidence(durations, causes, 3, times, weights),
                               atol=1e-12)


def subgroup_of_cohort(durations, weights, seed):
    """Weights of a larger cohort held one row per subject, (N, B), and the rows of ``durations``' subjects."""
    rng = np.random.default_rng(seed)
    n_cohort = durations.size + 37
    rows = np.sort(rng.choice(n_cohort, durations.size, replace=False))
    weights_by_subject = rng.integers(0, 3, (n_cohort, weights.shape[0])).astype(float)  # outsiders: any weight
    weights_by_subject[rows] = weights.T
    return weights_by_subject, rows


def test_curves_on_a_subgroup_match_the_estimators_on_its_weights():
    durations, events = cohort(seed=20, decimals=2)
    causes = np.where(events, np.random.default_rng(21).integers(1, 4, durations.size), 0)
    times = evaluation_times(durations, events)
    weights = bootstrap_weights(np.random.default_rng(22), durations.size, 5).astype(float)
    weights_by_subject, rows = subgroup_of_cohort(durations, weights, seed=23)
    mask = np.zeros(weights_by_subject.shape[0], dtype=bool)
    mask[rows] = True

    for subjects in (rows, mask):
        curve = kaplan_meier_curve(durations, events, times.max(), weights_by_subject, subjects)
        assert_array_equal(curve.at(times), kaplan_meier(durations, events, times, weights))
        assert_array_equal(curve.restricted_mean(1.5), restricted_mean(durations, events, 1.5, weights))
        curves = competing_risks_curves(durations, causes, 3, times.max(), weights_by_subject, subjects)
        for got, expected in zip(curves.at(times), competing_risks(durations, causes, 3, times, weights),
                                 strict=True):
            assert_array_equal(got, expected)

    # Unweighted: every duration counts once.
    curve = kaplan_meier_curve(durations, events, times.max())
    assert_array_equal(curve.at(times), kaplan_meier(durations, events, times))
    assert curve.restricted_mean(1.5) == restricted_mean(durations, events, 1.5)


@pytest.mark.parametrize("n_resamples", [1, 2, 7])
def test_curve_values_at_times_are_its_running_values(n_resamples):
    """Reading a batched curve at a few times folds whole rows instead of
    accumulating every step; the result is the running value, bit for bit."""
    durations, events = cohort(seed=24, decimals=2)
    causes = np.where(events, np.random.default_rng(25).integers(1, 3, durations.size), 0)
    weights = bootstrap_weights(np.random.default_rng(26), durations.size, n_resamples).astype(float)
    times = np.array([[0.0, 1.0], [0.5, 2.5]])  # unsorted, repeated positions, beyond the last event
    curves = competing_risks_curves(durations, causes, 2, HORIZON + 1.0, weights.T)
    for curve in (curves.survival, *curves.incidence):
        steps = curve.values()
        looked_up = steps[np.searchsorted(curve.knots, times, side="right")]
        assert_array_equal(curve.at(times), np.moveaxis(looked_up, -1, 0))


def test_curves_refuse_times_beyond_their_horizon():
    durations, events = cohort(seed=27)
    curve = kaplan_meier_curve(durations, events, 1.0)
    curve.at([0.5, 1.0])
    with pytest.raises(ValueError, match="estimated up to"):
        curve.at([0.5, 1.5])
    with pytest.raises(ValueError, match="estimated up to"):
        curve.restricted_mean(1.5)
    with pytest.raises(ValueError, match="estimated up to"):
        competing_risks_curves(durations, events.astype(int), 1, 1.0).at([2.0])


def test_invalid_subjects_and_causes_are_rejected():
    durations, events = cohort(seed=28, n=20)
    weights_by_subject = np.ones((30, 3))
    with pytest.raises(ValueError, match="row indices"):
        kaplan_meier_curve(durations, events, 1.0, weights_by_subject, np.arange(19))
    with pytest.raises(ValueError, match="row indices"):
        kaplan_meier_curve(durations, events, 1.0, weights_by_subject, np.arange(20) + 11)
    with pytest.raises(ValueError, match="non-negative"):
        kaplan_meier_curve(durations, events, 1.0, -weights_by_subject, np.arange(20))
    with pytest.raises(ValueError, match="missing"):
        kaplan_meier_curve(durations, events, 1.0, None, np.arange(20))
    with pytest.raises(ValueError, match="event kinds"):
        competing_risks(durations, np.where(events, 3, 0), 2, [1.0])
