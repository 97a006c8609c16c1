"""Published figures that constrain the same parameters together.

A meta-analysis may report a relapse hazard ratio, a leukaemia-free survival
hazard ratio and a transplant mortality pooled over different subsets of its
studies, so that no parameter set reproduces all three point estimates (here:
an LFS HR below the relapse HR would need transplants that kill nobody).
Matching one figure exactly and ignoring the others hides that conflict; a
synthesis weighs them instead.  Each figure i contributes

    z_i = (log model_i - log published_i) / se_i,

with se_i read off its 95% CI on the side of the gap: (log upper - log
published) / 1.96 above the published value, (log published - log lower) /
1.96 below it (a split normal, so a CI that is not symmetric on the log scale,
such as a transplant mortality of 8% (2-15%), weighs each side as published;
for a symmetric one it is the usual standard error).  The parameters minimise
sum z_i^2.  Their uncertainty is the Laplace approximation around the
minimum, on the optimiser's (logit-of-search-range) scale: covariance 2 H^-1,
with H the finite-difference Hessian of sum z_i^2 (common random numbers keep
it smooth).  Joint draws from it go to PSA, so correlations between the
parameters (a first-transplant mortality and the odds ratio of a second one,
say) are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from ..model.random import stream_id
from .fit import Calibrator, StageResult, _simplex, from_unit, to_unit

Z95 = 1.959964
HESSIAN_STEP = 0.25  # on the optimiser's scale: wide enough to step over Monte Carlo grain


@dataclass
class SynthesisResult(StageResult):
    parameters: list = field(default_factory=list)  # the Parameter specs, in column order of ``draws``
    evidence: list = field(default_factory=list)  # one dict per published figure, at the fit
    intervals: dict = field(default_factory=dict)  # path -> (lower, upper), 95%, Laplace; None: not pinned down
    draws: np.ndarray | None = None  # joint draws (rows x parameters); None: not pinned down
    converged: bool = True
    note: str = ""
    id: str = ""  # the synthesis's id in the calibration file (its name is "synthesis <id>")


def standardised_gap(model: float, published: float, ci) -> float:
    """(log model - log published) over the log-scale standard error of the
    published figure on the side of the gap (infinite for a model value that
    is not a positive number)."""
    if not (math.isfinite(model) and model > 0):
        return math.inf
    gap = math.log(model) - math.log(published)
    end = float(ci[1]) if gap > 0 else float(ci[0])
    return gap / (abs(math.log(end) - math.log(published)) / Z95)


def figure_value(evidence, values: dict, calibrator: Calibrator) -> float:
    """The model's value of one published figure at parameter ``values``."""
    if evidence.analysis is not None:
        return calibrator.recover(values, evidence.analysis)["hr"]
    p = values[evidence.parameter]
    if evidence.odds_ratio is None:
        return p
    odds = p / (1.0 - p) * values[evidence.odds_ratio]
    return odds / (1.0 + odds)


def synthesize(calibrator: Calibrator, values: dict, synthesis, published: dict, log=print,
               n_draws: int = 200) -> SynthesisResult:
    """Fit ``synthesis.parameters`` (in ``values``) to its published figures;
    return the fit, each figure's model value and standardised gap, each
    parameter's 95% interval and ``n_draws`` joint draws for PSA."""
    parameters = synthesis.parameters
    figures = [(e, float(published[e.id]["value"]), published[e.id]["ci"]) for e in synthesis.evidence]
    evaluations = 0

    def model_values(z) -> list[float]:
        nonlocal evaluations
        evaluations += 1
        trial = {**values, **{p.path: from_unit(p, zi) for p, zi in zip(parameters, z, strict=True)}}
        return [figure_value(e, trial, calibrator) for e, _value, _ci in figures]

    def objective(z) -> float:
        return float(sum(standardised_gap(m, value, ci) ** 2
                         for m, (_e, value, ci) in zip(model_values(z), figures, strict=True)))

    start = np.array([to_unit(p, values.get(p.path, calibrator.prior_values([p])[p.path])) for p in parameters])
    before = objective(start)
    res = optimize.minimize(objective, start, method="Nelder-Mead",
                            options={"maxfev": synthesis.max_evaluations, "xatol": 1e-2, "fatol": 1e-3,
                                     "initial_simplex": _simplex(start, step=0.5)})
    best = res.x if res.fun < before else start
    values.update({p.path: from_unit(p, zi) for p, zi in zip(parameters, best, strict=True)})
    at_fit = model_values(best)
    evidence = []
    for m, (e, value, ci) in zip(at_fit, figures, strict=True):
        how = e.analysis or (f"{e.parameter} under the odds ratio {e.odds_ratio}" if e.odds_ratio
                             else f"value of {e.parameter}")
        evidence.append({"id": e.id, "how": how, "published": value, "lower": float(ci[0]),
                         "upper": float(ci[1]), "model": m, "z": standardised_gap(m, value, ci),
                         "inside": float(ci[0]) <= m <= float(ci[1])})
    after = float(sum(row["z"] ** 2 for row in evidence))
    covariance = _laplace_covariance(objective, best, after)
    intervals, draws = {p.path: None for p in parameters}, None
    if covariance is not None:
        for i, p in enumerate(parameters):
            half = Z95 * math.sqrt(covariance[i, i])
            intervals[p.path] = (from_unit(p, best[i] - half), from_unit(p, best[i] + half))
        rng = np.random.default_rng(np.random.SeedSequence(
            calibrator.spec.seed, spawn_key=(stream_id(f"calibration.synthesis.{synthesis.id}"),)))
        z = rng.multivariate_normal(best, covariance, size=n_draws, method="cholesky")
        draws = np.array([[from_unit(p, zi) for p, zi in zip(parameters, row, strict=True)] for row in z])
    converged = bool(res.success)
    log(f"synthesis {synthesis.id}: objective {before:.2f} -> {after:.2f} in {evaluations} evaluations"
        f"{'' if converged else ' (stopped at max_evaluations before converging)'}; "
        + ", ".join(f"{row['id']} {row['model']:.3g} (published {row['published']:g})" for row in evidence))
    return SynthesisResult(f"synthesis {synthesis.id}", {p.path: values[p.path] for p in parameters}, before, after,
                           evaluations, {}, list(parameters), evidence, intervals, draws, converged, synthesis.note,
                           synthesis.id)


def _laplace_covariance(objective, centre: np.ndarray, at_centre: float) -> np.ndarray | None:
    """2 H^-1 at the fit, on the optimiser's scale; None when the curvature is
    not positive definite (the figures do not pin the parameters down)."""
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
    if not np.all(np.isfinite(hessian)):
        return None
    try:
        np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return None
    return 2.0 * np.linalg.inv(hessian)
