"""One-way (deterministic) sensitivity analysis: ``carsim dsa SCENARIO``.

Each uncertain parameter (a value with a ``distribution:``) is set in turn
to the low and the high end of its interval (the stated 95% CI, else the
2.5% and 97.5% quantiles) with every other value at its point estimate.
Every run - the base case and each low and high - uses the same replication,
so the same virtual patients and random numbers (common random numbers): a
swing is the parameter's effect, not Monte Carlo noise.

The outcome is one metric of one policy, or the difference between two
policies (``--compare A:B`` is A minus B).  Results: ``tornado`` (CSV,
Markdown, LaTeX; sorted by swing), ``tornado.png``, ``dsa_runs.csv`` (every
metric of every run) and ``manifest.json`` (last).
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from .._io import atomic_write, check_output_folder
from ..errors import CarsimError
from ..scenario.parameters import apply_values, uncertain_parameters
from ..scenario.schema import Scenario
from .evaluate import evaluate_policies
from .manifest import Manifest, clear
from .outcomes import Outcome, load_with_outcome
from .parallel import parallel_map

TORNADO_COLUMNS = ["parameter", "low_value", "base_value", "high_value", "outcome_low", "outcome_base",
                   "outcome_high", "swing"]
RUN_COLUMNS = ["parameter", "level", "parameter_value", "policy", "metric", "origin", "time_months", "value", "n"]


def parse_compare(text: str | None, scenario: Scenario) -> tuple[str, ...]:
    """``A:B`` (A minus B) or ``A`` (one policy); default: the second policy
    minus the reference (the first), or the only policy."""
    names = list(scenario.policy_names)
    if text is None:
        return (names[1], names[0]) if len(names) > 1 else (names[0],)
    parts = tuple(part.strip() for part in text.split(":"))
    if len(parts) not in (1, 2) or not all(parts):
        raise CarsimError(f"--compare {text!r}: expected POLICY or POLICY:REFERENCE")
    for part in parts:
        if part not in scenario.policies:
            raise CarsimError(f"--compare: unknown policy {part!r}; the scenario has: "
                              f"{', '.join(scenario.policies)}")
    if len(parts) == 2 and parts[0] == parts[1]:
        raise CarsimError(f"--compare {text!r}: compare two different policies")
    return parts


def only_policies(scenario: Scenario, policies: tuple[str, ...]) -> Scenario:
    """The scenario running only ``policies`` (each policy's results do not
    depend on which others run: common random numbers)."""
    data = scenario.model_dump(by_alias=True, exclude_none=True)
    data.setdefault("run", {})["policies"] = list(dict.fromkeys(policies))
    return Scenario.model_validate(data)


def outcome_value(rows: pd.DataFrame, outcome: Outcome, compare: tuple[str, ...]) -> float:
    """The outcome of ``compare[0]``, minus that of ``compare[1]`` if given."""
    selected = outcome.rows(rows).set_index("policy")["value"]
    value = float(selected.get(compare[0], np.nan))
    if len(compare) == 2:
        value -= float(selected.get(compare[1], np.nan))
    return value


def _evaluate(task: tuple, scenario: Scenario, replication: int, seed: int, n_patients: int) -> list[tuple]:
    path, _level, value = task
    run = scenario if path is None else apply_values(scenario, {path: value})
    return evaluate_policies(run, replication, seed, n_patients)


@dataclass
class DsaResult:
    outcome: Outcome
    compare: tuple
    base: float
    tornado: pd.DataFrame
    runs: pd.DataFrame
    timings: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        what = f"{self.compare[0]} - {self.compare[1]}" if len(self.compare) == 2 else self.compare[0]
        return f"{self.outcome.label}, {what}"


def run_dsa(scenario: Scenario, outcome: Outcome, compare: tuple[str, ...] | None = None, *,
            n_patients: int | None = None, seed: int | None = None, replication: int = 0,
            n_jobs: int | None = None, progress: bool = True) -> DsaResult:
    """One-way analysis over every uncertain parameter (see the module doc)."""
    parameters = uncertain_parameters(scenario)
    if not parameters:
        raise CarsimError(f"scenario {scenario.name!r}: no value has a distribution:, nothing to vary")
    compare = tuple(compare) if compare else parse_compare(None, scenario)
    seed = scenario.run.seed if seed is None else int(seed)
    n_patients = scenario.cohort.size if n_patients is None else int(n_patients)
    n_jobs = scenario.run.n_jobs if n_jobs is None else n_jobs
    narrowed = only_policies(scenario, compare)
    tasks = [(None, "base", np.nan)]
    for p in parameters:
        low, high = p.interval()
        tasks += [(p.path, "low", low), (p.path, "high", high)]
    for path, level, value in tasks[1:]:
        try:
            apply_values(narrowed, {path: value})
        except ValidationError as exc:
            raise CarsimError(f"{path}: its {level} value {value:g} is invalid ({exc.errors()[0]['msg']})") from None
    started = time.perf_counter()
    worker = functools.partial(_evaluate, scenario=narrowed, replication=replication, seed=seed,
                               n_patients=n_patients)
    results = parallel_map(worker, tasks, n_jobs=n_jobs, progress="DSA runs" if progress else None)
    seconds = time.perf_counter() - started

    frames = []
    for (path, level, value), rows in zip(tasks, results, strict=True):
        frame = pd.DataFrame(rows, columns=RUN_COLUMNS[3:])
        frame.insert(0, "parameter", path or "")
        frame.insert(1, "level", level)
        frame.insert(2, "parameter_value", float(value))
        frames.append(frame)
    runs = pd.concat(frames, ignore_index=True)
    base = outcome_value(frames[0], outcome, compare)
    records = []
    for i, p in enumerate(parameters):
        low, high = tasks[1 + 2 * i][2], tasks[2 + 2 * i][2]
        at_low = outcome_value(frames[1 + 2 * i], outcome, compare)
        at_high = outcome_value(frames[2 + 2 * i], outcome, compare)
        records.append({"parameter": p.path, "low_value": low, "base_value": p.point, "high_value": high,
                        "outcome_low": at_low, "outcome_base": base, "outcome_high": at_high,
                        "swing": abs(at_high - at_low)})
    tornado = pd.DataFrame(records, columns=TORNADO_COLUMNS)
    tornado = tornado.sort_values("swing", ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    return DsaResult(outcome, compare, base, tornado, runs,
                     {"simulate_seconds": round(seconds, 3), "runs": len(tasks), "patients": n_patients,
                      "seed": seed, "replication": replication})


def write_dsa(out, result: DsaResult, scenario: Scenario, command=None) -> Path:
    from .sensitivity_plots import plot_tornado
    from .tables import write_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clear(out)
    atomic_write(out / "dsa_runs.csv", lambda p: result.runs.to_csv(p, index=False))
    write_table(result.tornado, out, "tornado")
    atomic_write(out / "tornado.png", lambda p: plot_tornado(result.tornado, f"{result.label} ({result.outcome.unit})",
                                                                  result.base, p))
    t = result.timings
    outcome = {"metric": result.outcome.metric, "origin": result.outcome.origin,
               "time_months": result.outcome.time_months, "label": result.label}
    Manifest(
        "dsa", scenario, t["seed"],
        settings={"patients": t["patients"], "replication": t["replication"], "runs": t["runs"],
                  "engine": scenario.run.engine, "outcome": outcome, "compare": list(result.compare)},
        files=["dsa_runs.csv", "tornado.csv", "tornado.md", "tornado.tex", "tornado.png"],
        timings={"simulate_seconds": t["simulate_seconds"]}, command=command,
        extra={"analysis": "dsa", "outcome": outcome, "compare": list(result.compare), "base": result.base,
               "simulate_seconds": t["simulate_seconds"], "runs": t["runs"], "patients": t["patients"],
               "replication": t["replication"]},
    ).write(out)
    return out


# --------------------------------------------------------------------- CLI
def command_dsa(args) -> int:
    from .output import default_output_dir
    from .parallel import backend_context

    if args.scheduler and args.backend != "dask":
        raise CarsimError("--scheduler needs --backend dask")
    scenario, outcome = load_with_outcome(args.scenario, args.outcome, args.time, args.origin,
                                          {"run.engine": args.engine} if args.engine else None)
    compare = parse_compare(args.compare, scenario)
    n_jobs = scenario.run.n_jobs if args.n_jobs is None else args.n_jobs
    out = check_output_folder(args.out or default_output_dir("dsa", root=Path("results") / scenario.name))
    with backend_context(args.backend, args.scheduler, n_jobs):
        result = run_dsa(scenario, outcome, compare, n_patients=args.patients, seed=args.seed,
                         replication=args.replication, n_jobs=n_jobs, progress=not args.quiet)
    write_dsa(out, result, scenario, command=sys.argv)
    if not args.quiet:
        shown = result.tornado.copy()
        shown["parameter"] = shown["parameter"].str.removeprefix("pathway.")
        print(f"one-way sensitivity: {result.label}; base case {result.base:.4f} "
              f"({result.timings['patients']} patients, replication {result.timings['replication']}, "
              f"seed {result.timings['seed']})")
        print(shown.drop(columns=["outcome_base"]).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"results: {out}")
    return 0
