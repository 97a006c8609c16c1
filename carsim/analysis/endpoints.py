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
  ``reinfusion`` are shares of infused patients; ``relapse_share_*`` are
  shares of relapses.
* Medians: ``wait_manufacturing_days`` (queueing for a manufacturing slot,
  patients who started manufacturing), ``vein_to_vein_days`` (first apheresis
  to infusion), ``wait_hsct_bed_days`` (queueing for a transplant bed,
  transplanted patients).

Every metric takes optional bootstrap ``weights`` of shape (B, n_patients).
"""

from __future__ import annotations

import numpy as np

from .._units import DAYS_PER_MONTH
from .survival import competing_risks, kaplan_meier, restricted_mean

TIMES_MONTHS = (6, 12, 24, 36, 60)
PHENOTYPES = ("cd19pos", "cd19neg", "lineage_switch")
CAUSE_CODES = {"cd19pos": 1, "cd19neg": 2, "lineage_switch": 3}
DEATH_IN_REMISSION = 4


def _first(*arrays):
    """Element-wise earliest of several day arrays (NaN = did not happen)."""
    out = np.full_like(arrays[0], np.inf)
    for a in arrays:
        out = np.fmin(out, np.where(np.isnan(a), np.inf, a))
    return out


def endpoint_arrays(p: dict, endpoint: str, origin: str, censor_day=None):
    """(mask, durations in days, event labels) for one endpoint.

    Labels are booleans for efs/rfs/os and cause codes for cir (0 censored).
    ``censor_day`` (days since enrolment, NaN = none) censors follow-up early,
    as papers that censor at subsequent therapy (e.g. HSCT in remission) do."""
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
    for name, code in CAUSE_CODES.items():
        codes[relapsed & (p["relapse_phenotype"] == name)] = code
    codes[happened & ~relapsed] = DEATH_IN_REMISSION
    return mask, durations, codes[mask]


def _weights_for(weights, mask):
    return None if weights is None else weights[:, mask]


def _share(flag, mask, weights):
    if weights is None:
        chosen = flag[mask]
        return float(chosen.mean()) if chosen.size else np.nan
    # Weighted share without copying the (B, n) weights: B dot products.
    mask = np.asarray(mask, dtype=float)
    total = weights @ mask
    hits = weights @ (mask * np.asarray(flag, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / total, np.nan)


def _median(values, mask, weights):
    values = values[mask]
    if values.size == 0:
        return np.nan if weights is None else np.full(weights.shape[0], np.nan)
    if weights is None:
        return float(np.median(values))
    order = np.argsort(values)
    sorted_values = values[order]
    cum = np.cumsum(weights[:, mask][:, order], axis=1)
    half = cum[:, -1:] / 2.0
    # Lower weighted median (the smallest value with half the weight at or below it).
    index = np.minimum((cum < half).sum(axis=1), values.size - 1)
    return sorted_values[index]


def compute_metrics(p: dict, horizon_days: float, weights=None) -> list[tuple]:
    """All metrics of one (policy, replication): (metric, origin, time_months, value, n)."""
    rows = []
    n_all = len(p["end_day"])
    everyone = np.ones(n_all, dtype=bool)
    infused = p["infused"].astype(bool)
    rows.append(("infused", "enrollment", np.nan, _share(infused, everyone, weights), n_all))
    rows.append(("manufacturing_failure", "enrollment", np.nan,
                 _share(p["manufacturing_failure"], everyone, weights), n_all))
    rows.append(("death_before_infusion", "enrollment", np.nan,
                 _share(p["death_cause"] == "pre_infusion", everyone, weights), n_all))
    n_inf = int(infused.sum())
    rows.append(("cr", "infusion", np.nan, _share(p["cr"], infused, weights), n_inf))
    rows.append(("hsct", "infusion", np.nan, _share(p["hsct_count"] > 0, infused, weights), n_inf))
    rows.append(("hsct_death", "infusion", np.nan, _share(p["hsct_death"], infused, weights), n_inf))
    rows.append(("reinfusion", "infusion", np.nan, _share(p["reinfusions"] > 0, infused, weights), n_inf))
    relapsed = ~np.isnan(p["relapse_day"])
    for name in PHENOTYPES:
        rows.append((f"relapse_share_{name}", "infusion", np.nan,
                     _share(p["relapse_phenotype"] == name, relapsed, weights), int(relapsed.sum())))
    started = p["manufacturing_attempts"] > 0
    rows.append(("wait_manufacturing_days", "enrollment", np.nan,
                 _median(p["wait_manufacturing_days"], started, weights), int(started.sum())))
    rows.append(("vein_to_vein_days", "infusion", np.nan, _median(p["vein_to_vein_days"], infused, weights), n_inf))
    transplanted = p["hsct_count"] > 0
    rows.append(("wait_hsct_bed_days", "infusion", np.nan, _median(p["hsct_bed_wait_days"], transplanted, weights),
                 int(transplanted.sum())))

    times_days = np.asarray(TIMES_MONTHS, dtype=float) * DAYS_PER_MONTH
    def add(metric, origin, values, n):
        for t, v in zip(TIMES_MONTHS, np.moveaxis(np.atleast_1d(values), -1, 0), strict=True):
            rows.append((metric, origin, float(t), v if weights is not None else float(v), n))

    for origin in ("infusion", "enrollment"):
        # Responders' relapse-free survival and every cumulative incidence of
        # relapse come from one Aalen-Johansen risk table.
        cr_mask, cr_durations, codes = endpoint_arrays(p, "cir", origin)
        rfs, incidence = _competing_or_nan(cr_durations, codes, times_days, _weights_for(weights, cr_mask))
        n_cr = int(cr_mask.sum())
        for endpoint in ("efs", "rfs", "os"):
            if endpoint == "rfs":
                add("rfs", origin, rfs, n_cr)
                continue
            mask, durations, events = endpoint_arrays(p, endpoint, origin)
            add(endpoint, origin, _survival_or_nan(kaplan_meier, durations, events, times_days,
                                                   _weights_for(weights, mask)), int(mask.sum()))
        add("cir", origin, incidence[..., :len(PHENOTYPES), :].sum(axis=-2), n_cr)
        for phenotype in PHENOTYPES:
            add(f"cir_{phenotype}", origin, incidence[..., CAUSE_CODES[phenotype] - 1, :], n_cr)
        mask, durations, events = endpoint_arrays(p, "os", origin)
        if durations.size:
            tau = horizon_days if origin == "enrollment" else min(horizon_days, float(durations.max()))
            rmst = restricted_mean(durations, events, tau, _weights_for(weights, mask)) / DAYS_PER_MONTH
        else:
            rmst = np.nan if weights is None else np.full(weights.shape[0], np.nan)
        rows.append(("rmst_os", origin, round(tau / DAYS_PER_MONTH, 3) if durations.size else np.nan,
                     rmst if weights is not None else float(rmst), int(mask.sum())))
    return rows


def _competing_or_nan(durations, codes, times_days, weights):
    """(relapse-free survival, incidence per cause) at ``times_days``; NaN
    beyond the longest follow-up."""
    n_causes = DEATH_IN_REMISSION
    batch = () if weights is None else (weights.shape[0],)
    if durations.size == 0:
        return np.full(batch + (len(times_days),), np.nan), np.full(batch + (n_causes, len(times_days)), np.nan)
    survival, incidence = competing_risks(durations, codes, n_causes, times_days, weights)
    beyond = times_days > durations.max() + 1e-9
    survival = np.array(survival, dtype=float)
    incidence = np.array(incidence, dtype=float)
    survival[..., beyond] = np.nan
    incidence[..., beyond] = np.nan
    return survival, incidence


def _survival_or_nan(estimator, durations, labels, times_days, weights, **kw):
    """Estimator values, NaN at times beyond the longest follow-up (undefined there)."""
    shape = (len(times_days),) if weights is None else (weights.shape[0], len(times_days))
    if durations.size == 0:
        return np.full(shape, np.nan)
    args = (durations, labels, kw["cause"]) if "cause" in kw else (durations, labels)
    values = np.asarray(estimator(*args, times_days, weights=weights), dtype=float)
    beyond = times_days > durations.max() + 1e-9
    values[..., beyond] = np.nan
    return values
