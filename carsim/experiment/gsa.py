"""Global sensitivity analysis (SALib): Sobol' indices or Morris screening
over a scenario's uncertain parameters.

The chain is the one every sensitivity analysis here uses: SALib samples
*probabilities* (each parameter's problem bounds are [0, 1]), each column is
mapped through the parameter's quantile function (``ppf``), the values are
applied to the scenario and evaluated with :func:`evaluate_policies` (common
random numbers: the same replication, so the same virtual patients, for every
sample), and SALib analyses the outputs.  Because the indices are computed on
the probability scale, they are the indices of the parameters themselves
(the quantile map is monotone and one-to-one).

:func:`run_gsa` takes the evaluation as a parameter, so the same sampling,
mapping and analysis code is tested on the Ishigami function, whose indices
are known exactly.

Sobol': Saltelli's scheme (scrambled Sobol' sequence), ``samples`` base
points (a power of two), ``samples * (k + 2)`` evaluations; first-order
(S1) and total (ST) indices with 95% bootstrap intervals.  Morris:
``samples`` trajectories of ``k + 1`` evaluations on a 4-level grid; mu*
(mean absolute elementary effect, with a 95% bootstrap interval), sigma
and mu.  Morris levels span the central 95% of each distribution
(probabilities 0.025 to 0.975): the 0 and 100% quantiles of an unbounded
distribution are infinite.  Elementary effects are output changes per unit
of that sampled range (SALib's convention: a step of 2/3 of the range).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import check_output_folder
from ..errors import CarsimError
from ..scenario.parameters import UncertainParameter, apply_values, uncertain_parameters, values_at_quantiles
from ..scenario.schema import Scenario
from .evaluate import evaluate_policies
from .outcomes import Outcome, load_with_outcome
from .parallel import backend_context, parallel_map
from .readable import shown_indices

METHODS = ("sobol", "morris")
MORRIS_LEVELS = 4
MORRIS_RANGE = (0.025, 0.975)
_EDGE = 1e-9  # probabilities are kept inside (0, 1): quantiles at 0 or 1 can be infinite


class GsaError(CarsimError):
    pass


@dataclass(frozen=True)
class UniformParameter:
    """A parameter uniform on [low, high] (for toy problems and tests)."""

    path: str
    low: float
    high: float

    def ppf(self, q):
        return self.low + np.asarray(q, dtype=float) * (self.high - self.low)


@dataclass
class GsaResult:
    method: str
    parameters: list[str]
    indices: pd.DataFrame  # one row per factor (a parameter, or parameters drawn together)
    uniforms: np.ndarray  # (evaluations, k): the probabilities SALib sampled
    values: np.ndarray  # (evaluations, k): the parameter values
    outputs: np.ndarray  # (evaluations,)
    timings: dict = field(default_factory=dict)

    def samples_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.uniforms, columns=[f"u:{p}" for p in self.parameters])
        for j, p in enumerate(self.parameters):
            frame[p] = self.values[:, j]
        frame["output"] = self.outputs
        return frame


def salib_problem(parameters: Sequence) -> dict:
    return {"num_vars": len(parameters), "names": [p.path for p in parameters],
            "bounds": [[0.0, 1.0]] * len(parameters)}


def run_gsa(problem_parameters: Sequence, evaluate: Callable[[dict], float], method: str = "sobol",
            samples: int = 64, seed: int = 0, n_jobs: int = 1, progress: str | None = None,
            confidence_resamples: int = 200) -> GsaResult:
    """Sample, map through each parameter's ``ppf``, evaluate, analyse.

    ``problem_parameters``: objects with ``path`` and ``ppf(probabilities)``
    (e.g. :class:`~carsim.scenario.parameters.UncertainParameter`).
    ``evaluate({path: value}) -> float`` is called once per sample, in
    parallel through :func:`parallel_map` (results in sample order, so they
    do not depend on ``n_jobs``)."""
    from SALib.analyze import morris as morris_analyze
    from SALib.analyze import sobol as sobol_analyze
    from SALib.sample import morris as morris_sample
    from SALib.sample import sobol as sobol_sample

    if method not in METHODS:
        raise GsaError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    parameters = list(problem_parameters)
    if not parameters:
        raise GsaError("no parameters to analyse")
    names = [p.path for p in parameters]
    if len(set(names)) != len(names):
        raise GsaError("parameter paths must be distinct")
    problem = salib_problem(parameters)
    # Parameters read from one stream (the calibration's joint draws) are one
    # factor: SALib moves them together and they read one uniform (one row).
    streams = [getattr(p, "stream", None) or p.path for p in parameters]
    factors = list(dict.fromkeys(streams))
    if len(factors) < len(streams):
        problem["groups"] = streams
    started = time.perf_counter()
    if method == "sobol":
        if samples < 2 or samples & (samples - 1):
            raise GsaError(f"Sobol' needs a power of two base samples (e.g. 64, 256, 1024), got {samples}")
        uniforms = sobol_sample.sample(problem, samples, calc_second_order=False, scramble=True, seed=seed)
    else:
        if samples < 2:
            raise GsaError(f"Morris needs at least 2 trajectories, got {samples}")
        lo, hi = MORRIS_RANGE
        unit = morris_sample.sample(problem, samples, num_levels=MORRIS_LEVELS, seed=seed)
        uniforms = lo + (hi - lo) * unit
    uniforms = np.clip(uniforms, _EDGE, 1 - _EDGE)
    for factor in factors:
        members = [j for j, stream in enumerate(streams) if stream == factor]
        uniforms[:, members[1:]] = uniforms[:, [members[0]]]
    values = values_at_quantiles(parameters, uniforms)
    draws = [dict(zip(names, (float(x) for x in row), strict=True)) for row in values]
    outputs = np.asarray(parallel_map(evaluate, draws, n_jobs=n_jobs, progress=progress), dtype=float)
    evaluated = time.perf_counter() - started
    if not np.isfinite(outputs).all():
        bad = int((~np.isfinite(outputs)).sum())
        raise GsaError(f"{bad} of {outputs.size} evaluations gave no value (NaN); the outcome may be "
                       "undefined (e.g. a survival time beyond follow-up, or too few patients)")
    if method == "sobol":
        found = sobol_analyze.analyze(problem, outputs, calc_second_order=False, num_resamples=confidence_resamples,
                                      conf_level=0.95, print_to_console=False, seed=seed)
        indices = pd.DataFrame({
            "parameter": factors,
            "S1": found["S1"], "S1_lower": found["S1"] - found["S1_conf"], "S1_upper": found["S1"] + found["S1_conf"],
            "ST": found["ST"], "ST_lower": found["ST"] - found["ST_conf"], "ST_upper": found["ST"] + found["ST_conf"],
        })
    else:
        found = morris_analyze.analyze(problem, unit, outputs, num_resamples=confidence_resamples, conf_level=0.95,
                                       print_to_console=False, num_levels=MORRIS_LEVELS, seed=seed)
        mu_star = np.asarray(found["mu_star"], dtype=float)
        conf = np.asarray(found["mu_star_conf"], dtype=float)
        indices = pd.DataFrame({
            "parameter": factors, "mu_star": mu_star, "mu_star_lower": mu_star - conf, "mu_star_upper": mu_star + conf,
            "sigma": np.asarray(found["sigma"], dtype=float), "mu": np.asarray(found["mu"], dtype=float),
        })
    return GsaResult(method, names, indices, uniforms, values, outputs,
                     {"evaluate_seconds": round(evaluated, 3), "evaluations": int(outputs.size),
                      "analyse_seconds": round(time.perf_counter() - started - evaluated, 3)})


# ------------------------------------------------------------------ the model as the evaluation


@dataclass(frozen=True)
class PolicyOutcome:
    """One number from :func:`evaluate_policies`: ``outcome`` of ``compare[0]``,
    minus that of ``compare[1]`` when given (same patients: common random
    numbers).  Every call uses replication ``replication`` with ``seed``."""

    scenario: Scenario
    outcome: Outcome
    compare: tuple[str, ...]
    n_patients: int | None = None
    replication: int = 0
    seed: int | None = None

    def __call__(self, values: dict) -> float:
        scenario = apply_values(self.scenario, values) if values else self.scenario
        rows = evaluate_policies(scenario, self.replication, self.seed, self.n_patients)
        value = self.pick(rows, self.compare[0])
        if len(self.compare) == 2:
            value -= self.pick(rows, self.compare[1])
        return value

    def pick(self, rows, policy: str) -> float:
        o = self.outcome
        for p, metric, origin, time_months, value, _n in rows:
            if p == policy and metric == o.metric and origin == o.origin and (
                    o.time_months is None or abs(time_months - o.time_months) < 1e-9):
                return float(value)
        raise GsaError(f"no {o.label} for policy {policy!r}")

    @property
    def label(self) -> str:
        what = f"{self.compare[0]} - {self.compare[1]}" if len(self.compare) == 2 else self.compare[0]
        return f"{self.outcome.label}, {what}"


def select_parameters(scenario: Scenario, wanted: Sequence[str] | None) -> list[UncertainParameter]:
    """The scenario's uncertain parameters, or those named (exact paths)."""
    available = uncertain_parameters(scenario)
    if not available:
        raise GsaError(f"scenario {scenario.name!r} has no uncertain parameters (values with 'distribution:')")
    if not wanted:
        return available
    by_path = {p.path: p for p in available}
    unknown = [w for w in wanted if w not in by_path]
    if unknown:
        raise GsaError(f"--parameters: {unknown[0]!r} is not an uncertain parameter of {scenario.name!r}; "
                       f"expected one of: {', '.join(by_path)}")
    return [by_path[w] for w in dict.fromkeys(wanted)]


def _error_bars(value, lower, upper) -> np.ndarray:
    """(2, n) distances below and above each value, as arrays (matplotlib reads a one-row Series badly)."""
    value = np.asarray(value, dtype=float)
    return np.array([value - np.asarray(lower, dtype=float), np.asarray(upper, dtype=float) - value])


def plot_indices(result: GsaResult, path, title: str = "", unit: str = "outcome units") -> None:
    """Horizontal bars: S1 and ST (Sobol') or mu* (Morris), with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    t = shown_indices(result.indices) if result.method == "sobol" else result.indices
    k = len(t)
    figure = Figure(figsize=(8, 1.2 + 0.5 * k), dpi=110)
    ax = figure.subplots()
    y = np.arange(k)
    labels = [p.removeprefix("pathway.").removeprefix("surveillance.") for p in t.parameter]
    if result.method == "sobol":
        for offset, name in ((-0.2, "S1"), (0.2, "ST")):
            ax.barh(y + offset, t[name].to_numpy(dtype=float), height=0.38, label=name,
                    xerr=_error_bars(t[name], t[f"{name}_lower"], t[f"{name}_upper"]), capsize=3)
        ax.set_xlabel("Sobol' index (share of output variance)")
        ax.legend(frameon=False)
    else:
        ax.barh(y, t.mu_star.to_numpy(dtype=float), height=0.6,
                xerr=_error_bars(t.mu_star, t.mu_star_lower, t.mu_star_upper), capsize=3, label="mu*")
        ax.set_xlabel(f"Morris mu* (mean |elementary effect|, {unit})")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png")


def command_gsa(args) -> int:
    """``carsim gsa SCENARIO``: global sensitivity of one outcome, written as
    gsa_indices.{csv,md,tex}, gsa_samples.csv, gsa.png and manifest.json (last)."""
    from .. import __version__
    from .._io import atomic_write
    from .dsa import only_policies, parse_compare
    from .manifest import Manifest, clear
    from .output import default_output_dir
    from .tables import to_markdown, write_table

    engine = getattr(args, "engine", None)
    scenario, outcome = load_with_outcome(args.scenario, args.outcome, args.time, args.origin,
                                          {"run.engine": engine} if engine else None)
    seed = scenario.run.seed if args.seed is None else args.seed
    compare = parse_compare(args.compare, scenario)
    wanted = [w.strip() for w in args.parameters.split(",") if w.strip()] if args.parameters else None
    parameters = select_parameters(scenario, wanted)
    evaluate = PolicyOutcome(only_policies(scenario, compare), outcome, compare, args.patients, 0, seed)
    samples = args.samples or (64 if args.method == "sobol" else 20)
    n_jobs = scenario.run.n_jobs if args.n_jobs is None else args.n_jobs
    out_dir = check_output_folder(args.out or default_output_dir("gsa", root=Path("results") / scenario.name))
    with backend_context(args.backend, args.scheduler, n_jobs):
        result = run_gsa(parameters, evaluate, args.method, samples, seed, n_jobs=n_jobs,
                         progress=None if args.quiet else "evaluating")
    clear(out_dir)
    shown = shown_indices(result.indices) if args.method == "sobol" else result.indices
    write_table(result.indices, out_dir, "gsa_indices", shown=shown)
    atomic_write(out_dir / "gsa_samples.csv", lambda p: result.samples_frame().to_csv(p, index=False))
    atomic_write(out_dir / "gsa.png", lambda p: plot_indices(result, p, f"{scenario.name}: {evaluate.label}",
                                                                 outcome.unit))
    patients = args.patients or scenario.cohort.size
    described = {"metric": outcome.metric, "origin": outcome.origin, "time_months": outcome.time_months,
                 "compare": list(compare), "label": evaluate.label}
    settings = {"method": args.method, "samples": samples, "evaluations": int(result.outputs.size),
                "patients": patients, "replication": 0, "engine": scenario.run.engine, "outcome": described,
                "parameters": [p.path for p in parameters]}
    Manifest(
        "gsa", scenario, seed, settings=settings,
        files=["gsa_indices.csv", "gsa_indices.md", "gsa_indices.tex", "gsa_samples.csv", "gsa.png"],
        timings=result.timings, command=sys.argv,
        extra={"method": args.method, "samples": samples, "evaluations": int(result.outputs.size),
               "replication": 0, "engine": scenario.run.engine, "patients": patients, "outcome": described,
               "parameters": [{"path": p.path, "point": p.point, "family": p.family}
                              for p in parameters]},
    ).write(out_dir)
    if not args.quiet:
        print(f"carsim {__version__} | gsa ({args.method}) | scenario {scenario.name} | {evaluate.label}")
        print(f"{len(parameters)} parameters, {result.outputs.size} evaluations of {patients} patients "
              f"(replication 0, seed {seed}); output mean {result.outputs.mean():.4g}, "
              f"sd {result.outputs.std(ddof=1):.3g}\n")
        print(to_markdown(shown).rstrip())
        print(f"\nevaluated in {result.timings['evaluate_seconds']:.1f} s")
    print(f"results: {out_dir}")
    return 0
