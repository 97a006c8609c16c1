"""Summary per policy and comparison against the reference policy.

Intervals are 95% Monte Carlo intervals for the model's expected value:

* with several replications, mean +- t(0.975, R-1) * sd / sqrt(R) across
  replications (differences: the same on the per-replication paired
  differences, which common random numbers make small);
* with one replication of fewer than :data:`ANALYTIC_FROM` patients, a
  patient bootstrap; differences use the same resampled patients under both
  policies (the CRN pairing);
* with one replication of more, the delta method: estimate +- z(0.975) * se,
  the standard error from each metric's influence function (Greenwood's
  variance for Kaplan-Meier curves), and for differences from the
  difference of the two policies' influence functions on the same patients
  (the same pairing).  A bootstrap of a large cohort costs more than
  simulating it, and there the two agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..experiment.metrics import compute_metrics
from ..experiment.survival import bootstrap_weights

SUMMARY_COLUMNS = ["policy", "metric", "origin", "time_months", "estimate", "lower", "upper", "n"]
COMPARISON_COLUMNS = ["policy", "reference", "metric", "origin", "time_months", "difference", "lower",
                      "upper", "n"]
# From this many patients a single replication's intervals come from the
# delta method rather than the bootstrap.
ANALYTIC_FROM = 20_000
_Z = special.ndtri(0.975)


def _t_interval(values: np.ndarray):
    """Mean and 95% t-interval over axis 0 (replications), ignoring NaN."""
    values = np.asarray(values, dtype=float)
    count = np.sum(~np.isnan(values), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(values, axis=0) if values.size else np.nan
        sd = np.nanstd(values, axis=0, ddof=1)
        half = special.stdtrit(np.maximum(count - 1, 1), 0.975) * sd / np.sqrt(count)
    half = np.where(count > 1, half, np.nan)
    return mean, mean - half, mean + half


def _percentile_interval(samples: np.ndarray):
    with np.errstate(invalid="ignore"):
        ok = ~np.isnan(samples)
        if ok.sum() < 10:
            return np.nan, np.nan
        return tuple(np.percentile(samples[ok], [2.5, 97.5]))


def _percentile_intervals(samples: np.ndarray) -> np.ndarray:
    """:func:`_percentile_interval` of each row of ``samples`` (metrics x resamples), shape (rows, 2).

    Rows without NaN go through one vectorised call: ~600 separate calls
    would take longer than all the estimators together.
    """
    intervals = np.full((samples.shape[0], 2), np.nan)
    complete = ~np.isnan(samples).any(axis=1)
    if samples.shape[1] >= 10:
        intervals[complete] = np.percentile(samples[complete], [2.5, 97.5], axis=1).T
    for row in np.flatnonzero(~complete):
        intervals[row] = _percentile_interval(samples[row])
    return intervals


def _half_widths(influence: list, reference: list | None = None) -> np.ndarray:
    """Half-widths of 95% delta-method intervals from influence rows (one per
    metric, one value per patient), or of the differences from ``reference``'s."""
    squares = []
    for i, row in enumerate(influence):
        if reference is not None:
            row = row - reference[i]
        squares.append(np.einsum("i,i->", row, row))  # not BLAS: its threads cost more than this sum
    return _Z * np.sqrt(squares) / len(influence[0])


def summarise(result, n_boot: int = 200):
    """(summary, comparison) DataFrames for an :class:`ExperimentResult`."""
    horizon_days = result.scenario.run.horizon_years * 365.25
    phenotypes = result.scenario.relapse_phenotypes
    times = result.scenario.run.report_times
    policies = result.policies
    reference = policies[0]
    summary_rows, comparison_rows = [], []
    if result.replications > 1:
        # per (policy) -> list over replications of metric rows
        per_policy = {
            pol: [compute_metrics(result.group(pol, r), horizon_days, phenotypes=phenotypes, times_months=times)
                  for r in range(result.replications)]
            for pol in policies
        }
        for pol in policies:
            reps = per_policy[pol]
            for i, (metric, origin, t, _, _) in enumerate(reps[0]):
                values = np.array([rows[i][3] for rows in reps])
                n = int(sum(rows[i][4] for rows in reps))
                est, lo, hi = _t_interval(values)
                summary_rows.append((pol, metric, origin, t, est, lo, hi, n))
                if pol != reference:
                    diffs = values - np.array([rows[i][3] for rows in per_policy[reference]])
                    d, dlo, dhi = _t_interval(diffs)
                    comparison_rows.append((pol, reference, metric, origin, t, d, dlo, dhi, n))
            for name, estimate in _utilisation(result, pol):
                est, lo, hi = _t_interval(np.array(estimate))
                summary_rows.append((pol, name, "enrollment", np.nan, est, lo, hi, result.replications))
    elif result.n_patients >= ANALYTIC_FROM:
        # Influence rows (one value per patient and metric) are reduced to
        # half-widths policy by policy: only the reference's are kept for the
        # differences, not every policy's at once (hundreds of MB at 100,000 patients).
        point, half, difference_half = {}, {}, {}
        for pol in policies:  # the reference first
            influence = []
            point[pol] = compute_metrics(result.group(pol, 0), horizon_days, phenotypes=phenotypes,
                                         times_months=times, influences=influence)
            half[pol] = _half_widths(influence)
            if pol == reference:
                reference_influence = influence
            else:
                difference_half[pol] = _half_widths(influence, reference_influence)
            del influence
        del reference_influence
        for pol in policies:
            for i, (metric, origin, t, est, n) in enumerate(point[pol]):
                summary_rows.append((pol, metric, origin, t, est, est - half[pol][i], est + half[pol][i], n))
                if pol != reference:
                    diff = est - point[reference][i][3]
                    comparison_rows.append((pol, reference, metric, origin, t, diff, diff - difference_half[pol][i],
                                            diff + difference_half[pol][i], n))
            for name, estimate in _utilisation(result, pol):
                summary_rows.append((pol, name, "enrollment", np.nan, estimate[0], np.nan, np.nan, 1))
    else:
        seed_seq = np.random.SeedSequence(result.seed, spawn_key=(2**31 - 1,))
        # float once: BLAS products and weighted tallies then need no casting per metric.
        # Laid out one row per patient: compute_metrics then needs no transposed copy per policy.
        weights_by_patient = np.array(
            bootstrap_weights(np.random.default_rng(seed_seq), result.n_patients, n_boot).T, dtype=float, order="C")
        weights = weights_by_patient.T
        boot, point = {}, {}
        for pol in policies:
            group = result.group(pol, 0)
            point[pol] = compute_metrics(group, horizon_days, phenotypes=phenotypes, times_months=times)
            boot[pol] = compute_metrics(group, horizon_days, weights=weights, phenotypes=phenotypes,
                                        times_months=times)
        # metrics x resamples, per policy
        samples = {pol: np.array([row[3] for row in boot[pol]], dtype=float) for pol in policies}
        for pol in policies:
            intervals = _percentile_intervals(samples[pol])
            if pol != reference:
                difference_intervals = _percentile_intervals(samples[pol] - samples[reference])
            for i, (metric, origin, t, est, n) in enumerate(point[pol]):
                lo, hi = intervals[i]
                summary_rows.append((pol, metric, origin, t, est, lo, hi, n))
                if pol != reference:
                    diff = est - point[reference][i][3]
                    dlo, dhi = difference_intervals[i]
                    comparison_rows.append((pol, reference, metric, origin, t, diff, dlo, dhi, n))
            for name, estimate in _utilisation(result, pol):
                summary_rows.append((pol, name, "enrollment", np.nan, estimate[0], np.nan, np.nan, 1))
    summary = pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS)
    comparison = pd.DataFrame(comparison_rows, columns=COMPARISON_COLUMNS)
    return summary, comparison


def _utilisation(result, policy):
    """Share of finite resource capacity in use over the run, per replication."""
    out = {}
    for r in range(result.replications):
        for name, use in result.resource_use(policy, r).items():
            if use.get("capacity"):
                out.setdefault(f"utilisation_{name}", []).append(
                    use["busy_days"] / (use["capacity"] * use["span_days"]) if use["span_days"] > 0 else np.nan)
    return list(out.items())
