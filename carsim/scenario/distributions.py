"""Time-to-event and duration distributions.

Every distribution is a small immutable object that knows its cumulative
hazard ``H(t)`` and the inverse ``H^-1(x)``.  The model samples by inversion
(``t = H^-1(E)`` with ``E ~ Exp(1)``) so that:

* one uniform number per event gives common random numbers across policies;
* a hazard that changes part-way (a time-varying multiplier) is handled
  exactly: the unused part of ``E`` is carried over to the new hazard
  (see :mod:`carsim.model.hazards`).

Times are in days.  All methods accept scalars or NumPy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

_INF = math.inf


def exponential_from_uniform(u):
    """Exp(1) variate from a uniform on [0, 1) (inversion, so CRN hold)."""
    return -np.log1p(-np.asarray(u, dtype=float)) if np.ndim(u) else -math.log1p(-u)


class Distribution:
    """Base class: a non-negative random duration with a cumulative hazard."""

    kind: str = ""

    def cumulative_hazard(self, t):
        raise NotImplementedError

    def inverse_cumulative_hazard(self, x):
        raise NotImplementedError

    def survival(self, t):
        return np.exp(-self.cumulative_hazard(t))

    def quantile(self, p):
        """Time by which a share ``p`` of events has happened."""
        return self.inverse_cumulative_hazard(-np.log1p(-np.asarray(p, dtype=float)))

    @property
    def median(self) -> float:
        return float(self.quantile(0.5))

    def from_uniform(self, u):
        """Inverse-transform sample from uniform(s) ``u``."""
        return self.inverse_cumulative_hazard(exponential_from_uniform(u))

    def sample(self, rng: np.random.Generator, size=None):
        return self.from_uniform(rng.random(size))

    @property
    def mean(self) -> float:
        raise NotImplementedError

    @property
    def variance(self) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Distribution):
    """A deterministic duration (e.g. the day-28 response assessment)."""

    value: float
    kind = "fixed"

    def cumulative_hazard(self, t):
        return np.where(np.asarray(t) < self.value, 0.0, _INF)

    def inverse_cumulative_hazard(self, x):
        return np.full(np.shape(x), self.value) if np.ndim(x) else self.value

    @property
    def mean(self):
        return self.value

    @property
    def variance(self):
        return 0.0


@dataclass(frozen=True)
class Exponential(Distribution):
    rate: float
    kind = "exponential"

    def cumulative_hazard(self, t):
        return self.rate * np.asarray(t, dtype=float)

    def inverse_cumulative_hazard(self, x):
        if self.rate == 0:
            return np.full(np.shape(x), _INF) if np.ndim(x) else _INF
        return np.asarray(x, dtype=float) / self.rate if np.ndim(x) else x / self.rate

    @property
    def mean(self):
        return 1.0 / self.rate if self.rate > 0 else _INF

    @property
    def variance(self):
        return 1.0 / self.rate**2 if self.rate > 0 else _INF


@dataclass(frozen=True)
class Weibull(Distribution):
    """S(t) = exp(-(t/scale)^shape)."""

    shape: float
    scale: float
    kind = "weibull"

    def cumulative_hazard(self, t):
        return (np.asarray(t, dtype=float) / self.scale) ** self.shape

    def inverse_cumulative_hazard(self, x):
        if np.ndim(x):
            return self.scale * np.asarray(x, dtype=float) ** (1.0 / self.shape)
        return self.scale * x ** (1.0 / self.shape)

    @property
    def mean(self):
        return self.scale * math.gamma(1 + 1 / self.shape)

    @property
    def variance(self):
        return self.scale**2 * (math.gamma(1 + 2 / self.shape) - math.gamma(1 + 1 / self.shape) ** 2)


@dataclass(frozen=True)
class LogNormal(Distribution):
    """log T ~ Normal(meanlog, sdlog)."""

    meanlog: float
    sdlog: float
    kind = "lognormal"

    def cumulative_hazard(self, t):
        t = np.asarray(t, dtype=float)
        with np.errstate(divide="ignore"):
            z = (np.log(t) - self.meanlog) / self.sdlog
        return -special.log_ndtr(-z)

    def inverse_cumulative_hazard(self, x):
        # S = exp(-x)  ->  z = -ndtri(S)
        z = -special.ndtri(np.exp(-np.asarray(x, dtype=float)))
        out = np.exp(self.meanlog + self.sdlog * z)
        return out if np.ndim(x) else float(out)

    @property
    def mean(self):
        return math.exp(self.meanlog + self.sdlog**2 / 2)

    @property
    def variance(self):
        return (math.exp(self.sdlog**2) - 1) * math.exp(2 * self.meanlog + self.sdlog**2)


@dataclass(frozen=True)
class Gamma(Distribution):
    shape: float
    scale: float
    kind = "gamma"

    def cumulative_hazard(self, t):
        t = np.asarray(t, dtype=float)
        with np.errstate(divide="ignore"):
            return -np.log(special.gammaincc(self.shape, t / self.scale))

    def inverse_cumulative_hazard(self, x):
        out = self.scale * special.gammainccinv(self.shape, np.exp(-np.asarray(x, dtype=float)))
        return out if np.ndim(x) else float(out)

    @property
    def mean(self):
        return self.shape * self.scale

    @property
    def variance(self):
        return self.shape * self.scale**2


@dataclass(frozen=True)
class LogLogistic(Distribution):
    """S(t) = 1 / (1 + (t/scale)^shape)."""

    shape: float
    scale: float
    kind = "loglogistic"

    def cumulative_hazard(self, t):
        return np.log1p((np.asarray(t, dtype=float) / self.scale) ** self.shape)

    def inverse_cumulative_hazard(self, x):
        out = self.scale * np.expm1(np.asarray(x, dtype=float)) ** (1.0 / self.shape)
        return out if np.ndim(x) else float(out)

    @property
    def mean(self):
        if self.shape <= 1:
            return _INF
        b = math.pi / self.shape
        return self.scale * b / math.sin(b)

    @property
    def variance(self):
        if self.shape <= 2:
            return _INF
        b = math.pi / self.shape
        return self.scale**2 * (2 * b / math.sin(2 * b) - b**2 / math.sin(b) ** 2)


@dataclass(frozen=True)
class Gompertz(Distribution):
    """h(t) = rate * exp(growth * t).  A negative growth gives a cure fraction
    (the hazard dies away, so some never have the event)."""

    rate: float
    growth: float
    kind = "gompertz"

    def cumulative_hazard(self, t):
        t = np.asarray(t, dtype=float)
        if self.growth == 0:
            return self.rate * t
        with np.errstate(over="ignore"):  # H overflows to inf for a growing hazard at huge t: S = 0, as it should
            return self.rate / self.growth * np.expm1(self.growth * t)

    def inverse_cumulative_hazard(self, x):
        x = np.asarray(x, dtype=float)
        if self.growth == 0:
            out = x / self.rate
        else:
            arg = 1 + self.growth * x / self.rate
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(arg > 0, np.log(np.where(arg > 0, arg, 1.0)) / self.growth, _INF)
        return out if out.ndim else float(out)

    @property
    def mean(self):
        return float(_numeric_moment(self, 1))

    @property
    def variance(self):
        return _numeric_variance(self)


@dataclass(frozen=True)
class PiecewiseExponential(Distribution):
    """Piecewise-constant hazard: ``rates[i]`` applies from ``breaks[i]`` (the
    first break is 0) to the next break; the last rate applies for ever."""

    breaks: tuple
    rates: tuple
    kind = "piecewise"

    def __post_init__(self):
        starts = np.asarray(self.breaks, dtype=float)
        widths = np.diff(starts)
        cum = np.concatenate([[0.0], np.cumsum(np.asarray(self.rates[:-1]) * widths)])
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_rates", np.asarray(self.rates, dtype=float))

    def cumulative_hazard(self, t):
        t = np.asarray(t, dtype=float)
        i = np.searchsorted(self._starts, t, side="right") - 1
        i = np.clip(i, 0, len(self._starts) - 1)
        return self._cum[i] + self._rates[i] * (t - self._starts[i])

    def inverse_cumulative_hazard(self, x):
        x = np.asarray(x, dtype=float)
        i = np.searchsorted(self._cum, x, side="right") - 1
        i = np.clip(i, 0, len(self._cum) - 1)
        rate = self._rates[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(rate > 0, self._starts[i] + (x - self._cum[i]) / np.where(rate > 0, rate, 1), _INF)
        return out if out.ndim else float(out)

    @property
    def mean(self):
        return float(_numeric_moment(self, 1))

    @property
    def variance(self):
        return _numeric_variance(self)


def _numeric_moment(dist: Distribution, order: int) -> float:
    """E[T^k] = integral k t^(k-1) S(t) dt, by quadrature (for laws without a
    closed form); infinite when a cure fraction leaves S above 0."""
    from scipy import integrate

    with np.errstate(over="ignore"):  # a growing hazard overflows H at huge t: S is 0 there
        never = float(dist.survival(1e12))
    if never > 1e-12:
        return _INF
    value, _ = integrate.quad(lambda t: order * t ** (order - 1) * float(dist.survival(t)), 0, np.inf, limit=200)
    return value


def _numeric_variance(dist: Distribution) -> float:
    first = _numeric_moment(dist, 1)
    if first == _INF:
        return _INF
    return float(_numeric_moment(dist, 2) - first**2)


KINDS = {
    cls.kind: cls
    for cls in (Fixed, Exponential, Weibull, LogNormal, Gamma, LogLogistic, Gompertz, PiecewiseExponential)
}
