"""Calibration uncertainty: the parameter values, besides the best fit, that
reproduce the published targets about as well.

Sampling-importance resampling (Rubin 1988; as used for calibrating
simulation models by Rutter, Miglioretti and Savarino, JASA 2009, and
Menzies et al., PharmacoEconomics 2017), with one adaptive round
(adaptive multiple importance sampling, Cornuet et al. 2012):

* prior: flat over each fitted parameter's search range, on its scale
  (log or linear), i.e. a logistic density on the optimiser's coordinate z;
* likelihood: every fitted target normal around its published value with
  the standard error of its interval, so log L = -objective / 2;
* proposal: first a normal around the best fit whose SD on each axis
  follows the objective's rise one ``spread`` step either way, then, round
  by round, a multivariate normal with the weighted mean and covariance of
  the samples so far; weights use the mixture of all the proposals, so the
  resample is exact as the number of samples grows;
* the resample (``keep`` rows, with replacement) is what PSA draws from, a
  whole row at a time so the correlations between parameters are kept.

The effective sample size and the number of distinct rows say how much the
resample can be trusted; both are in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..model.random import stream_id
from .fit import Calibrator, from_unit, to_unit

MAX_SCALE = 1.5  # proposal SD on the optimiser's scale for a parameter the targets barely constrain


@dataclass
class Posterior:
    parameters: list  # the calibration's fitted Parameters, one per column
    draws: np.ndarray  # (keep, parameters) resampled values
    samples: int
    effective_sample_size: float
    distinct: int

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

    def log_likelihood(z_rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(z_rows))
        for i, z in enumerate(z_rows):
            trial = {**values, **{p.path: from_unit(p, zi) for p, zi in zip(parameters, z, strict=True)}}
            out[i] = -0.5 * calibrator.objective(calibrator.evaluate(trial, fitted_ids), fitted_ids)
        return out

    # Scale the first proposal to the likelihood's curvature along each axis:
    # a step of ``spread`` either way lowers the log-likelihood by R on
    # average, so its SD on that axis is about spread / sqrt(2 R) (flat
    # directions are capped at about the prior's own width).
    steps = np.vstack([centre + sign * settings.spread * np.eye(dims)[j] for j in range(dims) for sign in (-1, 1)])
    at_fit = log_likelihood(centre[None, :])[0]
    rise = (at_fit - log_likelihood(steps)).reshape(dims, 2).mean(axis=1)  # half the objective's rise
    scale = np.minimum(settings.spread / np.sqrt(np.maximum(2.0 * rise, 1e-2)), MAX_SCALE)
    # Adaptive multiple importance sampling (Cornuet et al., Scand J Stat
    # 2012): each round's proposal is a normal with the weighted mean and
    # covariance of every sample so far; the weights use the mixture of all
    # the rounds' proposals (deterministic mixture), so each sample keeps a
    # valid weight as the proposal adapts.
    per_round = np.diff(np.linspace(0, settings.samples, settings.rounds + 1).round().astype(int))
    proposals, z, ll = [stats.multivariate_normal(centre, np.diag(scale ** 2))], np.empty((0, dims)), np.empty(0)
    for r, n in enumerate(per_round):
        new = proposals[r].rvs(size=n, random_state=rng).reshape(n, dims)
        z, ll = np.vstack([z, new]), np.concatenate([ll, log_likelihood(new)])
        shares = per_round[:r + 1] / per_round[:r + 1].sum()
        mixture = np.logaddexp.reduce([np.log(share) + q.logpdf(z) for share, q in zip(shares, proposals,
                                                                                      strict=True)], axis=0)
        log_w = ll + _log_prior(z) - mixture
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        if r + 1 < settings.rounds:
            covariance = np.cov(z.T, aweights=w) + np.diag(scale ** 2) * 0.01  # a ridge: few effective rows early
            proposals.append(stats.multivariate_normal(w @ z, covariance * 1.5, allow_singular=True))
    ess = float(1.0 / np.sum(w ** 2))
    rows = rng.choice(len(z), size=settings.keep, replace=True, p=w)
    draws = np.array([[from_unit(p, z[r, j]) for j, p in enumerate(parameters)] for r in rows])
    posterior = Posterior(parameters, draws, settings.samples, ess, len(np.unique(rows)))
    log(f"calibration uncertainty: {settings.samples} samples, effective sample size {ess:.0f}, "
        f"{posterior.distinct} distinct of {settings.keep} resampled draws")
    return posterior
