"""The tests a simulated trial is analysed with, and the power table over
many simulated trials."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

from ..._units import DAYS_PER_MONTH
from .design import H1, TrialDesign


def logrank(durations, events, group) -> tuple[float, float, float, float]:
    """(O1, E1, V, O): observed and expected events in ``group`` (True), the
    hypergeometric variance and all events; ties as in lifelines."""
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=bool)
    group = np.asarray(group, dtype=bool)
    order = np.argsort(durations, kind="stable")
    t, e, g = durations[order], events[order], group[order]
    times = np.unique(t[e])
    if times.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    first = np.searchsorted(t, times, side="left")
    at_risk = (t.size - first).astype(float)
    at_risk1 = np.concatenate([np.cumsum(g[::-1])[::-1], [0]])[first].astype(float)
    slot = np.searchsorted(times, t[e])
    deaths = np.bincount(slot, minlength=times.size).astype(float)
    deaths1 = np.bincount(slot, weights=g[e].astype(float), minlength=times.size)
    share = at_risk1 / at_risk
    expected1 = float(np.sum(deaths * share))
    with np.errstate(invalid="ignore", divide="ignore"):
        correction = np.where(at_risk > 1, (at_risk - deaths) / (at_risk - 1), 0.0)
    variance = float(np.sum(deaths * share * (1 - share) * correction))
    return float(deaths1.sum()), expected1, variance, float(deaths.sum())


def km_greenwood(durations, events, at: float) -> tuple[float, float]:
    """Kaplan-Meier survival at ``at`` and its Greenwood variance (NaN beyond follow-up)."""
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=bool)
    if durations.size == 0 or at > durations.max():
        return math.nan, math.nan
    t = np.sort(durations)
    times = np.unique(durations[events & (durations <= at)])
    if times.size == 0:
        return 1.0, 0.0
    at_risk = (t.size - np.searchsorted(t, times, side="left")).astype(float)
    deaths = np.bincount(np.searchsorted(times, durations[events & (durations <= at)]),
                         minlength=times.size).astype(float)
    survival = float(np.prod(1 - deaths / at_risk))
    if survival == 0.0:
        return 0.0, 0.0
    return survival, survival**2 * float(np.sum(deaths / (at_risk * (at_risk - deaths))))


def _p_value(z: float, sides: int) -> float:
    """z > 0 favours the experimental arm."""
    return float(special.ndtr(-z)) if sides == 1 else float(2 * special.ndtr(-abs(z)))


def compare_arms(design: TrialDesign, durations, events, experimental) -> tuple[float, float, float, float]:
    """(z, p, hazard ratio, survival difference) of experimental vs control;
    z > 0 favours the experimental arm; NaN when the test is not defined
    (no events, no variance, landmark beyond follow-up)."""
    o1, e1, variance, total = logrank(durations, events, experimental)
    o0, e0 = total - o1, total - e1
    pike = (o1 / e1) / (o0 / e0) if min(e1, e0, o0) > 0 else math.nan  # Pike's O/E ratio
    difference = math.nan
    if design.test == "logrank":
        z = (e1 - o1) / math.sqrt(variance) if variance > 0 else math.nan
        hr = float(pike)
    elif design.test == "cox":
        z, hr = _cox(durations, events, experimental)
    else:
        at = design.landmark_months * DAYS_PER_MONTH
        s1, v1 = km_greenwood(durations[experimental], events[experimental], at)
        s0, v0 = km_greenwood(durations[~experimental], events[~experimental], at)
        difference = s1 - s0
        z = difference / math.sqrt(v1 + v0) if v1 + v0 > 0 else math.nan
        hr = float(pike)
    p = _p_value(z, design.sides) if math.isfinite(z) else math.nan
    return float(z), p, hr, float(difference)


def _cox(durations, events, experimental) -> tuple[float, float]:
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    if events.sum() == 0 or experimental.all() or not experimental.any():
        return math.nan, math.nan
    frame = pd.DataFrame({"T": durations, "E": events, "arm": experimental.astype(float)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = CoxPHFitter().fit(frame, "T", "E")
    except (ConvergenceError, ValueError, np.linalg.LinAlgError, ZeroDivisionError):
        return math.nan, math.nan
    beta, se = float(fitted.params_["arm"]), float(fitted.standard_errors_["arm"])
    if not (math.isfinite(beta) and math.isfinite(se) and se > 0):
        return math.nan, math.nan
    return -beta / se, math.exp(beta)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    # The beta quantiles of scipy.stats.beta.ppf (to rounding), without
    # importing scipy.stats (half a second).
    tail = (1 - level) / 2
    lower = float(special.betaincinv(k, n - k + 1, tail)) if k > 0 else 0.0
    upper = float(special.betaincinv(k + 1, n - k, 1 - tail)) if k < n else 1.0
    return lower, upper


def power_table(trials: pd.DataFrame, design: TrialDesign, grid: Sequence[dict]) -> pd.DataFrame:
    """Rejection rate (power under H1, type I error under H0)
    with an exact 95% Monte Carlo interval, mean events and analysed patients,
    median hazard ratio, mean analysis time."""
    rows = []
    order = {label: i for i, label in enumerate(dict.fromkeys(trials.comparison))}
    keys = ["combination", "n_total", "comparison", "hypothesis"]
    for (c, n, label, hypothesis), g in trials.groupby(keys, sort=False):
        k, m = int(g.reject.sum()), len(g)
        lower, upper = clopper_pearson(k, m)
        hr = g.hazard_ratio[np.isfinite(g.hazard_ratio)]
        row = {**grid[c], "n_total": int(n), "comparison": label, "hypothesis": hypothesis, "trials": m,
               "rejection_rate": k / m, "rate_lower": lower, "rate_upper": upper,
               "not_evaluable": int((~np.isfinite(g.p_value)).sum()),
               "mean_events": float(g.events.mean()), "mean_analysed": float(g.analysed.mean()),
               "median_hr": float(hr.median()) if len(hr) else math.nan,
               "analysis_months": float(g.analysis_day.mean() / DAYS_PER_MONTH)}
        if design.test == "landmark":
            row["mean_difference"] = float(g.difference.mean())
        rows.append((c, n, order[label], hypothesis != H1, row))
    rows.sort(key=lambda r: r[:4])
    return pd.DataFrame([r[-1] for r in rows])
