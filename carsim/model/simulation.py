"""Simulate cohorts: draw their patients and hand them to an engine.

Two engines schedule the same pathway (:mod:`carsim.model.access`,
:mod:`carsim.model.pathway`): the array engine (the default, whole cohorts in
rounds, exact queues) and the SimPy engine (the reference, one process per
patient).  With the same seed both give the same patients."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from .cohort import arrival_days, sample_cohort
from .definition import ModelDefinition
from .random import RandomStreams
from .records import OUTCOME_FIELDS

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
    warnings: list = field(default_factory=list)  # e.g. a transplant-bed queue that never settles
    bed_stays: tuple | None = None  # (start, end) of each bed stay, for a part whose bed check is the caller's


def simulate_policies(model: ModelDefinition, policies, replication: int, n_patients: int, seed: int,
                      start: int = 0, stop: int | None = None, record_events: bool = True,
                      engine: str = "auto") -> list[CohortResult]:
    """Simulate patients ``start .. stop-1`` under each policy (same patients,
    same random numbers).  ``engine``: "simpy" (the reference, one process per
    patient), "vectorised" (the array engine) or "auto" (the array engine)."""
    return simulate_replications(model, policies, [replication], n_patients, seed, start, stop, record_events,
                                 engine)


# Rows (patient-policy trajectories) the array engine advances together at
# most: enough that a round's fixed cost is negligible, few enough that the
# arrays stay within a few hundred MB.  A cohort is never split.
BATCH_TRAJECTORIES = 40_000


def draw_cohort(model: ModelDefinition, seed: int, replication: int, stop: int):
    """(streams, covariates, arrival days) of patients ``0 .. stop - 1``."""
    streams = RandomStreams(seed, replication, stop)
    covariates = sample_cohort(model.scenario.cohort, model.blast_multiplier, streams)
    arrivals = arrival_days(model.scenario.cohort.arrivals.rate_per_day, streams)
    return streams, covariates, arrivals


def simulate_replications(model: ModelDefinition, policies, replications, n_patients: int, seed: int,
                          start: int = 0, stop: int | None = None, record_events: bool = True,
                          engine: str = "auto", whole_queue: bool = False) -> list[CohortResult]:
    """:func:`simulate_policies` for several replications (independent
    cohorts of the same model), in replication then policy order.  The array
    engine advances replications together, which makes many small cohorts
    (replications, simulated trials) about as cheap per patient as one large
    cohort; each replication's results are the same as alone.

    ``whole_queue`` (array engine): patients ``start .. stop-1`` are a part
    of a cohort whose patients share finite resources: the access queues are
    simulated with every patient before them, and the transplant-bed check is
    left to the caller, who has every part (each result's ``bed_stays``;
    :func:`~carsim.model.array_engine.beds_checked`)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    stop = n_patients if stop is None else stop
    if engine == "simpy":
        return [simulate_cohort(model, policy, replication, n_patients, seed, start, stop, record_events)
                for replication in replications for policy in policies]
    from .array_engine import simulate_cohorts

    per_batch = max(1, BATCH_TRAJECTORIES // max(1, (stop - start) * len(policies)))
    replications = list(replications)
    results = []
    for first in range(0, len(replications), per_batch):
        batch = replications[first:first + per_batch]
        if whole_queue:
            cohorts = [_whole_queue(model, seed, replication, n_patients, record_events or _priced(model))
                       for replication in batch]
        else:
            cohorts = [(*draw_cohort(model, seed, replication, stop), start, stop) for replication in batch]
        # Events kept only for the accounting stay codes (no event table is built).
        simulated = simulate_cohorts(model, policies, cohorts, record_events or _priced(model),
                                     advanced=(start, stop) if whole_queue else None, coded=not record_events)
        for replication, (_streams, covariates, *_), done in zip(batch, cohorts, simulated, strict=True):
            for policy in policies:
                outcomes, events, use, warnings, stays = done[policy]
                mine = model.policy_covariates(policy, {n: covariates[n][start:stop] for n in covariates})
                outcomes = _with_economics(model, {"patient": outcomes["patient"],
                                                   **{k: outcomes[k] for k in OUTCOME_FIELDS}}, events, mine)
                results.append(CohortResult(
                    replication=replication, policy=policy, outcomes=outcomes, covariates=mine,
                    events=events if record_events else _no_events(),
                    resource_use=use, engine="vectorised", warnings=warnings,
                    bed_stays=stays if whole_queue else None))
    return results


# Whole cohorts' access pathways simulated ahead (:func:`queues_ahead`), by
# (model, seed, replication, patients, events recorded).
_AHEAD: dict[tuple, tuple] = {}


def _whole_queue(model: ModelDefinition, seed: int, replication: int, n_patients: int, record_events: bool):
    """A whole cohort with its access pathway simulated (the cohort tuple of ``simulate_cohorts``)."""
    found = _AHEAD.get((id(model), seed, replication, n_patients, record_events))
    if found is not None:
        return found
    from .array_engine import simulate_access

    streams, covariates, arrivals = draw_cohort(model, seed, replication, n_patients)
    return (streams, covariates, arrivals, 0, n_patients,
            simulate_access(model, streams, covariates, arrivals, 0, n_patients, record_events))


@contextlib.contextmanager
def queues_ahead(model: ModelDefinition, seed: int, replications, n_patients: int, record_events: bool):
    """Simulate the whole cohorts' access pathways (their shared queues) once,
    here, for the chunks of those cohorts simulated while this lasts
    (``whole_queue``): in this process and in workers forked from it, which
    inherit them instead of each simulating the queues again.  The same
    numbers either way."""
    record_events = record_events or _priced(model)
    keys = []
    try:
        for replication in replications:
            key = (id(model), seed, replication, n_patients, record_events)
            _AHEAD[key] = _whole_queue(model, seed, replication, n_patients, record_events)
            keys.append(key)
        yield
    finally:
        for key in keys:
            _AHEAD.pop(key, None)


def simulate_cohort(model: ModelDefinition, policy: str, replication: int, n_patients: int,
                    seed: int, start: int = 0, stop: int | None = None,
                    record_events: bool = True) -> CohortResult:
    """Simulate patients ``start .. stop-1`` of a cohort of ``n_patients``
    with the SimPy reference engine (one process per patient)."""
    from .simpy_engine import simulate

    stop = n_patients if stop is None else stop
    streams, covariates, arrivals = draw_cohort(model, seed, replication, stop)
    out, events, use, warnings = simulate(model, policy, streams, covariates, arrivals, start, stop,
                                          record_events or _priced(model))
    mine = model.policy_covariates(policy, {n: covariates[n][start:stop] for n in covariates})
    outcomes = _with_economics(model, {"patient": out["patient"], **{k: out[k] for k in OUTCOME_FIELDS}}, events,
                               mine)
    return CohortResult(replication=replication, policy=policy, outcomes=outcomes, covariates=mine,
                        events=events if record_events else _no_events(), resource_use=use, warnings=warnings)


def _priced(model: ModelDefinition) -> bool:
    """Economics is accounted on the event records, so a priced scenario records them."""
    return model.scenario.economics is not None


def _with_economics(model: ModelDefinition, outcomes: dict, events: dict, covariates: dict) -> dict:
    if not _priced(model):
        return outcomes
    from .economics import account

    return {**outcomes, **account(model.scenario.economics, events, outcomes, covariates,
                                  lifetime=model.scenario.run.lifetime)}


def _no_events() -> dict:
    from .records import event_columns

    return event_columns([])
