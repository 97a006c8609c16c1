"""carsim speed benchmark: baseline scenario at several sizes, all four
policies, beside a fixed reference toy model (for ratios across machines).

    python benchmarks/benchmark.py                 # 1k, 10k, 100k patients
    python benchmarks/benchmark.py --sizes 1000 10000 --engine simpy

Prints, per size: wall time, patients/s, patient-policy trajectories/s,
events/s, microseconds per patient and peak memory, for one core
(in-process: one cohort, and small cohorts as replications advanced
together; then the middle size with 1, 2, ... policies) and for the
experiment runner with all cores; the reference toy's patients/s and the
ratio; and the wall time of the whole
`carsim run scenarios/baseline.yaml`.  Not a test: machines are noisy,
compare ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_core(scenario, n: int, engine: str, replications: int = 1, repeats: int = 3, n_policies=None) -> dict:
    """``replications`` cohorts of ``n`` patients in one process (advanced
    together by the vectorised engine); the best of ``repeats`` timings (on
    a shared machine the slower ones measure the neighbours)."""
    from carsim.model.definition import ModelDefinition
    from carsim.model.simulation import simulate_replications

    model = ModelDefinition(scenario)
    policies = scenario.policy_names[:n_policies]
    # Events are counted on (at most) 10,000 patients with the log kept; the
    # timed run keeps summaries only, as PSA and calibration do.
    sample = min(n, 10000)
    counted = simulate_replications(model, policies, [0], sample, scenario.run.seed, engine=engine)
    per_trajectory = sum(len(p.events["event"]) for p in counted) / (sample * len(counted))
    simulate_replications(model, policies, [1], min(n, 500), scenario.run.seed, engine=engine,
                          record_events=False)  # warm-up: first-call costs are not per patient
    seconds = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        parts = simulate_replications(model, policies, range(replications), n, scenario.run.seed, engine=engine,
                                      record_events=False)
        seconds = min(seconds, time.perf_counter() - started)
    patients = n * replications
    trajectories = patients * len(policies)
    return {"patients": n, "replications": replications, "policies": len(policies), "seconds": round(seconds, 3),
            "patients_per_s": round(patients / seconds), "trajectories_per_s": round(trajectories / seconds),
            "us_per_patient": round(seconds / patients * 1e6, 1),
            "events_per_s": round(per_trajectory * trajectories / seconds),
            "events_per_trajectory": round(per_trajectory, 1), "engines": sorted({p.engine for p in parts})}


def all_cores(scenario, n: int, engine: str, replications: int) -> dict:
    from carsim.experiment.runner import run_experiment

    scenario = scenario.model_copy(update={
        "cohort": scenario.cohort.model_copy(update={"size": n}),
        "run": scenario.run.model_copy(update={"replications": replications, "n_jobs": -1, "write_events": False,
                                              "engine": engine})})
    started = time.perf_counter()
    result = run_experiment(scenario)
    seconds = time.perf_counter() - started
    trajectories = n * len(result.policies) * replications
    return {"patients": n * replications, "seconds": round(seconds, 3),
            "trajectories_per_s": round(trajectories / seconds), "workers": result.timings["workers"]}


def carsim_run_wall(repeats: int = 3) -> float:
    """The whole `carsim run scenarios/baseline.yaml`, start-up included
    (the best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "carsim", "run", str(ROOT / "scenarios" / "baseline.yaml"), "--quiet",
                        "--out", str(ROOT / "results" / "benchmark-run")], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return round(best, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3, help="one-core timings per size; the best is shown")
    parser.add_argument("--small-cohorts", type=int, default=20,
                        help="replications of the smallest size advanced together (default 20)")
    parser.add_argument("--engine", default="auto", choices=("auto", "vectorised", "simpy"))
    parser.add_argument("--toy-patients", type=int, default=100000)
    parser.add_argument("--skip-run", action="store_true", help="skip timing the whole carsim run")
    args = parser.parse_args()

    from reference_toy import run_toy

    from carsim.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "baseline.yaml")
    toy = run_toy(args.toy_patients)
    print(json.dumps({"reference_toy": {k: round(v, 3) if isinstance(v, float) else v for k, v in toy.items()}}))
    runs = [(n, 1) for n in args.sizes]
    if args.small_cohorts > 1:
        runs.insert(1, (min(args.sizes), args.small_cohorts))
    for n, replications in runs:
        row = one_core(scenario, n, args.engine, replications, args.repeats)
        row["ratio_to_toy"] = round(row["trajectories_per_s"] / toy["patients_per_s"], 2)
        row["peak_memory_mib"] = round(peak_memory_mib())
        print(json.dumps({"one_core": row}))
    # Policies share the access pathway (simulated once) and the rounds after
    # infusion, so cost grows less than in proportion to the policies.
    middle = sorted(args.sizes)[len(args.sizes) // 2]
    for n_policies in range(1, len(scenario.policy_names) + 1):
        row = one_core(scenario, middle, args.engine, 1, args.repeats, n_policies)
        print(json.dumps({"policy_scaling": {k: row[k] for k in ("patients", "policies", "seconds",
                                                                 "trajectories_per_s")}}))
    for n in args.sizes:
        replications = max(2, 40000 // n)  # at least two tasks, so both cores have work
        row = all_cores(scenario, n, args.engine, replications)
        row["ratio_to_toy"] = round(row["trajectories_per_s"] / toy["patients_per_s"], 2)
        print(json.dumps({"all_cores": row}))
    if not args.skip_run:
        print(json.dumps({"carsim_run_baseline_wall_seconds": carsim_run_wall(args.repeats)}))


if __name__ == "__main__":
    main()
