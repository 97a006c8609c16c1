"""Analytic checks through the model: hazard clocks, the manufacturing queue
and end-to-end relapse timing.

Every Monte Carlo comparison uses a fixed seed and a tolerance of about four
standard errors (stated next to each), so a correct model fails about once in
16 000 comparisons while an off-by-a-factor hazard, a wrong time origin or a
wrong queue discipline lands far outside.
"""

from __future__ import annotations

import functools
import heapq
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose

from carsim._units import DAYS_PER_MONTH
from carsim.model.clocks import Clocks
from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_policies
from carsim.scenario import distributions as dist
from carsim.scenario import load_scenario

Z = 4.0  # Monte Carlo tolerance in standard errors
A = "analytic test"  # the assumption note every overridden value needs
BASELINE = Path(__file__).resolve().parents[1] / "scenarios" / "baseline.yaml"


# ================================================================ hazard clocks


def run_clocks(law, thresholds, hr, switches, start=0.0, origin=0.0):
    """One clock per threshold (carsim.model.clocks.Clocks, as both engines
    use them), all started at ``start`` with time origin ``origin``; the
    hazard is multiplied by ``hr`` while a flag is on.  ``switches``: [(time,
    flag)] in time order.  Clocks whose fire time comes before a switch fire
    then; the others are rebased.  Returns the fire times (inf: never fired)."""
    n = len(thresholds)
    clocks = Clocks(law, n)
    everyone = np.arange(n)
    times = clocks.start(everyone, start, origin, np.asarray(thresholds, float), np.ones(n))
    fired = np.full(n, math.inf)
    for when, flag in switches:
        due = clocks.running & (times <= when)
        fired[due] = times[due]
        clocks.stop(everyone[due])
        alive = everyone[clocks.running]
        times[alive] = clocks.rebase(alive, when, np.full(len(alive), hr if flag else 1.0))
    alive = clocks.running
    fired[alive] = times[alive]
    return fired


def multiplier_pieces(hr, switches, start):
    """[(from, to, multiplier)] covering [start, inf)."""
    pieces, t, m = [], start, 1.0
    for when, flag in switches:
        pieces.append((t, when, m))
        t, m = when, (hr if flag else 1.0)
    pieces.append((t, math.inf, m))
    return pieces


def effective_H(law, pieces, origin, t):
    """Cumulative hazard actually spent from the clock's start to ``t``."""
    t = np.asarray(t, dtype=float)
    out = np.zeros_like(t)
    for a, b, m in pieces:
        upper = np.clip(t, a, b)
        out += m * (law.cumulative_hazard(upper - origin) - law.cumulative_hazard(a - origin))
    return out


def effective_inverse(law, pieces, origin, x):
    """The time at which the spent cumulative hazard reaches ``x`` (inf if never)."""
    x = np.asarray(x, dtype=float)
    out = np.full_like(x, math.inf)
    spent = np.zeros_like(x)
    todo = np.ones(x.shape, dtype=bool)
    for a, b, m in pieces:
        h_a = float(law.cumulative_hazard(a - origin))
        piece = m * (float(law.cumulative_hazard(b - origin)) - h_a) if b < math.inf else math.inf
        here = todo & (x <= spent + piece) & (m > 0)
        if here.any():
            out[here] = origin + law.inverse_cumulative_hazard(h_a + (x[here] - spent[here]) / m)
        todo &= ~here
        spent = spent + (piece if math.isfinite(piece) else 0.0)
    return out


CLOCK_CASES = {
    # name: (law, hr, switches, start, origin, times at which S(t) is checked)
    "exponential, HR 3 from day 50": (
        dist.Exponential(0.01), 3.0, [(50.0, True)], 0.0, 0.0, [10, 30, 49, 51, 70, 100, 150]),
    "weibull 1.5, HR 0.4 from day 60": (
        dist.Weibull(1.5, 100.0), 0.4, [(60.0, True)], 0.0, 0.0, [20, 45, 59, 61, 90, 150, 250]),
    "weibull 0.7 started on day 20 (origin 0), HR 4 on days 40-90": (
        dist.Weibull(0.7, 80.0), 4.0, [(40.0, True), (90.0, False)], 20.0, 0.0,
        [30, 39, 41, 60, 89, 91, 200, 600]),
    "exponential, hazard paused (HR 0) on days 30-70": (
        dist.Exponential(0.02), 0.0, [(30.0, True), (70.0, False)], 0.0, 0.0, [15, 29, 31, 50, 69, 71, 100]),
    "gompertz cure fraction, HR 0 from day 40 for ever": (
        dist.Gompertz(0.02, -0.01), 0.0, [(40.0, True)], 0.0, 0.0, [10, 39, 41, 100, 1000]),
}
N_CLOCKS = 20_000


@functools.cache
def clock_result(name: str) -> SimpleNamespace:
    """20 000 clocks of one case, run once per session."""
    law, hr, switches, start, origin, times = CLOCK_CASES[name]
    rng = np.random.default_rng(20240 + list(CLOCK_CASES).index(name))
    thresholds = rng.exponential(1.0, N_CLOCKS)
    fired = run_clocks(law, thresholds, hr, switches, start, origin)
    pieces = multiplier_pieces(hr, switches, start)
    return SimpleNamespace(law=law, hr=hr, pieces=pieces, origin=origin, start=start,
                           times=np.asarray(times, float), thresholds=thresholds, fired=fired)


@pytest.fixture(params=list(CLOCK_CASES), ids=list(CLOCK_CASES))
def clock_run(request):
    return clock_result(request.param)


def test_clock_fires_where_the_banked_hazard_reaches_the_threshold(clock_run):
    """Per clock, exactly (no Monte Carlo): the fire time is the inverse of the
    piecewise cumulative hazard at the clock's own Exp(1) threshold."""
    r = clock_run
    expected = effective_inverse(r.law, r.pieces, r.origin, r.thresholds)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(r.fired), finite)
    assert_allclose(r.fired[finite], expected[finite], rtol=1e-9)
    assert np.all(r.fired >= r.start)


def test_clock_survival_matches_piecewise_analytic(clock_run):
    """Empirical S(t) of 20 000 clocks against exp(-H_eff(t)), before and after each
    switch; tolerance 4 binomial SE = 4 sqrt(S(1 - S) / 20000) <= 0.0142."""
    r = clock_run
    expected = np.exp(-effective_H(r.law, r.pieces, r.origin, r.times))
    observed = np.array([np.mean(r.fired > t) for t in r.times])
    tol = Z * np.sqrt(expected * (1 - expected) / N_CLOCKS) + 1e-12
    report = list(zip(r.times, observed, expected, tol, strict=True))
    assert np.all(np.abs(observed - expected) <= tol), report


def test_piecewise_exponential_clock_formula():
    """The textbook case spelled out (an oracle independent of ``effective_H``):
    S(t) = exp(-l t) before s, exp(-l s - HR l (t - s)) after; 4 binomial SE."""
    lam, s, hr = 0.01, 50.0, 3.0
    r = clock_result("exponential, HR 3 from day 50")
    assert (r.law, r.hr, r.pieces[0][1]) == (dist.Exponential(lam), hr, s)
    for t in (20.0, 45.0, 55.0, 80.0, 120.0):
        expected = math.exp(-lam * t) if t < s else math.exp(-lam * s - hr * lam * (t - s))
        tol = Z * math.sqrt(expected * (1 - expected) / N_CLOCKS)  # <= 0.0142
        assert abs(np.mean(r.fired > t) - expected) < tol, t


def test_clock_without_state_change_is_plain_inversion():
    """Common random numbers: a clock whose state never changes fires at origin + H^-1(E)."""
    law = dist.LogNormal(math.log(60.0), 0.8)
    thresholds = np.random.default_rng(4).exponential(1.0, 2000)
    fired = run_clocks(law, thresholds, 5.0, [])
    assert_allclose(fired, law.inverse_cumulative_hazard(thresholds), rtol=1e-12)


def test_clock_rebased_at_its_start_uses_the_new_multiplier():
    """A state change in the same instant the clock starts spends the whole
    threshold under the new multiplier."""
    clocks = Clocks(dist.Exponential(0.1), 1)
    clocks.start(np.array([0]), 0.0, 0.0, np.array([1.0]), np.array([1.0]))
    fired = clocks.rebase(np.array([0]), 0.0, np.array([2.0]))
    assert fired[0] == pytest.approx(5.0)  # 1 / (2 * 0.1), not 1 / 0.1


def test_stopped_clock_never_fires():
    clocks = Clocks(dist.Exponential(0.1), 2)
    clocks.start(np.arange(2), 0.0, 0.0, np.array([1.0, 1.0]), np.ones(2))
    clocks.stop(np.array([1]))
    assert clocks.fire_times(np.arange(2)).tolist() == [pytest.approx(10.0), math.inf]


def test_zero_multiplier_never_fires_and_banks_nothing():
    clocks = Clocks(dist.Exponential(0.1), 1)
    clocks.start(np.array([0]), 0.0, 0.0, np.array([1.0]), np.array([0.0]))
    assert clocks.fire_times(np.array([0]))[0] == math.inf
    fired = clocks.rebase(np.array([0]), 30.0, np.array([1.0]))
    assert fired[0] == pytest.approx(40.0)


# ================================================================ scenarios


def scenario(tmp_path_factory, overrides: dict, name: str):
    """A validated Scenario extending the baseline (as the ``derived_scenario`` fixture,
    but usable from module-scoped fixtures)."""
    path = tmp_path_factory.mktemp("analytic") / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": str(BASELINE), **overrides}, sort_keys=False))
    return load_scenario(path)


def never():
    """A hazard that is switched off."""
    return {"law": {"family": "exponential", "rate": 0.0, "assumption": A}, "multipliers": []}


# ================================================================ manufacturing queue: M/M/c


LAM = 0.75  # arrivals per day
MEAN_MFG = 5.0  # mean manufacturing days (mu = 0.2 / day)
SERVERS = 5  # utilisation rho = LAM * MEAN_MFG / SERVERS = 0.75
N_QUEUE, WARM_UP = 30_000, 1_000


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = lambda / mu."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def fifo_waits(arrivals, services, c):
    """Waiting times of a first-come-first-served c-server queue (Kiefer-Wolfowitz)."""
    free = [0.0] * c
    out = np.empty(len(arrivals))
    for i in np.argsort(arrivals, kind="stable"):
        start = max(heapq.heappop(free), arrivals[i])
        out[i] = start - arrivals[i]
        heapq.heappush(free, start + services[i])
    return out


@pytest.fixture(scope="module", params=["vectorised", "simpy"])
def queue_run(tmp_path_factory, request):
    """Poisson enrolment at LAM/day, fixed referral and apheresis delays (unlimited
    apheresis: the stream reaching manufacturing stays Poisson), exponential
    manufacturing, no failures, no deferral, nobody lost before infusion.  Patients
    die at infusion (early death, probability 1, after 0 days) so the run stops there."""
    sc = scenario(tmp_path_factory, {
        "cohort": {"arrivals": {"rate_per_day": LAM, "assumption": A},
                   "covariates": {"apheresis_deferred": {"bernoulli": 0.0, "assumption": A}}},
        "pathway": {
            "referral": {"delay": {"family": "fixed", "value": 2.0, "assumption": A}},
            "apheresis": {"duration": {"family": "fixed", "value": 1.0, "assumption": A}},
            "manufacturing": {"duration": {"family": "exponential", "mean": MEAN_MFG, "assumption": A},
                              "failure_probability": {"value": 0.0, "assumption": A}},
            "pre_infusion": {"death": never(), "withdrawal": never()},
            "infusion": {"delay_after_manufacturing": {"family": "fixed", "value": 0.0, "assumption": A}},
            "toxicity": {"early_death": {"value": 1.0, "assumption": A},
                         "time_to_early_death": {"family": "fixed", "value": 0.0, "assumption": A}},
        },
        "resources": {"apheresis": {"capacity": None}, "manufacturing": {"capacity": SERVERS}},
        "run": {"horizon_years": 1.0},
    }, "queue")
    model = ModelDefinition(sc)
    (result,) = simulate_policies(model, sc.policy_names[:1], 0, N_QUEUE, seed=31, record_events=False,
                                  engine=request.param)
    o = result.outcomes
    # Days since enrolment -> absolute days.  Manufacturing is asked for when the
    # (fixed, 1-day) apheresis ends and ends at infusion (no delay after it).
    queued = o["arrival_day"] + o["apheresis_day"] + 1.0
    started = queued + o["wait_manufacturing_days"]
    service = o["arrival_day"] + o["infusion_day"] - started
    wait = o["wait_manufacturing_days"]
    return SimpleNamespace(o=o, queued=queued, started=started, service=service, wait=wait)


def test_queue_scenario_is_as_intended(queue_run):
    o = queue_run.o
    assert o["infused"].all() and (o["manufacturing_attempts"] == 1).all()
    assert (o["death_cause"] == "toxicity").all()
    assert_allclose(o["apheresis_day"], 2.0)  # fixed 2-day referral, no deferral


def test_queue_inputs_are_poisson_and_exponential(queue_run):
    """Gaps between arrivals at manufacturing: mean 1/LAM (SE = (1/LAM)/sqrt(n)), and
    P(gap > mean) = e^-1; manufacturing times: mean MEAN_MFG, P(> mean) = e^-1.
    Tolerances 4 SE (about 2% of the mean, 0.01 for the probabilities)."""
    gaps = np.diff(np.sort(queue_run.queued))
    service = queue_run.service
    for x, mean in ((gaps, 1 / LAM), (service, MEAN_MFG)):
        assert abs(x.mean() - mean) < Z * mean / math.sqrt(x.size)
        p = math.exp(-1)
        assert abs(np.mean(x > mean) - p) < Z * math.sqrt(p * (1 - p) / x.size)


def test_queue_is_first_come_first_served_with_c_servers(queue_run):
    """Exact: every patient's wait equals the FCFS c-server recursion fed with the
    model's own arrival and manufacturing times (c - 1 or c + 1 servers would not)."""
    q = queue_run
    assert_allclose(fifo_waits(q.queued, q.service, SERVERS), q.wait, atol=1e-7)
    assert not np.allclose(fifo_waits(q.queued, q.service, SERVERS + 1), q.wait, atol=1e-3)


def test_manufacturing_wait_matches_erlang_c(queue_run):
    """M/M/5 at rho = 0.75: P(wait > 0) = C(c, a) = 0.4618 and
    W_q = C(c, a) / (c mu - lambda) = 1.847 days.

    Waits are strongly autocorrelated, so the binomial SE does not apply.  300
    independent M/M/5 runs of 30 000 customers (first 1 000 dropped) gave standard
    deviations of 0.0120 for P(wait > 0) and 0.143 days for the mean wait, so the
    4-SD tolerances are 0.048 (10% of C) and 0.57 days (31% of W_q): the mean wait
    of a queue this busy converges slowly (several thousand patients would give a
    tolerance larger than W_q itself).  A 4- or 6-server queue (W_q = inf or 0.37
    days) is far outside either; the exact FCFS test above pins the discipline."""
    mu = 1 / MEAN_MFG
    c_prob = erlang_c(SERVERS, LAM / mu)
    wq = c_prob / (SERVERS * mu - LAM)
    wait = queue_run.wait[WARM_UP:]
    assert abs(np.mean(wait > 1e-9) - c_prob) < Z * 0.0120
    assert abs(wait.mean() - wq) < Z * 0.143


# ================================================================ end to end: relapse timing


def relapse_overrides(relapse: dict) -> dict:
    """Everyone infused and in CR, nothing but the given relapse hazards after infusion
    (no MRD, no loss of B-cell aplasia, no non-relapse or early death), death right at
    relapse so that nothing else is simulated."""
    never_law = never()
    law = {"family": "fixed", "value": 0.0, "assumption": A}
    return {
        "pathway": {
            "manufacturing": {"failure_probability": {"value": 0.0, "assumption": A}},
            "pre_infusion": {"death": never_law, "withdrawal": never_law},
            "toxicity": {"early_death": {"value": 0.0, "assumption": A}},
            "response": {"complete_remission": {"value": 1.0, "odds_ratios": [], "assumption": A}},
            "mrd": {"positive_at_assessment": {"value": 0.0, "odds_ratios": [], "assumption": A},
                    "emergence": never_law},
            "bca": {"loss": never_law},
            "non_relapse_mortality": {"death": never_law},
            "relapse": relapse,
            "post_relapse": {"survival": {"cd19pos": law, "cd19neg": law, "lineage_switch": law}},
        },
        "resources": {"apheresis": {"capacity": None}, "manufacturing": {"capacity": None}},
        # No scheduled tests: they would change nothing here and cost events.
        "surveillance": {"mrd": {"schedule": {"at_days": [], "repeat": []}},
                         "bca": {"schedule": {"at_days": [], "repeat": []}}},
    }


def run_relapse(derived_scenario, relapse: dict, n: int, seed: int, engine: str):
    sc = derived_scenario(relapse_overrides(relapse))
    (result,) = simulate_policies(ModelDefinition(sc), ["observe"], 0, n, seed, record_events=False, engine=engine)
    out = result.outcomes
    assert out["infused"].all() and out["cr"].all()
    assert_allclose(out["response_day"] - out["infusion_day"], sc.pathway.response.assessment_day.value)
    return out


def hazard(law: dict) -> dict:
    return {"law": {**law, "assumption": A}, "multipliers": []}


N_RELAPSE = 4_000


@pytest.mark.parametrize("engine", ["vectorised", "simpy"])
def test_exponential_relapse_median(derived_scenario, engine):
    """A lone exponential relapse hazard r (0.2 per month): the time from the response
    assessment to relapse is Exp(r), median ln2 / r = 105.5 days.

    Relapse clocks start at the day-28 assessment with their time origin at
    infusion, so a memoryless law gives a median of 28 + ln2/r from infusion.
    The sample median of Exp(r) has SE 1 / (r sqrt(n)) = 2.41 days for n = 4000;
    tolerance 4 SE = 9.6 days (9.1% of the median)."""
    r = 0.2 / DAYS_PER_MONTH
    out = run_relapse(derived_scenario, {
        "cd19pos": hazard({"family": "exponential", "rate": 0.2, "unit": "months"}),
        "cd19neg": never(), "lineage_switch": never(),
    }, N_RELAPSE, seed=7, engine=engine)
    since_response = out["relapse_day"] - out["response_day"]
    assert set(out["relapse_phenotype"]) == {"cd19pos"}  # horizon 5 y: P(censored) = e^-12
    tol = Z / (r * math.sqrt(N_RELAPSE))
    assert abs(np.median(since_response) - math.log(2) / r) < tol
    assert abs(np.median(out["relapse_day"] - out["infusion_day"]) - (28 + math.log(2) / r)) < tol
    assert (out["death_cause"] == "post_relapse").all()


@pytest.mark.parametrize("engine", ["vectorised", "simpy"])
def test_competing_exponential_relapse_phenotypes(derived_scenario, engine):
    """Three exponential phenotypes r1, r2, r3 (per day): the first relapse comes at
    Exp(r1 + r2 + r3) after the assessment and is phenotype k with probability
    rk / sum.  Tolerances: 4 SE of the median (1 / (R sqrt(n))) and 4 binomial SE."""
    rates = {"cd19pos": 1 / 200, "cd19neg": 1 / 400, "lineage_switch": 1 / 1600}
    total = sum(rates.values())
    relapse = {k: hazard({"family": "exponential", "rate": v}) for k, v in rates.items()}
    out = run_relapse(derived_scenario, relapse, N_RELAPSE, seed=8, engine=engine)
    since_response = out["relapse_day"] - out["response_day"]
    assert abs(np.median(since_response) - math.log(2) / total) < Z / (total * math.sqrt(N_RELAPSE))
    for name, rate in rates.items():
        p = rate / total
        share = np.mean(out["relapse_phenotype"] == name)
        assert abs(share - p) < Z * math.sqrt(p * (1 - p) / N_RELAPSE), name


@pytest.mark.parametrize("engine", ["vectorised", "simpy"])
def test_weibull_relapse_is_left_truncated_at_response(derived_scenario, engine):
    """A Weibull relapse law (shape 2, scale 150 days) is indexed from infusion and
    observed from the day-28 assessment on: S(t | no relapse by day 28) =
    exp(-((t/150)^2 - (28/150)^2)), not S(t - 28).  At each t the two differ by
    more than 0.05; tolerance 4 binomial SE <= 4 * 0.5 / sqrt(4000) = 0.032."""
    shape, scale = 2.0, 150.0
    out = run_relapse(derived_scenario, {
        "cd19pos": hazard({"family": "weibull", "shape": shape, "scale": scale}),
        "cd19neg": never(), "lineage_switch": never(),
    }, N_RELAPSE, seed=9, engine=engine)
    since_infusion = out["relapse_day"] - out["infusion_day"]
    assert since_infusion.min() >= 28.0
    for t in (60.0, 100.0, 150.0, 200.0):
        s = math.exp(-((t / scale) ** shape - (28 / scale) ** shape))
        assert abs(math.exp(-(((t - 28) / scale) ** shape)) - s) > 0.05  # the test can tell the two apart
        assert abs(np.mean(since_infusion > t) - s) < Z * math.sqrt(s * (1 - s) / N_RELAPSE), t
