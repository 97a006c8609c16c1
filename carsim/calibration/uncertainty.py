"""Calibration uncertainty: the parameter values, besides the best fit, that
reproduce the published targets as well.

Approximate Bayesian calibration by Markov chain Monte Carlo without
likelihoods (Marjoram, Molitor, Plagnol & Tavare, PNAS 2003):

* prior: flat over each fitted parameter's search range, on its scale
  (log or linear), i.e. a logistic density on the optimiser's coordinate z;
* acceptance (a uniform kernel, as in approximate Bayesian computation): a
  parameter set is admissible when every fitted target falls inside its
  published interval or stated tolerance; the chains sample the prior
  restricted to the admissible region;
* a pilot of parameter sets from a Student-t around the best fit, scaled on
  each axis to the objective's rise one ``spread`` step either way, gives
  the chains their dispersed admissible starting points and their first
  step covariance;
* ``chains`` random-walk Metropolis chains (step covariance 2.38^2 / d times
  the admissible sets' covariance, re-estimated from the chains during the
  first half: adaptive Metropolis, Haario, Saksman & Tamminen 2001); a move
  is taken when the new set is admissible, with probability
  min(1, prior ratio);
* the second half of every chain is the sample; its effective sample size
  (Geyer's initial positive sequence of autocorrelations, the smallest over
  the parameters) and distinct rows are reported; ``keep`` rows, evenly
  spaced through it, are what PSA draws from, a whole row at a time so the
  correlations between parameters are kept.

Importance sampling from the pilot alone was the first method: in 16 or so
dimensions one admissible set far from the fit took nearly all the weight
(an effective sample size of 1 or 2), which chains avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import CarsimError
from ..model.random import stream_id
from .fit import Calibrator, from_unit, to_unit

MAX_SCALE = 2.0  # pilot scale on the optimiser's scale for a parameter the targets barely constrain
TAIL_DF = 4  # Student-t pilot
PILOT_SHARE = 0.2  # of the samples: the pilot
RANDOM_WALK = 2.38  # optimal random-walk scaling: 2.38 / sqrt(dimensions)


@dataclass
class Posterior:
    parameters: list  # the calibration's fitted Parameters, one per column
    draws: np.ndarray  # (keep, parameters) values
    samples: int  # simulated parameter sets (pilot and chains)
    effective_sample_size: float
    distinct: int
    accepted: int  # admissible parameter sets among the simulated ones
    moves: float = float("nan")  # share of proposed moves the chains took

    def summary(self) -> list[dict]:
        """Per parameter: median and 95% interval of the draws."""
        out = []
        for j, parameter in enumerate(self.parameters):
            low, median, high = np.quantile(self.draws[:, j], [0.025, 0.5, 0.975])
            out.append({"path": parameter.path, "median": float(median), "low": float(low), "high": float(high)})
        return out


def _log_prior(z: np.ndarray) -> np.ndarray:
    """Flat on each parameter's share of its search range: the logistic density in z."""
    z = np.atleast_2d(z)
    return np.sum(-z - 2.0 * np.log1p(np.exp(-z)), axis=1)


def effective_sample_size(chains: np.ndarray) -> float:
    """(chains, steps, parameters) -> the smallest over the parameters of the
    summed per-chain ESS, each n / (1 + 2 sum of autocorrelations) with
    Geyer's initial positive sequence."""
    n_chains, steps, dims = chains.shape
    if steps < 4:
        return float(n_chains * steps)
    worst = np.inf
    for j in range(dims):
        total = 0.0
        for c in range(n_chains):
            x = chains[c, :, j] - chains[c, :, j].mean()
            variance = float(x @ x) / steps
            if variance == 0:
                total += 1.0  # a chain that never moved carries one draw
                continue
            size = 1 << (2 * steps - 1).bit_length()  # autocovariances by FFT, zero-padded
            spectrum = np.fft.rfft(x, size)
            rho = np.fft.irfft(spectrum * np.conj(spectrum), size)[:steps] / steps / variance
            tau = 1.0
            for k in range(1, steps - 1, 2):  # pairs of lags while their sum stays positive
                pair = rho[k] + rho[k + 1]
                if pair <= 0:
                    break
                tau += 2.0 * pair
            total += steps / tau
        worst = min(worst, total)
    return float(worst)


def sample_posterior(calibrator: Calibrator, values: dict, settings, log=print) -> Posterior:
    """Joint draws of the stage parameters (the matched ones keep their
    published intervals) around the fitted ``values``."""
    spec = calibrator.spec
    parameters = [p for stage in spec.stages for p in stage.parameters]
    fitted_ids = sorted({t for stage in spec.stages for t in stage.targets if calibrator.targets[t].mapping.fit})
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(stream_id("calibration.abc"),)))
    centre = np.array([to_unit(p, values[p.path]) for p in parameters])
    dims = len(parameters)
    evaluated = 0

    def admissible(z_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(objective, every fitted target inside its interval) per parameter set."""
        nonlocal evaluated
        objective, inside = np.empty(len(z_rows)), np.empty(len(z_rows), bool)
        for i, z in enumerate(z_rows):
            trial = {**values, **{p.path: from_unit(p, zi) for p, zi in zip(parameters, z, strict=True)}}
            evaluation = calibrator.evaluate(trial, fitted_ids)
            objective[i] = calibrator.objective(evaluation, fitted_ids)
            inside[i] = all(calibrator.targets[t].inside(evaluation.outputs[t]) for t in fitted_ids)
        evaluated += len(z_rows)
        return objective, inside

    # Pilot: a t around the fit scaled to the objective's curvature along each axis.
    steps = np.vstack([centre + sign * settings.spread * np.eye(dims)[j] for j in range(dims) for sign in (-1, 1)])
    at_fit, fit_inside = admissible(centre[None, :])
    rise = (admissible(steps)[0] - at_fit[0]).reshape(dims, 2).mean(axis=1)
    scale = np.minimum(settings.spread / np.sqrt(np.maximum(rise, 1e-2)), MAX_SCALE)
    n_pilot = max(settings.chains, int(settings.samples * PILOT_SHARE))
    pilot = stats.multivariate_t(centre, np.diag(scale ** 2), df=TAIL_DF).rvs(size=n_pilot, random_state=rng)
    pilot = pilot.reshape(n_pilot, dims)
    pilot_inside = admissible(pilot)[1]
    good = np.vstack([centre[None, :][fit_inside], pilot[pilot_inside]])
    if not len(good):
        raise CarsimError(f"calibration uncertainty: none of {n_pilot} parameter sets around the fit reproduces "
                          "every fitted target inside its interval; lower uncertainty.spread")
    covariance = (np.cov(good.T) if len(good) > dims else np.diag(scale ** 2)).reshape(dims, dims)
    covariance = covariance + np.diag(scale ** 2) * 0.01  # a ridge: few admissible sets in the pilot

    # Chains from dispersed admissible starts.
    n_steps = max(4, (settings.samples - n_pilot) // settings.chains)
    state = good[rng.choice(len(good), size=settings.chains, replace=len(good) < settings.chains)]
    state_prior = _log_prior(state)
    path = np.empty((settings.chains, n_steps, dims))
    taken = proposed = 0
    for step in range(n_steps):
        if step < n_steps // 2 and step % max(1, n_steps // 8) == 0 and step > 0:
            history = path[:, :step].reshape(-1, dims)
            if len(np.unique(history, axis=0)) > dims:  # adaptive Metropolis in the first half only
                covariance = np.cov(history.T) + np.diag(scale ** 2) * 0.01
        jump = rng.multivariate_normal(np.zeros(dims), covariance * RANDOM_WALK ** 2 / dims,
                                       size=settings.chains, method="cholesky")
        candidate = state + jump
        candidate_prior = _log_prior(candidate)
        inside = admissible(candidate)[1]
        move = inside & (np.log(rng.random(settings.chains)) < candidate_prior - state_prior)
        state = np.where(move[:, None], candidate, state)
        state_prior = np.where(move, candidate_prior, state_prior)
        path[:, step] = state
        taken += int(move.sum())
        proposed += settings.chains
    sample = path[:, n_steps // 2:]
    ess = effective_sample_size(sample)
    pooled = sample.reshape(-1, dims)
    rows = np.linspace(0, len(pooled) - 1, settings.keep).round().astype(int)
    draws = np.array([[from_unit(p, pooled[r, j]) for j, p in enumerate(parameters)] for r in rows])
    distinct = len(np.unique(pooled[rows], axis=0))
    posterior = Posterior(parameters, draws, evaluated, ess, distinct,
                          int(pilot_inside.sum()) + int(fit_inside.sum()) + taken, taken / max(proposed, 1))
    log(f"calibration uncertainty: {settings.chains} chains took {posterior.moves:.0%} of their moves; effective "
        f"sample size {ess:.0f}, {distinct} distinct of {settings.keep} draws")
    return posterior
