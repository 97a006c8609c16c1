"""The benchmark's reference toy: its two versions (one SimPy process per
patient, and arrays) give the same outcomes from the same draws, so that
either rate is a fair yardstick."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from reference_toy import run_toy, run_toy_numpy


@pytest.mark.parametrize("n, seed", [(3000, 12345), (5000, 7)])
def test_the_numpy_toy_gives_the_simpy_toys_deaths(n, seed):
    simpy_toy, numpy_toy = run_toy(n, seed), run_toy_numpy(n, seed)
    assert numpy_toy["deaths"] == simpy_toy["deaths"]
    assert 0.5 * n < simpy_toy["deaths"] < n  # most die within five years, not all: both branches are exercised
