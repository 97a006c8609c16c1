"""Fast non-parametric survival estimators for simulated cohorts.

Kaplan–Meier, its exponential-Greenwood interval, the Aalen–Johansen
cumulative incidence under competing risks and the restricted mean survival
time.  They reproduce lifelines 0.30 to rounding error but need only NumPy:
importing lifelines alone takes longer than a whole ``carsim run``.

Estimators taking ``weights`` accept case weights of shape ``(n,)`` or
``(B, n)``.  The second form evaluates ``B`` bootstrap resamples in one pass
(see :func:`bootstrap_weights`) and gives results a leading axis of length B.

Conventions (as lifelines): curves are right-continuous step functions, so
the value at ``t`` includes events at exactly ``t``; subjects censored at
``t`` are still at risk at ``t``.  Durations are non-negative.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

import numpy as np

__all__ = [
    "bootstrap_weights",
    "competing_risks",
    "cumulative_incidence",
    "kaplan_meier",
    "kaplan_meier_ci",
    "restricted_mean",
]


class _RiskTable(NamedTuple):
    """Weighted counts at the distinct event times."""

    event_times: np.ndarray  # (m,) ascending
    at_risk: np.ndarray  # (..., m)
    deaths: np.ndarray  # (..., n_kinds, m), one row per event kind


def _as_durations(durations, labels) -> tuple[np.ndarray, np.ndarray]:
    durations = np.asarray(durations, dtype=float)
    labels = np.asarray(labels)
    if durations.ndim != 1 or labels.shape != durations.shape:
        raise ValueError(
            f"durations and event labels must be 1-D of equal length, got {durations.shape} and {labels.shape}"
        )
    if not np.isfinite(durations).all() or (durations < 0).any():
        raise ValueError("durations must be finite and non-negative")
    return durations, labels


def _as_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    weights = np.asarray(weights, dtype=float)
    if weights.ndim not in (1, 2) or weights.shape[-1] != n:
        raise ValueError(f"weights must have shape (n,) or (B, n) with n={n}, got {weights.shape}")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    return weights


def _horizon(times) -> float:
    """Latest time asked for: later event times cannot change the answer."""
    return float(np.max(times, initial=-np.inf))


def _risk_table(durations, kinds, n_kinds: int, weights, horizon: float) -> _RiskTable:
    """Weighted at-risk totals and deaths of each kind at event times up to ``horizon``.

    ``kinds`` is 0 for censoring and 1..n_kinds for event kinds counted
    separately.  One ``bincount`` tallies all B weight rows; sorting the
    (B, n) weights instead would cost several times as much.
    """
    is_event = kinds > 0
    event_times = np.unique(durations[is_event & (durations <= horizon)])
    n_times = event_times.size
    batch_shape = weights.shape[:-1]
    if n_times == 0:
        return _RiskTable(event_times, np.zeros(batch_shape + (0,)), np.zeros(batch_shape + (n_kinds, 0)))

    # Block j holds everyone leaving the risk set in [t_j, t_{j+1}), the last
    # block everyone from the last event time on, so at_risk(t_j) is the sum
    # of blocks >= j.  Deaths after the horizon count there as plain leavers.
    block = np.searchsorted(event_times, durations, side="right") - 1
    dies_at_block_time = is_event & (durations == event_times[block])
    category = np.where(dies_at_block_time, kinds, 0) * n_times + block
    # Subjects leaving before the first event time never count; a spare
    # slot at the end of each row collects them.
    row_size = (n_kinds + 1) * n_times + 1
    category[block < 0] = row_size - 1

    rows = weights.reshape(-1, durations.size)
    n_rows = rows.shape[0]
    flat_category = (category + row_size * np.arange(n_rows)[:, None]).ravel()
    tally = np.bincount(flat_category, weights=rows.ravel(), minlength=n_rows * row_size)
    tally = tally.reshape(n_rows, row_size)[:, :-1].reshape(batch_shape + (n_kinds + 1, n_times))

    leaving = tally.sum(axis=-2)
    # Summing from the last block back (not total minus a forward sum) gives
    # at_risk >= deaths exactly, and exactly 0 once only zero weights remain.
    at_risk = np.cumsum(leaving[..., ::-1], axis=-1)[..., ::-1]
    return _RiskTable(event_times, at_risk, tally[..., 1:, :])


def _hazard(deaths: np.ndarray, at_risk: np.ndarray) -> np.ndarray:
    """Discrete hazard d/n; 0 where nobody (of positive weight) is at risk."""
    return np.divide(deaths, at_risk, out=np.zeros_like(deaths), where=at_risk > 0)


def _prepend(values: np.ndarray, first: float) -> np.ndarray:
    start = np.full(values.shape[:-1] + (1,), first)
    return np.concatenate([start, values], axis=-1)


def _step_lookup(knot_times, values, times) -> np.ndarray:
    """Right-continuous step function; ``values[..., 0]`` holds before the first knot."""
    position = np.searchsorted(knot_times, np.asarray(times, dtype=float), side="right")
    return values[..., position]


def _km_steps(durations, events, weights, horizon: float) -> tuple[_RiskTable, np.ndarray]:
    """Risk table and survival ``(..., m + 1)``: 1, then S at each event time."""
    durations, events = _as_durations(durations, events)
    weights = _as_weights(weights, durations.size)
    table = _risk_table(durations, events.astype(bool).astype(np.intp), 1, weights, horizon)
    survival = np.cumprod(1.0 - _hazard(table.deaths[..., 0, :], table.at_risk), axis=-1)
    return table, _prepend(survival, 1.0)


def kaplan_meier(durations, events, times, weights=None) -> np.ndarray:
    """Kaplan–Meier survival S(t) at ``times``.

    ``events`` is True for an observed event, False for censoring.  Shape
    ``times.shape``, or ``(B,) + times.shape`` for weights of shape ``(B, n)``.
    """
    table, survival = _km_steps(durations, events, weights, _horizon(times))
    return _step_lookup(table.event_times, survival, times)


def kaplan_meier_ci(durations, events, times, alpha: float = 0.05):
    """Kaplan–Meier estimate with its pointwise ``1 - alpha`` interval.

    Exponential Greenwood (log(-log) transform), as lifelines'
    ``KaplanMeierFitter.confidence_interval_``: (1, 1) before the first event,
    (0, 0) once the estimate is 0.  Returns ``(estimate, lower, upper)``,
    each shaped like ``times``.
    """
    table, survival = _km_steps(durations, events, None, _horizon(times))
    deaths, at_risk = table.deaths[0], table.at_risk
    survivors = at_risk - deaths
    # Greenwood's d / (n (n - d)) is infinite when all at risk die; lifelines
    # counts it as 0 (the estimate and the whole interval are then 0 anyway).
    terms = np.divide(deaths, at_risk * survivors, out=np.zeros_like(deaths), where=survivors > 0)
    greenwood = _prepend(np.cumsum(terms), 0.0)

    estimate = _step_lookup(table.event_times, survival, times)
    variance = _step_lookup(table.event_times, greenwood, times)
    # The transform is finite only strictly inside (0, 1); at 0 or 1 the
    # interval collapses onto the estimate, as it does in lifelines.
    inside = (estimate > 0) & (estimate < 1)
    log_s = np.log(np.where(inside, estimate, 0.5))
    shift = NormalDist().inv_cdf(1 - alpha / 2) * np.sqrt(variance) / log_s
    log_minus_log = np.log(-log_s)
    lower = np.where(inside, np.exp(-np.exp(log_minus_log - shift)), estimate)
    upper = np.where(inside, np.exp(-np.exp(log_minus_log + shift)), estimate)
    return estimate, lower, upper


def cumulative_incidence(durations, causes, cause: int, times, weights=None) -> np.ndarray:
    """Aalen–Johansen cumulative incidence of ``cause`` at ``times``.

    ``causes`` is 0 for censoring, else a positive int per event type; all
    other types compete with ``cause``.  Shapes as :func:`kaplan_meier`.
    """
    durations, causes = _as_durations(durations, causes)
    weights = _as_weights(weights, durations.size)
    # Kind 1: a competing event, kind 2: the cause of interest.
    kinds = np.where(causes == cause, 2, (causes != 0).astype(np.intp))
    table = _risk_table(durations, kinds, 2, weights, _horizon(times))
    all_deaths = table.deaths.sum(axis=-2)
    overall_survival = np.cumprod(1.0 - _hazard(all_deaths, table.at_risk), axis=-1)
    survival_before = _prepend(overall_survival[..., :-1], 1.0)
    increments = survival_before * _hazard(table.deaths[..., 1, :], table.at_risk)
    incidence = _prepend(np.cumsum(increments, axis=-1), 0.0)
    return _step_lookup(table.event_times, incidence, times)


def competing_risks(durations, causes, n_causes: int, times, weights=None):
    """Overall survival and the Aalen–Johansen cumulative incidence of every
    cause ``1..n_causes`` from one risk table.

    Returns ``(survival, incidence)``: survival shaped as :func:`kaplan_meier`
    (the KM of any event), incidence with an extra axis of length
    ``n_causes`` before the time axis.  Incidences of several causes add up
    to the incidence of their union, and with survival they sum to 1.
    """
    durations, causes = _as_durations(durations, causes)
    weights = _as_weights(weights, durations.size)
    table = _risk_table(durations, np.asarray(causes, dtype=np.intp), n_causes, weights, _horizon(times))
    all_deaths = table.deaths.sum(axis=-2)
    overall = np.cumprod(1.0 - _hazard(all_deaths, table.at_risk), axis=-1)
    survival_before = _prepend(overall[..., :-1], 1.0)
    increments = survival_before[..., None, :] * _hazard(table.deaths, table.at_risk[..., None, :])
    incidence = _prepend(np.cumsum(increments, axis=-1), 0.0)
    return (_step_lookup(table.event_times, _prepend(overall, 1.0), times),
            _step_lookup(table.event_times, incidence, times))


def restricted_mean(durations, events, tau: float, weights=None):
    """Restricted mean survival time: area under the Kaplan–Meier curve on [0, tau].

    A float, or shape ``(B,)`` for weights of shape ``(B, n)``.  Past the last
    observation the curve holds its last value, as in lifelines.
    """
    if not tau >= 0:
        raise ValueError(f"tau must be non-negative, got {tau}")
    table, survival = _km_steps(durations, events, weights, tau)
    # Step j of the curve holds from its knot to the next one, cut at tau.
    knots = np.concatenate([[0.0], table.event_times, [tau]])
    area = survival @ np.diff(knots)
    return float(area) if area.ndim == 0 else area


def bootstrap_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Case weights for ``n_boot`` bootstrap resamples of ``n`` subjects.

    Row b counts how often each subject was drawn (multinomial, sums to n);
    shape ``(n_boot, n)``, integer.
    """
    draws = rng.integers(0, n, size=(n_boot, n))
    # Offset each row's draws so that one bincount tallies every row.
    flat = (draws + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)
