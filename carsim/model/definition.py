"""The immutable model: a scenario compiled once into laws (in days), hazards
with their multiplier rules, logistic probabilities, schedules and policies,
each evaluated element-wise on arrays of patients.

A :class:`ModelDefinition` is what a simulation run reads; it never changes
during a run and is cheap to pickle to worker processes.  Both engines
evaluate it through the same functions (one patient is an array of one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._units import DAYS_PER_MONTH
from ..scenario.conditions import Condition, parse_condition, vectorise_condition
from ..scenario.distributions import Distribution, exponential_from_uniform
from ..scenario.schema import Hazard, LogisticProbability, Multiplier, Scenario
from ..scenario.vocabulary import STATE_VARIABLES

DYNAMIC_VARIABLES = frozenset(STATE_VARIABLES) - {"marrow_blasts_infusion"}
# Names a condition may use that are not stored columns (computed, or constants).
_NOT_STORED = frozenset({"days_since_infusion", "months_since_infusion", "true", "false", "True", "False"})


class StateView:
    """Attribute access to the state arrays of the rows ``idx`` at times ``now``
    (what conditions read)."""

    __slots__ = ("_arrays", "_idx", "_infusion", "_now")

    def __init__(self, arrays: dict, idx, now, infusion):
        self._arrays, self._idx, self._now, self._infusion = arrays, idx, now, infusion

    def column(self, name):
        """The rows' values of a stored variable (not the time since infusion)."""
        return self._arrays[name][self._idx]

    def __getattr__(self, name):
        if name == "days_since_infusion":
            return np.where(np.isnan(self._infusion[self._idx]), 0.0, self._now - self._infusion[self._idx])
        if name == "months_since_infusion":
            return self.days_since_infusion / DAYS_PER_MONTH
        return self._arrays[name][self._idx]


def as_mask(values, n: int) -> np.ndarray:
    """A condition's value for n rows (a condition on constants gives a scalar)."""
    values = np.asarray(values, dtype=bool)
    return values if values.shape == (n,) else np.full(n, bool(values))


@dataclass(frozen=True)
class Factor:
    """One multiplier rule: ``value`` where ``condition`` holds, or
    ``value ** state[per]`` for a numeric variable."""

    value: float
    condition: Condition | None = None
    per: str | None = None
    centre: float = 0.0
    test: object = field(default=None, compare=False, repr=False)
    flag: str | None = field(default=None, compare=False, repr=False)  # a condition that is one stored name

    @classmethod
    def from_spec(cls, spec: Multiplier, value: float | None = None) -> Factor:
        v = spec.value if value is None else value
        if spec.when_true is not None:
            condition = parse_condition(spec.when_true)
            source = condition.source
            # A bare stored variable is read directly (no compiled expression): faster.
            flag = source if source.isidentifier() and source not in _NOT_STORED else None
            return cls(v, condition=condition, test=vectorise_condition(condition), flag=flag)
        return cls(v, per=spec.per, centre=spec.centre)

    @property
    def names(self) -> frozenset:
        """The changing state variables the factor reads (none: baseline covariates only)."""
        names = self.condition.names if self.condition is not None else {self.per}
        return frozenset(names) & DYNAMIC_VARIABLES

    @property
    def reads_state(self) -> bool:
        return bool(self.names)

    def __call__(self, view, n: int) -> np.ndarray:
        if self.flag is not None:
            return np.where(view.column(self.flag), self.value, 1.0)
        if self.condition is not None:
            return np.where(as_mask(self.test(view), n), self.value, 1.0)
        return self.value ** (np.asarray(getattr(view, self.per), dtype=float) - self.centre)


def product(factors, view, n: int) -> np.ndarray:
    out = np.ones(n)
    for factor in factors:
        out = out * factor(view, n)
    return out


@dataclass(frozen=True)
class CompiledHazard:
    """A baseline law and its multipliers.  Baseline-covariate factors come
    first (``static``), so that part can be computed once per patient."""

    law: Distribution
    static: tuple[Factor, ...] = ()
    dynamic: tuple[Factor, ...] = ()

    @property
    def factors(self) -> tuple[Factor, ...]:
        return self.static + self.dynamic

    def multiplier(self, view, n: int) -> np.ndarray:
        return product(self.factors, view, n)


@dataclass(frozen=True)
class CompiledProbability:
    """logit p = logit(base) + sum log(odds ratio) of the rules that apply."""

    base: float
    odds_ratios: tuple[Factor, ...] = ()

    def __call__(self, view, n: int) -> np.ndarray:
        if not self.odds_ratios:
            return np.full(n, self.base)
        if self.base >= 1.0:
            return np.ones(n)
        if self.base <= 0.0:
            return np.zeros(n)
        ratio = product(self.odds_ratios, view, n)
        odds = self.base / (1.0 - self.base) * ratio
        with np.errstate(invalid="ignore", over="ignore"):
            p = odds / (1.0 + odds)
        return np.where(np.isinf(ratio), 1.0, np.where(ratio == 0, 0.0, p))


@dataclass(frozen=True)
class CompiledRule:
    index: int
    condition: Condition
    action: str
    test: object = field(compare=False, repr=False)


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    rules_by_event: dict  # event -> tuple[CompiledRule, ...]


@dataclass(frozen=True)
class CompiledSurvival:
    """A survival law and its proportional-hazards multipliers."""

    law: Distribution
    factors: tuple[Factor, ...] = ()

    def from_uniform(self, u, view=None, n: int | None = None) -> np.ndarray:
        """Inverse-transform draws; each row's multiplier divides its unit-exponential variate."""
        if not self.factors:
            return self.law.from_uniform(u)
        return self.law.inverse_cumulative_hazard(exponential_from_uniform(u) / product(self.factors, view, n))


def compile_survival(spec) -> CompiledSurvival:
    return CompiledSurvival(spec.build(), tuple(Factor.from_spec(m) for m in getattr(spec, "multipliers", ())))


def compile_hazard(spec: Hazard) -> CompiledHazard:
    factors = [Factor.from_spec(m) for m in spec.multipliers]
    return CompiledHazard(spec.law.build(), tuple(f for f in factors if not f.reads_state),
                          tuple(f for f in factors if f.reads_state))


def compile_probability(spec) -> CompiledProbability:
    odds = spec.odds_ratios if isinstance(spec, LogisticProbability) else ()
    return CompiledProbability(spec.value, tuple(Factor.from_spec(m) for m in odds))


def compile_policy(name: str, spec) -> CompiledPolicy:
    by_event: dict[str, list] = {}
    for i, rule in enumerate(spec.rules):
        condition = parse_condition(rule.condition)
        by_event.setdefault(rule.when, []).append(CompiledRule(i, condition, rule.then,
                                                                vectorise_condition(condition)))
    return CompiledPolicy(name, {k: tuple(v) for k, v in by_event.items()})


class ModelDefinition:
    """Everything a run needs, derived once from a validated :class:`Scenario`."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        p = scenario.pathway
        self.horizon_days = scenario.run.horizon_years * 365.25
        self.referral_delay = p.referral.delay.build()
        self.apheresis_duration = p.apheresis.duration.build()
        self.apheresis_deferral = p.apheresis.deferral.build()
        self.manufacturing_duration = p.manufacturing.duration.build()
        self.manufacturing_failure = p.manufacturing.failure_probability.value
        self.recollection = p.manufacturing.recollection_probability.value
        self.max_manufacturing_attempts = p.manufacturing.max_attempts.value
        self.blast_multiplier = {k: v.value for k, v in p.bridging.blast_multiplier.items()}
        self.pre_infusion_death = compile_hazard(p.pre_infusion.death)
        self.pre_infusion_withdrawal = compile_hazard(p.pre_infusion.withdrawal)
        self.survival_after_withdrawal = p.pre_infusion.survival_after_withdrawal.build()
        self.infusion_delay = p.infusion.delay_after_manufacturing.build()
        self.severe_crs = compile_probability(p.toxicity.severe_crs)
        self.severe_icans = compile_probability(p.toxicity.severe_icans)
        self.early_death = compile_probability(p.toxicity.early_death)
        self.time_to_early_death = p.toxicity.time_to_early_death.build()
        self.assessment_day = p.response.assessment_day.value
        self.complete_remission = compile_probability(p.response.complete_remission)
        self.survival_after_nonresponse = compile_survival(p.response.survival_after_nonresponse)
        self.bca_loss = compile_hazard(p.bca.loss)
        self.mrd_positive_at_assessment = compile_probability(p.mrd.positive_at_assessment)
        self.mrd_emergence = compile_hazard(p.mrd.emergence)
        self.relapse = {name: compile_hazard(hazard) for name, hazard in p.relapse.items()}
        self.survival_after_relapse = {k: compile_survival(v) for k, v in p.post_relapse.survival.items()}
        self.reremission = compile_probability(p.post_relapse.reremission)
        self.time_to_reremission = p.post_relapse.time_to_reremission.build()
        salvage = p.post_relapse.survival_after_salvage_hsct
        self.survival_after_salvage_hsct = compile_survival(salvage) if salvage is not None else None
        self.donor_search = p.hsct.donor_search.build()
        self.bed_occupancy = p.hsct.bed_occupancy.build()
        self.transplant_death = compile_probability(p.hsct.transplant_related_death)
        self.time_to_transplant_death = p.hsct.time_to_transplant_death.build()
        self.acute_gvhd = p.hsct.acute_gvhd.value
        self.chronic_gvhd = p.hsct.chronic_gvhd.value
        self.max_hsct_after_car = p.hsct.max_after_car.value
        self.reinfusion_delay = p.reinfusion.delay.build()
        self.regain_bca = compile_probability(p.reinfusion.regain_bca)
        self.max_reinfusions = p.reinfusion.max_reinfusions.value
        self.non_relapse_death = compile_hazard(p.non_relapse_mortality.death)
        self.mrd_test_days = scenario.surveillance.mrd.schedule.days()
        self.mrd_sensitivity = scenario.surveillance.mrd.sensitivity.value
        self.mrd_uninformative = scenario.surveillance.mrd.uninformative.value
        self.bca_check_days = scenario.surveillance.bca.schedule.days()
        self.capacities = {
            "apheresis": scenario.resources.apheresis.capacity,
            "manufacturing": scenario.resources.manufacturing.capacity,
            "hsct_beds": scenario.resources.hsct_beds.capacity,
        }
        self.policies = {name: compile_policy(name, scenario.policies[name]) for name in scenario.policy_names}
        # The hazard clocks that run after infusion, by name.
        self.clocks = {"non_relapse_death": self.non_relapse_death, "bca_loss": self.bca_loss,
                       "mrd_emergence": self.mrd_emergence,
                       **{f"relapse.{name}": hazard for name, hazard in self.relapse.items()}}

    def __reduce__(self):
        # Workers rebuild the compiled model from the (small, plain) scenario:
        # pickling compiled conditions by value costs far more than compiling.
        return (ModelDefinition, (self.scenario,))

    def policy_covariates(self, policy: str, covariates: dict) -> dict:
        """The patients' covariates under ``policy``: drawn, then what the policy assigns."""
        assigned = self.scenario.policies[policy].assigns
        if not assigned:
            return covariates
        n = len(next(iter(covariates.values())))
        return {**covariates, **{name: np.full(n, value, dtype=covariates[name].dtype)
                                 for name, value in assigned.items()}}

    @property
    def phenotypes(self) -> tuple[str, ...]:
        return tuple(self.relapse)

    @property
    def has_finite_resources(self) -> bool:
        return any(c is not None for c in self.capacities.values())
