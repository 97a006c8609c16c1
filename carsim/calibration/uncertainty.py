"""Calibration uncertainty: the parameter values, besides the best fit, that
reproduce the published targets as well.

Approximate Bayesian calibration by importance sampling (Rubin 1988's
sampling-importance resampling, as used for simulation models by Rutter,
Miglioretti and Savarino, JASA 2009, and Menzies et al., PharmacoEconomics
2017), with adaptive proposals (adaptive multiple importance sampling,
Cornuet et al., Scand J Stat 2012):

* prior: flat over each fitted parameter's search range, on its scale
  (log or linear), i.e. a logistic density on the optimiser's coordinate z;
* acceptance (a uniform kernel, as in approximate Bayesian computation): a
  parameter set is kept when every fitted target falls inside its published
  interval or stated tolerance.  A Gaussian likelihood on the standardised
  differences was tried first: with simulated outputs its Monte Carlo noise
  made the weights degenerate (a handful of sets took the resample);
* proposal: first a Student-t (4 degrees of freedom) around the best fit
  whose scale on each axis follows the objective's rise one ``spread`` step
  either way, then, round by round, a multivariate t with the weighted mean
  and covariance of the accepted sets so far, a tenth of each round drawn
  from the prior itself (defensive importance sampling, Hesterberg 1995);
  weights (prior / the mixture of all these) keep the resample exact as the
  number of samples grows, and no weight exceeds ten;
* the resample (``keep`` rows, with replacement) is what PSA draws from, a
  whole row at a time so the correlations between parameters are kept.

The number of accepted sets, the effective sample size and the number of
distinct rows say how much the resample can be trusted; all are in the
report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import CarsimError
from ..model.random import stream_id
from .fit import Calibrator, from_unit, to_unit

MAX_SCALE = 2.0  # proposal scale on the optimiser's scale for a parameter the targets barely constrain
TAIL_DF = 4  # Student-t proposals
DEFENSIVE_SHARE = 0.1  # of each round drawn from the prior itself


@dataclass
class Posterior:
    parameters: list  # the calibration's fitted Parameters, one per column
    draws: np.ndarray  # (keep, parameters) resampled values
    samples: int
    effective_sample_size: float
    distinct: int
    accepted: int  # parameter sets with every fitted target inside its interval

    def summary(self) -> list[dict]:
        """Per parameter: median and 95% interval of the draws."""
        out = []
        for j, parameter in enumerate(self.parameters):
            low, median, high = np.quantile(self.draws[:, j], [0.025, 0.5, 0.975])
            out.append({"path": parameter.path, "median": float(median), "low": float(low), "high": float(high)})
        return out


def _log_prior(z: np.ndarray) -> np.ndarray:
    """Flat on each parameter's share of its search range: the logistic density in z."""
    return np.sum(-z - 2.0 * np.log1p(np.exp(-z)), axis=1)


def sample_importance_resample(calibrator: Calibrator, values: dict, settings, log=print) -> Posterior:
    """Joint draws of the stage parameters (the matched ones keep their
    published intervals) around the fitted ``values``."""
    spec = calibrator.spec
    parameters = [p for stage in spec.stages for p in stage.parameters]
    fitted_ids = sorted({t for stage in spec.stages for t in stage.targets if calibrator.targets[t].mapping.fit})
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(stream_id("calibration.sir"),)))
    centre = np.array([to_unit(p, values[p.path]) for p in parameters])
    dims = len(parameters)

    def evaluate(z_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(objective, every fitted target inside its interval) per parameter set."""
        objective, inside = np.empty(len(z_rows)), np.empty(len(z_rows), bool)
        for i, z in enumerate(z_rows):
            trial = {**values, **{p.path: from_unit(p, zi) for p, zi in zip(parameters, z, strict=True)}}
            evaluation = calibrator.evaluate(trial, fitted_ids)
            objective[i] = calibrator.objective(evaluation, fitted_ids)
            inside[i] = all(calibrator.targets[t].inside(evaluation.outputs[t]) for t in fitted_ids)
        return objective, inside

    # Scale the first proposal to the objective's curvature along each axis:
    # a step of ``spread`` either way raises it by D on average, which a
    # normal likelihood would give with SD spread / sqrt(D) (flat directions
    # are capped at about the prior's own width).
    steps = np.vstack([centre + sign * settings.spread * np.eye(dims)[j] for j in range(dims) for sign in (-1, 1)])
    at_fit = evaluate(centre[None, :])[0][0]
    rise = (evaluate(steps)[0] - at_fit).reshape(dims, 2).mean(axis=1)
    scale = np.minimum(settings.spread / np.sqrt(np.maximum(rise, 1e-2)), MAX_SCALE)
    per_round = np.diff(np.linspace(0, settings.samples, settings.rounds + 1).round().astype(int))
    proposals = [stats.multivariate_t(centre, np.diag(scale ** 2), df=TAIL_DF)]
    z, kept = np.empty((0, dims)), np.empty(0, bool)
    for r, n in enumerate(per_round):
        # Defensive importance sampling (Hesterberg, Technometrics 1995): a
        # share of each round comes from the prior itself, so no weight
        # (prior / proposal mixture) exceeds 1 / DEFENSIVE_SHARE.
        from_prior = int(n * DEFENSIVE_SHARE + 0.5)
        uniform = rng.random((from_prior, dims))
        new = np.vstack([np.log(uniform / (1.0 - uniform)),
                         proposals[r].rvs(size=n - from_prior, random_state=rng).reshape(n - from_prior, dims)])
        z, kept = np.vstack([z, new]), np.concatenate([kept, evaluate(new)[1]])
        shares = per_round[:r + 1] / per_round[:r + 1].sum() * (1.0 - DEFENSIVE_SHARE)
        mixture = np.logaddexp.reduce([np.log(DEFENSIVE_SHARE) + _log_prior(z)]
                                      + [np.log(share) + q.logpdf(z) for share, q in zip(shares, proposals,
                                                                                           strict=True)], axis=0)
        log_w = np.where(kept, _log_prior(z) - mixture, -np.inf)
        if not kept.any():
            if r + 1 < settings.rounds:
                proposals.append(proposals[r])
            continue
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        if r + 1 < settings.rounds:
            covariance = np.cov(z[kept].T, aweights=w[kept]) if kept.sum() > dims else np.diag(scale ** 2)
            covariance = covariance + np.diag(scale ** 2) * 0.01  # a ridge: few accepted sets early on
            proposals.append(stats.multivariate_t(w @ z, covariance * 1.5, df=TAIL_DF, allow_singular=True))
    if not kept.any():
        raise CarsimError(f"calibration uncertainty: none of {settings.samples} parameter sets around the fit "
                          "reproduces every fitted target inside its interval; lower uncertainty.spread")
    ess = float(1.0 / np.sum(w ** 2))
    rows = rng.choice(len(z), size=settings.keep, replace=True, p=w)
    draws = np.array([[from_unit(p, z[r, j]) for j, p in enumerate(parameters)] for r in rows])
    posterior = Posterior(parameters, draws, settings.samples, ess, len(np.unique(rows)), int(kept.sum()))
    log(f"calibration uncertainty: {posterior.accepted} of {settings.samples} parameter sets reproduce every "
        f"fitted target; effective sample size {ess:.0f}, {posterior.distinct} distinct of {settings.keep} "
        "resampled draws")
    return posterior
