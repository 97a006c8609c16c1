"""Endpoints and metrics computed from the flat patient table.

Definitions (times in the patient table are days since enrolment):

* origin ``enrollment``: every enrolled patient, time zero at enrolment
  (intention to treat); origin ``infusion``: infused patients, time zero at
  infusion.
* EFS events: leaving the pathway before infusion (withdrawal, product
  failure; enrolment origin only), no response (at the assessment), relapse,
  death.  OS events: death.  RFS and CIR: responders only; RFS events relapse
  and death; CIR counts relapse with death in remission as a competing risk.
* Shares: ``infused``, ``manufacturing_failure`` and ``death_before_infusion``
  are shares of enrolled patients; ``cr``, ``hsct``, ``hsct_death`` and
  ``reinfusion`` are shares of infused patients; ``relapse_share_<phenotype>``
  are shares of relapses.
* Relapse phenotypes are the scenario's (``Scenario.relapse_phenotypes``,
  passed as ``phenotypes``): every phenotype has its ``cir_<phenotype>`` and
  ``relapse_share_<phenotype>``.  In the competing-risks table of CIR the
  phenotypes are causes 1..k in scenario order and death in remission is
  cause k + 1 (:func:`cause_codes`).
* Medians: ``wait_manufacturing_days`` (queueing for a manufacturing slot,
  patients who started manufacturing), ``vein_to_vein_days`` (first apheresis
  to infusion), ``wait_hsct_bed_days`` (queueing for a transplant bed,
  transplanted patients).

Every metric takes optional bootstrap ``weights`` of shape (B, n_patients).
"""

from __future__ import annotations

import numpy as np

from .._units import DAYS_PER_MONTH
from .survival import (
    competing_risks_curves,
    competing_risks_influence,
    kaplan_meier_curve,
    kaplan_meier_influence,
)

TIMES_MONTHS = (6, 12, 24, 36, 60)  # the default report times (``run.report_times``)
CURVE_METRICS = ("efs", "rfs", "os", "cir")  # and cir_<phenotype>: read at the report times


def cause_codes(phenotypes) -> dict[str, int]:
    """Competing-risks cause of each relapse phenotype: 1..k in the order
    given (the scenario's); death in remission is k + 1
    (:func:`death_in_remission_code`) and 0 is censored."""
    return {name: code for code, name in enumerate(phenotypes, start=1)}


def death_in_remission_code(phenotypes) -> int:
    return len(phenotypes) + 1


def curve_metrics(phenotypes) -> tuple[str, ...]:
    """Metrics read at the report times: survival and cumulative incidence."""
    return (*CURVE_METRICS, *(f"cir_{name}" for name in phenotypes))


# Economic metrics (scenarios with an ``economics`` block): mean per enrolled
# patient of the per-patient column of the same name, discounted; nmb at the first threshold.
ECONOMIC_METRICS = ("cost", "qaly", "life_years", "nmb")


def metric_origins(phenotypes, priced: bool = False) -> dict[str, tuple[str, ...]]:
    """Every metric :func:`compute_metrics` reports, with the origins it is
    reported from (the first is the default); ``priced``: the scenario has an
    ``economics`` block (cost, QALYs, life-years and net monetary benefit)."""
    both = ("infusion", "enrollment")
    return {
        **({m: ("enrollment",) for m in ECONOMIC_METRICS} if priced else {}),
        **{m: both for m in (*curve_metrics(phenotypes), "rmst_os")},
        **{m: ("enrollment",) for m in ("infused", "manufacturing_failure", "death_before_infusion",
                                        "wait_manufacturing_days")},
        **{m: ("infusion",) for m in ("cr", "hsct", "hsct_death", "reinfusion",
                                      *(f"relapse_share_{name}" for name in phenotypes), "vein_to_vein_days",
                                      "wait_hsct_bed_days")},
    }


def _first(*arrays):
    """Element-wise earliest of several day arrays (NaN = did not happen)."""
    out = np.full_like(arrays[0], np.inf)
    for a in arrays:
        np.fmin(out, a, out=out)  # fmin passes over NaN
    return out


def endpoint_arrays(p: dict, endpoint: str, origin: str, censor_day=None, phenotypes=None):
    """(mask, durations in days, event labels) for one endpoint.

    Labels are booleans for efs/rfs/os and cause codes for cir (0 censored;
    :func:`cause_codes` of ``phenotypes``, the relapse phenotypes in scenario
    order, which cir needs).  ``censor_day`` (days since enrolment, NaN =
    none) censors follow-up early, as papers that censor at subsequent
    therapy (e.g. HSCT in remission) do."""
    infused = p["infused"]
    cr = p["cr"]
    end = p["end_day"]
    zero = np.where(infused, p["infusion_day"], np.nan) if origin == "infusion" else np.zeros_like(end)
    population = infused if origin == "infusion" else np.ones_like(infused)
    death = p["death_day"]
    relapse = p["relapse_day"]
    if endpoint == "os":
        event_day = _first(death)
    elif endpoint == "efs":
        no_response = np.where(infused & ~cr, p["response_day"], np.nan)
        exit_day = p["pathway_exit_day"] if origin == "enrollment" else np.full_like(end, np.nan)
        event_day = _first(exit_day, no_response, relapse, death)
    elif endpoint in ("rfs", "cir"):
        population = population & cr
        event_day = _first(relapse, death)
    else:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    if endpoint == "cir" and phenotypes is None:
        raise ValueError("the cir endpoint needs the relapse phenotypes "
                         "(phenotypes=scenario.relapse_phenotypes)")
    if censor_day is not None:
        end = np.fmin(end, censor_day)
        event_day = np.where(event_day <= end, event_day, np.inf)
    happened = np.isfinite(event_day)
    time_day = np.where(happened, event_day, end)
    mask = population.astype(bool)
    durations = np.maximum(time_day[mask] - zero[mask], 0.0)
    if endpoint != "cir":
        return mask, durations, happened[mask]
    codes = np.zeros(len(end), dtype=np.int64)
    relapsed = ~np.isnan(relapse)
    phenotype = p["relapse_phenotype"]
    for name, code in cause_codes(phenotypes).items():
        codes[relapsed & (phenotype == name)] = code
    unknown = relapsed & (codes == 0)
    if unknown.any():
        names = ", ".join(sorted({str(v) for v in phenotype[unknown]}))
        raise ValueError(f"relapse phenotype(s) {names} in the patient table are not among the scenario's: "
                         f"{', '.join(phenotypes)}")
    codes[happened & ~relapsed] = death_in_remission_code(phenotypes)
    return mask, durations, codes[mask]


def _shares(flags_among, weights):
    """Share of patients with ``flag`` among those in ``among``, for each
    (flag, among) pair: floats, or (B,) arrays for weights of shape (B, n)."""
    if weights is None:
        return [float(flag[among].mean()) if among.any() else np.nan for flag, among in flags_among]
    # Every weighted count in one matrix product: one small BLAS call per
    # count costs far more, above all when BLAS threads compete for the cores.
    populations = np.column_stack([np.asarray(among, dtype=float) for _, among in flags_among])
    flagged = populations * np.column_stack([np.asarray(flag, dtype=float) for flag, _ in flags_among])
    counts = weights @ np.hstack([populations, flagged])
    total, hits = np.hsplit(counts, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, hits / total, np.nan)
    return list(np.ascontiguousarray(shares.T))


def _median(values, mask, weights_by_patient):
    values = values[mask]
    if values.size == 0:
        return np.nan if weights_by_patient is None else np.full(weights_by_patient.shape[1], np.nan)
    if weights_by_patient is None:
        return float(np.median(values))
    if (values == values[0]).all():
        # All equal (no waiting without a capacity limit, say): every resample has that median.
        return np.full(weights_by_patient.shape[1], values[0])
    order = np.argsort(values)
    sorted_values = values[order]
    cum = weights_by_patient[np.flatnonzero(mask)[order]]
    np.cumsum(cum, axis=0, out=cum)
    half = cum[-1] / 2.0
    # Lower weighted median (the smallest value with half the weight at or below it).
    index = np.minimum((cum < half).sum(axis=0), values.size - 1)
    return sorted_values[index]


def compute_metrics(p: dict, horizon_days: float, weights=None, *, phenotypes,
                    times_months=TIMES_MONTHS, influences: list | None = None) -> list[tuple]:
    """All metrics of one (policy, replication): (metric, origin, time_months, value, n).

    Survival and incidence metrics are read at ``times_months`` (the
    scenario's ``run.report_times``; NaN beyond the longest follow-up).

    ``phenotypes``: the relapse phenotypes in scenario order
    (``Scenario.relapse_phenotypes``); each has its ``relapse_share_`` and
    ``cir_`` rows (see :func:`metric_origins`).

    ``influences`` (a list; unweighted only): each row's empirical influence
    function is appended to it, one array per row in the same order, one
    value per patient, so that a metric's standard error is
    ``sqrt(sum(row**2)) / n`` and that of the difference between two
    policies on the same patients is that of the difference of their rows
    (the delta method; see :mod:`carsim.experiment.survival`).  Each curve's
    estimate and influence come from one risk table.  Medians use the
    order-statistic estimate of the density at the median."""
    if influences is not None and weights is not None:
        raise ValueError("influence functions are of the unweighted estimates")
    phenotypes = tuple(phenotypes)
    rows = []
    n_all = len(p["end_day"])
    # Estimators on a subgroup pick its rows out of the weights held one row
    # per patient, rather than copying (B, n) columns for every subgroup
    # (no copy at all if ``weights`` is the transpose of such an array).
    weights_by_patient = None if weights is None else np.ascontiguousarray(np.asarray(weights, dtype=float).T)
    everyone = np.ones(n_all, dtype=bool)
    infused = p["infused"].astype(bool)
    relapsed = ~np.isnan(p["relapse_day"])
    share_metrics = [  # (metric, origin, flag, among)
        ("infused", "enrollment", infused, everyone),
        ("manufacturing_failure", "enrollment", p["manufacturing_failure"], everyone),
        ("death_before_infusion", "enrollment", p["death_cause"] == "pre_infusion", everyone),
        ("cr", "infusion", p["cr"], infused),
        ("hsct", "infusion", p["hsct_count"] > 0, infused),
        ("hsct_death", "infusion", p["hsct_death"], infused),
        ("reinfusion", "infusion", p["reinfusions"] > 0, infused),
        *((f"relapse_share_{name}", "infusion", p["relapse_phenotype"] == name, relapsed)
          for name in phenotypes),
    ]
    shares = _shares([(flag, among) for _, _, flag, among in share_metrics], weights)
    for (metric, origin, _, among), share in zip(share_metrics, shares, strict=True):
        rows.append((metric, origin, np.nan, share, int(among.sum())))
    started = p["manufacturing_attempts"] > 0
    transplanted = p["hsct_count"] > 0
    medians = [("wait_manufacturing_days", "enrollment", p["wait_manufacturing_days"], started),
               ("vein_to_vein_days", "infusion", p["vein_to_vein_days"], infused),
               ("wait_hsct_bed_days", "infusion", p["hsct_bed_wait_days"], transplanted)]
    for metric, origin, values, among in medians:
        rows.append((metric, origin, np.nan, _median(values, among, weights_by_patient), int(among.sum())))
    if influences is not None:
        influences += [_share_influence(flag, among) for _, _, flag, among in share_metrics]
        influences += [_median_influence(values, among) for _, _, values, among in medians]

    times_months = tuple(float(t) for t in times_months)
    times_days = np.asarray(times_months, dtype=float) * DAYS_PER_MONTH
    def add(metric, origin, values, n):
        for t, v in zip(times_months, np.moveaxis(np.atleast_1d(values), -1, 0), strict=True):
            rows.append((metric, origin, float(t), v if weights is not None else float(v), n))

    n_causes = death_in_remission_code(phenotypes)
    for origin in ("infusion", "enrollment"):
        # Responders' relapse-free survival and every cumulative incidence of
        # relapse come from one Aalen-Johansen risk table.
        # Influences stay None where there is no estimate (or none is asked for).
        rfs_influence = incidence_influence = efs_influence = os_influence = rmst_influence = None
        cr_mask, cr_durations, codes = endpoint_arrays(p, "cir", origin, phenotypes=phenotypes)
        if influences is None or not cr_durations.size:
            rfs, incidence = _competing_or_nan(cr_durations, codes, n_causes, times_days, weights_by_patient,
                                               cr_mask)
        else:
            curves, rfs_influence, incidence_influence = competing_risks_influence(
                cr_durations, codes, n_causes, times_days, n_all, cr_mask, curves=True)
            rfs, incidence = _competing_at(curves, cr_durations, times_days)
        n_cr = int(cr_mask.sum())
        efs_mask, efs_durations, efs_events = endpoint_arrays(p, "efs", origin)
        if influences is None or not efs_durations.size:
            efs_curve = _kaplan_meier_or_none(efs_durations, efs_events, times_days.max(), weights_by_patient,
                                              efs_mask)
        else:
            efs_curve, efs_influence = kaplan_meier_influence(efs_durations, efs_events, times_days, n_all, efs_mask,
                                                              curve=True)
        os_mask, os_durations, os_events = endpoint_arrays(p, "os", origin)
        if os_durations.size:
            tau = horizon_days if origin == "enrollment" else min(horizon_days, float(os_durations.max()))
            # One Kaplan-Meier curve gives both OS at the time points and its RMST.
            if influences is None:
                os_curve = kaplan_meier_curve(os_durations, os_events, max(times_days.max(), tau),
                                              weights_by_patient, _subjects(weights_by_patient, os_mask))
            else:
                os_curve, os_influence, rmst_influence = kaplan_meier_influence(
                    os_durations, os_events, times_days, n_all, os_mask, tau=tau, curve=True)
                rmst_influence = rmst_influence / DAYS_PER_MONTH
            rmst = os_curve.restricted_mean(tau) / DAYS_PER_MONTH
            tau_months = round(tau / DAYS_PER_MONTH, 3)
        else:
            os_curve, tau_months = None, np.nan
            rmst = np.nan if weights is None else np.full(weights.shape[0], np.nan)

        add("efs", origin, _survival_or_nan(efs_curve, efs_durations, times_days, weights), int(efs_mask.sum()))
        add("rfs", origin, rfs, n_cr)
        add("os", origin, _survival_or_nan(os_curve, os_durations, times_days, weights), int(os_mask.sum()))
        add("cir", origin, incidence[..., :len(phenotypes), :].sum(axis=-2), n_cr)
        for phenotype, code in cause_codes(phenotypes).items():
            add(f"cir_{phenotype}", origin, incidence[..., code - 1, :], n_cr)
        rows.append(("rmst_os", origin, tau_months, rmst if weights is not None else float(rmst), int(os_mask.sum())))
        if influences is not None:
            none = np.zeros((len(times_days), n_all))  # the influence where there is no estimate
            rfs_influence, efs_influence, os_influence = (none if x is None else x
                                                          for x in (rfs_influence, efs_influence, os_influence))
            if incidence_influence is None:
                incidence_influence = np.zeros((n_causes, *none.shape))
            if rmst_influence is None:
                rmst_influence = np.zeros(n_all)
            influences += [*efs_influence, *rfs_influence, *os_influence,
                           *incidence_influence[:len(phenotypes)].sum(axis=0)]
            for code in cause_codes(phenotypes).values():
                influences += list(incidence_influence[code - 1])
            influences.append(rmst_influence)
    if "cost" in p:
        resamples = None if weights is None else np.asarray(weights, dtype=float)
        for metric in ECONOMIC_METRICS:
            values = np.asarray(p[metric], dtype=float)
            mean = float(values.mean()) if resamples is None else resamples @ values / resamples.sum(axis=1)
            rows.append((metric, "enrollment", np.nan, mean, n_all))
            if influences is not None:
                influences.append(values - values.mean())
    return rows


def _subjects(weights_by_patient, mask):
    """Rows of ``weights_by_patient`` of the patients in ``mask`` (None when unweighted)."""
    return None if weights_by_patient is None else np.flatnonzero(mask)


def _competing_or_nan(durations, codes, n_causes, times_days, weights_by_patient, mask):
    """(relapse-free survival, incidence per cause 1..n_causes) at
    ``times_days``; NaN beyond the longest follow-up."""
    batch = () if weights_by_patient is None else (weights_by_patient.shape[1],)
    if durations.size == 0:
        return np.full(batch + (len(times_days),), np.nan), np.full(batch + (n_causes, len(times_days)), np.nan)
    curves = competing_risks_curves(durations, codes, n_causes, times_days.max(), weights_by_patient,
                                    _subjects(weights_by_patient, mask))
    return _competing_at(curves, durations, times_days)


def _competing_at(curves, durations, times_days):
    """(survival, incidence) of ``curves`` at ``times_days``; NaN beyond the longest follow-up."""
    survival, incidence = curves.at(times_days)
    beyond = times_days > durations.max() + 1e-9
    survival[..., beyond] = np.nan
    incidence[..., beyond] = np.nan
    return survival, incidence


def _kaplan_meier_or_none(durations, events, horizon, weights_by_patient, mask):
    if durations.size == 0:
        return None
    return kaplan_meier_curve(durations, events, horizon, weights_by_patient, _subjects(weights_by_patient, mask))


def _survival_or_nan(curve, durations, times_days, weights):
    """Curve values at ``times_days``, NaN beyond the longest follow-up (undefined there)."""
    if curve is None:
        return np.full((len(times_days),) if weights is None else (weights.shape[0], len(times_days)), np.nan)
    values = curve.at(times_days)
    beyond = times_days > durations.max() + 1e-9
    values[..., beyond] = np.nan
    return values


def _share_influence(flag, among) -> np.ndarray:
    """Influence on the share of ``flag`` among ``among`` (a ratio of two means)."""
    among = np.asarray(among, dtype=bool)
    count = among.sum()
    if count == 0:
        return np.zeros(among.size)
    flag = np.asarray(flag, dtype=float)
    share = flag[among].mean()
    return np.where(among, flag - share, 0.0) * (among.size / count)


def _median_influence(values, among) -> np.ndarray:
    """Influence on the median of ``values`` among ``among``: (1/2 - 1{x <= median}) / f(median),
    1 / f estimated from the order statistics about the median that bound its 95% interval."""
    among = np.asarray(among, dtype=bool)
    count = int(among.sum())
    if count < 2:
        return np.zeros(among.size)
    sorted_values = np.sort(values[among])
    half_width = max(1, int(np.ceil(1.96 * np.sqrt(count) / 2)))
    low, high = max(0, count // 2 - half_width), min(count - 1, count // 2 + half_width)
    sparsity = (sorted_values[high] - sorted_values[low]) * count / max(1, high - low)
    median = sorted_values[(count - 1) // 2]
    below = (values <= median) & among
    return np.where(among, below.sum() / count - below, 0.0) * sparsity * (among.size / count)
