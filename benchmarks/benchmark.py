"""carsim speed benchmark: baseline scenario at several sizes, all four
policies, beside a fixed reference toy model in SimPy and in NumPy (for
ratios across machines).

    python benchmarks/benchmark.py                 # 1k, 10k, 100k patients
    python benchmarks/benchmark.py --sizes 1000 10000 --engine simpy

Prints, per size: wall time, patients/s, patient-policy trajectories/s,
events/s, microseconds per patient and peak memory, for one core
(in-process: one cohort, and small cohorts as replications advanced
together; then the middle size with 1, 2, ... policies) and for the
experiment runner with all cores; the reference toys' patients/s and the
ratios to each (``ratio_to_toy``: SimPy, ``ratio_to_numpy_toy``: NumPy); and
the wall time of the whole
`carsim run scenarios/baseline.yaml`.  Then the targets (``--targets``
alone runs only these): whole commands (start-up included) with their wall
seconds and peak memory, ``carsim run`` at 100k patients with one and two
workers (and the two-worker speed-up at several sizes), the simulation
alone on every core at 100k patients, the summary of a 100k cohort, a PSA
of 1,000 draws x 10,000 patients and ``carsim trial``; each time is also
given in units of the SimPy toy's time for 100,000 patients measured in
the same run (``toy_units``).  Not a test: machines are noisy, compare
ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (Unix)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


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


def _high_water_mib(pid: int) -> dict[int, float]:
    """Peak resident memory (VmHWM) of ``pid`` and its descendants, by process (Linux)."""
    found, pending = {}, [pid]
    while pending:
        process = pending.pop()
        try:
            status = Path(f"/proc/{process}/status").read_text()
            found[process] = next(float(line.split()[1]) / 1024 for line in status.splitlines()
                                  if line.startswith("VmHWM"))
            for task in Path(f"/proc/{process}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return found


def whole_command(args: list[str], repeats: int = 1) -> dict:
    """Wall seconds (the best of ``repeats``) and peak memory of ``python -m carsim ARGS``,
    start-up included.  Peak memory: the largest single process (the command or
    one of its workers), read from /proc while it runs (a child's own rusage
    would count the memory of this process at the fork)."""
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-m", "carsim", *args, "--quiet", "--out", f"{folder}/out"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            while child.poll() is None:
                peak = max(peak, *_high_water_mib(child.pid).values(), 0.0)
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            if child.returncode != 0:
                raise SystemExit(f"carsim {' '.join(args)} failed: {child.stderr.read().decode()}")
            child.stderr.close()
            best = min(best, seconds)
    return {"command": "carsim " + " ".join(args), "seconds": round(best, 2), "peak_memory_mib": round(peak)}


def summary_seconds(scenario, n: int, repeats: int) -> dict:
    """The summary (intervals of every metric) of one simulated cohort of ``n``."""
    from carsim.analysis.summary import summarise
    from carsim.experiment.runner import run_experiment

    scenario = scenario.model_copy(update={
        "cohort": scenario.cohort.model_copy(update={"size": n}),
        "run": scenario.run.model_copy(update={"n_jobs": -1, "write_events": False})})
    result = run_experiment(scenario)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        summarise(result)
        best = min(best, time.perf_counter() - started)
    return {"patients": n, "seconds": round(best, 3)}


def targets(scenario, toy: dict, args) -> None:
    """The speed targets: each printed with the toy's seconds for 100,000
    patients in the same run, and the ratio (``toy_units``)."""
    toy_seconds = 100000 / toy["patients_per_s"]

    def show(name: str, row: dict) -> None:
        row["toy_units"] = round(row["seconds"] / toy_seconds, 2)
        row["load_average"] = load_average()  # others' work on the cores inflates the seconds, not the ratios
        print(json.dumps({name: row}), flush=True)

    baseline = "scenarios/baseline.yaml"
    for n in args.target_sizes:
        one = whole_command(["run", baseline, "--patients", str(n), "--n-jobs", "1"], args.repeats)
        two = whole_command(["run", baseline, "--patients", str(n), "--n-jobs", "2"], args.repeats)
        show("target_run_one_worker", one)
        two["speedup_vs_one_worker"] = round(one["seconds"] / two["seconds"], 2)
        show("target_run_two_workers", two)
    row = all_cores(scenario, 100000, "auto", 1)
    row["ratio_to_toy"] = round(row["trajectories_per_s"] / toy["patients_per_s"], 2)
    row["ratio_to_numpy_toy"] = round(row["trajectories_per_s"] / toy["numpy_patients_per_s"], 3)
    show("target_simulation_all_cores", row)
    show("target_summary", summary_seconds(scenario, 100000, args.repeats))
    if not args.skip_psa:
        show("target_psa", whole_command(["psa", baseline, "--draws", str(args.psa_draws), "--patients", "10000"]))
    show("target_trial", whole_command(["trial", "scenarios/trial_surveillance_hsct.yaml"]))
    print(json.dumps({"reference_toy_seconds_per_100k": round(toy_seconds, 3)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3, help="one-core timings per size; the best is shown")
    parser.add_argument("--small-cohorts", type=int, default=20,
                        help="replications of the smallest size advanced together (default 20)")
    parser.add_argument("--engine", default="auto", choices=("auto", "vectorised", "simpy"))
    parser.add_argument("--toy-patients", type=int, default=100000)
    parser.add_argument("--skip-run", action="store_true", help="skip timing the whole carsim run")
    parser.add_argument("--targets", action="store_true", help="only the targets (whole commands)")
    parser.add_argument("--target-sizes", type=int, nargs="+", default=[5000, 20000, 100000],
                        help="cohort sizes of `carsim run` with one and two workers (default 5000 20000 100000)")
    parser.add_argument("--psa-draws", type=int, default=1000)
    parser.add_argument("--skip-psa", action="store_true", help="skip the PSA target (minutes)")
    args = parser.parse_args()

    from reference_toy import run_toy, run_toy_numpy

    from carsim.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "baseline.yaml")
    toy = run_toy(args.toy_patients)
    numpy_toy = min((run_toy_numpy(args.toy_patients) for _ in range(3)), key=lambda row: row["seconds"])
    print(json.dumps({"reference_toy": {k: round(v, 3) if isinstance(v, float) else v for k, v in toy.items()},
                      "reference_toy_numpy": {k: round(v, 3) if isinstance(v, float) else v
                                              for k, v in numpy_toy.items()},
                      "load_average": load_average()}), flush=True)
    toy["numpy_patients_per_s"] = numpy_toy["patients_per_s"]
    if args.targets:
        targets(scenario, toy, args)
        return
    runs = [(n, 1) for n in args.sizes]
    if args.small_cohorts > 1:
        runs.insert(1, (min(args.sizes), args.small_cohorts))
    for n, replications in runs:
        row = one_core(scenario, n, args.engine, replications, args.repeats)
        row["ratio_to_toy"] = round(row["trajectories_per_s"] / toy["patients_per_s"], 2)
        row["ratio_to_numpy_toy"] = round(row["trajectories_per_s"] / toy["numpy_patients_per_s"], 3)
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
    targets(scenario, toy, args)


if __name__ == "__main__":
    main()
