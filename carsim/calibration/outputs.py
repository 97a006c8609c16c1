"""Model outputs that published figures can be compared with.

Each output is named and computed from the flat patient table of one
simulated cohort.  A calibration file maps every target to one of these by
name, with its time origin, time point and endpoint options; a name that is
not here is an error when the calibration file loads.
"""

from __future__ import annotations

import numpy as np

from .._units import DAYS_PER_MONTH
from ..analysis.endpoints import CAUSE_CODES, endpoint_arrays
from ..analysis.survival import cumulative_incidence, kaplan_meier


def _share(flag, mask):
    mask = np.asarray(mask, dtype=bool)
    return float(np.mean(flag[mask])) if mask.any() else float("nan")


def _survival(p, endpoint, origin, time_months, censor_at_hsct=False):
    censor = p["first_hsct_day"] if censor_at_hsct else None
    _mask, durations, events = endpoint_arrays(p, endpoint, origin, censor_day=censor)
    t = time_months * DAYS_PER_MONTH
    if durations.size == 0 or t > durations.max():
        return float("nan")
    return float(kaplan_meier(durations, events, [t])[0])


def _incidence(p, origin, time_months, phenotypes, censor_at_hsct=False):
    censor = p["first_hsct_day"] if censor_at_hsct else None
    _mask, durations, codes = endpoint_arrays(p, "cir", origin, censor_day=censor)
    t = time_months * DAYS_PER_MONTH
    if durations.size == 0 or t > durations.max():
        return float("nan")
    wanted = [CAUSE_CODES[name] for name in phenotypes]
    labels = np.where(np.isin(codes, wanted), 1, np.where(codes > 0, 2, 0))
    return float(cumulative_incidence(durations, labels, 1, [t])[0])


def _median_os_after_relapse(p, phenotype=None):
    relapsed = ~np.isnan(p["relapse_day"])
    if phenotype:
        relapsed &= p["relapse_phenotype"] == phenotype
    if not relapsed.any():
        return float("nan")
    durations = (p["end_day"] - p["relapse_day"])[relapsed]
    events = ~np.isnan(p["death_day"][relapsed])
    grid = np.linspace(0, durations.max(), 2000)
    survival = kaplan_meier(durations, events, grid)
    below = np.nonzero(survival <= 0.5)[0]
    return float(grid[below[0]] / DAYS_PER_MONTH) if below.size else float("nan")


def _relapse_with_bca(p):
    """Share CD19-negative among relapses that happened while B-cell aplasia persisted."""
    relapsed = ~np.isnan(p["relapse_day"])
    with_bca = relapsed & ~(p["bca_loss_day"] <= p["relapse_day"])
    return _share(p["relapse_phenotype"] == "cd19neg", with_bca)


# name -> (function(p, origin, time_months, options) -> value, needs a time point)
OUTPUTS = {
    "infused": (lambda p, o, t, opt: _share(p["infused"], np.ones_like(p["infused"])), False),
    "manufacturing_failure": (lambda p, o, t, opt: _share(p["manufacturing_failure"], np.ones_like(p["infused"])),
                              False),
    "not_infused_death_or_withdrawal": (
        lambda p, o, t, opt: _share(~p["infused"] & ~p["manufacturing_failure"]
                                    & ((p["death_cause"] == "pre_infusion") | p["withdrawn"]),
                                    np.ones_like(p["infused"])), False),
    "enrollment_to_infusion_days": (lambda p, o, t, opt: float(np.median(p["infusion_day"][p["infused"]])), False),
    "cr": (lambda p, o, t, opt: _share(p["cr"], p["infused"]) if o == "infusion"
           else _share(p["cr"], np.ones_like(p["cr"])), False),
    "efs": (lambda p, o, t, opt: _survival(p, "efs", o, t, **opt), True),
    "rfs": (lambda p, o, t, opt: _survival(p, "rfs", o, t, **opt), True),
    "os": (lambda p, o, t, opt: _survival(p, "os", o, t, **opt), True),
    "cir": (lambda p, o, t, opt: _incidence(p, o, t, ("cd19pos", "cd19neg", "lineage_switch"), **opt), True),
    "cir_cd19pos": (lambda p, o, t, opt: _incidence(p, o, t, ("cd19pos",), **opt), True),
    "cir_cd19neg": (lambda p, o, t, opt: _incidence(p, o, t, ("cd19neg",), **opt), True),
    "relapse_any": (lambda p, o, t, opt: _share(~np.isnan(p["relapse_day"]), p["infused"]), False),
    "relapse_share_cd19pos": (lambda p, o, t, opt: _share(p["relapse_phenotype"] == "cd19pos",
                                                          ~np.isnan(p["relapse_day"])), False),
    "relapse_share_cd19neg": (lambda p, o, t, opt: _share(p["relapse_phenotype"] == "cd19neg",
                                                          ~np.isnan(p["relapse_day"])), False),
    "relapse_share_lineage_switch": (lambda p, o, t, opt: _share(p["relapse_phenotype"] == "lineage_switch",
                                                                 ~np.isnan(p["relapse_day"])), False),
    "cd19neg_share_of_relapses_with_bca": (lambda p, o, t, opt: _relapse_with_bca(p), False),
    "high_burden_share_of_nonresponders": (
        lambda p, o, t, opt: _share(p["marrow_blasts_infusion"] >= 5, p["infused"] & ~p["cr"]), False),
    "median_os_after_relapse_months": (lambda p, o, t, opt: _median_os_after_relapse(p), False),
}


def compute_output(p: dict, name: str, origin: str = "infusion", time_months=None, censor_at_hsct=False) -> float:
    function, _ = OUTPUTS[name]
    options = {"censor_at_hsct": True} if censor_at_hsct else {}
    return function(p, origin, time_months, options)
