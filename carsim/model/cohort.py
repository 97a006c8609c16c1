"""Virtual patients' baseline covariates, drawn for a whole cohort at once.

Each covariate is drawn by inversion from its own per-patient uniform, so a
patient's covariates do not depend on the cohort size or on other
covariates' definitions.  ``cohort.fixed`` then pins any covariate (and the
derived ``marrow_blasts_infusion``) to reproduce a published subgroup.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ..scenario.schema import Cohort, CovariateSpec
from .random import RandomStreams


def draw_covariate(spec: CovariateSpec, u: np.ndarray) -> np.ndarray:
    if spec.bernoulli is not None:
        return u < spec.bernoulli
    if spec.categorical is not None:
        levels = list(spec.categorical)
        cum = np.cumsum(list(spec.categorical.values()))
        idx = np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(levels) - 1)
        values = np.array(levels, dtype=object if any(isinstance(x, str) for x in levels) else float)
        out = values[idx]
        return out.astype(int) if out.dtype != object else out
    if spec.family == "beta":
        x = special.betaincinv(spec.a, spec.b, u) * spec.scale
    elif spec.family == "uniform":
        x = spec.low + u * (spec.high - spec.low)
    elif spec.family == "normal":
        x = spec.mean + spec.sd * special.ndtri(u)
    else:  # lognormal
        x = spec.median * np.exp(spec.sdlog * special.ndtri(u))
    if spec.low is not None or spec.high is not None:
        x = np.clip(x, spec.low, spec.high)
    return x


def sample_cohort(cohort: Cohort, blast_multiplier: dict, streams: RandomStreams) -> dict[str, np.ndarray]:
    """Covariate arrays for patients ``0 .. streams.n_patients - 1``."""
    values = {
        name: draw_covariate(spec, streams.uniforms(f"covariate.{name}"))
        for name, spec in cohort.covariates.items()
    }
    for name, value in cohort.fixed.items():
        if name in values:
            values[name] = np.full(streams.n_patients, value, dtype=values[name].dtype)
    multiplier = np.array([blast_multiplier[level] for level in values["bridging"]], dtype=float)
    values["marrow_blasts_infusion"] = np.minimum(100.0, values["marrow_blasts_referral"] * multiplier)
    if "marrow_blasts_infusion" in cohort.fixed:
        values["marrow_blasts_infusion"] = np.full(streams.n_patients, float(cohort.fixed["marrow_blasts_infusion"]))
    return values


def arrival_days(rate_per_day: float, streams: RandomStreams) -> np.ndarray:
    """Poisson enrolment: cumulative exponential gaps, patient 0 at the first gap."""
    gaps = -np.log1p(-streams.uniforms("arrival")) / rate_per_day
    return np.cumsum(gaps)
