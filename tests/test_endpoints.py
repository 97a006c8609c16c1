"""Tests for carsim.experiment.metrics: bootstrap-weighted metrics.

A synthetic patient table (no simulation) with the columns the metrics read
checks the batched, weighted path against simpler computations: one
resample at a time, and integer weights as repeated patients.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from carsim.experiment.metrics import compute_metrics
from carsim.experiment.survival import bootstrap_weights

HORIZON_DAYS = 5 * 365.25
PHENOTYPES = ("cd19pos", "cd19neg", "lineage_switch")
MEDIANS = {"wait_manufacturing_days", "vein_to_vein_days", "wait_hsct_bed_days"}


def synthetic_patients(n: int = 400, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    infused = rng.random(n) < 0.8
    infusion_day = np.where(infused, rng.uniform(20, 60, n), np.nan)
    cr = infused & (rng.random(n) < 0.7)
    relapsed = cr & (rng.random(n) < 0.4)
    relapse_day = np.where(relapsed, infusion_day + np.round(rng.exponential(300, n)), np.nan)
    end_day = rng.uniform(1000, 2200, n)
    death_day = np.where(rng.random(n) < 0.5, rng.uniform(10, 2500, n), np.nan)
    death_day = np.where(death_day < np.fmax(infusion_day, relapse_day), np.nan, death_day)
    death_day = np.where(death_day > end_day, np.nan, death_day)
    end_day = np.fmin(end_day, death_day)
    hsct_count = (rng.random(n) < 0.3).astype(int) * infused
    phenotypes = np.array(PHENOTYPES, dtype=object)
    return {
        "infused": infused,
        "infusion_day": infusion_day,
        "cr": cr,
        "response_day": np.where(infused, infusion_day + 28, np.nan),
        "pathway_exit_day": np.where(infused, np.nan, rng.uniform(5, 40, n)),
        "relapse_day": relapse_day,
        "relapse_phenotype": np.where(relapsed, phenotypes[rng.integers(0, 3, n)], None),
        "death_day": death_day,
        "death_cause": np.where(~infused & ~np.isnan(death_day), "pre_infusion", "other").astype(object),
        "end_day": end_day,
        "manufacturing_failure": ~infused & (rng.random(n) < 0.5),
        "manufacturing_attempts": np.ones(n, dtype=int),
        "wait_manufacturing_days": np.zeros(n),  # no capacity limit: everyone waits 0 days
        "vein_to_vein_days": np.where(infused, rng.uniform(20, 60, n), np.nan),
        "hsct_count": hsct_count,
        "hsct_death": (hsct_count > 0) & (rng.random(n) < 0.2),
        "hsct_bed_wait_days": np.where(hsct_count > 0, rng.integers(0, 5, n).astype(float), np.nan),  # ties
        "reinfusions": (rng.random(n) < 0.1).astype(int),
    }


@pytest.fixture(scope="module")
def patients():
    return synthetic_patients()


def metric_key(row):
    metric, origin, time_months, _, _ = row
    return metric, origin, time_months


def test_weighted_metrics_match_one_resample_at_a_time(patients):
    weights = bootstrap_weights(np.random.default_rng(1), len(patients["end_day"]), 6).astype(float)
    batched = compute_metrics(patients, HORIZON_DAYS, weights, phenotypes=PHENOTYPES)
    for b in range(weights.shape[0]):
        single = compute_metrics(patients, HORIZON_DAYS, weights[b:b + 1], phenotypes=PHENOTYPES)
        for row, one in zip(batched, single, strict=True):
            assert metric_key(row) == metric_key(one)
            # Equal to rounding: BLAS may sum the RMST's steps in another order for one row.
            assert_allclose(np.asarray(row[3])[b], np.asarray(one[3])[0], rtol=1e-13, atol=0, err_msg=str(row[:3]))


def test_weights_layout_does_not_change_the_metrics(patients):
    """summarise passes the transpose of a patient-major array; any layout gives the same values."""
    weights = bootstrap_weights(np.random.default_rng(2), len(patients["end_day"]), 4).astype(float)
    by_patient = np.ascontiguousarray(weights.T)
    batched = compute_metrics(patients, HORIZON_DAYS, weights, phenotypes=PHENOTYPES)
    by_rows = compute_metrics(patients, HORIZON_DAYS, by_patient.T, phenotypes=PHENOTYPES)
    for a, b in zip(batched, by_rows, strict=True):
        assert metric_key(a)[:2] == metric_key(b)[:2]
        assert_array_equal(a[3], b[3])


def test_integer_weights_equal_repeated_patients(patients):
    """A resample's weights count copies of each patient: every metric but the
    medians (the weighted one is the lower median) equals the unweighted
    metric of the table with those copies."""
    n = len(patients["end_day"])
    # At least one copy of everyone, so that follow-up (and the RMST horizon) is the same.
    counts = 1 + np.random.default_rng(3).integers(0, 3, n)
    repeated = {name: np.repeat(column, counts) for name, column in patients.items()}
    weighted = compute_metrics(patients, HORIZON_DAYS, counts[None, :].astype(float), phenotypes=PHENOTYPES)
    unweighted = compute_metrics(repeated, HORIZON_DAYS, phenotypes=PHENOTYPES)
    compared = 0
    for row, plain in zip(weighted, unweighted, strict=True):
        assert metric_key(row)[:2] == metric_key(plain)[:2]
        if row[0] in MEDIANS:
            continue
        assert_allclose(np.asarray(row[3])[0], plain[3], rtol=1e-12, atol=1e-12, err_msg=str(row[:3]))
        compared += 1
    assert compared > 50


def test_weighted_median_is_the_lower_median_of_the_resample(patients):
    weights = bootstrap_weights(np.random.default_rng(4), len(patients["end_day"]), 5)
    rows = {row[0]: row for row in compute_metrics(patients, HORIZON_DAYS, weights.astype(float),
                                                         phenotypes=PHENOTYPES)}
    columns_and_populations = {
        "wait_manufacturing_days": ("wait_manufacturing_days", patients["manufacturing_attempts"] > 0),
        "vein_to_vein_days": ("vein_to_vein_days", patients["infused"]),
        "wait_hsct_bed_days": ("hsct_bed_wait_days", patients["hsct_count"] > 0),
    }
    for metric, (column, population) in columns_and_populations.items():
        for b, counts in enumerate(weights):
            drawn = np.sort(np.repeat(patients[column][population], counts[population]))
            assert rows[metric][3][b] == drawn[math.ceil(drawn.size / 2) - 1], metric
