"""Run a scenario: replications x policies (x patient chunks), in parallel.

Work is split into tasks: whole replications, or groups of policies, or
chunks of a cohort's patients.  Patients do not interact after infusion
(except through transplant beds), and each patient's random numbers are
fixed by its index, so chunking cannot change results.  Without capacity
limits a chunk simulates its patients alone; with them (the array engine),
every chunk simulates the cohort's shared access queues whole and advances
only its own patients after infusion, and the transplant-bed check is made
on all the chunks' stays together (a cohort whose beds were over-subscribed
is simulated again whole, with the bed queue).  Results are assembled in
task order, so they are identical for any number of workers.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from ..model.array_engine import beds_checked, join_columns
from ..model.definition import ModelDefinition
from ..model.simulation import BATCH_TRAJECTORIES, CohortResult, queues_ahead, simulate_replications
from ..scenario.schema import Scenario
from .parallel import active_backend, can_fork, effective_jobs, fork_map, progress_bar, workers


@dataclass(frozen=True)
class Task:
    replications: tuple
    policies: tuple
    start: int
    stop: int
    whole_queue: bool = False  # a chunk of a cohort that shares finite resources (array engine)


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
            columns = [getattr(p, source)[key] for p in parts]
            out[key] = columns[0] if len(columns) == 1 else np.concatenate(columns)  # one part: not copied
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
    patients.  The SimPy engine takes one policy of one replication per task.

    The array engine shares the access pathway and the rounds between
    policies, so it splits a cohort by patients first (chunks of at least
    500; with finite resources each chunk repeats the shared queues, which
    cost a small part of the whole), then by policies."""
    jobs = effective_jobs(n_jobs)
    if engine != "simpy" and replications >= jobs and replications > 1:
        # Enough tasks for every worker, each of at most a batch of trajectories.
        per_replication = n_patients * len(policies)
        n_tasks = max(jobs, -(-replications * per_replication // BATCH_TRAJECTORIES))
        return [Task(tuple(int(r) for r in group), tuple(policies), 0, n_patients)
                for group in np.array_split(np.arange(replications), min(n_tasks, replications))]
    per_replication = max(1, jobs // max(1, replications))
    whole_queue = engine != "simpy" and model.has_finite_resources
    if engine == "simpy":
        chunks = 1 if model.has_finite_resources else max(1, min(per_replication // len(policies),
                                                                 n_patients // 500))
        groups = [(p,) for p in policies]
    else:
        chunks = max(1, min(per_replication, n_patients // 500))
        k = max(1, min(len(policies), per_replication // chunks))
        groups = [tuple(g) for g in np.array_split(np.array(policies, dtype=object), k) if len(g)]
    bounds = np.linspace(0, n_patients, chunks + 1).round().astype(int)
    return [Task((r,), group, int(a), int(b), whole_queue and chunks > 1) for r in range(replications)
            for group in groups for a, b in itertools.pairwise(bounds)]


def _run_task(model: ModelDefinition, task: Task, n_patients: int, seed: int, record_events: bool,
              engine: str) -> list[CohortResult]:
    """One task's results (what a worker does)."""
    return simulate_replications(model, task.policies, task.replications, n_patients, seed, start=task.start,
                                 stop=task.stop, record_events=record_events, engine=engine,
                                 whole_queue=task.whole_queue)


def _stacked(pieces: list[CohortResult], name: str) -> dict:
    """The columns ``name`` (outcomes, covariates or events) of consecutive
    chunks, joined (and emptied in the chunks as they are joined)."""
    return join_columns([getattr(p, name) for p in pieces])


def _joined(model: ModelDefinition, parts: list[CohortResult], n_patients: int, seed: int, record_events: bool,
            engine: str) -> list[CohortResult]:
    """The chunks of a cohort simulated with its whole queue (``Task.whole_queue``),
    joined into one result per (replication, policy) after the bed check on
    all their stays; a cohort whose beds did not suffice under a policy is
    simulated again whole under that policy, with the bed queue."""
    chunks: dict[tuple, list[CohortResult]] = {}
    for part in parts:
        chunks.setdefault((part.replication, part.policy), []).append(part)
    joined: dict[tuple, CohortResult] = {}
    redo: dict[int, list] = {}
    for (replication, policy), pieces in chunks.items():
        use, suffice = beds_checked(model, pieces[0].resource_use, [p.bed_stays for p in pieces])
        if not suffice:
            redo.setdefault(replication, []).append(policy)
            continue
        joined[replication, policy] = CohortResult(
            replication=replication, policy=policy, outcomes=_stacked(pieces, "outcomes"),
            covariates=_stacked(pieces, "covariates"), events=_stacked(pieces, "events"), resource_use=use,
            engine=pieces[0].engine, warnings=[])
    # A policy's results do not depend on the policies simulated beside it (common random numbers).
    for replication, policies in redo.items():
        for result in simulate_replications(model, policies, [replication], n_patients, seed,
                                            record_events=record_events, engine=engine):
            joined[replication, result.policy] = result
    return [joined[key] for key in chunks]


# Below this many patient-policy trajectories, worker processes cost more
# than they save, so any n_jobs runs in this process (the shared access
# queues are simulated by one process whatever the workers): two workers
# simulated 8,000 patients x 4 policies as fast as one, 12,000 and more 1.2
# to 1.4 times as fast.
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
    task = functools.partial(_run_task, model, n_patients=n_patients, seed=run.seed, record_events=run.write_events,
                             engine=engine)
    if jobs == 1:
        iterator = (task(t) for t in tasks)
    elif active_backend() == "loky" and can_fork():
        # Forked workers start at once with the model in memory (loky's would
        # start Python and import everything first, about a second each), and
        # with the shared queues of chunked cohorts simulated once, here.
        chunked = sorted({r for t in tasks if t.whole_queue for r in t.replications})
        with queues_ahead(model, run.seed, chunked, n_patients, run.write_events):
            iterator = fork_map(task, tasks, jobs)
    else:
        from joblib import delayed  # imported only when workers are used: it costs start-up time

        iterator = workers(jobs, return_as="generator")(delayed(task)(t) for t in tasks)
    bar = progress_bar(len(tasks), progress)
    parts = []
    for results in iterator:
        parts.extend(results)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if any(t.whole_queue for t in tasks):
        parts = _joined(model, parts, n_patients, run.seed, run.write_events, engine)
    elapsed = time.perf_counter() - started
    engines = sorted({p.engine for p in parts})
    return ExperimentResult(scenario, policies, run.replications, n_patients, run.seed, parts,
                            timings={"simulate_seconds": round(elapsed, 3), "tasks": len(tasks), "workers": jobs,
                                     "engine": "+".join(engines)})
