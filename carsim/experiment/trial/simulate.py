"""Simulated trials: one (:func:`simulate_trial`), many in parallel
(:func:`simulate_trials`), or those of a trial file (:func:`run_trial_file`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..._units import DAYS_PER_MONTH
from ...scenario.parameters import apply_values
from ..metrics import endpoint_arrays
from ..parallel import backend_context, effective_jobs, parallel_map
from .design import TrialDesign, allocation, design_from_spec, grid_combinations
from .sources import OUTCOME_COLUMNS, OutcomeSource, ScenarioOutcomes, prepare_scenario
from .statistics import compare_arms, power_table

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


def run_trial_file(path, trials: int | None = None, n_jobs: int | None = None, seed: int | None = None,
                   backend: str = "loky", scheduler: str | None = None, progress: str | None = None,
                   engine: str | None = None):
    """Load a trial file and simulate it: ``(loaded trial, TrialResult)``."""
    from .schema import load_trial

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
