"""Command line: ``carsim run SCENARIO``.

Errors the user can fix (a bad scenario, a bad option) print one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .errors import CarsimError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError("expected a positive number of jobs, or -1 for all cores")
    return value


class _Parser(argparse.ArgumentParser):
    """Option errors as one line (exit status 2), like scenario errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="carsim",
        description="Discrete-event simulation of CD19 CAR T-cell therapy pathways for r/r B-ALL.",
    )
    parser.add_argument("--version", action="version", version=f"carsim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="simulate a scenario and compare its policies",
                              description="Simulate a scenario under each of its policies and write a results "
                                          "folder (summary.csv, comparison.csv, patients.parquet, events.parquet, "
                                          "survival.png, manifest.json).")
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("--out", type=Path, help="results folder (default results/<scenario>/<timestamp>/)")
    run.add_argument("--n-jobs", type=_jobs, help="parallel workers (-1: all cores; default from the scenario)")
    run.add_argument("--seed", type=_non_negative_int, help="master seed (default from the scenario)")
    run.add_argument("--patients", type=_positive_int, help="cohort size (default from the scenario)")
    run.add_argument("--replications", type=_positive_int, help="replications (default from the scenario)")
    run.add_argument("--no-events", action="store_true", help="do not keep the per-event log (smaller output)")
    run.add_argument("--engine", choices=("auto", "vectorised", "simpy"),
                     help="simulation engine: auto (vectorised, SimPy where transplant beds queue; default), "
                          "vectorised, or simpy (the reference)")
    run.add_argument("--quiet", action="store_true", help="print only the results folder")

    cal = commands.add_parser("calibrate", help="fit free parameters to published targets",
                              description="Fit the free parameters named in a calibration file to the published "
                                          "targets it maps, write the fitted parameter file and a report "
                                          "(report.md, report.csv, report.png).")
    cal.add_argument("calibration", type=Path, help="calibration YAML file (e.g. calibration/eliana.yaml)")
    cal.add_argument("--patients", type=_positive_int, help="simulated patients per cohort (default from the file)")
    cal.add_argument("--n-jobs", type=_jobs, help="parallel workers (-1: all cores; default from the file)")
    cal.add_argument("--max-evaluations", type=_positive_int,
                     help="simulations per stage at most (default from the file; small values for a quick look)")
    from .experiment import dsa, psa

    psa.add_parser(commands)
    dsa.add_parser(commands)
    return parser


def command_calibrate(args) -> int:
    from .calibration.run import run_calibration

    result = run_calibration(args.calibration, patients=args.patients, n_jobs=args.n_jobs,
                             max_evaluations=args.max_evaluations)
    table = result["table"]
    fitted = table[(table.kind == "target") & table.fitted]
    print(f"{int(fitted.inside.sum())} of {len(fitted)} fitted targets inside their interval; "
          f"{int(table[table.kind == 'input recovered'].inside.sum())} of "
          f"{int((table.kind == 'input recovered').sum())} recovered inputs inside; "
          f"{result['seconds'] / 60:.1f} min")
    return 0


def _progress_printer(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="simulating", unit="task", file=sys.stderr, leave=False)

    def step(task):
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return step


def command_run(args) -> int:
    from .analysis.report import policy_table
    from .analysis.summary import summarise
    from .experiment.output import default_output_dir, write_results
    from .experiment.runner import plan_tasks, run_experiment
    from .model.definition import ModelDefinition
    from .scenario import load_scenario

    overrides = {}
    if args.patients is not None:
        overrides["cohort.size"] = args.patients
    if args.replications is not None:
        overrides["run.replications"] = args.replications
    if args.seed is not None:
        overrides["run.seed"] = args.seed
    if args.n_jobs is not None:
        overrides["run.n_jobs"] = args.n_jobs
    if args.no_events:
        overrides["run.write_events"] = False
    if args.engine is not None:
        overrides["run.engine"] = args.engine
    scenario = load_scenario(args.scenario, overrides)
    out_dir = args.out or default_output_dir(scenario.name)
    model = ModelDefinition(scenario)
    n_tasks = len(plan_tasks(model, scenario.policy_names, scenario.run.replications, scenario.cohort.size,
                             scenario.run.n_jobs, scenario.run.engine))
    show_progress = sys.stderr.isatty() and not args.quiet
    result = run_experiment(scenario, progress=_progress_printer(n_tasks, show_progress))
    started = time.perf_counter()
    summary, comparison = summarise(result)
    summary_seconds = time.perf_counter() - started
    write_results(out_dir, result, summary, comparison, summary_seconds, command=sys.argv)
    if not args.quiet:
        print(f"carsim {__version__} | scenario {scenario.name} | {scenario.cohort.size} patients x "
              f"{scenario.run.replications} replication(s) | seed {scenario.run.seed}")
        print(f"95% Monte Carlo intervals in brackets; reference policy: {result.policies[0]}\n")
        print(policy_table(summary, result.policies))
        print(f"\nsimulated in {result.timings['simulate_seconds']:.1f} s on {result.timings['workers']} worker(s) "
              f"({result.timings['engine']} engine); "
              f"summarised in {summary_seconds:.1f} s")
    print(f"results: {out_dir}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "calibrate":
            return command_calibrate(args)
        if args.command == "psa":
            from .experiment.psa import command_psa

            return command_psa(args)
        if args.command == "dsa":
            from .experiment.dsa import command_dsa

            return command_dsa(args)
    except CarsimError as exc:
        print(f"carsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("carsim: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
