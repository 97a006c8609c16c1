"""Simulated randomised trials: power and type I error of a trial design.

A trial compares policies (arms; the first is the control) on patients who
enrol by Poisson accrual, are randomised, and are analysed once, at the
analysis time ``last enrolment + follow_up_months``.  Every simulated trial
is one replication of the model: its own patients and random numbers.

**How patients get their arm.**  Each patient belongs to one arm, so a trial
must not analyse the same patient under both policies.  For every simulated
trial the N enrolled patients are simulated once under *each* arm's policy
(one cohort per policy, with common random numbers: patient ``i`` has the
same covariates, arrival and random draws in every cohort), the patients are
randomised by a seeded allocation sequence, and each patient's outcome is
taken from the cohort of the arm they were randomised to.  This is the
potential-outcomes view of a trial: patient ``i``'s observed outcome is his
outcome under his assigned policy, and outcomes of different patients are
independent (each draws only his own rows of random numbers), exactly as in a
trial that simulated each patient under one policy only.  It costs one
cohort per policy instead of one mixed cohort, lets the randomisation be
redrawn without re-simulating, and makes a null trial (every arm the same
policy) exact: the arms are then random subsets of one cohort.  The one
approximation: transplant beds are queued for as if every trial patient
followed the arm's policy (the access queues, apheresis and manufacturing,
come before any policy acts, so they are the same in every arm); with the
baseline's ample beds this does not matter.  Cohorts are simulated by
``simulate_policies`` with the scenario's engine (``--engine``).

**Analysis.**  Times are days since each patient's enrolment; the analysis
day is counted from the trial's start, so a patient enrolled on day ``a`` is
administratively censored ``analysis_day - a`` days after enrolment.  From
infusion, only patients infused (for RFS: responding) by the analysis time
are analysed.  Tests: the log-rank test (NumPy; identical to
``lifelines.statistics.logrank_test``, which costs 30 ms a call), a Cox model
on the arm indicator (``lifelines.CoxPHFitter``, Wald test) or the
difference in Kaplan-Meier survival at a landmark time (Greenwood variance).
One-sided tests reject when the experimental arm is better.

**Reproducibility.**  Simulated trial ``k`` uses replication ``k`` of the
model (the same patients for every grid combination and sample size: common
random numbers across the assumption grid) and its own allocation stream;
results do not depend on the number of workers or the backend.

The model is one :class:`OutcomeSource`; any object with the same two
methods can stand in for it (e.g. :class:`ExponentialOutcomes`, two
exponential arms with a known hazard ratio), and goes through the same
randomisation, censoring and analysis code.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import special, stats

from .._units import DAYS_PER_MONTH
from ..model.cohort import arrival_days
from ..model.definition import ModelDefinition
from ..model.random import RandomStreams, stream_id
from ..model.simulation import simulate_replications
from ..scenario.parameters import apply_values
from ..scenario.schema import Scenario
from .metrics import endpoint_arrays
from .parallel import backend_context, effective_jobs, parallel_map

ALLOCATION_STREAM = "trial:allocation"
H1, H0 = "H1", "H0"  # each arm its own policy (power); both arms the control policy (type I error)

# columns every outcome source returns (times: days since the patient's enrolment)
OUTCOME_COLUMNS = ("arrival_day", "infused", "cr", "infusion_day", "response_day", "pathway_exit_day",
                   "relapse_day", "death_day", "end_day")


# ------------------------------------------------------------------ design


@dataclass(frozen=True)
class TrialDesign:
    """A trial design, resolved (what a worker needs; no file, no scenario)."""

    arms: tuple[str, ...]  # the policy of each arm; the first is the control
    sample_sizes: tuple[int, ...]  # total patients randomised
    follow_up_months: float  # after the last enrolment
    endpoint: str = "efs"  # efs | os | rfs
    origin: str = "infusion"  # infusion | enrollment
    test: str = "logrank"  # logrank | cox | landmark
    landmark_months: float | None = None
    alpha: float = 0.05
    sides: int = 2
    multiplicity: str = "none"  # none | bonferroni (over the comparisons with the control)
    ratio: tuple[int, ...] | None = None  # default 1 per arm
    method: str = "blocks"  # blocks | simple
    block_size: int | None = None  # default twice the ratio's sum
    trials: int = 100
    seed: int = 0
    null: bool = False  # also analyse every comparison with both arms under the control policy

    def __post_init__(self):
        if len(self.arms) < 2:
            raise ValueError("a trial needs at least two arms")
        if self.ratio is None:
            object.__setattr__(self, "ratio", (1,) * len(self.arms))
        if self.block_size is None:
            object.__setattr__(self, "block_size", 2 * sum(self.ratio))
        if self.test == "landmark" and self.landmark_months is None:
            raise ValueError("the landmark test needs landmark_months")

    @property
    def alpha_per_comparison(self) -> float:
        k = len(self.arms) - 1
        return self.alpha / k if self.multiplicity == "bonferroni" else self.alpha

    def comparison_label(self, j: int) -> str:
        if len(set(self.arms)) < len(self.arms):  # a policy in two arms: name the arms
            return f"arm {j + 1} ({self.arms[j]}) vs arm 1 ({self.arms[0]})"
        return f"{self.arms[j]} vs {self.arms[0]}"

    def plan(self) -> list[tuple[int, str, str, str, str]]:
        """(arm index, label, hypothesis, control policy, experimental policy) per analysis.

        Hypothesis ``H1``: each arm under its own policy (the rejection rate is
        the power); ``H0``: both arms under the control policy (the type I
        error).  Not "null", which CSV readers take for a missing value."""
        out = []
        control = self.arms[0]
        for j in range(1, len(self.arms)):
            label = self.comparison_label(j)
            if self.arms[j] == control:
                out.append((j, label, H0, control, control))
                continue
            out.append((j, label, H1, control, self.arms[j]))
            if self.null:
                out.append((j, label, H0, control, control))
        return out


def allocation(design: TrialDesign, trial: int, n: int) -> np.ndarray:
    """Arm index (0 = control) of patients ``0 .. n-1`` of simulated trial ``trial``.

    Permuted blocks (each block holds ``ratio`` patients per arm, scaled to
    ``block_size``, in random order) or simple randomisation with
    probabilities proportional to ``ratio``.  A smaller trial's allocation is
    the start of a larger one's."""
    seq = np.random.SeedSequence(design.seed, spawn_key=(trial, stream_id(ALLOCATION_STREAM)))
    rng = np.random.Generator(np.random.PCG64(seq))
    ratio = np.asarray(design.ratio, dtype=int)
    if design.method == "simple":
        cum = np.cumsum(ratio) / ratio.sum()
        return np.searchsorted(cum, rng.random(n), side="right").astype(np.int64)
    per_block = np.repeat(np.arange(len(ratio)), ratio * (design.block_size // ratio.sum()))
    blocks = -(-n // per_block.size)
    return np.concatenate([rng.permutation(per_block) for _ in range(blocks)])[:n].astype(np.int64)


# ------------------------------------------------------------------ outcome sources


class OutcomeSource(Protocol):
    """Where patients' outcomes come from (the model, or a stand-in for tests).

    A source may also offer ``outcomes_of_trials(policies, replications, n,
    horizon_days)``, a list of :meth:`outcomes` simulated together;
    :func:`simulate_outcomes` uses it when it is there."""

    independent_patients: bool  # True: patient i's outcome does not depend on the cohort size

    def arrival_days(self, replication: int, n: int) -> np.ndarray:
        """Enrolment days of patients 0..n-1 since the trial's start (ascending)."""

    def outcomes(self, policies: Sequence[str], replication: int, n: int, horizon_days: float) -> dict:
        """``{policy: patient columns}`` (:data:`OUTCOME_COLUMNS`, days since
        enrolment) of patients 0..n-1, followed up to at least ``horizon_days``
        after the trial's start."""


@dataclass(frozen=True)
class ScenarioOutcomes:
    """The carsim model: ``simulate_policies`` (the scenario's ``run.engine``;
    every policy on the same patients), with the scenario's arrival rate set
    to the trial's accrual."""

    scenario: Scenario
    seed: int

    @property
    def independent_patients(self) -> bool:
        r = self.scenario.resources
        return all(c.capacity is None for c in (r.apheresis, r.manufacturing, r.hsct_beds))

    def arrival_days(self, replication: int, n: int) -> np.ndarray:
        # the model's own arrival stream (same seed, replication and stream name)
        streams = RandomStreams(self.seed, replication, n)
        return arrival_days(self.scenario.cohort.arrivals.rate_per_day, streams)

    def outcomes(self, policies: Sequence[str], replication: int, n: int, horizon_days: float) -> dict:
        return self.outcomes_of_trials(policies, [replication], n, horizon_days)[0]

    def outcomes_of_trials(self, policies: Sequence[str], replications: Sequence[int], n: int,
                           horizon_days: float) -> list[dict]:
        """:meth:`outcomes` of several trials, simulated together (much
        faster than one by one for small trials)."""
        run = self.scenario.run.model_copy(update={"horizon_years": horizon_days / 365.25})
        model = ModelDefinition(self.scenario.model_copy(update={"run": run}))
        parts = simulate_replications(model, list(policies), list(replications), n, self.seed,
                                      record_events=False, engine=run.engine)
        out = {replication: {} for replication in replications}
        for part in parts:
            out[part.replication][part.policy] = part.outcomes
        return [out[replication] for replication in replications]


@dataclass(frozen=True)
class ExponentialOutcomes:
    """A stand-in for the model: death at a constant hazard per policy, everyone
    infused and responding at enrolment, uniform accrual (patient ``i``
    enrols at ``(i + 1) / per_month`` months).  With common random numbers:
    patient ``i`` has the same uniform under every policy."""

    hazard_per_month: Mapping[str, float]
    accrual_per_month: float
    seed: int = 0
    independent_patients: bool = True

    def arrival_days(self, replication: int, n: int) -> np.ndarray:
        return (np.arange(n) + 1.0) * DAYS_PER_MONTH / self.accrual_per_month

    def outcomes(self, policies: Sequence[str], replication: int, n: int, horizon_days: float) -> dict:
        seq = np.random.SeedSequence(self.seed, spawn_key=(replication, stream_id("trial:exponential")))
        u = np.random.Generator(np.random.PCG64(seq)).random(n)
        arrival = self.arrival_days(replication, n)
        end = horizon_days - arrival
        nan = np.full(n, np.nan)
        out = {}
        for policy in policies:
            death = -np.log1p(-u) / (self.hazard_per_month[policy] / DAYS_PER_MONTH)
            out[policy] = {"arrival_day": arrival, "infused": np.ones(n, bool), "cr": np.ones(n, bool),
                           "infusion_day": np.zeros(n), "response_day": np.zeros(n), "pathway_exit_day": nan,
                           "relapse_day": nan, "death_day": np.where(death <= end, death, np.nan),
                           "end_day": np.minimum(death, end)}
        return out


# ------------------------------------------------------------------ tests


def logrank(durations, events, group) -> tuple[float, float, float, float]:
    """(O1, E1, V, O): observed and expected events in ``group`` (True), the
    hypergeometric variance and all events; ties as in lifelines."""
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=bool)
    group = np.asarray(group, dtype=bool)
    order = np.argsort(durations, kind="stable")
    t, e, g = durations[order], events[order], group[order]
    times = np.unique(t[e])
    if times.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    first = np.searchsorted(t, times, side="left")
    at_risk = (t.size - first).astype(float)
    at_risk1 = np.concatenate([np.cumsum(g[::-1])[::-1], [0]])[first].astype(float)
    slot = np.searchsorted(times, t[e])
    deaths = np.bincount(slot, minlength=times.size).astype(float)
    deaths1 = np.bincount(slot, weights=g[e].astype(float), minlength=times.size)
    share = at_risk1 / at_risk
    expected1 = float(np.sum(deaths * share))
    with np.errstate(invalid="ignore", divide="ignore"):
        correction = np.where(at_risk > 1, (at_risk - deaths) / (at_risk - 1), 0.0)
    variance = float(np.sum(deaths * share * (1 - share) * correction))
    return float(deaths1.sum()), expected1, variance, float(deaths.sum())


def km_greenwood(durations, events, at: float) -> tuple[float, float]:
    """Kaplan-Meier survival at ``at`` and its Greenwood variance (NaN beyond follow-up)."""
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=bool)
    if durations.size == 0 or at > durations.max():
        return math.nan, math.nan
    t = np.sort(durations)
    times = np.unique(durations[events & (durations <= at)])
    if times.size == 0:
        return 1.0, 0.0
    at_risk = (t.size - np.searchsorted(t, times, side="left")).astype(float)
    deaths = np.bincount(np.searchsorted(times, durations[events & (durations <= at)]),
                         minlength=times.size).astype(float)
    survival = float(np.prod(1 - deaths / at_risk))
    if survival == 0.0:
        return 0.0, 0.0
    return survival, survival**2 * float(np.sum(deaths / (at_risk * (at_risk - deaths))))


def _p_value(z: float, sides: int) -> float:
    """z > 0 favours the experimental arm."""
    return float(special.ndtr(-z)) if sides == 1 else float(2 * special.ndtr(-abs(z)))


def compare_arms(design: TrialDesign, durations, events, experimental) -> tuple[float, float, float, float]:
    """(z, p, hazard ratio, survival difference) of experimental vs control;
    z > 0 favours the experimental arm; NaN when the test is not defined
    (no events, no variance, landmark beyond follow-up)."""
    o1, e1, variance, total = logrank(durations, events, experimental)
    o0, e0 = total - o1, total - e1
    pike = (o1 / e1) / (o0 / e0) if min(e1, e0, o0) > 0 else math.nan  # Pike's O/E ratio
    difference = math.nan
    if design.test == "logrank":
        z = (e1 - o1) / math.sqrt(variance) if variance > 0 else math.nan
        hr = float(pike)
    elif design.test == "cox":
        z, hr = _cox(durations, events, experimental)
    else:
        at = design.landmark_months * DAYS_PER_MONTH
        s1, v1 = km_greenwood(durations[experimental], events[experimental], at)
        s0, v0 = km_greenwood(durations[~experimental], events[~experimental], at)
        difference = s1 - s0
        z = difference / math.sqrt(v1 + v0) if v1 + v0 > 0 else math.nan
        hr = float(pike)
    p = _p_value(z, design.sides) if math.isfinite(z) else math.nan
    return float(z), p, hr, float(difference)


def _cox(durations, events, experimental) -> tuple[float, float]:
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    if events.sum() == 0 or experimental.all() or not experimental.any():
        return math.nan, math.nan
    frame = pd.DataFrame({"T": durations, "E": events, "arm": experimental.astype(float)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = CoxPHFitter().fit(frame, "T", "E")
    except (ConvergenceError, ValueError, np.linalg.LinAlgError, ZeroDivisionError):
        return math.nan, math.nan
    beta, se = float(fitted.params_["arm"]), float(fitted.standard_errors_["arm"])
    if not (math.isfinite(beta) and math.isfinite(se) and se > 0):
        return math.nan, math.nan
    return -beta / se, math.exp(beta)


# ------------------------------------------------------------------ one simulated trial

TRIAL_COLUMNS = ("combination", "n_total", "comparison", "hypothesis", "trial", "analysis_day", "analysed",
                 "events", "z", "p_value", "hazard_ratio", "difference", "reject")


def _endpoint_columns(cohort: dict, design: TrialDesign, censor_day: np.ndarray):
    """(analysed, duration, event) per patient at the analysis time."""
    mask, durations, events = endpoint_arrays(cohort, design.endpoint, design.origin, censor_day=censor_day)
    known = mask.copy()
    if design.origin == "infusion":  # not yet infused (responding) at the analysis: not in the analysis
        with np.errstate(invalid="ignore"):
            known &= cohort["infusion_day"] <= censor_day
            if design.endpoint == "rfs":
                known &= cohort["response_day"] <= censor_day
    n = censor_day.size
    duration = np.full(n, np.nan)
    event = np.zeros(n, dtype=bool)
    duration[mask] = durations
    event[mask] = events
    return known, duration, event


def _checked(columns: dict, arrivals: np.ndarray, n: int) -> dict:
    columns = {k: np.asarray(columns[k])[:n] for k in OUTCOME_COLUMNS}
    if not np.allclose(columns["arrival_day"], arrivals[:n], rtol=0, atol=1e-6):
        raise RuntimeError("outcome source: simulated arrival days differ from the trial's accrual")
    return columns


def simulate_outcomes(source: OutcomeSource, design: TrialDesign, trials: Sequence[int]) -> list[dict]:
    """Per trial ``{n: {policy: patient columns}}`` for the sample sizes
    :func:`simulate_trial` analyses: only the largest when patients are
    independent (the first n patients of the largest trial are the smaller
    trial), else every size (queues make a patient's story depend on the
    cohort).  Trials are simulated together where the source can; each is
    followed up to at least a day past its own analysis, which leaves
    everything up to the analysis unchanged."""
    sizes = sorted(design.sample_sizes)
    follow_up = design.follow_up_months * DAYS_PER_MONTH
    policies = list(dict.fromkeys(design.arms))
    last_arrival = {trial: np.asarray(source.arrival_days(trial, sizes[-1]), dtype=float) for trial in trials}
    out = [{} for _ in trials]
    for n in sizes[-1:] if source.independent_patients else sizes:
        horizon = max(float(last_arrival[trial][n - 1]) for trial in trials) + follow_up + 1.0
        if hasattr(source, "outcomes_of_trials"):
            simulated = source.outcomes_of_trials(policies, list(trials), n, horizon)
        else:
            simulated = [source.outcomes(policies, trial, n, horizon) for trial in trials]
        for per_trial, cohorts in zip(out, simulated, strict=True):
            per_trial[n] = cohorts
    return out


def simulate_trial(source: OutcomeSource, design: TrialDesign, trial: int, combination: int = 0,
                   simulated: dict | None = None) -> list[tuple]:
    """Every analysis of simulated trial ``trial``: one row (:data:`TRIAL_COLUMNS`)
    per sample size, comparison and hypothesis.  ``simulated``: this trial's
    :func:`simulate_outcomes`, if already simulated."""
    sizes = sorted(design.sample_sizes)
    n_max = sizes[-1]
    follow_up = design.follow_up_months * DAYS_PER_MONTH
    arrivals = np.asarray(source.arrival_days(trial, n_max), dtype=float)
    arms = allocation(design, trial, n_max)
    policies = list(dict.fromkeys(design.arms))
    alpha = design.alpha_per_comparison
    if simulated is None:
        simulated = simulate_outcomes(source, design, [trial])[0]
    rows = []
    for n in sizes:
        analysis_day = arrivals[n - 1] + follow_up
        outcomes = simulated[n_max if source.independent_patients else n]
        cohorts = {p: _checked(outcomes[p], arrivals, n) for p in policies}
        censor = analysis_day - arrivals[:n]
        columns = {p: _endpoint_columns(cohorts[p], design, censor) for p in policies}
        assigned = arms[:n]
        for j, label, hypothesis, control, experimental_policy in design.plan():
            experimental = assigned == j
            pick = [np.where(experimental, a, b) for a, b in zip(columns[experimental_policy], columns[control])]
            analysed = pick[0] & ((assigned == 0) | experimental)
            durations, events, group = pick[1][analysed], pick[2][analysed], experimental[analysed]
            z, p, hr, difference = compare_arms(design, durations, events, group)
            rows.append((combination, n, label, hypothesis, trial, float(analysis_day), int(analysed.sum()),
                         int(events.sum()), z, p, hr, difference, bool(p < alpha) if math.isfinite(p) else False))
    return rows


def _run_chunk(task) -> list[tuple]:
    source, design, combination, trials = task
    rows = []
    for trial, simulated in zip(trials, simulate_outcomes(source, design, trials), strict=True):
        rows += simulate_trial(source, design, trial, combination, simulated)
    return rows


# ------------------------------------------------------------------ many trials, the power table


@dataclass
class TrialResult:
    design: TrialDesign
    grid: list[dict]  # one {path: value} per combination
    trials: pd.DataFrame  # one row per simulated trial x analysis
    power: pd.DataFrame  # one row per combination x sample size x comparison x hypothesis
    timings: dict = field(default_factory=dict)


def simulate_trials(design: TrialDesign, sources: Sequence[OutcomeSource], grid: Sequence[dict] | None = None,
                    n_jobs: int = 1, progress: str | None = None) -> TrialResult:
    """``design.trials`` simulated trials for each source (one per grid
    combination), in parallel with :func:`parallel_map`; identical for any
    ``n_jobs``."""
    started = time.perf_counter()
    grid = list(grid) if grid is not None else [{} for _ in sources]
    if len(grid) != len(sources):
        raise ValueError("one grid combination per source")
    jobs = effective_jobs(n_jobs)
    total = design.trials * len(sources)
    chunk = max(1, min(25, math.ceil(total / (4 * jobs))))
    tasks = [(source, design, c, list(range(start, min(start + chunk, design.trials))))
             for c, source in enumerate(sources) for start in range(0, design.trials, chunk)]
    results = parallel_map(_run_chunk, tasks, n_jobs=n_jobs, progress=progress)
    trials = pd.DataFrame([row for rows in results for row in rows], columns=list(TRIAL_COLUMNS))
    for path in grid[0] if grid else ():
        trials.insert(trials.columns.get_loc("n_total"), path, [grid[c][path] for c in trials.combination])
    power = power_table(trials, design, grid)
    return TrialResult(design, list(grid), trials, power,
                       {"simulate_seconds": round(time.perf_counter() - started, 3), "workers": jobs,
                        "tasks": len(tasks)})


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    lower = float(stats.beta.ppf(tail, k, n - k + 1)) if k > 0 else 0.0
    upper = float(stats.beta.ppf(1 - tail, k + 1, n - k)) if k < n else 1.0
    return lower, upper


def power_table(trials: pd.DataFrame, design: TrialDesign, grid: Sequence[dict]) -> pd.DataFrame:
    """Rejection rate (power under H1, type I error under H0)
    with an exact 95% Monte Carlo interval, mean events and analysed patients,
    median hazard ratio, mean analysis time."""
    rows = []
    order = {label: i for i, label in enumerate(dict.fromkeys(trials.comparison))}
    keys = ["combination", "n_total", "comparison", "hypothesis"]
    for (c, n, label, hypothesis), g in trials.groupby(keys, sort=False):
        k, m = int(g.reject.sum()), len(g)
        lower, upper = clopper_pearson(k, m)
        hr = g.hazard_ratio[np.isfinite(g.hazard_ratio)]
        row = {**grid[c], "n_total": int(n), "comparison": label, "hypothesis": hypothesis, "trials": m,
               "rejection_rate": k / m, "rate_lower": lower, "rate_upper": upper,
               "not_evaluable": int((~np.isfinite(g.p_value)).sum()),
               "mean_events": float(g.events.mean()), "mean_analysed": float(g.analysed.mean()),
               "median_hr": float(hr.median()) if len(hr) else math.nan,
               "analysis_months": float(g.analysis_day.mean() / DAYS_PER_MONTH)}
        if design.test == "landmark":
            row["mean_difference"] = float(g.difference.mean())
        rows.append((c, n, order[label], hypothesis != H1, row))
    rows.sort(key=lambda r: r[:4])
    return pd.DataFrame([r[-1] for r in rows])


# ------------------------------------------------------------------ from a trial file


def prepare_scenario(scenario: Scenario, arms: Sequence[str], accrual_per_month: float,
                     engine: str | None = None) -> Scenario:
    """The scenario with the trial's accrual rate, only the arms' policies
    compiled and, if given, the simulation engine."""
    data = scenario.model_dump(by_alias=True, exclude_none=True)
    data["cohort"]["arrivals"]["rate_per_day"] = accrual_per_month / DAYS_PER_MONTH
    data["run"]["policies"] = list(dict.fromkeys(arms))
    if engine is not None:
        data["run"]["engine"] = engine
    return Scenario.model_validate(data)


def grid_combinations(grid: Mapping[str, Sequence[float]]) -> list[dict]:
    """Every combination of the grid's values (the first path varies slowest)."""
    paths = list(grid)
    return [dict(zip(paths, values)) for values in itertools.product(*(grid[p] for p in paths))] or [{}]


def design_from_spec(spec, seed: int, trials: int | None = None) -> TrialDesign:
    return TrialDesign(
        arms=tuple(spec.arms), sample_sizes=tuple(spec.sample_sizes), follow_up_months=spec.follow_up_months,
        endpoint=spec.endpoint.name, origin=spec.endpoint.origin, test=spec.endpoint.test,
        landmark_months=spec.endpoint.landmark_months, alpha=spec.alpha, sides=spec.sides,
        multiplicity=spec.multiplicity, ratio=spec.ratio, method=spec.randomisation.method,
        block_size=spec.block_size, trials=trials or spec.trials, seed=seed, null=spec.null)


def run_trial_file(path, trials: int | None = None, n_jobs: int | None = None, seed: int | None = None,
                   backend: str = "loky", scheduler: str | None = None, progress: str | None = None,
                   engine: str | None = None):
    """Load a trial file and simulate it: ``(loaded trial, TrialResult)``."""
    from .trial_schema import load_trial

    loaded = load_trial(path)
    spec, scenario = loaded.spec, loaded.scenario
    seed = seed if seed is not None else (spec.seed if spec.seed is not None else scenario.run.seed)
    design = design_from_spec(spec, seed, trials)
    base = prepare_scenario(apply_values(scenario, spec.set) if spec.set else scenario, spec.arms,
                            spec.accrual.per_month, engine)
    grid = grid_combinations(spec.grid)
    sources = [ScenarioOutcomes(apply_values(base, values) if values else base, seed) for values in grid]
    n_jobs = scenario.run.n_jobs if n_jobs is None else n_jobs
    with backend_context(backend, scheduler, n_jobs):
        result = simulate_trials(design, sources, grid, n_jobs=n_jobs, progress=progress)
    result.timings["engine"] = base.run.engine
    return loaded, result


def write_trial_results(out_dir, loaded, result: TrialResult, command=None) -> Path:
    """power.{csv,md,tex}, trials.csv, power.png and manifest.json (last)."""
    from .._io import atomic_write
    from .manifest import Manifest, clear
    from .tables import write_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear(out_dir)
    write_table(result.power, out_dir, "power")
    atomic_write(out_dir / "trials.csv", lambda p: result.trials.to_csv(p, index=False))
    atomic_write(out_dir / "power.png", lambda p: plot_power(result, p))
    design = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(result.design).items()}
    Manifest(
        "trial", loaded.scenario, result.design.seed,
        settings={"trial": loaded.name, "trials": result.design.trials, "engine": result.timings.get("engine"),
                  "design": design, "set": loaded.spec.set, "grid": loaded.spec.grid},
        files=["power.csv", "power.md", "power.tex", "trials.csv", "power.png"],
        timings=result.timings, command=command,
        extra={"trial": loaded.name, "trial_file": str(loaded.path), "design": design,
               "engine": result.timings.get("engine"), "set": loaded.spec.set, "grid": loaded.spec.grid,
               "targets": loaded.targets, "resolved_trial": loaded.spec.model_dump(mode="json")},
    ).write(out_dir)
    return out_dir


def plot_power(result: TrialResult, path) -> None:
    """Rejection rate against sample size, one line per grid combination and comparison."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), dpi=110)
    ax = figure.subplots()
    power = result.power
    for hypothesis, style in ((H1, "-o"), (H0, "--s")):
        part = power[power.hypothesis == hypothesis]
        keys = [c for c in part.columns if c in (result.grid[0] if result.grid else {})]
        keys += ["comparison"] if power.comparison.nunique() > 1 or not keys else []
        for values, g in part.groupby(keys, sort=False):
            values = values if isinstance(values, tuple) else (values,)
            label = ", ".join(f"{_short(k)}={v:g}" if not isinstance(v, str) else v for k, v in zip(keys, values))
            ax.errorbar(g.n_total, g.rejection_rate, yerr=[g.rejection_rate - g.rate_lower,
                                                           g.rate_upper - g.rejection_rate],
                        fmt=style, capsize=3, label=f"{label} ({hypothesis})")
    ax.axhline(result.design.alpha, color="grey", lw=0.8, ls=":")
    ax.axhline(0.8, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("patients randomised")
    ax.set_ylabel("power / type I error")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{result.design.endpoint.upper()} from {result.design.origin}, {result.design.test}: "
                 f"{result.design.trials} simulated trials per point (95% Monte Carlo intervals)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _short(path: str) -> str:
    """A grid path for a narrow column: without 'pathway.'/'surveillance.' and '.value'."""
    for prefix in ("pathway.", "surveillance."):
        path = path.removeprefix(prefix)
    return path.removesuffix(".value")


def terminal_table(result: TrialResult) -> str:
    """The power table as aligned text."""
    power = result.power
    grid_paths = list(result.grid[0]) if result.grid else []
    header = [_short(p) for p in grid_paths] + ["N", "comparison", "hypothesis", "rate (95% MC interval)",
                                                "events", "median HR"]
    lines = [header]
    for _, r in power.iterrows():
        lines.append([f"{r[p]:g}" for p in grid_paths] + [
            str(r.n_total), r.comparison, r.hypothesis,
            f"{r.rejection_rate:.3f} ({r.rate_lower:.3f}-{r.rate_upper:.3f})",
            f"{r.mean_events:.1f}", "-" if not math.isfinite(r.median_hr) else f"{r.median_hr:.2f}"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for k, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def command_trial(args) -> int:
    """``carsim trial TRIAL.yaml``: simulate, print the power table, write the results folder."""
    from .. import __version__
    from .output import default_output_dir

    show = None if getattr(args, "quiet", False) else "simulated trials"
    loaded, result = run_trial_file(args.trial, trials=args.trials, n_jobs=args.n_jobs, seed=args.seed,
                                    backend=args.backend, scheduler=args.scheduler, progress=show,
                                    engine=getattr(args, "engine", None))
    out_dir = args.out or default_output_dir(f"trial_{loaded.name}", root=Path("results") / loaded.scenario.name)
    write_trial_results(out_dir, loaded, result, command=sys.argv)
    if not getattr(args, "quiet", False):
        d = result.design
        print(f"carsim {__version__} | trial {loaded.name} on scenario {loaded.scenario.name} | {d.trials} "
              f"simulated trials per row | seed {d.seed}")
        test = d.test + (f" at {d.landmark_months:g} months" if d.test == "landmark" else "")
        print(f"{d.endpoint.upper()} from {d.origin}, {test}, {d.sides}-sided alpha {d.alpha:g}"
              + (f" (Bonferroni: {d.alpha_per_comparison:g} per comparison)" if d.multiplicity == "bonferroni"
                 else "")
              + f"; analysis {d.follow_up_months:g} months after the last enrolment")
        for path, values in [*((p, [v]) for p, v in loaded.spec.set.items()), *loaded.spec.grid.items()]:
            print(f"{'grid' if path in loaded.spec.grid else 'set'} {path} ({loaded.targets[path]}): "
                  + ", ".join(f"{v:g}" for v in values))
        print("H1: each arm under its own policy, rate = power; H0: both arms under the control policy, "
              "rate = type I error\n")
        print(terminal_table(result))
        print(f"\nsimulated in {result.timings['simulate_seconds']:.1f} s on {result.timings['workers']} worker(s)")
    print(f"results: {out_dir}")
    return 0
