"""The trial file: a randomised trial design run on a scenario.

A trial file is YAML validated here (unknown keys are errors).  Every mistake
-- in the file itself, in the scenario it names, in an arm's policy or in an
assumption-grid path -- becomes one :class:`~carsim.errors.ScenarioError`
naming the file, the key path and what was expected, as for scenarios.

.. code-block:: yaml

    name: surveillance_hsct
    scenario: baseline.yaml            # relative to this file
    arms: [observe, risk_triggered]    # policies; the first is the control
    randomisation: {ratio: [1, 1], block_size: 4}
    accrual: {per_month: 6}
    sample_sizes: [100, 200]
    follow_up_months: 24               # after the last enrolment
    endpoint: {name: efs, origin: infusion, test: logrank}
    alpha: 0.05
    sides: 2
    trials: 100
    null: true                         # also estimate the type I error
    set:                               # scenario values for every simulated trial
      cohort.covariates.prior_hsct.bernoulli: 0   # eligibility: HSCT-naive
    grid:                              # assumptions: every combination is simulated
      pathway.relapse.cd19pos.multipliers.0.value: [3, 5, 8]
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from ...errors import ScenarioError
from ...scenario.loader import load_scenario, read_yaml
from ...scenario.parameters import apply_values
from ...scenario.paths import PathError, parent_of, parse, value_at
from ...scenario.schema import Scenario, Strict
from ...scenario.validation import describe_error, key_path

# Keys of the scenario that the trial sets itself (accrual, analysis time,
# arms, seed): a grid over them would be silently overwritten.
TRIAL_CONTROLLED = ("cohort.arrivals.rate_per_day", "cohort.size", "run.horizon_years", "run.policies",
                    "run.seed", "run.replications", "run.n_jobs")


class Endpoint(Strict):
    """What is compared and how: EFS, OS or RFS from infusion (infused patients;
    RFS: responders) or from enrolment (everyone randomised), by a log-rank
    test, a Cox model on the arm indicator, or the difference in Kaplan-Meier
    survival at a landmark time."""

    name: typing.Literal["efs", "os", "rfs"]
    origin: typing.Literal["infusion", "enrollment"] = "infusion"
    test: typing.Literal["logrank", "cox", "landmark"] = "logrank"
    landmark_months: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _landmark(self):
        if self.test == "landmark" and self.landmark_months is None:
            raise ValueError("landmark_months: the landmark test needs 'landmark_months: <months>'")
        if self.test != "landmark" and self.landmark_months is not None:
            raise ValueError(f"landmark_months: only the landmark test takes it (test is {self.test!r})")
        return self


class Randomisation(Strict):
    """Allocation ratio (one whole number per arm, default 1:1...) by permuted
    blocks (``block_size`` a multiple of the ratio's sum; default twice it) or
    simple randomisation."""

    ratio: list[int] | None = None
    method: typing.Literal["blocks", "simple"] = "blocks"
    block_size: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, str) and re.fullmatch(r"\s*\d+(\s*:\s*\d+)+\s*", data):
            return {"ratio": [int(x) for x in data.split(":")]}
        if isinstance(data, list):
            return {"ratio": data}
        return data

    @field_validator("ratio")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(r < 1 for r in v):
            raise ValueError(f"expected whole numbers >= 1 (one per arm), got {v}")
        return v

    @model_validator(mode="after")
    def _blocks(self):
        if self.block_size is not None:
            if self.method != "blocks":
                raise ValueError("block_size: only 'method: blocks' takes a block size")
            if self.ratio is not None and self.block_size % sum(self.ratio):
                raise ValueError(f"block_size: expected a multiple of the ratio's sum ({sum(self.ratio)}), "
                                 f"got {self.block_size}")
        return self


class Accrual(Strict):
    """Poisson enrolment at ``per_month`` patients a month (``accrual: 6`` is short for it)."""

    per_month: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"per_month": data}
        return data


class TrialSpec(Strict):
    name: str | None = None
    description: str = ""
    scenario: str
    arms: list[str] = Field(min_length=2)
    randomisation: Randomisation = Randomisation()
    accrual: Accrual
    sample_sizes: list[int] = Field(min_length=1)
    follow_up_months: float = Field(ge=0)
    endpoint: Endpoint
    alpha: float = Field(0.05, gt=0, lt=1)
    sides: typing.Literal[1, 2] = 2
    multiplicity: typing.Literal["none", "bonferroni"] = "none"
    trials: int = Field(200, ge=1)
    seed: int | None = Field(None, ge=0)
    null: bool = False
    set: dict[str, float] = Field(default_factory=dict)  # scenario values for every trial (e.g. eligibility)
    grid: dict[str, list[float]] = Field(default_factory=dict)  # assumptions: every combination

    @field_validator("sample_sizes")
    @classmethod
    def _sizes(cls, v):
        if any(n < 2 for n in v):
            raise ValueError(f"expected total sample sizes >= 2, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"expected distinct sample sizes, got {v}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, v):
        for path, values in v.items():
            if not values:
                raise ValueError(f"{path}: expected a non-empty list of values")
            if not all(math.isfinite(x) for x in values):
                raise ValueError(f"{path}: expected finite numbers, got {values}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.randomisation.ratio is not None and len(self.randomisation.ratio) != len(self.arms):
            raise ValueError(f"randomisation.ratio: expected one ratio per arm ({len(self.arms)} arms), "
                             f"got {len(self.randomisation.ratio)}")
        if min(self.sample_sizes) < len(self.arms):
            raise ValueError(f"sample_sizes: expected at least one patient per arm ({len(self.arms)}), "
                             f"got {min(self.sample_sizes)}")
        return self

    @property
    def ratio(self) -> tuple[int, ...]:
        return tuple(self.randomisation.ratio or [1] * len(self.arms))

    @property
    def block_size(self) -> int:
        return self.randomisation.block_size or 2 * sum(self.ratio)


# ------------------------------------------------------------------ loading


class LoadedTrial(typing.NamedTuple):
    path: Path
    spec: TrialSpec
    scenario: Scenario  # the named scenario, validated (grid values not applied)
    name: str
    targets: dict  # set/grid path -> what it is in the scenario, e.g. "multiplier if bca_lost (now 18.97)"


def load_trial(path) -> LoadedTrial:
    """Read and check a trial file and the scenario it names.

    Checks beyond the schema: the scenario file exists and is valid, every
    arm is a policy of it, every grid path names a number in it and every
    grid value gives a valid scenario."""
    path = Path(path)
    if path.is_file() and not path.read_text(encoding="utf-8", errors="replace").strip():
        raise ScenarioError(path, "", "the file is empty; expected a trial design (scenario, arms, accrual, "
                                      "sample_sizes, follow_up_months, endpoint, ...)")
    data = read_yaml(path)
    if None in data and "null" not in data:  # YAML reads an unquoted 'null:' key as the null value
        data = {("null" if k is None else k): v for k, v in data.items()}
    try:
        spec = TrialSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()  # a misspelt key first: it explains the 'missing' one
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc, expected = describe_error(error, data, TrialSpec)
        raise ScenarioError(path, key_path(loc), expected) from None

    scenario_path = (path.parent / spec.scenario)
    if not scenario_path.is_file():
        what = "is a folder" if scenario_path.exists() else "not found"
        raise ScenarioError(path, "scenario", f"expected an existing scenario file, {spec.scenario!r} {what} "
                                              f"(looked for {scenario_path.resolve()})")
    scenario = load_scenario(scenario_path)

    known = list(scenario.policies)
    for i, arm in enumerate(spec.arms):
        if arm not in scenario.policies:
            hint = difflib.get_close_matches(arm, known, n=1)
            raise ScenarioError(path, key_path(("arms", i)),
                                f"unknown policy {arm!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                + f"; expected a policy of {scenario_path.name}: {', '.join(known)}")

    dumped = scenario.model_dump(by_alias=True, exclude_none=True)
    checks = [(f"set.{p}", p, [v]) for p, v in spec.set.items()]
    checks += [(f"grid.{p}", p, values) for p, values in spec.grid.items()]
    for where, grid_path, values in checks:
        if grid_path in TRIAL_CONTROLLED or any(grid_path.startswith(k + ".") for k in TRIAL_CONTROLLED):
            raise ScenarioError(path, where, "the trial sets this key itself (accrual, follow-up, arms, seed); "
                                             "expected a model parameter")
        problem = _find_number(dumped, grid_path)
        if problem:
            raise ScenarioError(path, where, problem)
        for value in values:
            try:
                apply_values(scenario, {**spec.set, grid_path: value})
            except ValidationError as exc:
                _, msg = describe_error(exc.errors()[0], None, Scenario)
                raise ScenarioError(path, where, f"value {value:g} is not valid here: {msg}") from None
    both = sorted(set(spec.set) & set(spec.grid))
    if both:
        raise ScenarioError(path, f"set.{both[0]}", "also in 'grid:'; expected a path in one of them")
    targets = {p: _describe_target(dumped, p) for p in [*spec.set, *spec.grid]}
    return LoadedTrial(path, spec, scenario, spec.name or path.stem, targets)


def _describe_target(data, dotted: str) -> str:
    """What a path points at, for the trial's table: ``"if bca_lost; scenario value 18.97"``."""
    node = value_at(data, parent_of(dotted))
    what = next((f"{k} {node[k]}" for k in ("if", "per") if isinstance(node, dict) and k in node), "")
    return (what + "; " if what else "") + f"scenario value {value_at(data, dotted):g}"


def _find_number(data, dotted: str) -> str | None:
    """None if ``dotted`` names a number in the dumped scenario, else what is wrong."""
    try:
        node = value_at(data, dotted)
    except PathError as exc:
        message = str(exc)
        parent = value_at(data, exc.done) if exc.done else data
        missing = message.startswith("no key ")
        if missing and isinstance(parent, dict):
            wanted = parse(dotted)[len(parse(exc.done)) if exc.done else 0]
            keys = [str(k) for k in parent]
            hint = difflib.get_close_matches(str(wanted), keys, n=1)
            message += (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; expected one of: {', '.join(keys)}"
        return f"unknown parameter path: {message}"
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        kind = "a mapping" if isinstance(node, dict) else "a list" if isinstance(node, list) else repr(node)
        return f"expected the path of a number in the scenario, this is {kind}"
    return None
