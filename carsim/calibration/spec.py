"""The calibration file: which published targets, mapped to which model
outputs, constrain which free parameters.

Mappings live here in YAML, not in code: each target names a model output
(:func:`carsim.calibration.outputs.model_outputs` of the calibrated
scenario's relapse phenotypes), its time origin, time point,
endpoint options (e.g. censoring at HSCT, as the paper did) and the subgroup
it was measured in.  Everything is checked when the file loads: an unknown
target id, output (or one naming a relapse phenotype the scenario does not
have), subgroup covariate or parameter path is a one-line error.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from ..errors import ScenarioError
from ..scenario.conditions import ConditionSyntaxError, parse_condition, vectorise_condition
from ..scenario.loader import check_finite, load_scenario, read_yaml
from ..scenario.schema import Strict
from ..scenario.validation import describe_error, key_path
from .outputs import UnknownOutput, resolve_output


class Subgroup(Strict):
    fixed: dict
    note: str = ""


class TargetMapping(Strict):
    id: str
    output: str
    origin: Literal["infusion", "enrollment"] = "infusion"
    time_months: float | None = Field(None, gt=0)
    censor_at_hsct: bool = False
    subgroup: str | None = None
    # The patients the figure was reported among, a condition on baseline
    # covariates or on response at day 28 (e.g. "marrow_blasts_infusion >= 5",
    # "not cr"): a published figure for one part of a cohort, read off the
    # same simulated cohort.
    among: str | None = None
    tolerance: float | None = Field(None, gt=0)
    fit: bool = True  # false: reported, not fitted (e.g. a different cohort or era)
    note: str = ""


class Parameter(Strict):
    path: str
    also: list[str] = Field(default_factory=list)  # further paths tied to the same value (a shared shape, say)
    bounds: tuple[float, float]
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _bounds(self):
        lo, hi = self.bounds
        if not lo < hi:
            raise ValueError("bounds: expected [lower, upper] with lower < upper")
        if self.scale == "log" and lo <= 0:
            raise ValueError("bounds: a log-scale parameter needs a positive lower bound")
        return self


class Stage(Strict):
    name: str
    parameters: list[Parameter]
    targets: list[str]
    max_evaluations: int = Field(150, ge=1)


# How a published hazard ratio is re-estimated on the simulated cohort
# (carsim.calibration.recovery).
Analysis = Literal["bca_loss_relapse", "burden_efs", "burden_os", "burden_relapse", "burden_cd19neg_relapse",
                   "extramedullary_efs", "prior_lines_os", "prior_crs_cd19pos_relapse", "mrd_day28_relapse",
                   "mrd_month3_relapse", "consolidative_hsct", "consolidative_hsct_lfs", "fludarabine_relapse",
                   "kmt2a_relapse", "kmt2a_lineage_switch"]


class Recovery(Strict):
    id: str
    analysis: Analysis
    tolerance_ratio: float | None = Field(None, gt=1)  # interval [HR / r, HR * r] where no CI is published
    subgroup: str | None = None  # re-estimated in this subgroup (the population the paper studied)
    # The burden analyses' high-burden group as the paper defined it, a
    # condition on baseline covariates (default: >= 5% marrow blasts).
    high_burden: str | None = None
    note: str = ""


class Match(Strict):
    """A published hazard ratio that a parameter is tuned to reproduce when
    re-estimated on the simulated cohort the way the paper estimated it (the
    parameter itself is a conditional effect no paper reports), e.g. the
    relapse multiplier after HSCT so that the marginal HR of consolidative
    HSCT among responders is Xu 2021's."""

    id: str  # the published input in the targets file
    analysis: Literal["consolidative_hsct", "fludarabine_relapse", "kmt2a_relapse", "prior_lines_os"]
    parameter: Parameter
    note: str = ""


class Evidence(Strict):
    """One published figure in a synthesis: a hazard ratio re-estimated on the
    simulated cohort (``analysis``) or the value of one of the synthesis's own
    parameters (``parameter``, e.g. a published transplant mortality), or that
    probability under one of its odds ratios (``odds_ratio``, e.g. the
    mortality of a second transplant)."""

    id: str  # the published figure in the targets file (a value and a 95% CI)
    analysis: Analysis | None = None
    parameter: str | None = None
    odds_ratio: str | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.analysis is None) == (self.parameter is None):
            raise ValueError("expected exactly one of 'analysis' (a re-estimated HR) or 'parameter' (a fitted value)")
        if self.odds_ratio is not None and self.parameter is None:
            raise ValueError("odds_ratio: applies to a probability named by 'parameter'")
        return self


class Synthesis(Strict):
    """Several published figures that constrain the same few parameters and
    disagree at their point estimates (e.g. a meta-analysis's relapse HR, its
    LFS HR and its transplant mortality, pooled over different study subsets).
    The parameters are fitted by weighted least squares on the log scale, each
    figure weighted by the precision its 95% CI implies on the side of the
    gap; their uncertainty is the Laplace approximation around that fit, from
    which PSA takes joint draws (carsim.calibration.synthesis)."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    parameters: list[Parameter] = Field(min_length=1)
    evidence: list[Evidence] = Field(min_length=1)
    max_evaluations: int = Field(80, ge=1)
    note: str = ""

    @model_validator(mode="after")
    def _enough_figures(self):
        if len(self.evidence) < len(self.parameters):
            raise ValueError(f"evidence: {len(self.evidence)} figure(s) cannot fix {len(self.parameters)} parameters")
        return self


class UncertaintySettings(Strict):
    """Approximate Bayesian calibration of the stage parameters after the fit
    by Markov chains (see :mod:`carsim.calibration.uncertainty`)."""

    samples: int = Field(400, ge=20)  # simulated parameter sets (a fifth of them the pilot)
    keep: int = Field(200, ge=10)  # joint draws written for PSA, evenly spaced through the chains' second halves
    spread: float = Field(0.3, gt=0)  # step probing the objective's curvature, on the optimiser's scale
    chains: int = Field(4, ge=1)  # Metropolis chains run side by side


class CalibrationSpec(Strict):
    name: str
    scenario: str
    writes: str
    report: str
    targets_file: str = "targets.yaml"
    patients: int = Field(3000, ge=100)
    seed: int = Field(20261124, ge=0)
    policy: str = "observe"
    n_jobs: int = -1
    default_tolerance: float = Field(0.05, gt=0)
    starts: int = Field(1, ge=1)
    subgroups: dict[str, Subgroup] = Field(default_factory=dict)
    targets: list[TargetMapping]
    stages: list[Stage]
    recover: list[Recovery] = Field(default_factory=list)
    match: list[Match] = Field(default_factory=list)
    synthesis: list[Synthesis] = Field(default_factory=list)
    uncertainty: UncertaintySettings | None = None


class Target:
    """A published figure resolved against its mapping: value and interval."""

    def __init__(self, mapping: TargetMapping, entry: dict, default_tolerance: float):
        self.mapping = mapping
        self.entry = entry
        self.id = mapping.id
        raw = entry["value"]
        self.one_sided = isinstance(raw, str)
        n = entry.get("n")
        self.below = False  # a one-sided target met below its bound ("< 0.05")
        if self.one_sided:  # e.g. "> 0.50" or "< 0.05"
            text = raw.strip()
            bound = float(text.lstrip("><= "))
            self.below = text.startswith("<")
            self.value, self.lower, self.upper = (bound, 0.0, bound) if self.below else (bound, bound, 1.0)
            self.interval_kind = "one-sided"
        else:
            value = float(raw)
            # "65 of 71": a count (a share's numerator), not a median or a number of days
            is_count = (n is not None and value > 1 and float(value).is_integer() and value <= n
                        and not mapping.output.startswith("median") and mapping.output != "enrollment_to_infusion_days")
            self.value = value / n if is_count else value
            if entry.get("ci"):
                self.lower, self.upper = map(float, entry["ci"])
                self.interval_kind = interval_kind(entry)
            elif mapping.tolerance is not None:
                self.lower, self.upper = self.value - mapping.tolerance, self.value + mapping.tolerance
                self.interval_kind = f"tolerance +-{mapping.tolerance:g}"
            elif n is not None and 0 < self.value < 1:
                self.lower, self.upper = wilson_interval(self.value, n)
                self.interval_kind = f"binomial 95% CI, n={n}"
            else:
                tol = default_tolerance
                self.lower, self.upper = self.value - tol, self.value + tol
                self.interval_kind = f"tolerance +-{tol:g}"
        self.time_months = mapping.time_months if mapping.time_months is not None else entry.get("time")
        self._among = vectorise_condition(parse_condition(mapping.among)) if mapping.among else None
        self.standard_error = max((self.upper - self.lower) / 3.92, 1e-6)

    def patients(self, group: dict) -> dict:
        """The rows of the simulated patient table ``group`` the figure was
        reported among (all of them without ``among:``)."""
        if self._among is None:
            return group
        keep = np.asarray(self._among(SimpleNamespace(**group)), dtype=bool)
        return {k: v[keep] for k, v in group.items()}

    def inside(self, model_value: float) -> bool:
        return self.lower - 1e-12 <= model_value <= self.upper + 1e-12

    def discrepancy(self, model_value: float) -> float:
        """Standardised distance to the target (0 inside a one-sided bound)."""
        if math.isnan(model_value):
            return 10.0
        if self.one_sided:
            gap = model_value - self.value if self.below else self.value - model_value
            return max(0.0, gap) / self.standard_error
        return (model_value - self.value) / self.standard_error


def interval_kind(entry: dict) -> str:
    """How a figure's ``ci`` was obtained: published, or derived where the
    paper gives none (``ci_derived:`` says how, e.g. from events per group)."""
    return "derived 95% CI (none published; see targets.yaml)" if entry.get("ci_derived") else "published 95% CI"


def wilson_interval(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def load_targets_file(path: Path) -> dict[str, dict]:
    """The published figures, by id, each with its group; every entry checked
    (one line naming the file and the entry otherwise)."""
    path = Path(path)
    data = read_yaml(path)
    check_finite(data, lambda _where: path)
    published: dict[str, dict] = {}
    for group, entries in data.items():
        if not isinstance(entries, list):
            raise ScenarioError(path, str(group), "expected a list of published figures ({id, what, value, ...})")
        for i, entry in enumerate(entries):
            at = f"{group}[{i}]"
            if not isinstance(entry, dict):
                raise ScenarioError(path, at, "expected a mapping with id, value and source")
            for key in ("id", "value"):
                if key not in entry:
                    raise ScenarioError(path, at, f"missing '{key}'")
            if not isinstance(entry["id"], str) or not entry["id"]:
                raise ScenarioError(path, f"{at}.id", "expected a name")
            if entry["id"] in published:
                raise ScenarioError(path, f"{at}.id", f"{entry['id']!r} is given twice")
            value = entry["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ScenarioError(path, f"{at}.value", f"expected a number, got {value!r}")
            if "ci" in entry:
                ci = entry["ci"]
                if (not isinstance(ci, list) or len(ci) != 2 or not all(
                        isinstance(x, (int, float)) and not isinstance(x, bool) for x in ci) or not ci[0] < ci[1]):
                    raise ScenarioError(path, f"{at}.ci", f"expected [lower, upper] with lower < upper, got {ci!r}")
                if isinstance(value, (int, float)) and not ci[0] <= value <= ci[1] and entry.get("kind") != "input":
                    raise ScenarioError(path, f"{at}.ci", f"the interval {ci} does not contain the value {value}")
            if "ci_derived" in entry and ("ci" not in entry or not isinstance(entry["ci_derived"], str)):
                raise ScenarioError(path, f"{at}.ci_derived", "expected a sentence saying how the ci was derived, "
                                    "beside a ci")
            if "n" in entry and (isinstance(entry["n"], bool) or not isinstance(entry["n"], int) or entry["n"] < 1):
                raise ScenarioError(path, f"{at}.n", f"expected a whole number of patients >= 1, got {entry['n']!r}")
            published[entry["id"]] = {**entry, "group": group}
    return published


def load_calibration(path) -> tuple[CalibrationSpec, dict[str, Target]]:
    """Read and check a calibration file; paths in it are relative to it."""
    path = Path(path)
    data = read_yaml(path)
    check_finite(data, lambda _where: path)
    try:
        spec = CalibrationSpec.model_validate(data)
    except ValidationError as exc:
        loc, expected = describe_error(exc.errors()[0], data, CalibrationSpec)
        raise ScenarioError(path, key_path(loc), expected) from None
    base = path.parent
    targets_path = base / spec.targets_file
    if not targets_path.is_file():
        raise ScenarioError(path, "targets_file", f"expected an existing targets file, {targets_path} not found")
    published = load_targets_file(targets_path)
    scenario = load_scenario(base / spec.scenario)
    phenotypes = scenario.relapse_phenotypes
    baseline_columns = set(scenario.cohort.covariates) | {"marrow_blasts_infusion"}
    targets = {}
    for i, mapping in enumerate(spec.targets):
        where = f"targets[{i}]"
        if mapping.id not in published:
            raise ScenarioError(path, f"{where}.id", f"unknown target id {mapping.id!r}; it must be in {targets_path.name}")
        try:
            output = resolve_output(mapping.output, phenotypes)
        except UnknownOutput as exc:
            raise ScenarioError(path, f"{where}.output", f"target {mapping.id!r}: {exc}") from None
        if mapping.subgroup is not None and mapping.subgroup not in spec.subgroups:
            raise ScenarioError(path, f"{where}.subgroup", f"unknown subgroup {mapping.subgroup!r}")
        if mapping.among is not None:
            try:
                parse_condition(mapping.among, baseline_columns | {"cr"})
            except ConditionSyntaxError as exc:
                raise ScenarioError(path, f"{where}.among", f"a condition on baseline covariates or response "
                                    f"(cr): {exc}") from None
        target = Target(mapping, published[mapping.id], spec.default_tolerance)
        if output.needs_time and target.time_months is None:
            raise ScenarioError(path, f"{where}.time_months", f"output {mapping.output!r} needs a time point")
        targets[mapping.id] = target
    for s, stage in enumerate(spec.stages):
        for t, target_id in enumerate(stage.targets):
            if target_id not in targets:
                raise ScenarioError(path, f"stages[{s}].targets[{t}]", f"{target_id!r} is not one of the mapped targets")
    for r, recovery in enumerate(spec.recover):
        if recovery.id not in published:
            raise ScenarioError(path, f"recover[{r}].id", f"unknown target id {recovery.id!r}")
        if recovery.high_burden is not None:
            if not recovery.analysis.startswith("burden_"):
                raise ScenarioError(path, f"recover[{r}].high_burden", f"only the burden analyses take a high-burden "
                                    f"definition, not {recovery.analysis!r}")
            try:
                parse_condition(recovery.high_burden, baseline_columns)
            except ConditionSyntaxError as exc:
                raise ScenarioError(path, f"recover[{r}].high_burden", f"a condition on baseline covariates: {exc}") from None
        if recovery.subgroup is not None and recovery.subgroup not in spec.subgroups:
            raise ScenarioError(path, f"recover[{r}].subgroup", f"unknown subgroup {recovery.subgroup!r}; "
                                f"expected one of: {', '.join(spec.subgroups) or 'none (define subgroups:)'}")
    for m, match in enumerate(spec.match):
        if match.id not in published:
            raise ScenarioError(path, f"match[{m}].id", f"unknown target id {match.id!r}")
        try:
            float(published[match.id]["value"])
        except (TypeError, ValueError):
            raise ScenarioError(path, f"match[{m}].id", f"{match.id!r} has no numeric value to match") from None
    _check_syntheses(spec, published, path)
    return spec, targets


def _check_syntheses(spec: CalibrationSpec, published: dict, path: Path) -> None:
    """Each synthesis: a unique id; figures with a value inside a 95% CI, each
    figure once; parameters that a figure constrains, fitted nowhere else, with
    a positive lower bound where a figure reads them on the log scale."""
    elsewhere = {p_path: f"stage {stage.name!r}" for stage in spec.stages for p in stage.parameters
                 for p_path in (p.path, *p.also)}
    elsewhere.update({p_path: f"match {m.id!r}" for m in spec.match for p_path in (m.parameter.path, *m.parameter.also)})
    ids: set = set()
    for s, synthesis in enumerate(spec.synthesis):
        if synthesis.id in ids:
            raise ScenarioError(path, f"synthesis[{s}].id", f"{synthesis.id!r} is used twice; expected one id per synthesis")
        ids.add(synthesis.id)
        paths = {p.path: i for i, p in enumerate(synthesis.parameters)}
        named, seen = set(), set()
        for e, evidence in enumerate(synthesis.evidence):
            where = f"synthesis[{s}].evidence[{e}]"
            entry = published.get(evidence.id)
            if entry is None:
                raise ScenarioError(path, f"{where}.id", f"unknown target id {evidence.id!r}")
            if evidence.id in seen:
                raise ScenarioError(path, f"{where}.id", f"{evidence.id!r} is listed twice (it would count double)")
            seen.add(evidence.id)
            ci = entry.get("ci")
            try:
                value = float(entry["value"])
                lo, hi = float(ci[0]), float(ci[1])
            except (TypeError, ValueError, IndexError, KeyError):
                raise ScenarioError(path, f"{where}.id", f"{evidence.id!r} needs a numeric value and a 95% CI "
                                    "(ci: [lower, upper]) to be weighted in a synthesis") from None
            if not 0 < lo < value < hi:
                raise ScenarioError(path, f"{where}.id", f"{evidence.id!r}: expected 0 < lower < value < upper, got "
                                    f"value {value:g} and CI {lo:g}-{hi:g}")
            for key in ("parameter", "odds_ratio"):
                target = getattr(evidence, key)
                if target is None:
                    continue
                if target not in paths:
                    raise ScenarioError(path, f"{where}.{key}", f"{target!r} is not one of the synthesis's "
                                        f"parameters ({', '.join(paths)})")
                named.add(target)
                parameter = synthesis.parameters[paths[target]]
                if parameter.bounds[0] <= 0 or (key == "parameter" and evidence.odds_ratio and parameter.bounds[1] >= 1):
                    need = "a positive lower bound" + (" and an upper bound below 1 (a probability)"
                                                      if key == "parameter" and evidence.odds_ratio else "")
                    raise ScenarioError(path, f"synthesis[{s}].parameters[{paths[target]}].bounds",
                                        f"{evidence.id!r} reads this parameter on the log scale; expected {need}")
        by_analysis = any(e.analysis is not None for e in synthesis.evidence)
        for i, parameter in enumerate(synthesis.parameters):
            if parameter.path not in named and not by_analysis:
                raise ScenarioError(path, f"synthesis[{s}].parameters[{i}]", f"no figure constrains "
                                    f"{parameter.path!r}; name it in a figure's 'parameter:' or 'odds_ratio:'")
            for place in (parameter.path, *parameter.also):
                if place in elsewhere:
                    raise ScenarioError(path, f"synthesis[{s}].parameters[{i}].path", f"{place!r} is also fitted by "
                                        f"{elsewhere[place]}; a value is fitted in one place")
                elsewhere[place] = f"synthesis {synthesis.id!r}"
