"""Where a simulated trial's outcomes come from: the model
(:class:`ScenarioOutcomes`), or a stand-in with known answers
(:class:`ExponentialOutcomes`); any object with the methods of
:class:`OutcomeSource` will do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..._units import DAYS_PER_MONTH
from ...model.cohort import arrival_days
from ...model.definition import ModelDefinition
from ...model.random import RandomStreams, stream_id
from ...model.simulation import simulate_replications
from ...scenario.schema import Scenario

# columns every outcome source returns (times: days since the patient's enrolment)
OUTCOME_COLUMNS = ("arrival_day", "infused", "cr", "infusion_day", "response_day", "pathway_exit_day",
                   "relapse_day", "death_day", "end_day")


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
        # A trial's endpoints are clinical: no costs to account (nor events to record for them).
        model = ModelDefinition(self.scenario.model_copy(update={"run": run, "economics": None}))
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
