"""Transplant-bed queues: a queue that does not settle is reported with its
numbers, in the run's output and manifest; a settled one is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import BASELINE

from carsim.model.definition import ModelDefinition
from carsim.model.queues import beds_suffice, queue_growth
from carsim.model.simulation import simulate_policies
from carsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = ROOT / "scenarios" / "hsct_capacity.yaml"


def test_a_settled_queue_is_not_reported():
    """Requests every 10 days, 2 beds held 5 days: utilisation 0.25."""
    asked = np.arange(0.0, 1000.0, 10.0)
    starts, ends = asked, asked + 5.0
    assert queue_growth("hsct_beds", 2, (asked, asked), starts, ends) == []
    assert beds_suffice(2, starts, ends)


def test_an_overloaded_queue_is_reported_with_its_numbers():
    """Requests every day, 1 bed held 4 days: utilisation 4; served requests
    wait longer and longer."""
    asked = np.arange(0.0, 300.0)
    granted = np.where(asked < 100, 4.0 * asked, np.nan)  # the k-th is served at 4k
    starts = granted[~np.isnan(granted)]
    (message,) = queue_growth("hsct_beds", 1, (asked, granted), starts, starts + 4.0)
    assert "requests arrive at 1.000/day" in message and "utilisation 4.00" in message
    assert "first third of accrual 148 days, in the last third none served" in message
    assert "200 of 300 requests were never served" in message


def test_the_capacity_scenario_warns_and_the_baseline_does_not():
    model = ModelDefinition(load_scenario(CAPACITY))
    results = {r.policy: r for r in simulate_policies(model, ["observe", "hsct_all"], 0, 1500, 3)}
    assert results["observe"].warnings == []
    (message,) = results["hsct_all"].warnings
    assert message.startswith("hsct_beds: requests arrive at") and "does not settle" in message
    baseline = ModelDefinition(load_scenario(BASELINE))
    assert all(r.warnings == [] for r in simulate_policies(baseline, ["hsct_all"], 0, 1500, 3))


def test_carsim_run_prints_and_records_the_warning(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "carsim", "run", str(CAPACITY), "--patients", "1200", "--n-jobs",
                           "1", "--out", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert "warning: policy hsct_all: hsct_beds: requests arrive at" in done.stderr
    warnings = json.loads((out / "manifest.json").read_text())["warnings"]
    assert any(w.startswith("policy hsct_all: hsct_beds:") for w in warnings)


def test_both_engines_give_the_same_warning():
    model = ModelDefinition(load_scenario(CAPACITY))
    fast = simulate_policies(model, ["observe", "hsct_all"], 0, 800, 4, engine="vectorised")
    reference = simulate_policies(model, ["observe", "hsct_all"], 0, 800, 4, engine="simpy")
    assert [r.warnings for r in fast] == [r.warnings for r in reference]
    assert fast[1].warnings and not fast[0].warnings
