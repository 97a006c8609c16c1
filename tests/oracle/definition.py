"""The immutable model: a scenario compiled once into laws (in days), hazards
with their multiplier rules, logistic probabilities, schedules and policies.

A :class:`ModelDefinition` is what a simulation run reads; it never changes
during a run and is cheap to pickle to worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from carsim.scenario.conditions import Condition, parse_condition
from carsim.scenario.schema import Hazard, LogisticProbability, Multiplier, Scenario
from carsim.scenario.distributions import Distribution
from carsim.scenario.vocabulary import STATE_VARIABLES

DYNAMIC_VARIABLES = frozenset(STATE_VARIABLES) - {"marrow_blasts_infusion"}


@dataclass(frozen=True)
class Factor:
    """One multiplier rule: ``value`` when ``condition`` holds, or
    ``value ** state[per]`` for a numeric variable."""

    value: float
    condition: Condition | None = None
    per: str | None = None

    @classmethod
    def from_spec(cls, spec: Multiplier, value: float | None = None) -> Factor:
        v = spec.value if value is None else value
        if spec.when_true is not None:
            return cls(v, condition=parse_condition(spec.when_true))
        return cls(v, per=spec.per)

    def applies(self, state) -> float:
        if self.condition is not None:
            return self.value if self.condition.evaluate(state) else 1.0
        return self.value ** getattr(state, self.per)


def _product(factors, state) -> float:
    m = 1.0
    for f in factors:
        m *= f.applies(state)
    return m


@dataclass(frozen=True)
class CompiledHazard:
    law: Distribution
    factors: tuple[Factor, ...] = ()

    def multiplier(self, state) -> float:
        return _product(self.factors, state)


@dataclass(frozen=True)
class CompiledProbability:
    """logit p = logit(base) + sum log(odds ratio) of the rules that apply."""

    base: float
    odds_ratios: tuple[Factor, ...] = ()

    def probability(self, state) -> float:
        if not self.odds_ratios:
            return self.base
        odds_ratio = _product(self.odds_ratios, state)
        if self.base >= 1.0 or odds_ratio == math.inf:
            return 1.0
        if self.base <= 0.0 or odds_ratio == 0.0:
            return 0.0
        odds = self.base / (1.0 - self.base) * odds_ratio
        return odds / (1.0 + odds)


@dataclass(frozen=True)
class CompiledRule:
    index: int
    condition: Condition
    action: str


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    rules_by_event: dict  # event -> tuple[CompiledRule, ...]

    def decide(self, event: str, state):
        """The first rule for ``event`` whose condition holds, else None."""
        for rule in self.rules_by_event.get(event, ()):
            if rule.condition.evaluate(state):
                return rule
        return None


def reads_state(factor: Factor) -> bool:
    """Does the factor read the patient's changing state (not only baseline covariates)?"""
    names = factor.condition.names if factor.condition is not None else {factor.per}
    return bool(set(names) & DYNAMIC_VARIABLES)


def compile_hazard(spec: Hazard) -> CompiledHazard:
    # Baseline-covariate factors first: both engines multiply in this order,
    # so the vectorised engine can compute that part once per patient.
    factors = [Factor.from_spec(m) for m in spec.multipliers]
    return CompiledHazard(spec.law.build(), tuple(sorted(factors, key=reads_state)))


def compile_probability(spec) -> CompiledProbability:
    odds = spec.odds_ratios if isinstance(spec, LogisticProbability) else ()
    return CompiledProbability(spec.value, tuple(Factor.from_spec(m) for m in odds))


def compile_policy(name: str, spec) -> CompiledPolicy:
    by_event: dict[str, list] = {}
    for i, rule in enumerate(spec.rules):
        by_event.setdefault(rule.when, []).append(CompiledRule(i, parse_condition(rule.condition), rule.then))
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
        self.survival_after_nonresponse = p.response.survival_after_nonresponse.build()
        self.bca_loss = compile_hazard(p.bca.loss)
        self.mrd_positive_at_assessment = compile_probability(p.mrd.positive_at_assessment)
        self.mrd_emergence = compile_hazard(p.mrd.emergence)
        self.relapse = {name: compile_hazard(hazard) for name, hazard in p.relapse.items()}
        self.survival_after_relapse = {k: v.build() for k, v in p.post_relapse.survival.items()}
        self.reremission = compile_probability(p.post_relapse.reremission)
        self.time_to_reremission = p.post_relapse.time_to_reremission.build()
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
        self.stream_slots = self._stream_slots()

    def __reduce__(self):
        # Workers rebuild the compiled model from the (small, plain) scenario:
        # pickling compiled conditions by value costs far more than compiling.
        return (ModelDefinition, (self.scenario,))

    @property
    def has_finite_resources(self) -> bool:
        return any(c is not None for c in self.capacities.values())

    def _stream_slots(self) -> dict[str, int]:
        """How many uniforms each patient may need of each kind."""
        slots = {f"covariate:{name}": 1 for name in self.scenario.cohort.covariates}
        slots.update({
            "arrival": 1,
            "referral": 1,
            "apheresis": 2 * self.max_manufacturing_attempts,
            "manufacturing": 3 * self.max_manufacturing_attempts,
            "pre_infusion": 3,
            "infusion": 1,
            "toxicity": 4,
            "response": 2,
            "bca": 1 + self.max_reinfusions,
            "mrd": 3 + len(self.mrd_test_days),
            "relapse": 6,
            "non_relapse_death": 1,
            "hsct": 6 * max(self.max_hsct_after_car, 1),
            "reinfusion": 2 * max(self.max_reinfusions, 1),
        })
        return slots
