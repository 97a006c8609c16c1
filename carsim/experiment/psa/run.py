"""Simulating a PSA's draws, checkpointed in chunks so that an interrupted
run can be resumed (:func:`run_psa`)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from ... import __version__
from ...errors import CarsimError
from ...scenario.parameters import apply_values, calibration_opt_outs, uncertain_parameters
from ...scenario.schema import Scenario
from ..checkpoint import Checkpoint, default_chunk_size, read_run_file
from ..evaluate import evaluate_policies
from ..manifest import clear, scenario_hash
from ..metrics import compute_metrics
from ..outcomes import Outcome, resolve_outcome
from ..output import patients_frame
from ..parallel import effective_jobs, parallel_map
from .output import write_psa
from .sampling import check_draws, draw_values, parameter_table
from .statistics import parameter_summary, probability_best, psa_incremental, psa_summary

ROW_COLUMNS = ["draw", "policy", "metric", "origin", "time_months", "value", "n"]


@dataclass
class DrawResult:
    draw: int
    rows: pd.DataFrame | None
    patients: pd.DataFrame | None = None


def rows_frame(rows: list[tuple], draw: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS[1:])
    frame.insert(0, "draw", np.int64(draw))
    frame["draw"] = frame["draw"].astype(np.int64)
    frame["time_months"] = frame["time_months"].astype(float)
    frame["value"] = frame["value"].astype(float)
    frame["n"] = frame["n"].astype(np.int64)
    return frame


def evaluate_with_patients(scenario: Scenario, replication: int, seed: int, n_patients: int):
    """Like :func:`~carsim.experiment.evaluate.evaluate_policies`, also
    returning the patient table (``--keep-patients``)."""
    from ...model.definition import ModelDefinition
    from ...model.simulation import simulate_policies

    model = ModelDefinition(scenario)
    horizon_days = scenario.run.horizon_years * 365.25
    rows = []
    parts = simulate_policies(model, scenario.policy_names, replication, n_patients, seed, record_events=False,
                              engine=scenario.run.engine)
    for part in parts:
        patients = {**part.outcomes, **{k: v for k, v in part.covariates.items() if k not in part.outcomes}}
        rows += [(part.policy, *row)
                 for row in compute_metrics(patients, horizon_days, phenotypes=scenario.relapse_phenotypes,
                                            times_months=scenario.run.report_times)]
    return rows, patients_frame(SimpleNamespace(parts=parts))


def _evaluate_draw(task: tuple, scenario: Scenario, seed: int, n_patients: int, keep_patients: bool) -> DrawResult:
    draw, values = task
    drawn = apply_values(scenario, values) if values else scenario
    if not keep_patients:
        return DrawResult(draw, rows_frame(evaluate_policies(drawn, draw, seed, n_patients), draw))
    rows, patients = evaluate_with_patients(drawn, draw, seed, n_patients)
    patients = patients.rename(columns={"replication": "draw"})
    return DrawResult(draw, rows_frame(rows, draw), patients)


@dataclass
class PsaResult:
    out: Path
    policies: list
    parameters: pd.DataFrame
    draws: pd.DataFrame
    summary: pd.DataFrame
    best: pd.DataFrame
    incremental: pd.DataFrame
    outcome: Outcome
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    economics: dict = field(default_factory=dict)  # ceac, evpi, evppi tables (priced scenarios)


NO_DISTRIBUTIONS = "no value in the scenario has a distribution:, so draws differ only in their patients"


def stored_settings(folder) -> dict:
    """Settings of the run in ``folder`` (what ``--resume`` continues)."""
    return read_run_file(folder)["fingerprint"]


def psa_fingerprint(scenario: Scenario, draws: int, seed: int, n_patients: int, chunk_size: int,
                    keep_patients: bool) -> dict:
    return {"analysis": "psa", "carsim_version": __version__, "scenario": scenario.name,
            "scenario_sha256": scenario_hash(scenario), "engine": scenario.run.engine, "seed": int(seed), "items": int(draws),
            "patients": int(n_patients), "chunk_size": int(chunk_size), "policies": list(scenario.policy_names),
            "parameters": [p.path for p in uncertain_parameters(scenario)], "keep_patients": bool(keep_patients),
            "report_times": list(scenario.run.report_times)}


def psa_economics(scenario: Scenario, rows: pd.DataFrame, policies: list[str], table: pd.DataFrame) -> dict:
    """Acceptability curves and frontier, EVPI and EVPPI of a priced scenario's PSA."""
    from .economics import acceptability, cost_qaly_by_draw, evpi, evppi, wtp_grid

    economics = scenario.economics
    cost, qaly = cost_qaly_by_draw(rows, policies)
    wtp = wtp_grid(economics.willingness_to_pay)
    groups: dict[str, list[str]] = {}
    for p in uncertain_parameters(scenario):
        groups.setdefault(p.stream or p.path, []).append(p.path)
    population = economics.population.value if economics.population is not None else None
    return {"cost": cost, "qaly": qaly, "ceac": acceptability(cost, qaly, wtp),
            "evpi": evpi(cost, qaly, wtp, population),
            "evppi": evppi(cost, qaly, table.set_index("draw"), groups, np.asarray(economics.willingness_to_pay))}


def run_psa(scenario: Scenario, draws: int, out, *, n_patients: int | None = None, seed: int | None = None,
            n_jobs: int | None = None, chunk_size: int | None = None, resume: bool = False,
            keep_patients: bool = False, outcome: Outcome | None = None, scatter_time: float = 24,
            progress: bool = True, command: list | None = None) -> PsaResult:
    """Run (or resume) a PSA into ``out`` and write its tables.

    Parallel work goes through :func:`~carsim.experiment.parallel.parallel_map`
    with whatever joblib backend is configured (see ``backend_context``)."""
    started = time.perf_counter()
    out = Path(out)
    seed = scenario.run.seed if seed is None else int(seed)
    n_patients = scenario.cohort.size if n_patients is None else int(n_patients)
    n_jobs = scenario.run.n_jobs if n_jobs is None else n_jobs
    chunk_size = default_chunk_size(draws) if chunk_size is None else int(chunk_size)
    outcome = outcome or resolve_outcome("os", 24, "infusion", phenotypes=scenario.relapse_phenotypes)
    if draws < 1:
        raise CarsimError("a PSA needs at least one draw")
    policies = list(scenario.policy_names)

    table = parameter_table(scenario, seed, draws)
    check_draws(scenario, table)
    fingerprint = psa_fingerprint(scenario, draws, seed, n_patients, chunk_size, keep_patients)
    checkpoint = Checkpoint.open(out, fingerprint, resume=resume)
    clear(out)  # the folder is unfinished until the tables are written

    pending = checkpoint.pending_items()
    add = checkpoint.collector(pending)

    def on_result(index: int, result: DrawResult) -> None:
        add(index, result.rows, {"patients": result.patients} if keep_patients else None)
        result.rows = result.patients = None  # the chunk is on disk: keep memory bounded

    worker = functools.partial(_evaluate_draw, scenario=scenario, seed=seed, n_patients=n_patients,
                               keep_patients=keep_patients)
    tasks = [(d, draw_values(table, d)) for d in pending]
    simulate_started = time.perf_counter()
    parallel_map(worker, tasks, n_jobs=n_jobs, progress="PSA draws" if progress else None, on_result=on_result)
    simulate_seconds = time.perf_counter() - simulate_started

    rows = checkpoint.read_all()
    result = PsaResult(out=out, policies=policies, parameters=table, draws=rows,
                       summary=psa_summary(rows, policies), best=probability_best(rows, policies),
                       incremental=psa_incremental(rows, policies), outcome=outcome)
    result.timings = {"simulate_seconds": round(simulate_seconds, 3), "draws_simulated": len(pending),
                      "draws_resumed": draws - len(pending), "workers": effective_jobs(n_jobs)}
    if scenario.economics is not None:
        result.economics = psa_economics(scenario, rows, policies, table)
    if not uncertain_parameters(scenario):
        result.warnings.append(NO_DISTRIBUTIONS)
    for path, why in calibration_opt_outs(scenario).items():
        result.warnings.append(f"calibration draws not used for {path}: {why}")
    write_psa(result, scenario, fingerprint, parameter_summary(scenario, table), scatter_time, started, command)
    return result
