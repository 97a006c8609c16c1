"""End to end: ``carsim run`` writes a complete, self-consistent results folder."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import BASELINE, write_scenario

import carsim
from carsim.cli import main

POLICIES = ["observe", "hsct_all", "risk_triggered", "reinfuse"]
TIMES = [6.0, 12.0, 18.0, 24.0, 36.0, 60.0]  # the default report times and --time 18
SUMMARY_COLUMNS = ["policy", "metric", "origin", "time_months", "estimate", "lower", "upper", "n"]
SHARE_METRICS = ["infused", "manufacturing_failure", "death_before_infusion", "cr", "hsct", "hsct_death",
                 "reinfusion", "relapse_share_cd19pos", "relapse_share_cd19neg", "relapse_share_lineage_switch"]
CURVE_METRICS = ["efs", "rfs", "os", "cir", "cir_cd19pos", "cir_cd19neg", "cir_lineage_switch"]
SCALAR_METRICS = SHARE_METRICS + ["rmst_os", "wait_manufacturing_days", "vein_to_vein_days"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["run", *map(str, argv)])
    return status, out.getvalue()


@pytest.fixture(scope="module")
def single_run(baseline_run):
    return baseline_run  # carsim run of the baseline, 400 patients, --time 18 (conftest)


def _rows(frame, policy, metric, origin=None, time=None):
    rows = frame[(frame.policy == policy) & (frame.metric == metric)]
    if origin is not None:
        rows = rows[rows.origin == origin]
    if time is not None:
        rows = rows[rows.time_months == time]
    return rows


def _check_intervals(frame: pd.DataFrame, value: str):
    has = frame.lower.notna() & frame.upper.notna()
    inside = (frame[value] >= frame.lower - 1e-12) & (frame[value] <= frame.upper + 1e-12)
    assert (inside | ~has).all(), frame[has & ~inside]
    assert (frame.lower[has] <= frame.upper[has]).all()


def test_run_returns_zero_and_prints_the_policy_table(single_run):
    status, printed, folder = single_run
    assert status == 0
    header = next(line for line in printed.splitlines() if all(p in line for p in POLICIES))
    assert [w for w in header.split() if w in POLICIES] == POLICIES
    for label in ("Infused (of enrolled)", "EFS 12 mo", "OS 60 mo", "HSCT (of infused)"):
        assert label in printed
    assert f"results: {folder}" in printed
    assert "400 patients x 1 replication(s)" in printed


def test_summary_csv(single_run):
    _, _, folder = single_run
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary.policy.unique()) == POLICIES
    for policy in POLICIES:
        for metric in SCALAR_METRICS:
            assert len(_rows(summary, policy, metric)) >= 1, (policy, metric)
        for metric in CURVE_METRICS:
            for origin in ("infusion", "enrollment"):
                times = sorted(_rows(summary, policy, metric, origin).time_months)
                assert times == TIMES, (policy, metric, origin, times)
        for origin in ("infusion", "enrollment"):
            assert len(_rows(summary, policy, "rmst_os", origin)) == 1
        assert _rows(summary, policy, "infused").n.item() == 400
    _check_intervals(summary, "estimate")
    shares = summary[summary.metric.isin(SHARE_METRICS + CURVE_METRICS)
                     | summary.metric.str.startswith("utilisation_")]
    for column in ("estimate", "lower", "upper"):
        values = shares[column].dropna()
        assert ((values >= 0) & (values <= 1)).all(), shares[~shares[column].between(0, 1)]
    # the point estimates of the share and curve metrics exist with 400 patients
    assert shares[shares.metric.isin(SHARE_METRICS + ["efs", "os"])].estimate.notna().all()
    # one replication: patient-bootstrap intervals for the model's metrics
    key = summary[summary.metric.isin(["infused", "cr", "efs", "os"])]
    assert key.lower.notna().all() and key.upper.notna().all()
    rmst = summary[summary.metric == "rmst_os"]
    assert ((rmst.estimate > 0) & (rmst.estimate <= 60 + 1e-9)).all()


def test_comparison_csv_is_each_policy_minus_the_reference(single_run):
    _, _, folder = single_run
    summary = pd.read_csv(folder / "summary.csv")
    comparison = pd.read_csv(folder / "comparison.csv")
    assert list(comparison.columns) == ["policy", "reference", "metric", "origin", "time_months", "difference",
                                        "lower", "upper", "n"]
    assert list(comparison.policy.unique()) == POLICIES[1:]
    assert set(comparison.reference) == {"observe"}
    _check_intervals(comparison, "difference")
    keys = ["metric", "origin", "time_months"]
    reference = summary[summary.policy == "observe"].set_index(keys).estimate
    for policy in POLICIES[1:]:
        mine = summary[summary.policy == policy].set_index(keys).estimate
        diff = comparison[comparison.policy == policy].set_index(keys).difference
        expected = (mine - reference).loc[diff.index]
        np.testing.assert_allclose(diff.to_numpy(), expected.to_numpy(), atol=1e-12)
        # pre-infusion history does not depend on the policy
        for metric in ("infused", "manufacturing_failure", "death_before_infusion", "cr", "vein_to_vein_days"):
            row = _rows(comparison, policy, metric)
            assert row.difference.item() == 0.0 and row.lower.item() == 0.0 and row.upper.item() == 0.0


def test_patient_and_event_tables(single_run):
    _, _, folder = single_run
    patients = pd.read_parquet(folder / "patients.parquet")
    assert len(patients) == 400 * len(POLICIES)
    assert not patients.duplicated(["replication", "policy", "patient"]).any()
    assert set(patients.replication) == {0}
    for policy in POLICIES:
        mine = patients[patients.policy == policy]
        assert sorted(mine.patient) == list(range(400))
    for column in ("marrow_blasts_infusion", "bridging", "infused", "end_day", "death_day", "relapse_phenotype"):
        assert column in patients.columns
    events = pd.read_parquet(folder / "events.parquet")
    assert list(events.columns) == ["replication", "policy", "patient", "time_days", "event", "detail"]
    assert set(events.policy) == set(POLICIES)
    summary = pd.read_csv(folder / "summary.csv")
    for policy in POLICIES:
        mine = patients[patients.policy == policy]
        theirs = events[events.policy == policy]
        assert (theirs.event == "infusion").sum() == mine.infused.sum()
        assert (theirs.event == "enrolled").sum() == 400
        assert (theirs.event.isin(["death", "censored"])).sum() == 400
        assert _rows(summary, policy, "infused").estimate.item() == pytest.approx(mine.infused.mean())


def test_manifest_and_plot(single_run):
    _, _, folder = single_run
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["seed"] == 20261124
    assert manifest["carsim_version"] == carsim.__version__
    assert {"simulate_seconds", "summary_seconds"} <= set(manifest["timings"])
    resolved = manifest["resolved_scenario"]
    assert resolved["cohort"]["size"] == 400
    assert list(resolved["policies"]) == POLICIES
    assert manifest["policies"] == POLICIES and manifest["reference_policy"] == "observe"
    png = (folder / "survival.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    import matplotlib.image

    image = matplotlib.image.imread(folder / "survival.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(folder.glob(".*.part"))  # no temporary files left behind


def test_replications_give_crn_paired_intervals(tmp_path):
    status, _ = run_cli(BASELINE, "--patients", 200, "--replications", 3, "--n-jobs", 1,
                        "--out", tmp_path / "reps", "--quiet")
    assert status == 0
    summary = pd.read_csv(tmp_path / "reps" / "summary.csv")
    comparison = pd.read_csv(tmp_path / "reps" / "comparison.csv")
    patients = pd.read_parquet(tmp_path / "reps" / "patients.parquet")
    assert len(patients) == 200 * 3 * len(POLICIES)
    assert set(patients.replication) == {0, 1, 2}
    _check_intervals(summary, "estimate")
    _check_intervals(comparison, "difference")
    # intervals come from the spread across the three replications
    per_rep = patients[patients.policy == "observe"].groupby("replication").infused.mean()
    infused = _rows(summary, "observe", "infused")
    assert infused.estimate.item() == pytest.approx(per_rep.mean())
    assert infused.n.item() == 600
    assert infused.upper.item() - infused.lower.item() > 0
    assert per_rep.nunique() > 1  # replications differ
    # CRN pairing: pre-infusion history is identical under every policy
    for policy in POLICIES[1:]:
        row = _rows(comparison, policy, "infused")
        assert row.difference.item() == 0.0
        assert row.lower.item() == 0.0 and row.upper.item() == 0.0
        efs = _rows(comparison, policy, "efs", "infusion", 24.0)
        assert efs.lower.item() <= efs.difference.item() <= efs.upper.item()
    hsct = _rows(comparison, "hsct_all", "hsct")
    assert hsct.lower.item() > 0  # every responder is transplanted under hsct_all


def test_marrow_burden_lowers_event_free_survival(tmp_path):
    """cohort.fixed reaches the model: 30% vs 2% marrow blasts at infusion."""
    results = {}
    for label, blasts in (("high", 30), ("low", 2)):
        path = write_scenario(tmp_path, {"cohort": {"fixed": {"marrow_blasts_infusion": blasts}},
                                         "run": {"policies": ["observe"]}}, name=f"{label}.yaml")
        status, _ = run_cli(path, "--patients", 2000, "--n-jobs", 2, "--out", tmp_path / label, "--quiet")
        assert status == 0
        patients = pd.read_parquet(tmp_path / label / "patients.parquet")
        assert (patients.marrow_blasts_infusion == blasts).all()
        summary = pd.read_csv(tmp_path / label / "summary.csv")
        results[label] = _rows(summary, "observe", "efs", "infusion", 12.0).iloc[0]
    high, low = results["high"], results["low"]
    assert high.estimate < low.estimate
    se = {k: (r.upper - r.lower) / (2 * 1.96) for k, r in results.items()}
    combined = math.hypot(se["high"], se["low"])
    assert high.upper < low.lower or low.estimate - high.estimate > 4 * combined, (high, low)
