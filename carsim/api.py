"""The Python API, for notebooks and scripts: the commands of the ``carsim``
command line as functions that return their results.

    import carsim
    scenario = carsim.load("scenarios/baseline.yaml", patients=500)
    r = carsim.run(scenario)
    r.summary.head()          # the rows of summary.csv
    r.plot_survival()         # a matplotlib Figure
    tornado = carsim.dsa("scenarios/baseline.yaml", patients=300).tornado

Each function calls the command the command line runs (the same argument
parser, defaults and checks, the same code writing the same results folder,
``report.html`` included) and reads the folder back with
:func:`read_results`.  Options are the command line's, as keyword arguments
(``n_jobs=2`` for ``--n-jobs 2``; ``True`` for a flag; a list for an option
given several times).  Mistakes raise :class:`~carsim.errors.CarsimError`
with the one-line message the command line prints.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from functools import cached_property
from pathlib import Path

from .errors import CarsimError

# load() keywords that name a scenario value (other keywords: dotted paths with '__' for '.')
SCENARIO_KEYWORDS = {"patients": "cohort.size", "seed": "run.seed", "replications": "run.replications",
                     "n_jobs": "run.n_jobs", "engine": "run.engine", "horizon_years": "run.horizon_years",
                     "report_times": "run.report_times", "policies": "run.policies"}


def load(path, **overrides):
    """The validated :class:`~carsim.scenario.schema.Scenario` in the file
    ``path``, with ``overrides``: ``patients``, ``seed``, ``replications``,
    ``n_jobs``, ``engine``, ``horizon_years``, ``report_times``, ``policies``,
    or any value by its key path with ``__`` for ``.``
    (``pathway__hsct__transplant_related_death__value=0.09``)."""
    from .scenario import load_scenario

    dotted = {SCENARIO_KEYWORDS.get(key, key.replace("__", ".")): value for key, value in overrides.items()}
    return load_scenario(path, dotted or None)


def _argv(command: str, target, options: dict) -> list[str]:
    argv = [command, str(target)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def _call(command: str, target, out, options: dict) -> Path:
    """Run ``carsim COMMAND TARGET --option value ...`` in this process (the
    command line's parser and command function), quietly; return the folder."""
    import importlib

    from .cli import COMMANDS, build_parser
    from .experiment.output import default_output_dir

    with contextlib.ExitStack() as stack:
        if not isinstance(target, (str, Path)):  # a Scenario object: its resolved form, in a file
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="carsim-")))
            target = _scenario_file(target, folder)
            if out is None:
                out = default_output_dir(target.stem) if command == "run" else \
                    default_output_dir(command, root=Path("results") / target.stem)
        argv = _argv(command, target, {**options, "out": out, "quiet": True})
        parser = build_parser()
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()) as errors:
                args = parser.parse_args(argv)
        except SystemExit:
            message = errors.getvalue().strip().splitlines()
            raise CarsimError(message[-1].split("error: ", 1)[-1] if message else f"bad options {argv}") from None
        module, function = COMMANDS[command]
        with contextlib.redirect_stdout(printed):
            getattr(importlib.import_module(module), function)(args)
    folders = [line.removeprefix("results: ") for line in printed.getvalue().splitlines()
               if line.startswith("results: ")]
    return Path(folders[-1])


def _scenario_file(scenario, folder: Path) -> Path:
    import yaml

    path = folder / f"{scenario.name}.yaml"
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    if data.get("run", {}).pop("lifetime", False):
        data["run"]["horizon_years"] = "lifetime"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run(scenario, *, patients=None, seed=None, replications=None, n_jobs=None, engine=None, time=None,
        no_events: bool = False, out=None) -> Results:
    """``carsim run``: simulate ``scenario`` (a path, or a scenario from
    :func:`load`) under each of its policies; ``time``: extra report times in
    months (a number or a list).  Returns its :class:`Results`."""
    time = [time] if isinstance(time, (int, float)) else time
    return read_results(_call("run", scenario, out, {
        "patients": patients, "seed": seed, "replications": replications, "n_jobs": n_jobs, "engine": engine,
        "time": time, "no_events": no_events}))


def psa(scenario, *, draws: int, out=None, **options) -> StudyResults:
    """``carsim psa``: probabilistic sensitivity analysis (options as the
    command line's: ``patients``, ``seed``, ``outcome``, ``time``, ``n_jobs`` ...)."""
    return read_results(_call("psa", scenario, out, {"draws": draws, **options}))


def dsa(scenario, *, out=None, **options) -> StudyResults:
    """``carsim dsa``: one-way sensitivity analysis; ``.tornado`` is its table."""
    return read_results(_call("dsa", scenario, out, options))


def gsa(scenario, *, out=None, **options) -> StudyResults:
    """``carsim gsa``: global sensitivity analysis; ``.gsa_indices`` is its table."""
    return read_results(_call("gsa", scenario, out, options))


def trial(path, *, out=None, **options) -> StudyResults:
    """``carsim trial``: a simulated randomised trial; ``.power`` is its table."""
    return read_results(_call("trial", path, out, options))


def calibrate(path, *, write: bool = False, out=None, **options) -> StudyResults:
    """``carsim calibrate``: fit a calibration file (options as the command
    line's: ``patients``, ``max_evaluations``, ``n_jobs``).  ``write=True``
    writes the tracked fitted file and report (as ``--write``); otherwise they
    go to ``out`` (default ``results/calibrate/<name>/<timestamp>/``).
    ``.report`` is the table of targets and recovered inputs."""
    return read_results(_call("calibrate", path, out, {"write": write, **options}))


def read_results(folder) -> StudyResults:
    """A finished results folder of any study, read back: a :class:`Results`
    for ``carsim run``, a :class:`StudyResults` otherwise."""
    from .experiment.manifest import read

    folder = Path(folder)
    manifest = read(folder)
    return (Results if manifest["study"] == "run" else StudyResults)(folder, manifest)


class StudyResults:
    """A results folder: its ``manifest``, its tables (each CSV file as a
    DataFrame, by name: ``r.tables["tornado"]`` or ``r.tornado``), its
    ``figures`` and its page (:meth:`to_html`)."""

    def __init__(self, folder, manifest: dict | None = None):
        from .experiment.manifest import read

        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else read(self.folder)
        self.study = self.manifest["study"]

    def __repr__(self) -> str:
        return f"<carsim {self.study} results of {self.manifest.get('scenario')!r} in {self.folder}>"

    @cached_property
    def tables(self) -> dict:
        import pandas as pd

        return {path.stem: pd.read_csv(path) for path in sorted(self.folder.glob("*.csv"))}

    def __getattr__(self, name):
        if name.startswith("_") or name in ("folder", "manifest", "study"):
            raise AttributeError(name)
        tables = self.tables
        if name in tables:
            return tables[name]
        raise AttributeError(f"{type(self).__name__} has no {name!r}; tables: {', '.join(tables)}")

    @property
    def figures(self) -> list[Path]:
        return [self.folder / f for f in self.manifest.get("files", []) if f.endswith(".png")]

    @property
    def warnings(self) -> list[str]:
        return list(self.manifest.get("warnings", []))

    def to_html(self) -> str:
        """The folder's page (``report.html``): self-contained HTML."""
        from .experiment.html_report import build_report

        return build_report(self.folder, self.manifest)

    def _repr_html_(self) -> str:
        return self.to_html()


class Results(StudyResults):
    """The results of ``carsim run``: ``summary`` and ``comparison`` (as in
    the CSV files), ``patients`` and ``events`` (the Parquet tables),
    ``economics`` (priced scenarios), figures drawn on demand."""

    @property
    def summary(self):
        return self.tables["summary"]

    @property
    def comparison(self):
        return self.tables["comparison"]

    @property
    def economics(self):
        return self.tables.get("economics")

    @cached_property
    def patients(self):
        import pandas as pd

        return pd.read_parquet(self.folder / "patients.parquet")

    @cached_property
    def events(self):
        import pandas as pd

        return pd.read_parquet(self.folder / "events.parquet")

    @cached_property
    def scenario(self):
        from .scenario.schema import Scenario

        return Scenario.model_validate(self.manifest["resolved_scenario"])

    def plot_survival(self, origin: str = "infusion"):
        """EFS and OS Kaplan-Meier curves with 95% bands and numbers at risk (a matplotlib Figure)."""
        from .analysis.plots import survival_figure

        return survival_figure(_PatientTable(self), origin)

    def plot_relapse_incidence(self, origin: str = "infusion"):
        """Cumulative incidence of relapse by phenotype, stacked (a matplotlib Figure)."""
        from .analysis.plots import relapse_incidence_figure

        return relapse_incidence_figure(_PatientTable(self), origin)


class _PatientTable:
    """A run's patient table as the figures read a simulated result: one
    (policy, replication) group of columns at a time."""

    def __init__(self, results: Results):
        self.scenario = results.scenario
        self.policies = list(results.manifest["policies"])
        self.replications = int(results.manifest["replications"])
        self.n_patients = int(results.manifest["patients"])
        self._frame = results.patients

    def group(self, policy: str, replication: int) -> dict:
        import numpy as np

        rows = self._frame[(self._frame["policy"] == policy) & (self._frame["replication"] == replication)]
        return {name: rows[name].to_numpy() if rows[name].dtype != object else np.asarray(rows[name], dtype=object)
                for name in rows.columns}
