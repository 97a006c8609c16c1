"""Evaluate one parameter set: simulate every policy of a scenario on the
same virtual patients (common random numbers) and keep only the summary
metrics.  PSA draws, one-way and global sensitivity analyses and calibration
all go through here, so they share one code path and bounded memory."""

from __future__ import annotations

from ..model.definition import ModelDefinition
from ..model.simulation import simulate_policies
from ..scenario.schema import Scenario
from .metrics import compute_metrics


def evaluate_policies(scenario: Scenario, replication: int, seed: int | None = None,
                      n_patients: int | None = None) -> list[tuple]:
    """Rows (policy, metric, origin, time_months, value, n) for every policy.

    ``replication`` selects the random streams: the same replication gives the
    same patients and the same random numbers, whatever the parameter values."""
    model = ModelDefinition(scenario)
    seed = scenario.run.seed if seed is None else seed
    n_patients = scenario.cohort.size if n_patients is None else n_patients
    horizon_days = scenario.run.horizon_years * 365.25
    rows = []
    for part in simulate_policies(model, scenario.policy_names, replication, n_patients, seed,
                                  record_events=False, engine=scenario.run.engine):
        patients = {**part.outcomes, **{k: v for k, v in part.covariates.items() if k not in part.outcomes}}
        rows += [(part.policy, *row) for row in compute_metrics(
            patients, horizon_days, phenotypes=scenario.relapse_phenotypes, times_months=scenario.run.report_times)]
    return rows
