"""Model outputs that published figures can be compared with.

Each output is named and computed from the flat patient table of one
simulated cohort.  A calibration file maps every target to one of these by
name, with its time origin, time point and endpoint options; a name that is
not an output of the calibrated scenario is an error when the calibration
file loads.

The outputs by relapse phenotype come from the scenario's phenotypes
(``Scenario.relapse_phenotypes``): ``cir_<phenotype>`` and
``relapse_share_<phenotype>`` for each.  An output defined for one named
phenotype (``cd19neg_share_of_relapses_with_bca``) exists only when the
scenario has that phenotype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._units import DAYS_PER_MONTH
from ..experiment.metrics import cause_codes, endpoint_arrays
from ..experiment.survival import cumulative_incidence, kaplan_meier


class UnknownOutput(ValueError):
    """An output name the scenario does not define (the message says why)."""


@dataclass(frozen=True)
class Output:
    compute: Callable  # (patients, origin, time_months, options) -> float
    needs_time: bool = False  # read at a time point
    origin_free: bool = False  # its definition fixes its own time origin
    requires: tuple[str, ...] = ()  # the relapse phenotypes it names


def _share(flag, mask):
    mask = np.asarray(mask, dtype=bool)
    return float(np.mean(flag[mask])) if mask.any() else float("nan")


def _survival_at(durations, events, time_months) -> float:
    """Kaplan-Meier survival at ``time_months`` (NaN past the longest follow-up)."""
    t = time_months * DAYS_PER_MONTH
    if durations.size == 0 or t > durations.max():
        return float("nan")
    return float(kaplan_meier(durations, events, [t])[0])


def _survival(p, endpoint, origin, time_months, censor_at_hsct=False):
    censor = p["first_hsct_day"] if censor_at_hsct else None
    _mask, durations, events = endpoint_arrays(p, endpoint, origin, censor_day=censor)
    return _survival_at(durations, events, time_months)


def _incidence(p, origin, time_months, wanted, phenotypes, censor_at_hsct=False):
    """Cumulative incidence of relapse with a phenotype in ``wanted``; the
    other phenotypes and death in remission compete."""
    censor = p["first_hsct_day"] if censor_at_hsct else None
    _mask, durations, codes = endpoint_arrays(p, "cir", origin, censor_day=censor, phenotypes=phenotypes)
    t = time_months * DAYS_PER_MONTH
    if durations.size == 0 or t > durations.max():
        return float("nan")
    codes_of = cause_codes(phenotypes)
    labels = np.where(np.isin(codes, [codes_of[name] for name in wanted]), 1, np.where(codes > 0, 2, 0))
    return float(cumulative_incidence(durations, labels, 1, [t])[0])


def _median(durations, events) -> float:
    """Kaplan-Meier median in months (NaN if survival stays above one half)."""
    if durations.size == 0:
        return float("nan")
    grid = np.linspace(0, durations.max(), 2000)
    below = np.nonzero(kaplan_meier(durations, events, grid) <= 0.5)[0]
    return float(grid[below[0]] / DAYS_PER_MONTH) if below.size else float("nan")


def _median_survival(p, endpoint, origin, censor_at_hsct=False):
    censor = p["first_hsct_day"] if censor_at_hsct else None
    _mask, durations, events = endpoint_arrays(p, endpoint, origin, censor_day=censor)
    return _median(durations, events)


def _median_remission(p, censor_at_hsct=False):
    """Duration of remission: responders, from the response to relapse or death."""
    censor = p["first_hsct_day"] if censor_at_hsct else None
    mask, durations, events = endpoint_arrays(p, "rfs", "infusion", censor_day=censor)
    since_response = durations - (p["response_day"] - p["infusion_day"])[mask]
    return _median(np.maximum(since_response, 0.0), events)


def _after_relapse(p, phenotype=None) -> tuple[np.ndarray, np.ndarray]:
    """(days from the (first) relapse to death or the end, died) among the
    patients who relapsed (with ``phenotype``: that phenotype's relapses)."""
    relapsed = ~np.isnan(p["relapse_day"])
    if phenotype:
        relapsed &= p["relapse_phenotype"] == phenotype
    return (p["end_day"] - p["relapse_day"])[relapsed], ~np.isnan(p["death_day"][relapsed])


def _median_os_after_relapse(p, phenotype=None):
    return _median(*_after_relapse(p, phenotype))


def _os_after_relapse(p, time_months, phenotype=None):
    """Kaplan-Meier OS ``time_months`` after the (first) relapse."""
    return _survival_at(*_after_relapse(p, phenotype), time_months)


def _bca_retained(p, time_months):
    """Kaplan-Meier probability of keeping B-cell aplasia (no B-cell recovery
    seen at a check) at ``time_months`` after infusion, among responders;
    relapse, HSCT, death and the end of follow-up censor."""
    responders = np.asarray(p["cr"], dtype=bool)
    start = p["infusion_day"][responders]
    seen = p["bca_loss_detected_day"][responders] - start
    stop = np.fmin.reduce([p["end_day"][responders] - start, p["relapse_day"][responders] - start,
                           p["first_hsct_day"][responders] - start])
    events = ~np.isnan(seen) & ~(seen > stop)
    return _survival_at(np.where(events, seen, stop), events, time_months)


def _relapse_with_bca(p):
    """Share CD19-negative among relapses that happened while B-cell aplasia persisted."""
    relapsed = ~np.isnan(p["relapse_day"])
    with_bca = relapsed & ~(p["bca_loss_day"] <= p["relapse_day"])
    return _share(p["relapse_phenotype"] == "cd19neg", with_bca)


def _relapse_share(name):
    return lambda p, o, t, opt: _share(p["relapse_phenotype"] == name, ~np.isnan(p["relapse_day"]))


# Outputs that do not depend on the scenario's phenotypes, or name one of them (``requires``).
_FIXED = {
    "infused": Output(lambda p, o, t, opt: _share(p["infused"], np.ones_like(p["infused"]))),
    "manufacturing_failure": Output(lambda p, o, t, opt: _share(p["manufacturing_failure"],
                                                                np.ones_like(p["infused"]))),
    "not_infused_death_or_withdrawal": Output(
        lambda p, o, t, opt: _share(~p["infused"] & ~p["manufacturing_failure"]
                                    & ((p["death_cause"] == "pre_infusion") | p["withdrawn"]),
                                    np.ones_like(p["infused"]))),
    "enrollment_to_infusion_days": Output(
        lambda p, o, t, opt: float(np.median(p["infusion_day"][p["infused"]])), origin_free=True),
    "cr": Output(lambda p, o, t, opt: _share(p["cr"], p["infused"]) if o == "infusion"
                 else _share(p["cr"], np.ones_like(p["cr"]))),
    "efs": Output(lambda p, o, t, opt: _survival(p, "efs", o, t, **opt), needs_time=True),
    "rfs": Output(lambda p, o, t, opt: _survival(p, "rfs", o, t, **opt), needs_time=True),
    "os": Output(lambda p, o, t, opt: _survival(p, "os", o, t, **opt), needs_time=True),
    "bca_retained": Output(lambda p, o, t, opt: _bca_retained(p, t), needs_time=True),
    "relapse_any": Output(lambda p, o, t, opt: _share(~np.isnan(p["relapse_day"]), p["infused"]),
                          origin_free=True),
    "cd19neg_share_of_relapses_with_bca": Output(lambda p, o, t, opt: _relapse_with_bca(p), origin_free=True,
                                                 requires=("cd19neg",)),
    "high_burden_share": Output(
        lambda p, o, t, opt: _share(p["marrow_blasts_infusion"] >= 5, p["infused"]), origin_free=True),
    "high_burden_share_of_nonresponders": Output(
        lambda p, o, t, opt: _share(p["marrow_blasts_infusion"] >= 5, p["infused"] & ~p["cr"]),
        origin_free=True),
    "severe_crs": Output(lambda p, o, t, opt: _share(p["severe_crs"], p["infused"]), origin_free=True),
    "severe_icans": Output(lambda p, o, t, opt: _share(p["severe_icans"], p["infused"]), origin_free=True),
    "median_os_months": Output(lambda p, o, t, opt: _median_survival(p, "os", o, **opt)),
    "median_remission_months": Output(lambda p, o, t, opt: _median_remission(p, **opt), origin_free=True),
    "median_os_after_relapse_months": Output(lambda p, o, t, opt: _median_os_after_relapse(p),
                                             origin_free=True),
    "os_after_relapse": Output(lambda p, o, t, opt: _os_after_relapse(p, t), needs_time=True, origin_free=True),
}
# Outputs per relapse phenotype: name pattern -> Output for one phenotype.
_PER_PHENOTYPE = ("cir_{}", "relapse_share_{}", "os_after_relapse_{}")


def model_outputs(phenotypes) -> dict[str, Output]:
    """Every output of a scenario whose relapse phenotypes are ``phenotypes`` (in scenario order)."""
    return dict(_outputs(tuple(phenotypes)))


@functools.lru_cache(maxsize=16)
def _outputs(phenotypes: tuple[str, ...]) -> dict[str, Output]:
    outputs = {name: output for name, output in _FIXED.items() if set(output.requires) <= set(phenotypes)}
    outputs["cir"] = Output(lambda p, o, t, opt: _incidence(p, o, t, phenotypes, phenotypes, **opt),
                            needs_time=True)
    for name in phenotypes:
        outputs[f"cir_{name}"] = Output(
            lambda p, o, t, opt, name=name: _incidence(p, o, t, (name,), phenotypes, **opt), needs_time=True)
        outputs[f"relapse_share_{name}"] = Output(_relapse_share(name), origin_free=True)
        outputs[f"os_after_relapse_{name}"] = Output(
            lambda p, o, t, opt, name=name: _os_after_relapse(p, t, name), needs_time=True, origin_free=True)
    return outputs


def resolve_output(name: str, phenotypes) -> Output:
    """The output ``name`` of a scenario with ``phenotypes``; :class:`UnknownOutput` says why not."""
    phenotypes = tuple(phenotypes)
    outputs = _outputs(phenotypes)
    if name in outputs:
        return outputs[name]
    have = ", ".join(phenotypes)
    if name in _FIXED:
        missing = [p for p in _FIXED[name].requires if p not in phenotypes]
        raise UnknownOutput(f"output {name!r} needs the relapse phenotype {missing[0]!r}, which the scenario "
                            f"does not have (its phenotypes: {have})")
    for pattern in _PER_PHENOTYPE:
        prefix = pattern.format("")
        if name.startswith(prefix) and name != prefix:
            raise UnknownOutput(f"output {name!r}: {name.removeprefix(prefix)!r} is not a relapse phenotype "
                                f"of the scenario (its phenotypes: {have})")
    raise UnknownOutput(f"unknown model output {name!r}; expected one of: {', '.join(outputs)}")


def compute_output(p: dict, name: str, origin: str = "infusion", time_months=None, censor_at_hsct=False, *,
                   phenotypes) -> float:
    """The output ``name`` of the patient table ``p``; ``phenotypes``: the
    scenario's relapse phenotypes, in scenario order."""
    output = resolve_output(name, phenotypes)
    options = {"censor_at_hsct": True} if censor_at_hsct else {}
    return output.compute(p, origin, time_months, options)
