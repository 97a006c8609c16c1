"""Checks of carsim.scenario.distributions against closed forms and scipy.stats.

Each law is compared with an independent reference: scipy.stats (expon,
weibull_min, lognorm, gamma, fisk for the log-logistic, gompertz for a
positive growth) or the textbook formula (Gompertz with zero or negative
growth, piecewise-constant hazard).  Sampling checks use fixed seeds and a
tolerance of 4 standard errors, so a correct law fails about once in 16 000
runs per comparison, while a wrong scale, shape or parameterisation is far
outside it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate, optimize, stats

from carsim._units import DAYS_PER_MONTH, DAYS_PER_UNIT, DAYS_PER_YEAR
from carsim.scenario import distributions as dist
from carsim.scenario.schema import Law

N_DRAWS = 200_000
Z = 4.0  # tolerance in standard errors for every Monte Carlo comparison
RTOL = 1e-9  # deterministic comparisons


# ---------------------------------------------------------------- references


def _piecewise_survival(breaks, rates, t):
    """S(t) of a piecewise-constant hazard, segment by segment (no searchsorted)."""
    t = np.asarray(t, dtype=float)
    H = np.zeros_like(t)
    ends = [*breaks[1:], math.inf]
    for start, end, rate in zip(breaks, ends, rates, strict=True):
        H += rate * np.clip(np.minimum(t, end) - start, 0.0, None)
    return np.exp(-H)


def _piecewise_moments(breaks, rates):
    """Mean and variance of a piecewise-exponential time, in closed form."""
    ends = [*breaks[1:], math.inf]
    m1 = m2 = 0.0
    H = 0.0
    for a, b, r in zip(breaks, ends, rates, strict=True):
        s_a = math.exp(-H)
        if math.isinf(b):
            if r == 0:
                return math.inf, math.inf
            m1 += s_a / r
            m2 += 2 * s_a * (a / r + 1 / r**2)
            continue
        w = b - a
        if r == 0:
            m1 += s_a * w
            m2 += s_a * (b * b - a * a)
        else:
            q = math.exp(-r * w)
            m1 += s_a * (1 - q) / r
            m2 += 2 * s_a * (a * (1 - q) / r + (1 - q * (1 + r * w)) / r**2)
        H += r * w
    return m1, m2 - m1**2


class Reference:
    """What a law should be: survival, mean, variance, median, quantiles."""

    def __init__(self, sf, mean, variance, ppf):
        self.sf, self.mean, self.variance, self.ppf = sf, mean, variance, ppf

    @property
    def median(self):
        return float(np.ravel(self.ppf(0.5))[0])

    @classmethod
    def scipy(cls, frozen):
        return cls(frozen.sf, float(frozen.mean()), float(frozen.var()), frozen.ppf)

    @classmethod
    def from_sf(cls, sf, mean, variance, upper):
        """Quantiles by root-finding on ``sf`` over [0, upper]."""

        def ppf(p):
            p = np.atleast_1d(np.asarray(p, dtype=float))
            out = [optimize.brentq(lambda t, q=q: 1 - sf(t) - q, 0.0, upper, xtol=1e-13, rtol=1e-14)
                   for q in p]
            return np.asarray(out)

        return cls(sf, mean, variance, ppf)


def _gompertz_sf(rate, growth):
    if growth == 0:
        return lambda t: np.exp(-rate * np.asarray(t, dtype=float))
    return lambda t: np.exp(-rate / growth * np.expm1(growth * np.asarray(t, dtype=float)))


PW_BREAKS, PW_RATES = (0.0, 10.0, 30.0), (0.05, 0.01, 0.1)
PW0_BREAKS, PW0_RATES = (0.0, 7.0, 60.0), (0.04, 0.0, 0.02)  # a hazard-free stretch in the middle

# (id, law, reference)
CASES = [
    ("exponential", dist.Exponential(0.02), Reference.scipy(stats.expon(scale=50.0))),
    ("weibull-decreasing", dist.Weibull(0.7, 40.0), Reference.scipy(stats.weibull_min(0.7, scale=40.0))),
    ("weibull-increasing", dist.Weibull(2.5, 30.0), Reference.scipy(stats.weibull_min(2.5, scale=30.0))),
    ("lognormal-narrow", dist.LogNormal(math.log(22.0), 0.25),
     Reference.scipy(stats.lognorm(0.25, scale=22.0))),
    ("lognormal-wide", dist.LogNormal(3.0, 1.0), Reference.scipy(stats.lognorm(1.0, scale=math.exp(3.0)))),
    ("gamma", dist.Gamma(2.0, 3.5), Reference.scipy(stats.gamma(2.0, scale=3.5))),
    ("gamma-shape<1", dist.Gamma(0.6, 10.0), Reference.scipy(stats.gamma(0.6, scale=10.0))),
    ("loglogistic", dist.LogLogistic(3.5, 20.0), Reference.scipy(stats.fisk(3.5, scale=20.0))),
    ("gompertz-growing", dist.Gompertz(0.01, 0.05),
     Reference.scipy(stats.gompertz(0.01 / 0.05, scale=1 / 0.05))),
    ("gompertz-flat", dist.Gompertz(0.02, 0.0), Reference.scipy(stats.expon(scale=50.0))),
    ("piecewise", dist.PiecewiseExponential(PW_BREAKS, PW_RATES),
     Reference.from_sf(lambda t: _piecewise_survival(PW_BREAKS, PW_RATES, t),
                       *_piecewise_moments(PW_BREAKS, PW_RATES), upper=1e4)),
    ("piecewise-zero-stretch", dist.PiecewiseExponential(PW0_BREAKS, PW0_RATES),
     Reference.from_sf(lambda t: _piecewise_survival(PW0_BREAKS, PW0_RATES, t),
                       *_piecewise_moments(PW0_BREAKS, PW0_RATES), upper=1e4)),
]
IDS = [c[0] for c in CASES]

# Gompertz with a negative growth: the hazard dies away, a share exp(rate/growth) never has the event.
CURE_RATE, CURE_GROWTH = 0.05, -0.02
CURE = dist.Gompertz(CURE_RATE, CURE_GROWTH)
CURE_FRACTION = math.exp(CURE_RATE / CURE_GROWTH)  # exp(-2.5) ~ 0.082


def _grid(ref):
    """Times spread over the bulk and both tails of the law."""
    p = np.array([1e-6, 1e-3, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999, 1 - 1e-6])
    return np.asarray(ref.ppf(p), dtype=float)


# ---------------------------------------------------------------- exact (deterministic) checks


@pytest.mark.parametrize("law, ref", [c[1:] for c in CASES], ids=IDS)
def test_inverse_cumulative_hazard_inverts_cumulative_hazard(law, ref):
    t = _grid(ref)
    assert_allclose(law.inverse_cumulative_hazard(law.cumulative_hazard(t)), t, rtol=RTOL)
    for ti in t:  # the scalar path (used in the event loop) as well as the array path
        assert law.inverse_cumulative_hazard(float(law.cumulative_hazard(ti))) == pytest.approx(ti, rel=RTOL)


def test_gompertz_cure_fraction_inversion():
    # Beyond t ~ 500 the hazard is ~e^-10 of its start and H(t) is flat to machine
    # precision, so the inversion there is ill-conditioned (not tested).
    t = np.array([0.01, 1.0, 10.0, 50.0, 200.0, 400.0])
    assert_allclose(CURE.inverse_cumulative_hazard(CURE.cumulative_hazard(t)), t, rtol=RTOL)
    ceiling = CURE_RATE / -CURE_GROWTH  # the cumulative hazard never exceeds rate/|growth|
    assert float(CURE.cumulative_hazard(1e6)) == pytest.approx(ceiling, rel=RTOL)
    assert CURE.inverse_cumulative_hazard(np.array([ceiling, ceiling + 0.1, 10.0])).tolist() == [math.inf] * 3
    assert CURE.inverse_cumulative_hazard(ceiling + 0.1) == math.inf


@pytest.mark.parametrize("law, ref", [c[1:] for c in CASES], ids=IDS)
def test_survival_matches_reference(law, ref):
    t = np.concatenate([_grid(ref), [0.0]])
    assert_allclose(law.survival(t), ref.sf(t), rtol=RTOL, atol=1e-15)


def test_gompertz_cure_fraction_survival_matches_formula():
    t = np.array([0.0, 1.0, 10.0, 50.0, 200.0, 1e4])
    expected = np.exp(-(CURE_RATE / CURE_GROWTH) * np.expm1(CURE_GROWTH * t))
    assert_allclose(CURE.survival(t), expected, rtol=RTOL)
    assert float(CURE.survival(1e6)) == pytest.approx(CURE_FRACTION, rel=RTOL)


@pytest.mark.parametrize("law, ref", [c[1:] for c in CASES], ids=IDS)
def test_mean_variance_median_match_reference(law, ref):
    assert law.mean == pytest.approx(ref.mean, rel=1e-6)
    assert law.variance == pytest.approx(ref.variance, rel=1e-6)
    assert law.median == pytest.approx(ref.median, rel=1e-9)


def test_gompertz_cure_fraction_median_and_mean():
    # S(m) = 1/2  ->  m = log(1 + growth * ln 2 / rate) / growth (finite while the cure fraction < 1/2)
    median = math.log1p(CURE_GROWTH * math.log(2) / CURE_RATE) / CURE_GROWTH
    assert CURE.median == pytest.approx(median, rel=RTOL)
    assert CURE.mean == math.inf
    # A cure fraction above 1/2: the median is never reached.
    assert dist.Gompertz(0.005, -0.02).median == math.inf


def test_gompertz_cure_fraction_variance_is_infinite():
    assert CURE.variance == math.inf


def test_piecewise_with_final_zero_rate_variance_is_infinite():
    law = dist.PiecewiseExponential((0.0, 10.0), (0.05, 0.0))
    assert law.mean == math.inf
    assert law.variance == math.inf


def test_fixed_law():
    law = dist.Fixed(5.0)
    assert law.cumulative_hazard(np.array([0.0, 4.999])).tolist() == [0.0, 0.0]
    assert law.cumulative_hazard(np.array([5.0, 6.0])).tolist() == [math.inf, math.inf]
    assert law.survival(np.array([4.999, 5.0])).tolist() == [1.0, 0.0]
    assert law.inverse_cumulative_hazard(0.3) == 5.0
    assert law.inverse_cumulative_hazard(np.array([1e-9, 1.0, 30.0])).tolist() == [5.0] * 3
    assert (law.mean, law.variance, law.median) == (5.0, 0.0, 5.0)
    assert np.all(law.sample(np.random.default_rng(0), 1000) == 5.0)


def test_zero_rate_exponential_never_fires():
    law = dist.Exponential(0.0)
    assert law.inverse_cumulative_hazard(2.0) == math.inf
    assert np.all(np.isinf(law.sample(np.random.default_rng(0), 10)))
    assert law.median == math.inf and law.mean == math.inf


# ---------------------------------------------------------------- sampling (Monte Carlo) checks


@pytest.mark.parametrize("seed, case", list(enumerate(CASES)), ids=IDS)
def test_sample_mean_and_median(seed, case):
    """200k draws: sample mean within 4 SE = 4 sqrt(var / n) of ``.mean``, and the
    share of draws at or below ``.median`` within 4 sqrt(1/4n) = 0.0045 of 1/2."""
    _, law, _ = case
    x = law.sample(np.random.default_rng(1000 + seed), N_DRAWS)
    assert x.shape == (N_DRAWS,) and np.all(np.isfinite(x)) and np.all(x >= 0)
    se = math.sqrt(law.variance / N_DRAWS)
    assert abs(x.mean() - law.mean) < Z * se, (x.mean(), law.mean, se)
    assert abs(np.mean(x <= law.median) - 0.5) < Z * math.sqrt(0.25 / N_DRAWS)


def test_gompertz_cure_fraction_sampling():
    """A share exp(rate/growth) of draws is infinite (never has the event); the rest
    follow S(t) - pi over 1 - pi.  Tolerances: 4 binomial / mean standard errors."""
    x = CURE.sample(np.random.default_rng(77), N_DRAWS)
    cured = np.isinf(x)
    se = math.sqrt(CURE_FRACTION * (1 - CURE_FRACTION) / N_DRAWS)  # ~6.1e-4
    assert abs(cured.mean() - CURE_FRACTION) < Z * se
    sf = _gompertz_sf(CURE_RATE, CURE_GROWTH)

    def conditional_sf(t):
        return (sf(t) - CURE_FRACTION) / (1 - CURE_FRACTION)

    m1 = integrate.quad(conditional_sf, 0, np.inf, limit=200)[0]
    m2 = integrate.quad(lambda t: 2 * t * conditional_sf(t), 0, np.inf, limit=200)[0]
    finite = x[~cured]
    assert abs(finite.mean() - m1) < Z * math.sqrt((m2 - m1**2) / finite.size)
    assert abs(np.mean(x <= CURE.median) - 0.5) < Z * math.sqrt(0.25 / N_DRAWS)


def test_exponential_median_is_ln2_over_rate():
    rate = 1 / 90.0
    law = dist.Exponential(rate)
    assert law.median == pytest.approx(math.log(2) / rate, rel=1e-12)
    x = law.sample(np.random.default_rng(5), N_DRAWS)
    # The sample median of Exp(rate) has SE 1 / (rate sqrt(n)) (density rate/2 at the median).
    assert abs(np.median(x) - math.log(2) / rate) < Z / (rate * math.sqrt(N_DRAWS))


@pytest.mark.parametrize("shape, scale", [(0.7, 24 * DAYS_PER_MONTH), (1.8, 120.0)])
def test_weibull_empirical_survival(shape, scale):
    law = dist.Weibull(shape, scale)
    x = law.sample(np.random.default_rng(11), N_DRAWS)
    for t in scale * np.array([0.1, 0.5, 1.0, 2.0]):
        s = math.exp(-((t / scale) ** shape))
        assert abs(np.mean(x > t) - s) < Z * math.sqrt(s * (1 - s) / N_DRAWS), t


def test_sampling_is_inversion_of_one_uniform():
    """``sample`` is ``from_uniform`` of the generator's uniforms (one per draw, the CRN contract)."""
    law = dist.Weibull(1.3, 50.0)
    x = law.sample(np.random.default_rng(3), 1000)
    u = np.random.default_rng(3).random(1000)
    assert_allclose(x, law.from_uniform(u), rtol=0)
    assert_allclose(x, law.quantile(u), rtol=1e-12)


# ---------------------------------------------------------------- Law.build: units and parameterisations


def _build(time_scale=1.0, **spec):
    return Law.model_validate({"assumption": "test", **spec}).build(time_scale)


def test_build_exponential_median_in_months():
    law = _build(family="exponential", median=18.9, unit="months")
    assert isinstance(law, dist.Exponential)
    assert law.median == pytest.approx(18.9 * 365.25 / 12, rel=1e-12)
    assert law.rate == pytest.approx(math.log(2) / (18.9 * 365.25 / 12), rel=1e-12)


def test_build_exponential_mean_and_rate():
    assert _build(family="exponential", mean=10, unit="weeks").mean == pytest.approx(70.0, rel=1e-12)
    per_year = _build(family="exponential", rate=0.01, unit="years")
    assert per_year.rate == pytest.approx(0.01 / 365.25, rel=1e-12)
    assert _build(family="exponential", rate=0.3).rate == 0.3  # days by default


def test_build_weibull_median_and_scale():
    law = _build(family="weibull", shape=0.7, median=24, unit="months")
    assert law.shape == 0.7
    assert law.median == pytest.approx(24 * DAYS_PER_MONTH, rel=1e-12)
    assert float(law.survival(24 * DAYS_PER_MONTH)) == pytest.approx(0.5, rel=1e-12)
    law = _build(family="weibull", shape=2.0, scale=1.5, unit="years")
    assert law.scale == pytest.approx(1.5 * DAYS_PER_YEAR, rel=1e-12)


def test_build_lognormal_median_and_meanlog():
    assert _build(family="lognormal", sdlog=0.4, median=3, unit="months").median == \
        pytest.approx(3 * DAYS_PER_MONTH, rel=1e-12)
    law = _build(family="lognormal", sdlog=0.4, meanlog=0.5, unit="years")
    assert law.median == pytest.approx(math.exp(0.5) * DAYS_PER_YEAR, rel=1e-12)
    assert law.sdlog == 0.4


def test_build_gamma_mean_and_scale():
    law = _build(family="gamma", shape=3, mean=6, unit="weeks")
    assert (law.shape, law.mean) == (3, pytest.approx(42.0, rel=1e-12))
    assert _build(family="gamma", shape=2, scale=1, unit="months").scale == pytest.approx(DAYS_PER_MONTH)


def test_build_loglogistic_median():
    law = _build(family="loglogistic", shape=2.5, median=4, unit="months")
    assert law.median == pytest.approx(4 * DAYS_PER_MONTH, rel=1e-12)


def test_build_gompertz_rates_per_unit():
    """rate and growth are per month: S_days(t) must equal S_months(t / days-per-month)."""
    law = _build(family="gompertz", rate=0.012, growth=-0.2, unit="months")
    t_days = np.array([10.0, 100.0, 400.0, 2000.0])
    expected = _gompertz_sf(0.012, -0.2)(t_days / DAYS_PER_MONTH)
    assert_allclose(law.survival(t_days), expected, rtol=1e-12)


def test_build_piecewise_breaks_and_rates_per_unit():
    law = _build(family="piecewise", breaks=[0, 6, 12], rates=[0.1, 0.05, 0.01], unit="months")
    t_days = np.array([30.0, 200.0, 365.0, 1000.0])
    expected = _piecewise_survival((0, 6, 12), (0.1, 0.05, 0.01), t_days / DAYS_PER_MONTH)
    assert_allclose(law.survival(t_days), expected, rtol=1e-12)


def test_build_fixed_in_weeks():
    assert _build(family="fixed", value=4, unit="weeks").value == 28.0


@pytest.mark.parametrize("spec", [
    {"family": "exponential", "median": 2.0},
    {"family": "weibull", "shape": 1.4, "median": 2.0},
    {"family": "lognormal", "sdlog": 0.5, "median": 2.0},
    {"family": "gamma", "shape": 2.0, "mean": 2.0},
    {"family": "loglogistic", "shape": 3.0, "median": 2.0},
], ids=lambda s: s["family"])
@pytest.mark.parametrize("unit", list(DAYS_PER_UNIT))
def test_build_time_scale_and_unit_stretch_time(spec, unit):
    base = _build(**spec)
    stretched = _build(time_scale=1.5, unit=unit, **spec)
    factor = 1.5 * DAYS_PER_UNIT[unit]
    assert stretched.median == pytest.approx(base.median * factor, rel=1e-12)
    assert stretched.mean == pytest.approx(base.mean * factor, rel=1e-9)
    t = np.array([0.5, 1.0, 3.0])
    assert_allclose(stretched.survival(t * factor), base.survival(t), rtol=1e-12)
