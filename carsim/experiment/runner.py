"""Run a scenario: replications x policies (x patient chunks), in parallel.

Work is split into tasks that never share a finite resource: one task is a
whole cohort under one policy in one replication.  Only when a scenario has
no capacity limit at all are a cohort's patients also split into chunks
(patients then do not interact, and each patient's random numbers are fixed
by its index, so chunking cannot change results).  Results are assembled in
task order, so they are identical for any number of workers.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed

from ..model.definition import ModelDefinition
from ..model.simulation import CohortResult, simulate_cohort
from ..scenario.schema import Scenario


@dataclass(frozen=True)
class Task:
    replication: int
    policy: str
    start: int
    stop: int


@dataclass
class ExperimentResult:
    scenario: Scenario
    policies: list
    replications: int
    n_patients: int
    seed: int
    parts: list  # CohortResult per task, in task order
    timings: dict = field(default_factory=dict)

    def group(self, policy: str, replication: int) -> dict:
        """Outcome and covariate columns of one (policy, replication), all chunks."""
        parts = [p for p in self.parts if p.policy == policy and p.replication == replication]
        keys = list(parts[0].outcomes) + [k for k in parts[0].covariates if k not in parts[0].outcomes]
        out = {}
        for key in keys:
            source = "outcomes" if key in parts[0].outcomes else "covariates"
            out[key] = np.concatenate([getattr(p, source)[key] for p in parts])
        return out

    def resource_use(self, policy: str, replication: int) -> dict:
        parts = [p for p in self.parts if p.policy == policy and p.replication == replication]
        return parts[0].resource_use if len(parts) == 1 else {}


def effective_jobs(n_jobs: int) -> int:
    cores = os.cpu_count() or 1
    return cores if n_jobs == -1 else max(1, min(n_jobs, cores * 4))


def plan_tasks(model: ModelDefinition, policies: list, replications: int, n_patients: int,
               n_jobs: int) -> list[Task]:
    chunks = 1
    if not model.has_finite_resources:
        per_task = max(1, effective_jobs(n_jobs) // max(1, len(policies) * replications))
        chunks = max(1, min(per_task, n_patients // 500))
    bounds = np.linspace(0, n_patients, chunks + 1).round().astype(int)
    return [Task(r, p, int(a), int(b)) for r in range(replications) for p in policies
            for a, b in itertools.pairwise(bounds)]


def _run_task(model: ModelDefinition, task: Task, n_patients: int, seed: int, record_events: bool) -> CohortResult:
    return simulate_cohort(model, task.policy, task.replication, n_patients, seed,
                           start=task.start, stop=task.stop, record_events=record_events)


def run_experiment(scenario: Scenario, n_jobs: int | None = None, progress=None) -> ExperimentResult:
    """Simulate every replication and policy of ``scenario``."""
    started = time.perf_counter()
    model = ModelDefinition(scenario)
    run = scenario.run
    n_jobs = run.n_jobs if n_jobs is None else n_jobs
    policies = scenario.policy_names
    n_patients = scenario.cohort.size
    tasks = plan_tasks(model, policies, run.replications, n_patients, n_jobs)
    jobs = min(effective_jobs(n_jobs), len(tasks))
    calls = (delayed(_run_task)(model, t, n_patients, run.seed, run.write_events) for t in tasks)
    if jobs == 1:
        parts = []
        for call, task in zip(calls, tasks):
            function, args, kwargs = call
            parts.append(function(*args, **kwargs))
            if progress:
                progress(task)
    else:
        parts = []
        for part, task in zip(Parallel(n_jobs=jobs, return_as="generator")(calls), tasks):
            parts.append(part)
            if progress:
                progress(task)
    elapsed = time.perf_counter() - started
    return ExperimentResult(scenario, policies, run.replications, n_patients, run.seed, parts,
                            timings={"simulate_seconds": round(elapsed, 3), "tasks": len(tasks), "workers": jobs})
