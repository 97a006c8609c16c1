"""Published figures that constrain the same parameters together.

A meta-analysis may report a relapse hazard ratio, a leukaemia-free survival
hazard ratio and a transplant mortality pooled over different subsets of its
studies, so that no parameter set reproduces all three point estimates (here:
an LFS HR below the relapse HR would need transplants that kill nobody).
Matching one figure exactly and ignoring the others hides that conflict; a
synthesis weighs them instead.  Each figure i contributes

    z_i = (log model_i - log published_i) / se_i,   se_i = (log upper - log lower) / (2 x 1.96),

and the parameters minimise sum z_i^2 (weighted least squares on the log
scale: a Gaussian likelihood of the published log estimates).  Their
uncertainty is the Laplace approximation around the minimum, on the
optimiser's (logit-of-search-range) scale: covariance 2 H^-1, with H the
finite-difference Hessian of sum z_i^2 (common random numbers keep it smooth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from .fit import Calibrator, StageResult, _simplex, from_unit, to_unit

Z95 = 1.959964
HESSIAN_STEP = 0.25  # on the optimiser's scale: wide enough to step over Monte Carlo grain


@dataclass
class SynthesisResult(StageResult):
    evidence: list = field(default_factory=list)  # one dict per published figure, at the fit
    intervals: dict = field(default_factory=dict)  # path -> (lower, upper), 95%, Laplace
    note: str = ""


def log_standard_error(ci) -> float:
    """Standard error of a log estimate from its 95% CI."""
    return (math.log(float(ci[1])) - math.log(float(ci[0]))) / (2 * Z95)


def figure_value(evidence, values: dict, calibrator: Calibrator) -> float:
    """The model's value of one published figure at parameter ``values``."""
    if evidence.analysis is not None:
        return calibrator.recover(values, evidence.analysis)["hr"]
    p = values[evidence.parameter]
    if evidence.odds_ratio is None:
        return p
    odds = p / (1.0 - p) * values[evidence.odds_ratio]
    return odds / (1.0 + odds)


def synthesize(calibrator: Calibrator, values: dict, synthesis, published: dict, log=print) -> SynthesisResult:
    """Fit ``synthesis.parameters`` (in ``values``) to its published figures
    by precision-weighted least squares; return the fit, each figure's model
    value and standardised gap, and each parameter's 95% interval."""
    parameters = synthesis.parameters
    figures = [(e, float(published[e.id]["value"]), published[e.id]["ci"]) for e in synthesis.evidence]
    evaluations = 0

    def model_values(z) -> list[float]:
        nonlocal evaluations
        evaluations += 1
        trial = {**values, **{p.path: from_unit(p, zi) for p, zi in zip(parameters, z, strict=True)}}
        return [figure_value(e, trial, calibrator) for e, _value, _ci in figures]

    def gaps(z) -> np.ndarray:
        return np.array([(math.log(m) - math.log(value)) / log_standard_error(ci)
                         for m, (_e, value, ci) in zip(model_values(z), figures, strict=True)])

    def objective(z) -> float:
        return float(np.sum(gaps(z) ** 2))

    start = np.array([to_unit(p, values.get(p.path, calibrator.prior_values([p])[p.path])) for p in parameters])
    before = objective(start)
    res = optimize.minimize(objective, start, method="Nelder-Mead",
                            options={"maxfev": synthesis.max_evaluations, "xatol": 1e-2, "fatol": 1e-3,
                                     "initial_simplex": _simplex(start, step=0.5)})
    best = res.x if res.fun < before else start
    values.update({p.path: from_unit(p, zi) for p, zi in zip(parameters, best, strict=True)})
    at_fit = model_values(best)
    after = float(sum(((math.log(m) - math.log(v)) / log_standard_error(ci)) ** 2
                      for m, (_e, v, ci) in zip(at_fit, figures, strict=True)))
    intervals = _laplace_intervals(objective, best, after, parameters)
    evidence = []
    for m, (e, value, ci) in zip(at_fit, figures, strict=True):
        gap = (math.log(m) - math.log(value)) / log_standard_error(ci)
        how = e.analysis or (f"{e.parameter} under the odds ratio {e.odds_ratio}" if e.odds_ratio
                             else f"value of {e.parameter}")
        evidence.append({"id": e.id, "how": how, "published": value,
                         "lower": float(ci[0]), "upper": float(ci[1]), "model": m, "z": gap,
                         "inside": float(ci[0]) <= m <= float(ci[1])})
    log(f"synthesis {synthesis.id}: objective {before:.2f} -> {after:.2f} in {evaluations} evaluations; "
        + ", ".join(f"{row['id']} {row['model']:.3g} (published {row['published']:g})" for row in evidence))
    return SynthesisResult(f"synthesis {synthesis.id}", {p.path: values[p.path] for p in parameters}, before, after,
                           evaluations, {}, evidence, intervals, synthesis.note)


def _laplace_intervals(objective, centre: np.ndarray, at_centre: float, parameters) -> dict:
    """95% intervals from the curvature of the objective at the fit (None for
    a parameter when the curvature is not positive definite: the figures do
    not pin it down)."""
    dims, h = len(centre), HESSIAN_STEP
    hessian = np.empty((dims, dims))
    unit = np.eye(dims) * h
    for i in range(dims):
        plus, minus = objective(centre + unit[i]), objective(centre - unit[i])
        hessian[i, i] = (plus - 2 * at_centre + minus) / h ** 2
        for j in range(i):
            cross = (objective(centre + unit[i] + unit[j]) - objective(centre + unit[i] - unit[j])
                     - objective(centre - unit[i] + unit[j]) + objective(centre - unit[i] - unit[j])) / (4 * h ** 2)
            hessian[i, j] = hessian[j, i] = cross
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return {p.path: None for p in parameters}
    covariance = 2.0 * np.linalg.inv(hessian)
    out = {}
    for i, p in enumerate(parameters):
        half = Z95 * math.sqrt(covariance[i, i])
        low, high = from_unit(p, centre[i] - half), from_unit(p, centre[i] + half)
        out[p.path] = (min(low, high), max(low, high))
    return out
