"""The scenario schema (pydantic).

A scenario is a YAML file with six blocks: ``cohort``, ``pathway``,
``resources``, ``surveillance``, ``policies`` and ``run``.  Unknown keys are
errors.  Every number a user supplies for the clinical model carries a
``source:`` (a publication) or an ``assumption:`` (why this value) note.
Times in laws are given with a ``unit`` and converted to days here, once.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from .._limits import MAX_PATIENTS, MAX_SCHEDULED
from .._units import DAYS_PER_MONTH, DAYS_PER_UNIT
from . import distributions as dist
from .paths import LABEL_PATTERN


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Noted(Strict):
    """A value with provenance: a published ``source`` or a stated ``assumption``."""

    source: str | None = None
    assumption: str | None = None

    @model_validator(mode="after")
    def _needs_a_note(self):
        if not (self.source or self.assumption):
            raise ValueError("needs a 'source:' (publication) or an 'assumption:' note")
        return self


class Uncertainty(Strict):
    """Parameter uncertainty for probabilistic sensitivity analysis: a family and
    either a 95% interval (``ci``) or the family's own parameters.

    ``shared: NAME`` makes every value that carries the same name one
    parameter (one published estimate used in several places, e.g. an MRD
    hazard ratio on each relapse phenotype): one draw sets them all."""

    family: Literal["beta", "lognormal", "gamma", "normal", "uniform"]
    ci: tuple[float, float] | None = None
    a: float | None = Field(None, gt=0)
    b: float | None = Field(None, gt=0)
    sdlog: float | None = Field(None, gt=0)
    shape: float | None = Field(None, gt=0)
    sd: float | None = Field(None, gt=0)
    low: float | None = None
    high: float | None = None
    shared: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _complete(self):
        if self.ci is not None:
            lo, hi = self.ci
            if not lo < hi:
                raise ValueError("ci: expected [lower, upper] with lower < upper")
            return self
        needs = {"beta": ("a", "b"), "lognormal": ("sdlog",), "gamma": ("shape",), "normal": ("sd",),
                 "uniform": ("low", "high")}[self.family]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{self.family} uncertainty needs 'ci: [lower, upper]' or {', '.join(needs)}")
        return self


class Scalar(Noted):
    # A stable name: a list entry (a multiplier, say) is addressed and merged under ``extends`` by it.
    label: str | None = Field(None, pattern=LABEL_PATTERN)
    value: float
    distribution: Uncertainty | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v):
        if not math.isfinite(v):
            raise ValueError("expected a finite number")
        return v


class NonNegative(Scalar):
    @field_validator("value")
    @classmethod
    def _non_negative(cls, v):
        if v < 0:
            raise ValueError(f"expected a number >= 0, got {v}")
        return v


class Count(Noted):
    value: int = Field(ge=0)


class Probability(Scalar):
    @field_validator("value")
    @classmethod
    def _in_unit_interval(cls, v):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"expected a probability between 0 and 1, got {v}")
        return v


class Multiplier(Scalar):
    """A ratio applied when a condition holds (``if``), or raised to the power of
    a numeric variable (``per``: e.g. per additional prior line)."""

    when_true: str | None = Field(None, alias="if")
    per: str | None = None
    centre: float = Field(0.0, allow_inf_nan=False)  # with ``per``: value ** (variable - centre)

    @field_validator("value")
    @classmethod
    def _positive(cls, v):
        if v < 0:
            raise ValueError(f"expected a ratio >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _one_of_if_per(self):
        if (self.when_true is None) == (self.per is None):
            raise ValueError("needs exactly one of 'if: <condition>' or 'per: <numeric variable>'")
        if self.centre and self.per is None:
            raise ValueError("'centre' goes with 'per: <numeric variable>'")
        return self


class LogisticProbability(Probability):
    """Probability for the reference patient, shifted by odds ratios:
    logit p = logit(value) + sum log(OR) over the rules that apply."""

    odds_ratios: list[Multiplier] = []


_LAW_PARAMETERS = {
    "fixed": [("value",)],
    "exponential": [("rate", "mean", "median")],
    "weibull": [("shape",), ("scale", "median")],
    "lognormal": [("sdlog",), ("meanlog", "median")],
    "gamma": [("shape",), ("scale", "mean")],
    "loglogistic": [("shape",), ("scale", "median")],
    "gompertz": [("rate",), ("growth",)],
    "piecewise": [("breaks",), ("rates",)],
}


class Law(Noted):
    """A time-to-event law.  Scale-like parameters (value, scale, mean, median,
    breaks) are in ``unit``; rates (rate, rates, growth) are per ``unit``."""

    family: Literal["fixed", "exponential", "weibull", "lognormal", "gamma", "loglogistic", "gompertz",
                    "piecewise"]
    unit: Literal["days", "weeks", "months", "years"] = "days"
    value: float | None = Field(None, ge=0)
    rate: float | None = Field(None, ge=0)
    mean: float | None = Field(None, gt=0)
    median: float | None = Field(None, gt=0)
    scale: float | None = Field(None, gt=0)
    shape: float | None = Field(None, gt=0)
    meanlog: float | None = None
    sdlog: float | None = Field(None, gt=0)
    growth: float | None = None
    breaks: list[float] | None = None
    rates: list[float] | None = None
    distribution: Uncertainty | None = None  # uncertainty of the time scale (PSA)

    @model_validator(mode="after")
    def _parameters_complete(self):
        given = {k for k in ("value", "rate", "mean", "median", "scale", "shape", "meanlog", "sdlog", "growth",
                             "breaks", "rates") if getattr(self, k) is not None}
        needed = _LAW_PARAMETERS[self.family]
        for options in needed:
            chosen = given & set(options)
            if len(chosen) != 1:
                raise ValueError(
                    f"{self.family} needs exactly one of {', '.join(repr(o) for o in options)}"
                    if len(options) > 1 else f"{self.family} needs {options[0]!r}"
                )
        allowed = {o for options in needed for o in options}
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"{self.family} does not take {', '.join(repr(e) for e in extra)}")
        if self.family == "piecewise":
            if len(self.breaks) != len(self.rates) or not self.breaks or self.breaks[0] != 0:
                raise ValueError("piecewise needs 'breaks' starting at 0 and one rate per break")
            if any(b2 <= b1 for b1, b2 in zip(self.breaks, self.breaks[1:])):
                raise ValueError("breaks: piecewise 'breaks' must increase")
            if any(r < 0 for r in self.rates):
                raise ValueError("rates: piecewise 'rates' must be >= 0")
        if self.family == "gompertz" and self.rate == 0:
            raise ValueError("rate: gompertz 'rate' must be > 0")
        return self

    def build(self, time_scale: float = 1.0) -> dist.Distribution:
        """The law in days; ``time_scale`` stretches time (PSA draws)."""
        d = DAYS_PER_UNIT[self.unit] * time_scale
        f = self.family
        if f == "fixed":
            return dist.Fixed(self.value * d)
        if f == "exponential":
            if self.rate is not None:
                return dist.Exponential(self.rate / d)
            mean = self.mean if self.mean is not None else self.median / math.log(2)
            return dist.Exponential(1.0 / (mean * d))
        if f == "weibull":
            scale = self.scale if self.scale is not None else self.median / math.log(2) ** (1 / self.shape)
            return dist.Weibull(self.shape, scale * d)
        if f == "lognormal":
            meanlog = self.meanlog + math.log(d) if self.meanlog is not None else math.log(self.median * d)
            return dist.LogNormal(meanlog, self.sdlog)
        if f == "gamma":
            scale = self.scale if self.scale is not None else self.mean / self.shape
            return dist.Gamma(self.shape, scale * d)
        if f == "loglogistic":
            return dist.LogLogistic(self.shape, (self.scale if self.scale is not None else self.median) * d)
        if f == "gompertz":
            return dist.Gompertz(self.rate / d, self.growth / d)
        return dist.PiecewiseExponential(tuple(b * d for b in self.breaks), tuple(r / d for r in self.rates))


class Survival(Law):
    """A survival time law with proportional-hazards multipliers, evaluated
    for each patient when the time is drawn (T = H^-1(E / multiplier))."""

    multipliers: list[Multiplier] = []


class Hazard(Strict):
    """A cause-specific hazard: a baseline law and proportional-hazards
    multipliers, re-evaluated whenever the patient's state changes."""

    law: Law
    multipliers: list[Multiplier] = []


# ---------------------------------------------------------------- cohort


class CovariateSpec(Noted):
    """One covariate's distribution: ``bernoulli: p``, ``categorical: {level: p}``
    or a continuous ``family`` (beta scaled to ``scale``, uniform, normal,
    lognormal), clipped to [low, high] when given.

    ``descriptive: true`` declares that the covariate describes the cohort
    but has no effect in the model (no sourced effect size): a hazard
    multiplier or odds ratio that reads it is then an error.  Every other
    covariate of a shipped scenario acts through a sourced effect."""

    bernoulli: float | None = Field(None, ge=0, le=1)

    @field_validator("categorical", mode="before")
    @classmethod
    def _numeric_levels(cls, v):
        # "1" and 1 are one level: YAML (and a manifest written back as YAML) may quote numbers.
        if isinstance(v, dict):
            return {int(k) if isinstance(k, str) and k.strip().lstrip("-").isdigit() else k: p for k, p in v.items()}
        return v
    descriptive: bool = False
    categorical: dict[int | str, float] | None = None
    family: Literal["beta", "uniform", "normal", "lognormal"] | None = None
    a: float | None = Field(None, gt=0)
    b: float | None = Field(None, gt=0)
    scale: float = Field(1.0, gt=0)
    mean: float | None = None
    sd: float | None = Field(None, gt=0)
    median: float | None = Field(None, gt=0)
    sdlog: float | None = Field(None, gt=0)
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("bernoulli", "categorical", "family") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("needs exactly one of 'bernoulli: p', 'categorical: {level: p}' or 'family:'")
        if self.categorical is not None:
            probs = list(self.categorical.values())
            if not probs or any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
                raise ValueError(f"categorical: expected probabilities >= 0 that sum to 1 "
                                 f"(sum is {sum(probs):g})")
        need = {"beta": ("a", "b"), "uniform": ("low", "high"), "normal": ("mean", "sd"),
                "lognormal": ("median", "sdlog")}.get(self.family, ())
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{self.family} covariate needs {', '.join(need)}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("high: expected 'high' >= 'low'")
        return self


class Arrivals(Noted):
    rate_per_day: float = Field(gt=0)


class Cohort(Strict):
    size: int = Field(ge=1, le=MAX_PATIENTS)
    arrivals: Arrivals
    covariates: dict[str, CovariateSpec]
    fixed: dict[str, bool | int | float | str] = {}


# ---------------------------------------------------------------- pathway


class Referral(Strict):
    delay: Law


class Apheresis(Strict):
    duration: Law
    deferral: Law  # extra wait when ALC < 300/uL or hyperleukocytosis (covariate apheresis_deferred)


class Manufacturing(Strict):
    duration: Law
    failure_probability: Probability
    recollection_probability: Probability
    max_attempts: Count

    @field_validator("max_attempts")
    @classmethod
    def _at_least_one(cls, v):
        if v.value < 1:
            raise ValueError("expected at least 1 manufacturing attempt")
        return v


class Bridging(Strict):
    blast_multiplier: dict[str, NonNegative]


class PreInfusion(Strict):
    death: Hazard
    withdrawal: Hazard
    survival_after_withdrawal: Law


class Infusion(Strict):
    delay_after_manufacturing: Law


class Toxicity(Strict):
    severe_crs: LogisticProbability
    severe_icans: LogisticProbability
    early_death: LogisticProbability
    time_to_early_death: Law


class Response(Strict):
    assessment_day: NonNegative
    complete_remission: LogisticProbability
    survival_after_nonresponse: Survival


class BcaBiology(Strict):
    loss: Hazard


class MrdBiology(Strict):
    positive_at_assessment: LogisticProbability
    emergence: Hazard


# A relapse phenotype's name: it becomes part of metric names (cir_<name>).
PhenotypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]


class PostRelapse(Strict):
    survival: dict[PhenotypeName, Survival]
    reremission: LogisticProbability
    time_to_reremission: Law
    # Survival from a salvage HSCT (after relapse and re-remission), transplant
    # deaths apart; absent: the phenotype's law from relapse applies throughout.
    survival_after_salvage_hsct: Survival | None = None


class Hsct(Strict):
    donor_search: Law
    bed_occupancy: Law
    transplant_related_death: LogisticProbability
    time_to_transplant_death: Law
    acute_gvhd: Probability
    chronic_gvhd: Probability
    max_after_car: Count


class Reinfusion(Strict):
    delay: Law
    regain_bca: LogisticProbability
    max_reinfusions: Count


class NonRelapseMortality(Strict):
    death: Hazard


class Pathway(Strict):
    referral: Referral
    apheresis: Apheresis
    manufacturing: Manufacturing
    bridging: Bridging
    pre_infusion: PreInfusion
    infusion: Infusion
    toxicity: Toxicity
    response: Response
    bca: BcaBiology
    mrd: MrdBiology
    relapse: dict[PhenotypeName, Hazard]
    post_relapse: PostRelapse
    hsct: Hsct
    reinfusion: Reinfusion
    non_relapse_mortality: NonRelapseMortality

    @model_validator(mode="after")
    def _phenotypes_complete(self):
        if not self.relapse:
            raise ValueError("relapse: needs at least one relapse phenotype (a mapping of name -> hazard)")
        if "none" in self.relapse:
            raise ValueError("relapse: 'none' is reserved (the phenotype of patients who did not relapse)")
        missing = set(self.relapse) - set(self.post_relapse.survival)
        if missing:
            raise ValueError(f"post_relapse.survival: needs a survival law for the relapse phenotype(s) "
                             f"{', '.join(sorted(missing))}")
        extra = set(self.post_relapse.survival) - set(self.relapse)
        if extra:
            raise ValueError(f"post_relapse.survival: {', '.join(sorted(extra))} is not a relapse phenotype; "
                             f"expected one of: {', '.join(self.relapse)}")
        return self


# ---------------------------------------------------------------- resources, surveillance


class Capacity(Noted):
    capacity: int | None = Field(None, ge=1)  # null: unlimited


class Resources(Strict):
    apheresis: Capacity
    manufacturing: Capacity
    hsct_beds: Capacity




class Repeat(Strict):
    every_months: float = Field(gt=0)
    from_months: float = Field(ge=0)
    until_months: float = Field(gt=0)

    @model_validator(mode="after")
    def _not_too_many(self):
        count = (self.until_months - self.from_months) / self.every_months
        if count > MAX_SCHEDULED:
            raise ValueError(f"every_months: {self.every_months:g} from month {self.from_months:g} to "
                             f"{self.until_months:g} makes about {count:.3g} scheduled times per patient; expected "
                             f"at most {MAX_SCHEDULED:,}")
        return self


class Schedule(Strict):
    at_days: list[float] = []
    at_months: list[float] = []
    repeat: list[Repeat] = []

    @field_validator("at_days", "at_months")
    @classmethod
    def _non_negative(cls, v):
        if any(x < 0 for x in v):
            raise ValueError("test times must be >= 0")
        return v

    def days(self) -> tuple[float, ...]:
        """Sorted, de-duplicated test days after infusion."""
        times = set(self.at_days) | {m * DAYS_PER_MONTH for m in self.at_months}
        for r in self.repeat:
            k = 0
            while r.from_months + k * r.every_months <= r.until_months + 1e-9:
                times.add((r.from_months + k * r.every_months) * DAYS_PER_MONTH)
                k += 1
        return tuple(sorted(round(t, 6) for t in times))


class MrdSurveillance(Strict):
    schedule: Schedule
    sensitivity: Probability
    uninformative: Probability  # share without a trackable IgH clone


class BcaSurveillance(Strict):
    schedule: Schedule


class Surveillance(Strict):
    mrd: MrdSurveillance
    bca: BcaSurveillance


# ---------------------------------------------------------------- policies, run

EVENTS = ("response", "mrd_result", "bca_loss", "relapse", "reremission", "reinfusion_result")
ACTIONS = ("observe", "hsct", "reinfuse", "salvage")
# Which actions make sense after which event (checked when the scenario loads).
ALLOWED_ACTIONS = {
    "response": {"observe", "hsct", "reinfuse"},
    "mrd_result": {"observe", "hsct", "reinfuse"},
    "bca_loss": {"observe", "hsct", "reinfuse"},
    "reinfusion_result": {"observe", "hsct", "reinfuse"},
    "reremission": {"observe", "hsct"},
    "relapse": {"salvage", "observe"},
}


class Rule(Strict):
    when: Literal["response", "mrd_result", "bca_loss", "relapse", "reremission", "reinfusion_result"]
    condition: str = Field("true", alias="if")
    then: Literal["observe", "hsct", "reinfuse", "salvage"]
    note: str | None = None

    @model_validator(mode="after")
    def _action_fits_event(self):
        if self.then not in ALLOWED_ACTIONS[self.when]:
            raise ValueError(
                f"then: action {self.then!r} cannot follow event {self.when!r}; expected one of: "
                + ", ".join(sorted(ALLOWED_ACTIONS[self.when]))
            )
        return self


class Policy(Strict):
    description: str = ""
    # Covariates the policy chooses for every patient, e.g. the product
    # (``construct: brexucabtagene``): the same patients and random numbers,
    # another choice.  They act from infusion on (the access pathway is shared).
    assigns: dict[str, str | bool | float] = {}
    rules: list[Rule] = []


class Run(Strict):
    replications: int = Field(1, ge=1)
    seed: int = Field(20261124, ge=0)
    horizon_years: float = Field(5.0, gt=0)
    lifetime: bool = False  # set by ``horizon_years: lifetime``: survivors are extrapolated (economics.extrapolation)
    n_jobs: int = 1
    policies: list[str] | None = None  # which policies to run, in order (the first is the reference)
    write_events: bool = True
    engine: Literal["auto", "vectorised", "simpy"] = "auto"
    # months at which survival and incidence are reported (any within follow-up)
    report_times: list[float] = Field(default_factory=lambda: [6.0, 12.0, 24.0, 36.0, 60.0], min_length=1)

    @field_validator("report_times")
    @classmethod
    def _times(cls, v):
        for t in v:
            if not t > 0:
                raise ValueError(f"expected months after the time origin (> 0), got {t:g}")
        return sorted({float(t) for t in v})

    @field_validator("n_jobs")
    @classmethod
    def _jobs(cls, v):
        if v == 0 or v < -1:
            raise ValueError("expected a positive number of jobs, or -1 for all cores")
        return v


# -- health economics ---------------------------------------------------------

EventKey = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(/[A-Za-z0-9_ :>-]+)?$")]


class Cost(NonNegative):
    """A cost (one-off per event, or per month in a state or period), with the
    category it is reported under (default: the entry's own name)."""

    category: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")


class Utility(Scalar):
    @field_validator("value")
    @classmethod
    def _at_most_one(cls, v):
        if v > 1:
            raise ValueError(f"expected a utility <= 1 (1 = full health), got {v}")
        return v


class HealthState(Strict):
    """An exclusive state: entered by any of ``entered_by`` (event kinds, or
    ``event/detail`` for one detail, e.g. ``response/CR``); the latest entering
    event sets the state until death or the end of follow-up."""

    entered_by: list[EventKey] = Field(min_length=1)
    cost_per_month: Cost | None = None
    utility: Utility


class Period(Strict):
    """An overlay on the states (e.g. immunoglobulin replacement while B-cell
    aplasia lasts): opened by ``opened_by`` events, closed by ``closed_by``
    events, after ``months`` or at death or the end of follow-up, whichever is
    first.  Adds a cost per month and a utility decrement."""

    opened_by: list[EventKey] = Field(min_length=1)
    closed_by: list[EventKey] = []
    months: NonNegative | None = None
    cost_per_month: Cost | None = None
    utility_decrement: NonNegative | None = None


class Discounting(Strict):
    costs: NonNegative
    outcomes: NonNegative

    @model_validator(mode="after")
    def _below_one(self):
        for name in ("costs", "outcomes"):
            if getattr(self, name).value >= 1:
                raise ValueError(f"{name}: expected an annual discount rate below 1 (e.g. 0.03)")
        return self


class Extrapolation(Strict):
    """Survival after the simulated follow-up (``run.horizon_years: lifetime``):
    a general-population life table by age and sex, with its mortality
    multiplied by an excess-mortality ratio for long-term survivors."""

    life_table: Literal["us_2019"] = "us_2019"
    excess_mortality_ratio: NonNegative
    after_years: float = Field(10.0, gt=0, le=100, allow_inf_nan=False)  # simulated follow-up before it
    cost_per_month: Cost | None = None  # follow-up cost of extrapolated years


class Economics(Strict):
    """Costs and quality of life, accrued on the simulated event records.

    Rates are annual and discounting is continuous (rate ln(1 + r) per year)
    from each patient's enrolment."""

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    price_year: int = Field(ge=1900, le=2100)
    perspective: str
    discount: Discounting
    willingness_to_pay: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    reference: str | None = None  # the policy incremental results are given against (default: the first)
    population: NonNegative | None = None  # patients the decision concerns (population EVPI)
    event_costs: dict[EventKey, Cost] = {}
    qaly_losses: dict[EventKey, NonNegative] = {}  # one-off QALYs lost at an event
    states: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")], HealthState] = Field(min_length=1)
    periods: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")], Period] = {}
    extrapolation: Extrapolation | None = None

    def event_keys(self):
        """Every event key the block names (``event`` or ``event/detail``),
        with where it is named: (key, location under ``economics``)."""
        for section in ("event_costs", "qaly_losses"):
            for key in getattr(self, section):
                yield key, (section, key)
        for name, state in self.states.items():
            for i, key in enumerate(state.entered_by):
                yield key, ("states", name, "entered_by", i)
        for name, period in self.periods.items():
            for field in ("opened_by", "closed_by"):
                for i, key in enumerate(getattr(period, field)):
                    yield key, ("periods", name, field, i)

    @model_validator(mode="after")
    def _starts_somewhere(self):
        if not any("enrolled" in state.entered_by for state in self.states.values()):
            raise ValueError("states: one state must be entered by 'enrolled' (the state at enrolment)")
        return self


class CalibrationUncertainty(Strict):
    """Joint draws of calibrated parameters that fit the published targets
    about as well as the best fit (written by ``carsim calibrate``): a PSA
    draw takes one row whole, so their correlations are kept."""

    method: str
    parameters: list[str] = Field(min_length=1)  # key paths, one per column
    fitted: list[float]  # each parameter's fitted value: a scenario that changes it opts out of its draws
    tied: list[list[str]] = Field(default_factory=list)  # [parameter, further paths that take its value]
    draws: list[list[float]] = Field(min_length=2)

    @model_validator(mode="after")
    def _rectangular(self):
        width = len(self.parameters)
        if len(set(self.parameters)) != width:
            raise ValueError("parameters: expected each key path once")
        if len(self.fitted) != width:
            raise ValueError(f"fitted: expected {width} values, one per parameter; got {len(self.fitted)}")
        for i, row in enumerate(self.draws):
            if len(row) != width:
                raise ValueError(f"draws.{i}: expected {width} values, one per parameter; got {len(row)}")
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"draws.{i}: expected finite numbers")
        for i, group in enumerate(self.tied):
            if len(group) < 2 or group[0] not in self.parameters:
                raise ValueError(f"tied.{i}: expected [one of the parameters, the paths tied to it]")
        return self

    def tied_to(self, path: str) -> tuple[str, ...]:
        """The further paths that take ``path``'s value."""
        return next((tuple(group[1:]) for group in self.tied if group[0] == path), ())


class Scenario(Strict):
    name: str
    description: str = ""
    cohort: Cohort
    pathway: Pathway
    resources: Resources
    surveillance: Surveillance
    policies: dict[str, Policy]
    run: Run = Run()
    calibration_uncertainty: CalibrationUncertainty | None = None
    economics: Economics | None = None

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v):
        if not v.strip() or any(ord(c) < 32 for c in v) or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError(f"expected a name that can name the results folder (no control characters, slashes "
                             f"or '.'/'..'), got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _lifetime_horizon(cls, data):
        """``run.horizon_years: lifetime`` simulates ``economics.extrapolation.after_years``
        and extrapolates the survivors from there."""
        run = data.get("run") if isinstance(data, dict) else None
        if isinstance(run, dict) and run.get("horizon_years") == "lifetime":
            extrapolation = ((data.get("economics") or {}).get("extrapolation") if isinstance(data.get("economics"),
                                                                                              dict) else None)
            if not isinstance(extrapolation, dict):
                raise ValueError("run.horizon_years: 'lifetime' needs an economics.extrapolation block "
                                 "(life table and excess-mortality ratio)")
            data = {**data, "run": {**run, "horizon_years": extrapolation.get("after_years", 10.0), "lifetime": True}}
        return data

    @model_validator(mode="after")
    def _policies_known(self):
        if not self.policies:
            raise ValueError("policies: needs at least one policy")
        for name in self.run.policies or ():
            if name not in self.policies:
                raise ValueError(f"run.policies: unknown policy {name!r}; "
                                 f"expected one of: {', '.join(self.policies)}")
        if "report_times" in self.run.model_fields_set:
            follow_up = self.run.horizon_years * 12
            beyond = [t for t in self.run.report_times if t > follow_up + 1e-9]
            if beyond:
                raise ValueError(f"run.report_times: {beyond[0]:g} months is beyond the follow-up "
                                 f"({follow_up:g} months, run.horizon_years)")
        if self.run.lifetime and (self.economics is None or self.economics.extrapolation is None):
            raise ValueError("run.lifetime: needs an economics.extrapolation block (use 'horizon_years: lifetime')")
        if self.economics is not None and self.economics.reference is not None \
                and self.economics.reference not in self.policies:
            raise ValueError(f"economics.reference: unknown policy {self.economics.reference!r}; "
                             f"expected one of: {', '.join(self.policies)}")
        return self

    @property
    def relapse_phenotypes(self) -> tuple[str, ...]:
        """The relapse phenotypes, in the order the scenario lists them."""
        return tuple(self.pathway.relapse)

    @property
    def economic_comparator(self) -> str | None:
        """The policy incremental costs and QALYs are given against:
        ``economics.reference`` when it is run, else the first policy run (a
        run of a few policies need not include the reference)."""
        if self.economics is None:
            return None
        reference = self.economics.reference
        return reference if reference in self.policy_names else self.policy_names[0]

    @property
    def policy_names(self) -> list[str]:
        return list(self.run.policies or self.policies)
