"""Command line: ``carsim run SCENARIO``.

Errors the user can fix (a bad scenario, a bad option) print one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import __version__
from ._limits import MAX_PATIENTS
from .errors import CarsimError, display_path


def _whole_number(minimum: int, allow_minus_one: bool = False, what: str = "", maximum: int | None = None):
    """An argparse type: a whole number >= ``minimum`` (or -1 when allowed), at most ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum and not (allow_minus_one and value == -1):
            raise argparse.ArgumentTypeError(what or f"expected a number >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum:,}, got {value:,}")
        return value

    return parse


def _months(text: str) -> float:
    """An argparse type: a number of months (a finite number)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of months, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of months, got {text!r}")
    return value


_positive_int = _whole_number(1)
_patients = _whole_number(1, maximum=MAX_PATIENTS)
_non_negative_int = _whole_number(0)
_jobs = _whole_number(1, allow_minus_one=True, what="expected a positive number of jobs, or -1 for all cores")


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
    run.add_argument("--patients", type=_patients, help="cohort size (default from the scenario)")
    run.add_argument("--replications", type=_positive_int, help="replications (default from the scenario)")
    run.add_argument("--no-events", action="store_true", help="do not keep the per-event log (smaller output)")
    run.add_argument("--engine", choices=("auto", "vectorised", "simpy"),
                     help="simulation engine: auto (the array engine; default), "
                          "vectorised, or simpy (the reference)")
    run.add_argument("--time", type=_months, action="append", metavar="MONTHS",
                     help="also report survival and incidence at this many months (repeatable; any time within "
                          "follow-up; default run.report_times: 6, 12, 24, 36, 60)")
    run.add_argument("--quiet", action="store_true", help="print only the results folder")

    report = commands.add_parser("report", help="(re)build report.html for a results folder",
                                 description="Build report.html (one self-contained page: settings, key tables, "
                                             "figures, warnings and provenance) for a finished results folder of "
                                             "any study, from its files and manifest.json.")
    report.add_argument("folder", type=Path, help="results folder (with its manifest.json)")

    cal = commands.add_parser("calibrate", help="fit free parameters to published targets",
                              description="Fit the free parameters named in a calibration file to the published "
                                          "targets it maps, write the fitted parameter file and a report "
                                          "(report.md, report.csv, report.png): into a results folder, or over "
                                          "the tracked files the calibration file names with --write.")
    cal.add_argument("calibration", type=Path, help="calibration YAML file (e.g. calibration/eliana.yaml)")
    cal.add_argument("--patients", type=_patients, help="simulated patients per cohort (default from the file)")
    cal.add_argument("--n-jobs", type=_jobs, help="parallel workers (-1: all cores; default from the file)")
    cal.add_argument("--max-evaluations", type=_positive_int,
                     help="simulations per stage at most (default from the file; small values for a quick look)")
    where = cal.add_mutually_exclusive_group()
    where.add_argument("--write", action="store_true",
                       help="write the fitted file and report where the calibration file says (tracked files "
                            "that scenarios extend)")
    where.add_argument("--out", type=Path,
                       help="results folder for the fitted file and report (default "
                            "results/calibrate/<name>/<timestamp>/; the tracked files are left alone)")
    cal.add_argument("--quiet", action="store_true", help="no progress lines, only the closing summary")

    psa = commands.add_parser("psa", help="probabilistic sensitivity analysis over the scenario's distributions",
                              description="Draw every value with a 'distribution:', simulate every policy per draw "
                                          "(common random numbers within a draw); write psa_draws.csv, "
                                          "psa_parameters.csv, psa_summary, psa_probability_best, psa_incremental "
                                          "(CSV, Markdown, LaTeX) and psa_scatter.png. Finished chunks of draws are "
                                          "checkpointed: --resume DIR continues an interrupted run.")
    psa.add_argument("--draws", type=_positive_int, help="parameter draws (required unless --resume)")
    psa.add_argument("--resume", type=Path, metavar="DIR", help="continue the interrupted run in DIR")
    psa.add_argument("--keep-patients", action="store_true", default=None, help="also keep patient tables (large)")
    psa.add_argument("--chunk-size", type=_positive_int, help="draws per checkpoint (default: about 20 chunks)")
    dsa = commands.add_parser("dsa", help="one-way sensitivity analysis (tornado) over the uncertain values",
                              description="Set each value with a 'distribution:' to the low and high end of its "
                                          "interval, all runs on the same patients; write tornado (CSV, Markdown, "
                                          "LaTeX), tornado.png and dsa_runs.csv.")
    dsa.add_argument("--compare", metavar="POLICY[:REFERENCE]",
                     help="one policy's outcome, or POLICY minus REFERENCE (default: second minus first policy)")
    dsa.add_argument("--replication", type=_non_negative_int, default=0, help="replication all runs use (default 0)")
    for sub in (psa, dsa):
        sub.add_argument("scenario", type=Path, help="scenario YAML file")
    trial = commands.add_parser("trial", help="power and type I error of a simulated randomised trial",
                                description="Simulate a randomised trial of the policies named in a trial file "
                                            "(arms, accrual, sample sizes, follow-up, endpoint and test, assumption "
                                            "grid); write power (CSV, Markdown, LaTeX), trials.csv and power.png.")
    trial.add_argument("trial", type=Path, help="trial YAML file (e.g. scenarios/trial_surveillance_hsct.yaml)")
    trial.add_argument("--trials", type=_positive_int, help="simulated trials per row (default from the file)")
    gsa = commands.add_parser("gsa", help="global sensitivity analysis (Sobol' or Morris, SALib)",
                              description="Sample the values with a 'distribution:' by quantile (SALib), simulate "
                                          "each sample on the same patients and write the indices (gsa_indices: "
                                          "CSV, Markdown, LaTeX), gsa_samples.csv and gsa.png.")
    gsa.add_argument("scenario", type=Path, help="scenario YAML file")
    gsa.add_argument("--method", choices=("sobol", "morris"), default="sobol", help="default sobol")
    gsa.add_argument("--samples", type=_positive_int,
                     help="Sobol' base samples, a power of two (default 64; N x (k + 2) runs) or Morris "
                          "trajectories (default 20; N x (k + 1) runs)")
    gsa.add_argument("--parameters", metavar="PATH[,PATH...]", help="only these uncertain parameters (default all)")
    gsa.add_argument("--compare", metavar="POLICY[:REFERENCE]",
                     help="one policy's outcome, or POLICY minus REFERENCE (default: second minus first policy)")
    for sub in (psa, dsa, gsa):
        sub.add_argument("--outcome", default="os", help="metric (default os)")
        sub.add_argument("--time", type=_months, default=24, help="months, for survival metrics (default 24)")
        sub.add_argument("--origin", choices=("infusion", "enrollment"), help="time zero (default infusion)")
        sub.add_argument("--patients", type=_patients, help="patients per run (default: cohort.size)")
    for sub, kind in ((psa, "psa"), (dsa, "dsa"), (trial, "trial_<name>"), (gsa, "gsa")):
        sub.add_argument("--seed", type=_non_negative_int, help="master seed (default from the file)")
        sub.add_argument("--n-jobs", type=_jobs, help="parallel workers (-1: all cores; default from the scenario)")
        sub.add_argument("--engine", choices=("auto", "vectorised", "simpy"), help="simulation engine (run.engine)")
        sub.add_argument("--backend", choices=("loky", "dask"), default="loky", help="joblib backend (default loky)")
        sub.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://host:8786 (with --backend dask)")
        sub.add_argument("--out", type=Path, help=f"results folder (default results/<scenario>/{kind}/<timestamp>/)")
        sub.add_argument("--quiet", action="store_true", help="print only the results folder")
    return parser


def command_calibrate(args) -> int:
    from ._io import check_output_folder
    from .calibration.run import run_calibration
    from .experiment.output import default_output_dir

    out = None
    if not args.write:
        out = check_output_folder(args.out or default_output_dir(args.calibration.stem,
                                                                 root=Path("results") / "calibrate"))
    result = run_calibration(args.calibration, patients=args.patients, n_jobs=args.n_jobs,
                             max_evaluations=args.max_evaluations, command=sys.argv, out=out,
                             log=(lambda *_: None) if args.quiet else print)
    table = result["table"]
    fitted = table[(table.kind == "target") & table.fitted]
    print(f"{int(fitted.inside.sum())} of {len(fitted)} fitted targets inside their interval; "
          f"{int(table[table.kind == 'input recovered'].inside.sum())} of "
          f"{int((table.kind == 'input recovered').sum())} recovered inputs inside; "
          f"{result['seconds'] / 60:.1f} min")
    print(f"results: {display_path(result['folder'])}")
    return 0


def command_run(args) -> int:
    from ._io import check_output_folder
    from .experiment.output import default_output_dir, write_results
    from .experiment.runner import run_experiment
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
    if args.time:
        from .experiment.outcomes import report_times_with

        overrides["run.report_times"] = report_times_with(scenario, args.time)
        scenario = load_scenario(args.scenario, overrides)
    out_dir = check_output_folder(args.out or default_output_dir(scenario.name))
    result = run_experiment(scenario, progress=None if args.quiet else "simulating")
    economics = {}

    def economics_tables(result):
        if scenario.economics is None:
            return {}
        from .analysis.economics import economics_tables as tables

        economics.update(tables(result))
        return economics

    summary, _comparison, summary_seconds = write_results(out_dir, result, _summarise, _plot,
                                                          command=sys.argv, tables=economics_tables)
    if not args.quiet:
        from .analysis.report import policy_table

        print(f"carsim {__version__} | scenario {scenario.name} | {scenario.cohort.size} patients x "
              f"{scenario.run.replications} replication(s) | seed {scenario.run.seed}")
        print(f"95% Monte Carlo intervals in brackets; reference policy: {result.policies[0]}\n")
        print(policy_table(summary, result.policies))
        if economics:
            from .analysis.economics import economics_lines

            print()
            print("\n".join(economics_lines(economics["economics"], scenario.economics)))
        print(f"\nsimulated in {result.timings['simulate_seconds']:.1f} s on {result.timings['workers']} worker(s) "
              f"({result.timings['engine']} engine); "
              f"summarised in {summary_seconds:.1f} s")
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"results: {out_dir}")
    return 0


def command_report(args) -> int:
    from .experiment.manifest import rebuild_report

    print(f"report: {rebuild_report(args.folder)}")
    return 0


def _summarise(result):
    # Imported only once the figure is being drawn beside the summary: the
    # summary's imports (pandas) then overlap with the drawing.
    from .analysis.summary import summarise

    return summarise(result)


def _plot(result, name, path):
    # Imported in the process that draws the figures (see write_results).
    from .analysis import plots

    {"survival.png": plots.plot_survival, "relapse_incidence.png": plots.plot_relapse_incidence}[name](result, path)


# command -> (module, function), imported only when the command runs (start-up stays fast)
COMMANDS = {
    "run": (__name__, "command_run"),
    "report": (__name__, "command_report"),
    "calibrate": (__name__, "command_calibrate"),
    "psa": ("carsim.experiment.psa.command", "command_psa"),
    "dsa": ("carsim.experiment.dsa", "command_dsa"),
    "trial": ("carsim.experiment.trial.command", "command_trial"),
    "gsa": ("carsim.experiment.gsa", "command_gsa"),
}


def main(argv=None) -> int:
    import importlib

    parser = build_parser()
    args = parser.parse_args(argv)
    module, function = COMMANDS[args.command]
    try:
        return getattr(importlib.import_module(module), function)(args)
    except CarsimError as exc:
        print(f"carsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("carsim: interrupted", file=sys.stderr)
        return 130


def console_main() -> int:
    """The ``carsim`` command: :func:`main`, then a quick exit."""
    import gc

    status = main()
    # The interpreter's last garbage collection walks every object the
    # libraries made (about 0.3 s after pandas and SciPy); the process is
    # ending, so skip it.  Not in main(): callers in a long-lived process
    # (tests, notebooks) must keep collecting.
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(console_main())
