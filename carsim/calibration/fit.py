"""Fitting free parameters to published targets.

The objective is a weighted sum of squared standardised differences between
model outputs and targets (the standard error comes from each target's
interval, or from its n).  Every evaluation simulates the same virtual
patients with the same random numbers (common random numbers), so the
objective moves smoothly with the parameters instead of jumping with Monte
Carlo noise; Nelder-Mead then minimises it, stage by stage.  The same seed
gives the same fit.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from joblib import delayed
from scipy import optimize

from ..errors import ScenarioError
from ..experiment.parallel import effective_jobs, workers
from ..model.definition import ModelDefinition
from ..model.simulation import simulate_policies
from ..scenario.loader import resolve_extends
from ..scenario.paths import set_value_at, value_at
from ..scenario.schema import Scenario
from .outputs import compute_output
from .recovery import hsct_recovery, recover, simulate_hsct_arms
from .spec import CalibrationSpec, Parameter, Target

MAIN = "cohort"


def to_unit(parameter: Parameter, value: float) -> float:
    """Parameter value -> unconstrained optimiser coordinate."""
    lo, hi = parameter.bounds
    if parameter.scale == "log":
        lo, hi, value = math.log(lo), math.log(hi), math.log(value)
    share = min(max((value - lo) / (hi - lo), 1e-6), 1 - 1e-6)
    return math.log(share / (1 - share))


def from_unit(parameter: Parameter, z: float) -> float:
    lo, hi = parameter.bounds
    share = 1.0 / (1.0 + math.exp(-z))
    if parameter.scale == "log":
        return math.exp(math.log(lo) + share * (math.log(hi) - math.log(lo)))
    return lo + share * (hi - lo)


def _simulate_group(model: ModelDefinition, policy: str, n_patients: int, seed: int, start: int, stop: int):
    (part,) = simulate_policies(model, [policy], 0, n_patients, seed, start=start, stop=stop, record_events=False,
                                engine=model.scenario.run.engine)
    return {**part.outcomes, **{k: v for k, v in part.covariates.items() if k not in part.outcomes}}


@dataclass
class Evaluation:
    values: dict  # parameter path -> value
    outputs: dict  # target id -> model value
    patients: dict = field(repr=False, default_factory=dict)  # group -> patient columns


class Calibrator:
    """Simulates the calibration cohort (and pinned subgroups) for a set of
    parameter values and compares the outputs with the targets."""

    def __init__(self, spec: CalibrationSpec, targets: dict[str, Target], spec_path: Path,
                 patients: int | None = None, n_jobs: int | None = None):
        self.spec = spec
        self.targets = targets
        self.spec_path = Path(spec_path)
        self.scenario_path = (self.spec_path.parent / spec.scenario).resolve()
        raw, _ = resolve_extends(self.scenario_path)
        raw.setdefault("name", self.scenario_path.stem)
        raw.setdefault("run", {})["policies"] = [spec.policy]
        # Queues play no part in these targets; without finite resources a
        # cohort may be split across workers (patients then do not interact).
        for resource in raw.get("resources", {}).values():
            resource["capacity"] = None
        self.raw = raw
        self.patients = patients or spec.patients
        self.n_jobs = effective_jobs(spec.n_jobs if n_jobs is None else n_jobs)
        self.groups = {MAIN: None, **{t.mapping.subgroup: t.mapping.subgroup for t in targets.values()
                                      if t.mapping.subgroup}}
        self.tied = {p.path: (p.path, *p.also) for p in self.parameters}
        self._check_paths()
        self.phenotypes = self.scenario({}).relapse_phenotypes  # outputs by phenotype follow the scenario's
        self.evaluations = 0
        self.progress = None  # a progress bar (experiment.parallel.progress_bar) counting evaluations
        self._parallel = None
        self._hsct_arms = None  # (values and subgroup, the two arms): the last two-policy simulation

    def __enter__(self):
        if self.n_jobs > 1:
            self._parallel = workers(self.n_jobs)
            self._parallel.__enter__()
        return self

    def __exit__(self, *exc):
        if self._parallel is not None:
            self._parallel.__exit__(*exc)
            self._parallel = None

    @property
    def parameters(self) -> list:
        """Every fitted parameter: the stages', those tuned to match a published HR and those of a synthesis."""
        return ([p for stage in self.spec.stages for p in stage.parameters] + [m.parameter for m in self.spec.match]
                + [p for synthesis in self.spec.synthesis for p in synthesis.parameters])

    def _check_paths(self):
        """Every fitted path must name a number in the scenario (typos are errors)."""
        places = [(f"stages[{s}].parameters[{i}]", parameter) for s, stage in enumerate(self.spec.stages)
                  for i, parameter in enumerate(stage.parameters)]
        places += [(f"match[{m}].parameter", match.parameter) for m, match in enumerate(self.spec.match)]
        places += [(f"synthesis[{k}].parameters[{i}]", parameter) for k, synthesis in enumerate(self.spec.synthesis)
                   for i, parameter in enumerate(synthesis.parameters)]
        for where, parameter in places:
            for path in self.tied[parameter.path]:
                try:
                    value = value_at(self.raw, path)
                except (KeyError, IndexError, ValueError, TypeError):
                    value = None
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ScenarioError(self.spec_path, f"{where}.path",
                                        f"{path!r} does not name a number in {self.scenario_path.name}")
                lo, hi = parameter.bounds
                if parameter.path == path and not lo <= value <= hi:
                    raise ScenarioError(self.spec_path, f"{where}.bounds",
                                        f"the starting value {value:g} of {path!r} lies outside {lo:g}..{hi:g}")

        known = set(self.raw["cohort"]["covariates"]) | {"marrow_blasts_infusion"}
        for name, subgroup in self.spec.subgroups.items():
            for key in subgroup.fixed:
                if key not in known:
                    raise ScenarioError(self.spec_path, f"subgroups.{name}.fixed.{key}",
                                        f"unknown covariate; expected one of: {', '.join(sorted(known))}")

    def scenario(self, values: dict, subgroup: str | None = None) -> Scenario:
        raw = copy.deepcopy(self.raw)
        for path, value in values.items():
            for each in self.tied.get(path, (path,)):
                set_value_at(raw, each, float(value))
        if subgroup is not None:
            raw["cohort"]["fixed"] = {**raw["cohort"].get("fixed", {}), **self.spec.subgroups[subgroup].fixed}
        # Targets are clinical: costs and QALYs (and the event records they need) would only slow the fit.
        raw.pop("economics", None)
        return Scenario.model_validate(raw)

    def prior_values(self, parameters) -> dict:
        return {p.path: float(value_at(self.raw, p.path)) for p in parameters}

    def simulate(self, values: dict, groups=None) -> dict:
        """Patient columns per group (the cohort and each subgroup)."""
        groups = list(self.groups) if groups is None else groups
        tasks = []
        for group in groups:
            model = ModelDefinition(self.scenario(values, None if group == MAIN else group))
            n = self.patients
            chunks = max(1, min(self.n_jobs, n // 500))
            bounds = np.linspace(0, n, chunks + 1).round().astype(int)
            tasks += [(group, model, int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        calls = [delayed(_simulate_group)(model, self.spec.policy, self.patients, self.spec.seed, a, b)
                 for _, model, a, b in tasks]
        parts = self._parallel(calls) if self._parallel is not None else [f(*a, **k) for f, a, k in calls]
        self.evaluations += 1
        if self.progress is not None:
            self.progress.update(1)
        out = {}
        for (group, *_), part in zip(tasks, parts, strict=True):
            out.setdefault(group, []).append(part)
        return {g: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for g, ps in out.items()}

    def outputs(self, patients: dict, target_ids) -> dict:
        values = {}
        for target_id in target_ids:
            target = self.targets[target_id]
            m = target.mapping
            group = target.patients(patients[m.subgroup or MAIN])
            values[target_id] = compute_output(group, m.output, m.origin, target.time_months,
                                               m.censor_at_hsct, phenotypes=self.phenotypes)
        return values

    def evaluate(self, values: dict, target_ids) -> Evaluation:
        groups = sorted({self.targets[t].mapping.subgroup or MAIN for t in target_ids})
        patients = self.simulate(values, groups)
        return Evaluation(dict(values), self.outputs(patients, target_ids), patients)

    def recover(self, values: dict, analysis: str, patients: dict | None = None, subgroup: str | None = None,
                high_burden: str | None = None) -> dict:
        """A published input's hazard ratio re-estimated on the cohort (or
        ``subgroup``) simulated with ``values`` (``patients``: those cohorts,
        when already simulated); ``high_burden``: the burden analyses' group
        as the paper defined it (a condition on baseline covariates)."""
        if analysis in ("consolidative_hsct", "consolidative_hsct_lfs"):  # the cohort under two policies
            key = (tuple(sorted(values.items())), subgroup)
            if self._hsct_arms is None or self._hsct_arms[0] != key:  # relapse and LFS read one simulation
                model = ModelDefinition(self.scenario(values, subgroup))
                self._hsct_arms = (key, simulate_hsct_arms(model, self.patients, self.spec.seed))
            return hsct_recovery(None, self.patients, self.spec.seed,
                                 "relapse" if analysis == "consolidative_hsct" else "lfs", arms=self._hsct_arms[1])
        group = subgroup or MAIN
        cohort = patients[group] if patients is not None and group in patients else self.simulate(values, [group])[group]
        return recover(cohort, analysis, high_burden)

    def objective(self, evaluation: Evaluation, target_ids) -> float:
        return float(sum(self.targets[t].discrepancy(evaluation.outputs[t]) ** 2 for t in target_ids))


@dataclass
class StageResult:
    name: str
    values: dict
    objective_before: float
    objective_after: float
    evaluations: int
    contributions: dict  # target id -> squared standardised difference


def fit(calibrator: Calibrator, log=print, published: dict | None = None) -> tuple[dict, list[StageResult]]:
    """Fit each stage in turn (later stages start from earlier fits), then
    tune the parameters that match published hazard ratios (``published``:
    the targets file's entries by id).  Syntheses follow
    (:func:`carsim.calibration.synthesis.synthesize`)."""
    spec = calibrator.spec
    values = {}
    for stage in spec.stages:
        values.update(calibrator.prior_values([p for p in stage.parameters if p.path not in values]))
    results = []
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(7,)))
    for stage in spec.stages:
        fitted_ids = [t for t in stage.targets if calibrator.targets[t].mapping.fit]
        params = stage.parameters

        def loss(z, params=params, fitted_ids=fitted_ids):
            trial = {**values, **{p.path: from_unit(p, zi) for p, zi in zip(params, z, strict=True)}}
            return calibrator.objective(calibrator.evaluate(trial, fitted_ids), fitted_ids)

        start = np.array([to_unit(p, values[p.path]) for p in params])
        before = loss(start)
        best_z, best = start, before
        starts = [start] + [rng.normal(0.0, 1.5, size=len(params)) for _ in range(spec.starts - 1)]
        used = 1
        for z0 in starts:
            res = optimize.minimize(loss, z0, method="Nelder-Mead",
                                    options={"maxfev": stage.max_evaluations, "xatol": 1e-3, "fatol": 1e-3,
                                             "initial_simplex": _simplex(z0)})
            used += res.nfev
            if res.fun < best:
                best_z, best = res.x, res.fun
        values.update({p.path: from_unit(p, zi) for p, zi in zip(params, best_z, strict=True)})
        final = calibrator.evaluate(values, fitted_ids)
        contributions = {t: calibrator.targets[t].discrepancy(final.outputs[t]) ** 2 for t in fitted_ids}
        results.append(StageResult(stage.name, {p.path: values[p.path] for p in params}, before, best, used,
                                   contributions))
        log(f"stage {stage.name}: objective {before:.2f} -> {best:.2f} in {used} evaluations")
    for match in spec.match:
        results.append(match_input(calibrator, values, match, float(published[match.id]["value"]), log))
    return values, results


def match_input(calibrator: Calibrator, values: dict, match, published: float, log=print) -> StageResult:
    """Tune ``match.parameter`` (in ``values``) until the hazard ratio
    re-estimated on the simulated cohort equals the published one: a root of
    log(recovered HR) - log(published HR), found by Brent's method on the
    parameter's scale with common random numbers.  Where no value in the
    search range reaches the published HR, the nearer bound is kept (and the
    report flags it as a failure)."""
    parameter = match.parameter
    evaluations = 0

    def gap(z: float) -> float:
        nonlocal evaluations
        evaluations += 1
        trial = {**values, parameter.path: from_unit(parameter, z)}
        return math.log(calibrator.recover(trial, match.analysis)["hr"]) - math.log(published)

    before_value = values.get(parameter.path, calibrator.prior_values([parameter])[parameter.path])
    before = gap(to_unit(parameter, before_value))
    low, high = to_unit(parameter, parameter.bounds[0]), to_unit(parameter, parameter.bounds[1])
    at_low, at_high = gap(low), gap(high)
    if at_low * at_high > 0:  # no root inside the range: keep the nearer end
        z = low if abs(at_low) < abs(at_high) else high
        after = min(abs(at_low), abs(at_high))
    else:
        z = optimize.brentq(gap, low, high, xtol=1e-3)
        after = abs(gap(z))
    values[parameter.path] = from_unit(parameter, z)
    log(f"match {match.id}: {parameter.path} = {values[parameter.path]:.6g} (|log HR gap| {abs(before):.3f} -> "
        f"{after:.3f}) in {evaluations} evaluations")
    return StageResult(f"match {match.id}", {parameter.path: values[parameter.path]}, before ** 2, after ** 2,
                       evaluations, {})


def match_interval(calibrator: Calibrator, values: dict, match, interval) -> tuple[tuple[float, float], list[str]]:
    """The parameter values matched to the two ends of the published HR's
    interval (its uncertainty, carried into PSA), and the ends that no value
    in the search range reaches (the nearer bound is kept for those)."""
    ends, unreached = [], []
    for end in interval:
        trial = dict(values)
        match_input(calibrator, trial, match, float(end), log=lambda *_: None)
        value = trial[match.parameter.path]
        if any(math.isclose(value, bound, rel_tol=1e-3) for bound in match.parameter.bounds):
            unreached.append(f"{end:g}")
        ends.append(value)
    return (min(ends), max(ends)), unreached


def _simplex(z0: np.ndarray, step: float = 0.6) -> np.ndarray:
    """A starting simplex wide enough to see past the objective's small steps."""
    simplex = np.tile(z0, (len(z0) + 1, 1))
    for i in range(len(z0)):
        simplex[i + 1, i] += step
    return simplex
