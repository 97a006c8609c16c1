"""Tests for carsim.analysis.summary helpers."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from carsim.analysis.summary import _percentile_interval, _percentile_intervals


@pytest.mark.parametrize("n_resamples", [5, 200])
def test_percentile_intervals_match_one_row_at_a_time(n_resamples):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(12, n_resamples))
    samples[3] = np.round(samples[3], 1)  # ties
    samples[4] = np.nan  # undefined in every resample
    samples[5, ::3] = np.nan  # undefined in some
    samples[6, 9:] = np.nan  # fewer than 10 defined
    samples[7] = 0.25  # constant
    intervals = _percentile_intervals(samples)
    assert intervals.shape == (12, 2)
    for row, interval in zip(samples, intervals, strict=True):
        assert_array_equal(interval, _percentile_interval(row))
