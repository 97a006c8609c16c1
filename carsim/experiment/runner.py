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
import time
from dataclasses import dataclass, field

import numpy as np

from ..model.definition import ModelDefinition
from ..model.simulation import BATCH_TRAJECTORIES, CohortResult, simulate_replications
from ..scenario.schema import Scenario
from .parallel import effective_jobs, progress_bar, workers


@dataclass(frozen=True)
class Task:
    replications: tuple
    policies: tuple
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

    @property
    def warnings(self) -> list[str]:
        """What the simulation warns about (e.g. a transplant-bed queue that
        never settles), once per policy: the first replication's numbers and
        in how many replications it happened."""
        seen: dict[str, tuple[str, set]] = {}
        for part in self.parts:
            for message in part.warnings:
                seen.setdefault(part.policy, (message, set()))[1].add(part.replication)
        out = []
        for policy, (message, replications) in seen.items():
            where = (f" (replication {min(replications)}; the same in {len(replications)} of "
                     f"{self.replications} replications)" if self.replications > 1 else "")
            out.append(f"policy {policy}: {message}{where}")
        return out

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


def plan_tasks(model: ModelDefinition, policies: list, replications: int, n_patients: int,
               n_jobs: int, engine: str = "auto") -> list[Task]:
    """Split the work into tasks that never split a shared queue.

    The vectorised engine simulates the access pathway once for the policies
    of a task and advances a task's replications together, so with at least
    as many replications as workers a task takes whole replications (every
    policy); otherwise policies are grouped (as many groups as workers can
    use) and, without finite resources, cohorts are cut into chunks of
    patients.  The SimPy engine takes one policy of one replication per task."""
    jobs = effective_jobs(n_jobs)
    if engine != "simpy" and replications >= jobs and replications > 1:
        # Enough tasks for every worker, each of at most a batch of trajectories.
        per_replication = n_patients * len(policies)
        n_tasks = max(jobs, -(-replications * per_replication // BATCH_TRAJECTORIES))
        return [Task(tuple(int(r) for r in group), tuple(policies), 0, n_patients)
                for group in np.array_split(np.arange(replications), min(n_tasks, replications))]
    if engine == "simpy":
        groups = [(p,) for p in policies]
    else:
        k = max(1, min(len(policies), jobs // max(1, replications)))
        groups = [tuple(g) for g in np.array_split(np.array(policies, dtype=object), k) if len(g)]
    chunks = 1
    if not model.has_finite_resources:
        per_task = max(1, jobs // max(1, len(groups) * replications))
        chunks = max(1, min(per_task, n_patients // 500))
    bounds = np.linspace(0, n_patients, chunks + 1).round().astype(int)
    return [Task((r,), group, int(a), int(b)) for r in range(replications) for group in groups
            for a, b in itertools.pairwise(bounds)]


def _run_task(model: ModelDefinition, task: Task, n_patients: int, seed: int, record_events: bool,
              engine: str) -> list[CohortResult]:
    return simulate_replications(model, task.policies, task.replications, n_patients, seed, start=task.start,
                                 stop=task.stop, record_events=record_events, engine=engine)


# Below this many patient-policy trajectories, starting worker processes
# costs more than it saves.
IN_PROCESS_BELOW = 40_000


def run_experiment(scenario: Scenario, n_jobs: int | None = None, progress: str | None = None,
                   engine: str | None = None) -> ExperimentResult:
    """Simulate every replication and policy of ``scenario``.  ``progress``:
    a label for a progress bar over tasks (shown on a terminal only)."""
    started = time.perf_counter()
    model = ModelDefinition(scenario)
    run = scenario.run
    n_jobs = run.n_jobs if n_jobs is None else n_jobs
    policies = scenario.policy_names
    n_patients = scenario.cohort.size
    engine = run.engine if engine is None else engine
    trajectories = n_patients * len(policies) * run.replications
    if trajectories < IN_PROCESS_BELOW and engine != "simpy":
        n_jobs = 1
    tasks = plan_tasks(model, policies, run.replications, n_patients, n_jobs, engine)
    jobs = min(effective_jobs(n_jobs), len(tasks))
    if jobs == 1:
        iterator = (_run_task(model, t, n_patients, run.seed, run.write_events, engine) for t in tasks)
    else:
        from joblib import delayed  # imported only when workers are used: it costs start-up time

        iterator = workers(jobs, return_as="generator")(
            delayed(_run_task)(model, t, n_patients, run.seed, run.write_events, engine) for t in tasks)
    bar = progress_bar(len(tasks), progress)
    parts = []
    for results in iterator:
        parts.extend(results)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started
    engines = sorted({p.engine for p in parts})
    return ExperimentResult(scenario, policies, run.replications, n_patients, run.seed, parts,
                            timings={"simulate_seconds": round(elapsed, 3), "tasks": len(tasks), "workers": jobs,
                                     "engine": "+".join(engines)})
