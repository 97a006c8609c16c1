"""Run one cohort (or one chunk of a cohort) under one policy in one SimPy
environment.  Patients who share a finite resource must be in the same
environment: their queues are the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from .cohort import arrival_days, sample_cohort
from .definition import ModelDefinition
from .patient import Patient
from .random import RandomStreams
from .records import OUTCOME_FIELDS, OutcomeTable, event_columns

ENGINES = ("auto", "vectorised", "simpy")


@dataclass
class CohortResult:
    """Flat columns for one (replication, policy, chunk)."""

    replication: int
    policy: str
    outcomes: dict  # column -> array, one row per patient
    covariates: dict  # column -> array
    events: dict  # column -> array, one row per event
    resource_use: dict  # resource -> {"busy_days": float, "capacity": int|None, "span_days": float}
    engine: str = "simpy"


def simulate_policies(model: ModelDefinition, policies, replication: int, n_patients: int, seed: int,
                      start: int = 0, stop: int | None = None, record_events: bool = True,
                      engine: str = "auto") -> list[CohortResult]:
    """Simulate patients ``start .. stop-1`` under each policy (same patients,
    same random numbers).  ``engine``: "simpy" (the reference, one process per
    patient), "vectorised" or "auto" (the vectorised engine, which falls back
    to SimPy for a policy whose transplant beds would have queued)."""
    return simulate_replications(model, policies, [replication], n_patients, seed, start, stop, record_events,
                                 engine)


# Rows (patient-policy trajectories) the vectorised engine advances together
# at most: enough that a round's fixed cost is negligible, few enough that
# the arrays stay within a few hundred MB.  A cohort is never split.
BATCH_TRAJECTORIES = 40_000


def simulate_replications(model: ModelDefinition, policies, replications, n_patients: int, seed: int,
                          start: int = 0, stop: int | None = None, record_events: bool = True,
                          engine: str = "auto") -> list[CohortResult]:
    """:func:`simulate_policies` for several replications (independent
    cohorts of the same model), in replication then policy order.  The
    vectorised engine advances replications together, which makes many small
    cohorts (replications, simulated trials) about as cheap per patient as
    one large cohort; each replication's results are the same as alone."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if engine == "simpy":
        return [simulate_cohort(model, policy, replication, n_patients, seed, start, stop, record_events)
                for replication in replications for policy in policies]
    from .vectorised import simulate_cohorts

    stop = n_patients if stop is None else stop
    per_batch = max(1, BATCH_TRAJECTORIES // max(1, (stop - start) * len(policies)))
    replications = list(replications)
    results = []
    for first in range(0, len(replications), per_batch):
        batch = replications[first:first + per_batch]
        cohorts = []
        for replication in batch:
            streams = RandomStreams(seed, replication, stop, model.stream_slots)
            covariates = sample_cohort(model.scenario.cohort, model.blast_multiplier, streams)
            arrivals = arrival_days(model.scenario.cohort.arrivals.rate_per_day, streams)
            cohorts.append((streams, covariates, arrivals, start, stop))
        simulated = simulate_cohorts(model, policies, cohorts, record_events)
        for replication, (_streams, covariates, *_), fast in zip(batch, cohorts, simulated, strict=True):
            for policy in policies:
                if fast[policy] is None:
                    results.append(simulate_cohort(model, policy, replication, n_patients, seed, start, stop,
                                                   record_events))
                    continue
                outcomes, events, use = fast[policy]
                outcomes = {"patient": outcomes["patient"], **{k: outcomes[k] for k in OUTCOME_FIELDS}}
                results.append(CohortResult(
                    replication=replication, policy=policy, outcomes=outcomes,
                    covariates={n: covariates[n][start:stop] for n in covariates},
                    events=events if record_events else event_columns([]),
                    resource_use=use, engine="vectorised"))
    return results


def simulate_cohort(model: ModelDefinition, policy: str, replication: int, n_patients: int,
                    seed: int, start: int = 0, stop: int | None = None,
                    record_events: bool = True) -> CohortResult:
    """Simulate patients ``start .. stop-1`` of a cohort of ``n_patients``
    with the SimPy reference engine (one process per patient)."""
    stop = n_patients if stop is None else stop
    streams = RandomStreams(seed, replication, stop, model.stream_slots)
    covariates = sample_cohort(model.scenario.cohort, model.blast_multiplier, streams)
    arrivals = arrival_days(model.scenario.cohort.arrivals.rate_per_day, streams)
    env = simpy.Environment()
    sim = _Simulation(env, model, model.policies[policy], streams)
    names = list(covariates)
    columns = [covariates[n][start:stop].tolist() for n in names]
    arrival_list = arrivals[start:stop].tolist()

    def enrol():
        for offset, patient in enumerate(range(start, stop)):
            yield env.timeout(arrival_list[offset] - env.now)
            values = {n: col[offset] for n, col in zip(names, columns)}
            Patient(sim, patient, values, env.now).start()

    env.process(enrol())
    env.run()
    outcomes = sim.outcomes.columns()
    outcomes["patient"] = np.arange(start, stop)
    return CohortResult(
        replication=replication,
        policy=policy,
        outcomes=outcomes,
        covariates={n: covariates[n][start:stop] for n in names},
        events=event_columns(sim.events) if record_events else event_columns([]),
        resource_use=sim.resource_use(env.now),
    )


class _TrackedResource(simpy.Resource):
    """A Resource that integrates its busy slots over time (utilisation)."""

    def __init__(self, env, capacity):
        super().__init__(env, capacity)
        self.busy_days = 0.0
        self.first_request = None
        self.last_release = None
        self._last = env.now

    def _tally(self):
        now = self._env.now
        self.busy_days += len(self.users) * (now - self._last)
        self._last = now

    def request(self):
        self._tally()
        if self.first_request is None:
            self.first_request = self._env.now
        return super().request()

    def release(self, request):
        self._tally()
        self.last_release = self._env.now
        return super().release(request)


class _Simulation:
    """Shared context for the patients of one environment."""

    def __init__(self, env, model: ModelDefinition, policy, streams: RandomStreams):
        self.env = env
        self.model = model
        self.policy = policy
        self.streams = streams
        self.outcomes = OutcomeTable()
        self.events: list[tuple] = []
        self.resources = {
            name: (None if capacity is None else _TrackedResource(env, capacity))
            for name, capacity in model.capacities.items()
        }

    def resource_use(self, end: float) -> dict:
        out = {}
        for name, resource in self.resources.items():
            if resource is None or resource.first_request is None:
                out[name] = {"busy_days": float("nan"), "capacity": None, "span_days": 0.0}
            else:
                resource._tally()
                span = (resource.last_release or end) - resource.first_request
                out[name] = {"busy_days": resource.busy_days, "capacity": resource.capacity, "span_days": span}
        return out
