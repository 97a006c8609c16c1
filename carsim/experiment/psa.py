"""Probabilistic sensitivity analysis (PSA): ``carsim psa SCENARIO --draws N``.

Every scenario value with a ``distribution:`` is drawn ``N`` times; draw ``d``
sets those values, then simulates every policy on replication ``d`` (its own
virtual patients, shared by all policies of the draw: common random numbers).

Parameter uniforms come from ``SeedSequence(seed, spawn_key=(PSA_TAG, k))``
with ``k`` a stable number of the parameter's key path: one stream per
parameter, read in draw order.  So draw ``d`` has the same values whatever
the number of draws, workers or chunks, and adding a parameter to a scenario
does not change the draws of the others.

Results are checkpointed in chunks of draws (:mod:`.checkpoint`); the tables
are written only when every chunk is done, ``manifest.json`` last.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from pydantic import ValidationError

from .. import __version__
from .._io import atomic_write
from ..errors import CarsimError
from ..model.random import stream_id
from ..scenario.parameters import UncertainParameter, apply_values, uncertain_parameters, values_at_quantiles
from ..scenario.schema import Scenario
from .checkpoint import Checkpoint, default_chunk_size, read_run_file
from .manifest import Manifest, clear, scenario_hash
from .evaluate import evaluate_policies
from .metrics import TIMES_MONTHS, compute_metrics, curve_metrics, metric_origins
from .output import patients_frame
from .parallel import effective_jobs, parallel_map

PSA_TAG = stream_id("carsim.psa.parameters")  # first spawn-key element of every parameter stream

# ---------------------------------------------------------------- outcomes
# Key outcomes of the PSA tables, and which way is better (+1 higher, -1 lower).
DIRECTIONS = {"efs": 1, "rfs": 1, "os": 1, "rmst_os": 1, "cir": -1, "hsct_death": -1}
_ORIGIN_ORDER = {"infusion": 0, "enrollment": 1}


class OutcomeError(CarsimError):
    pass


@dataclass(frozen=True)
class Outcome:
    """One metric row of the results: metric, origin and (for survival and
    incidence metrics) the time in months.  ``origins``: the origins the
    metric is reported from (a label names the origin when there are two)."""

    metric: str
    origin: str
    time_months: float | None
    origins: tuple[str, ...] = field(default=("infusion", "enrollment"), compare=False)

    @property
    def label(self) -> str:
        # Survival and incidence metrics (read at a time) in capitals: EFS, CIR_CD19NEG.
        name = self.metric.upper() if self.time_months is not None else self.metric
        at = f" at {self.time_months:g} months" if self.time_months is not None else ""
        where = f" from {self.origin}" if len(self.origins) > 1 else ""
        return f"{name}{at}{where}"

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        mask = (frame["metric"] == self.metric) & (frame["origin"] == self.origin)
        if self.time_months is not None:
            mask &= np.isclose(frame["time_months"].astype(float), self.time_months)
        return frame[mask]

    def by_policy(self, frame: pd.DataFrame, index: str = "draw") -> pd.DataFrame:
        """Values as a table: one row per ``index`` value, one column per policy."""
        return self.rows(frame).set_index([index, "policy"])["value"].unstack("policy")


def resolve_outcome(metric: str, time_months: float | None = 24, origin: str | None = None, *,
                    phenotypes) -> Outcome:
    """Check an outcome given on the command line; one-line errors.
    ``phenotypes``: the scenario's relapse phenotypes (``cir_<phenotype>``
    and ``relapse_share_<phenotype>`` are outcomes)."""
    origins_of = metric_origins(phenotypes)
    if metric not in origins_of:
        raise OutcomeError(f"unknown outcome {metric!r}; expected one of: {', '.join(origins_of)}")
    origins = origins_of[metric]
    if origin is None:
        origin = origins[0]
    elif origin not in origins:
        raise OutcomeError(f"outcome {metric!r} is defined from {' or '.join(origins)}, not {origin!r}")
    if metric not in curve_metrics(phenotypes):
        return Outcome(metric, origin, None, origins)  # shares, medians; rmst_os is up to the horizon
    if time_months is None or float(time_months) not in TIMES_MONTHS:
        raise OutcomeError(f"time {time_months} months: {metric} is reported at "
                           f"{', '.join(str(t) for t in TIMES_MONTHS)} months")
    return Outcome(metric, origin, float(time_months), origins)


# ---------------------------------------------------------------- sampling
def parameter_uniforms(parameters: list[UncertainParameter], seed: int, draws: int) -> np.ndarray:
    """(draws, n_parameters) uniforms: one stream per parameter, spawned from
    ``SeedSequence(seed, spawn_key=(PSA_TAG,))`` by the key path's number."""
    root = np.random.SeedSequence(int(seed), spawn_key=(PSA_TAG,))
    columns = []
    for p in parameters:
        child = np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, stream_id(p.path)))
        columns.append(np.random.Generator(np.random.PCG64(child)).random(draws))
    return np.column_stack(columns) if columns else np.empty((draws, 0))


def parameter_table(scenario: Scenario, seed: int, draws: int) -> pd.DataFrame:
    """``draw`` and one column per uncertain parameter (its key path)."""
    parameters = uncertain_parameters(scenario)
    uniforms = parameter_uniforms(parameters, seed, draws)
    values = values_at_quantiles(parameters, uniforms)
    table = pd.DataFrame({"draw": np.arange(draws, dtype=np.int64)})
    for j, p in enumerate(parameters):
        table[p.path] = values[:, j]
    return table


def draw_values(table: pd.DataFrame, draw: int) -> dict[str, float]:
    row = table.iloc[draw]
    return {name: float(row[name]) for name in table.columns if name != "draw"}


def check_draws(scenario: Scenario, table: pd.DataFrame) -> None:
    """Every draw must give a valid scenario (checked before any simulation)."""
    for draw in range(len(table)):
        values = draw_values(table, draw)
        try:
            apply_values(scenario, values)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(x) for x in error["loc"])
            raise CarsimError(f"PSA draw {draw}: {where} = {error.get('input')!r} is invalid "
                              f"({error['msg']}); check its distribution:") from None


# -------------------------------------------------------------- evaluation
ROW_COLUMNS = ["draw", "policy", "metric", "origin", "time_months", "value", "n"]


@dataclass
class DrawResult:
    draw: int
    rows: pd.DataFrame | None
    patients: pd.DataFrame | None = None


def rows_frame(rows: list[tuple], draw: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS[1:])
    frame.insert(0, "draw", np.int64(draw))
    frame["draw"] = frame["draw"].astype(np.int64)
    frame["time_months"] = frame["time_months"].astype(float)
    frame["value"] = frame["value"].astype(float)
    frame["n"] = frame["n"].astype(np.int64)
    return frame


def evaluate_with_patients(scenario: Scenario, replication: int, seed: int, n_patients: int):
    """Like :func:`~carsim.experiment.evaluate.evaluate_policies`, also
    returning the patient table (``--keep-patients``)."""
    from ..model.definition import ModelDefinition
    from ..model.simulation import simulate_policies

    model = ModelDefinition(scenario)
    horizon_days = scenario.run.horizon_years * 365.25
    rows = []
    parts = simulate_policies(model, scenario.policy_names, replication, n_patients, seed, record_events=False,
                              engine=scenario.run.engine)
    for part in parts:
        patients = {**part.outcomes, **{k: v for k, v in part.covariates.items() if k not in part.outcomes}}
        rows += [(part.policy, *row)
                 for row in compute_metrics(patients, horizon_days, phenotypes=scenario.relapse_phenotypes)]
    return rows, patients_frame(SimpleNamespace(parts=parts))


def _evaluate_draw(task: tuple, scenario: Scenario, seed: int, n_patients: int, keep_patients: bool) -> DrawResult:
    draw, values = task
    drawn = apply_values(scenario, values) if values else scenario
    if not keep_patients:
        return DrawResult(draw, rows_frame(evaluate_policies(drawn, draw, seed, n_patients), draw))
    rows, patients = evaluate_with_patients(drawn, draw, seed, n_patients)
    patients = patients.rename(columns={"replication": "draw"})
    return DrawResult(draw, rows_frame(rows, draw), patients)


# ---------------------------------------------------------------- analysis
_KEY = ["metric", "origin", "key_time"]
STAT_COLUMNS = ["mean", "sd", "q2_5", "q50", "q97_5"]


def _key_rows(draws: pd.DataFrame) -> pd.DataFrame:
    key = draws[draws["metric"].isin(list(DIRECTIONS))].copy()
    # rmst_os is restricted to the horizon (or the longest follow-up), which may
    # vary a little between draws: one key per metric and origin.
    key["key_time"] = key["time_months"].where(key["metric"] != "rmst_os", -1.0).fillna(-1.0)
    return key


def _display_time(key: pd.DataFrame) -> pd.Series:
    """Reported time of each key: survival times as is, rmst_os its largest
    restriction time, shares empty."""
    longest = key[key["metric"] == "rmst_os"].groupby(["metric", "origin"])["time_months"].max()
    times = {}
    for metric, origin, key_time in key[_KEY].drop_duplicates().itertuples(index=False):
        if metric == "rmst_os":
            times[(metric, origin, key_time)] = longest.get((metric, origin), np.nan)
        else:
            times[(metric, origin, key_time)] = np.nan if key_time == -1.0 else key_time
    return pd.Series(times, dtype=float)


def _stats(values: pd.Series) -> dict:
    values = values[np.isfinite(values.to_numpy(dtype=float))].to_numpy(dtype=float)
    if values.size == 0:
        return {**{c: np.nan for c in STAT_COLUMNS}, "n_draws": 0}
    q = np.quantile(values, [0.025, 0.5, 0.975])
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else np.nan,
            "q2_5": float(q[0]), "q50": float(q[1]), "q97_5": float(q[2]), "n_draws": int(values.size)}


def _order(frame: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    rank = {
        "policy": {p: i for i, p in enumerate(policies)},
        "metric": {m: i for i, m in enumerate(DIRECTIONS)},
        "origin": _ORIGIN_ORDER,
    }
    columns = [c for c in ("policy", "metric", "origin", "key_time") if c in frame.columns]
    ordered = frame.sort_values(columns, key=lambda s: s.map(rank[s.name]) if s.name in rank else s,
                                kind="stable")
    return ordered.reset_index(drop=True)


def _wide(key: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    wide = key.set_index([*_KEY, "draw", "policy"])["value"].unstack("policy")
    return wide.reindex(columns=policies)


def psa_summary(draws: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    """Per policy and key outcome: mean, sd, 2.5%, 50% and 97.5% over draws."""
    key = _key_rows(draws)
    times = _display_time(key)
    records = []
    for (policy, metric, origin, key_time), group in key.groupby(["policy", *_KEY], sort=False):
        records.append({"policy": policy, "metric": metric, "origin": origin, "key_time": key_time,
                        "time_months": times[(metric, origin, key_time)], **_stats(group["value"])})
    frame = _order(pd.DataFrame(records), policies)
    return frame[["policy", "metric", "origin", "time_months", *STAT_COLUMNS, "n_draws"]]


def probability_best(draws: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    """Share of draws in which each policy is best on each key outcome (ties
    share the draw equally; draws where a policy's value is missing are left
    out), so the probabilities of an outcome sum to 1."""
    key = _key_rows(draws)
    times = _display_time(key)
    wide = _wide(key, policies)
    direction = wide.index.get_level_values("metric").map(DIRECTIONS).to_numpy(dtype=float)
    signed = wide.mul(direction, axis=0)
    valid = wide.notna().all(axis=1)
    best = signed.max(axis=1)
    is_best = signed.eq(best, axis=0) & valid.to_numpy()[:, None]
    share = is_best.div(is_best.sum(axis=1).where(valid), axis=0)
    probability = share[valid].groupby(level=_KEY, sort=False).mean()
    counts = valid.groupby(level=_KEY, sort=False).sum()
    metric_rank = {m: i for i, m in enumerate(DIRECTIONS)}
    ordered = sorted(counts.index, key=lambda k: (metric_rank[k[0]], _ORIGIN_ORDER[k[1]], k[2]))
    records = []
    for keys in ordered:
        metric, origin, _ = keys
        for policy in policies:
            p = probability.at[keys, policy] if keys in probability.index else np.nan
            records.append({"metric": metric, "origin": origin, "time_months": times[keys],
                            "better": "higher" if DIRECTIONS[metric] > 0 else "lower",
                            "policy": policy, "probability": float(p), "n_draws": int(counts[keys])})
    return pd.DataFrame(records, columns=["metric", "origin", "time_months", "better", "policy", "probability",
                                          "n_draws"])


def psa_incremental(draws: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    """Each policy minus the reference (the first policy), draw by draw:
    mean, sd, 2.5%, 50%, 97.5% and the share of draws where it is better."""
    columns = ["policy", "reference", "metric", "origin", "time_months", *STAT_COLUMNS, "prob_better", "n_draws"]
    if len(policies) < 2:
        return pd.DataFrame(columns=columns)
    key = _key_rows(draws)
    times = _display_time(key)
    wide = _wide(key, policies)
    reference = policies[0]
    records = []
    for policy in policies[1:]:
        difference = (wide[policy] - wide[reference]).rename("difference")
        for keys, values in difference.groupby(level=_KEY, sort=False):
            finite = values[np.isfinite(values.to_numpy(dtype=float))]
            better = (finite * DIRECTIONS[keys[0]] > 0).mean() if len(finite) else np.nan
            records.append({"policy": policy, "reference": reference, "metric": keys[0], "origin": keys[1],
                            "key_time": keys[2], "time_months": times[keys], **_stats(values),
                            "prob_better": float(better)})
    frame = _order(pd.DataFrame(records), policies)
    return frame[columns]


def parameter_summary(scenario: Scenario, table: pd.DataFrame) -> pd.DataFrame:
    """The drawn parameter values against their stated distributions."""
    records = []
    for p in uncertain_parameters(scenario):
        values = table[p.path]
        low, high = p.interval()
        records.append({"parameter": p.path, "family": p.uncertainty.family, "point": p.point,
                        "interval_low": low, "interval_high": high, **_stats(values)})
    return pd.DataFrame(records, columns=["parameter", "family", "point", "interval_low", "interval_high",
                                          *STAT_COLUMNS, "n_draws"])


def scatter_axes(outcome: Outcome, time_months: float) -> Outcome:
    """The x axis of the scatter: incremental EFS (OS when the outcome is EFS),
    from the outcome's origin."""
    metric = "os" if outcome.metric == "efs" else "efs"
    time = outcome.time_months if outcome.time_months is not None else time_months
    if float(time) not in TIMES_MONTHS:
        time = 24.0
    return resolve_outcome(metric, time, outcome.origin, phenotypes=())  # efs and os: no phenotype needed


# -------------------------------------------------------------------- run
@dataclass
class PsaResult:
    out: Path
    policies: list
    parameters: pd.DataFrame
    draws: pd.DataFrame
    summary: pd.DataFrame
    best: pd.DataFrame
    incremental: pd.DataFrame
    outcome: Outcome
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


NO_DISTRIBUTIONS = "no value in the scenario has a distribution:, so draws differ only in their patients"


def stored_settings(folder) -> dict:
    """Settings of the run in ``folder`` (what ``--resume`` continues)."""
    return read_run_file(folder)["fingerprint"]


def psa_fingerprint(scenario: Scenario, draws: int, seed: int, n_patients: int, chunk_size: int,
                    keep_patients: bool) -> dict:
    return {"analysis": "psa", "carsim_version": __version__, "scenario": scenario.name,
            "scenario_sha256": scenario_hash(scenario), "engine": scenario.run.engine, "seed": int(seed), "items": int(draws),
            "patients": int(n_patients), "chunk_size": int(chunk_size), "policies": list(scenario.policy_names),
            "parameters": [p.path for p in uncertain_parameters(scenario)], "keep_patients": bool(keep_patients)}


def run_psa(scenario: Scenario, draws: int, out, *, n_patients: int | None = None, seed: int | None = None,
            n_jobs: int | None = None, chunk_size: int | None = None, resume: bool = False,
            keep_patients: bool = False, outcome: Outcome | None = None, scatter_time: float = 24,
            progress: bool = True, command: list | None = None) -> PsaResult:
    """Run (or resume) a PSA into ``out`` and write its tables.

    Parallel work goes through :func:`~carsim.experiment.parallel.parallel_map`
    with whatever joblib backend is configured (see ``backend_context``)."""
    started = time.perf_counter()
    out = Path(out)
    seed = scenario.run.seed if seed is None else int(seed)
    n_patients = scenario.cohort.size if n_patients is None else int(n_patients)
    n_jobs = scenario.run.n_jobs if n_jobs is None else n_jobs
    chunk_size = default_chunk_size(draws) if chunk_size is None else int(chunk_size)
    outcome = outcome or resolve_outcome("os", 24, "infusion", phenotypes=scenario.relapse_phenotypes)
    if draws < 1:
        raise CarsimError("a PSA needs at least one draw")
    policies = list(scenario.policy_names)

    table = parameter_table(scenario, seed, draws)
    check_draws(scenario, table)
    fingerprint = psa_fingerprint(scenario, draws, seed, n_patients, chunk_size, keep_patients)
    checkpoint = Checkpoint.open(out, fingerprint, resume=resume)
    clear(out)  # the folder is unfinished until the tables are written

    pending = checkpoint.pending_items()
    add = checkpoint.collector(pending)

    def on_result(index: int, result: DrawResult) -> None:
        add(index, result.rows, {"patients": result.patients} if keep_patients else None)
        result.rows = result.patients = None  # the chunk is on disk: keep memory bounded

    worker = functools.partial(_evaluate_draw, scenario=scenario, seed=seed, n_patients=n_patients,
                               keep_patients=keep_patients)
    tasks = [(d, draw_values(table, d)) for d in pending]
    simulate_started = time.perf_counter()
    parallel_map(worker, tasks, n_jobs=n_jobs, progress="PSA draws" if progress else None, on_result=on_result)
    simulate_seconds = time.perf_counter() - simulate_started

    rows = checkpoint.read_all()
    result = PsaResult(out=out, policies=policies, parameters=table, draws=rows,
                       summary=psa_summary(rows, policies), best=probability_best(rows, policies),
                       incremental=psa_incremental(rows, policies), outcome=outcome)
    result.timings = {"simulate_seconds": round(simulate_seconds, 3), "draws_simulated": len(pending),
                      "draws_resumed": draws - len(pending), "workers": effective_jobs(n_jobs)}
    if not uncertain_parameters(scenario):
        result.warnings.append(NO_DISTRIBUTIONS)
    write_psa(result, scenario, fingerprint, parameter_summary(scenario, table), scatter_time, started, command)
    return result


def write_psa(result: PsaResult, scenario: Scenario, fingerprint: dict, inputs: pd.DataFrame,
              scatter_time: float, started: float, command) -> None:
    from .sensitivity_plots import plot_psa_scatter
    from .tables import write_table

    out = result.out
    atomic_write(out / "psa_parameters.csv", lambda p: result.parameters.to_csv(p, index=False))
    atomic_write(out / "psa_draws.csv", lambda p: result.draws.to_csv(p, index=False))
    write_table(inputs, out, "psa_parameter_summary")
    write_table(result.summary, out, "psa_summary")
    write_table(result.best, out, "psa_probability_best")
    write_table(result.incremental, out, "psa_incremental")
    y = result.outcome
    x = scatter_axes(y, scatter_time)
    atomic_write(out / "psa_scatter.png",
                 lambda p: plot_psa_scatter(x.by_policy(result.draws), y.by_policy(result.draws), result.policies,
                                            x.label, y.label, DIRECTIONS.get(y.metric, 0),
                                            f"{scenario.name}: PSA, {fingerprint['items']} draws x "
                                            f"{fingerprint['patients']} patients", p))
    result.timings["total_seconds"] = round(time.perf_counter() - started, 3)
    settings = {"draws": fingerprint["items"], "patients": fingerprint["patients"],
                "chunk_size": fingerprint["chunk_size"], "keep_patients": fingerprint["keep_patients"],
                "engine": fingerprint["engine"], "policies": result.policies,
                "outcome": {"metric": y.metric, "origin": y.origin, "time_months": y.time_months, "label": y.label}}
    Manifest(
        "psa", scenario, fingerprint["seed"], settings=settings,
        files=["run.json", "chunks/", "psa_parameters.csv", "psa_draws.csv",
               *[f"{stem}.{ext}" for stem in ("psa_parameter_summary", "psa_summary", "psa_probability_best",
                                              "psa_incremental") for ext in ("csv", "md", "tex")],
               "psa_scatter.png"] + (["patients/"] if fingerprint["keep_patients"] else []),
        warnings=list(result.warnings), timings=result.timings, command=command,
        extra={"analysis": "psa", "draws": fingerprint["items"], "patients": fingerprint["patients"],
               "chunk_size": fingerprint["chunk_size"], "policies": result.policies,
               "reference_policy": result.policies[0],
               "parameters": inputs[["parameter", "family", "point", "interval_low",
                                     "interval_high"]].to_dict("records"),
               "scatter": {"y": y.label, "x": x.label}, "fingerprint": fingerprint},
    ).write(out)


# --------------------------------------------------------------------- CLI
def command_psa(args) -> int:
    from ..scenario import load_scenario
    from .output import default_output_dir
    from .parallel import backend_context

    if args.scheduler and args.backend != "dask":
        raise CarsimError("--scheduler needs --backend dask")
    if args.resume is not None:
        if args.out is not None and args.out.resolve() != args.resume.resolve():
            raise CarsimError("--out and --resume name different folders; give only --resume DIR")
        stored = stored_settings(args.resume)
        draws = args.draws if args.draws is not None else stored["items"]
        seed = args.seed if args.seed is not None else stored["seed"]
        patients = args.patients if args.patients is not None else stored["patients"]
        chunk_size = args.chunk_size if args.chunk_size is not None else stored["chunk_size"]
        keep = args.keep_patients if args.keep_patients is not None else stored["keep_patients"]
        engine = args.engine or stored.get("engine")
        out = args.resume
    else:
        if args.draws is None:
            raise CarsimError("--draws N is required (or --resume DIR to continue a run)")
        draws, seed, patients, chunk_size = args.draws, args.seed, args.patients, args.chunk_size
        keep = bool(args.keep_patients)
        engine = args.engine
        out = None
    scenario = load_scenario(args.scenario, {"run.engine": engine} if engine else None)
    outcome = resolve_outcome(args.outcome, args.time, args.origin, phenotypes=scenario.relapse_phenotypes)
    if not uncertain_parameters(scenario) and not args.quiet:
        print(f"carsim: note: {NO_DISTRIBUTIONS}", file=sys.stderr)
    if out is None:
        out = args.out or default_output_dir("psa", root=Path("results") / scenario.name)
    n_jobs = scenario.run.n_jobs if args.n_jobs is None else args.n_jobs
    try:
        with backend_context(args.backend, args.scheduler, n_jobs):
            result = run_psa(scenario, draws, out, n_patients=patients, seed=seed, n_jobs=n_jobs,
                             chunk_size=chunk_size, resume=args.resume is not None, keep_patients=keep,
                             outcome=outcome, scatter_time=args.time, progress=not args.quiet, command=sys.argv)
    except KeyboardInterrupt:
        if (Path(out) / "run.json").exists():
            print(f"carsim: finished chunks are kept; continue with: carsim psa {args.scenario} --resume {out}",
                  file=sys.stderr)
        raise
    except _worker_lost_errors() as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CarsimError(f"a worker process was lost ({type(exc).__name__}: {first_line}); finished chunks are "
                          f"kept: continue with carsim psa {args.scenario} --resume {out}") from None
    if not args.quiet:
        print(psa_report(result))
    print(f"results: {out}")
    return 0


def _worker_lost_errors() -> tuple:
    """Exceptions meaning a worker process died (killed, out of memory):
    the run can be resumed from its checkpoints."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    errors: list = [TerminatedWorkerError]
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:
        pass
    else:
        errors.append(KilledWorker)
    return tuple(errors)


def psa_report(result: PsaResult) -> str:
    """A few lines for the terminal: the chosen outcome per policy."""
    y = result.outcome
    values = y.by_policy(result.draws)
    direction = DIRECTIONS.get(y.metric, 0)
    signed = values * (direction or 1)
    valid = values.notna().all(axis=1)
    best = signed[valid].eq(signed[valid].max(axis=1), axis=0)
    share = best.div(best.sum(axis=1), axis=0).mean() if valid.any() else pd.Series(np.nan, index=values.columns)
    reference = result.policies[0]
    lines = [(f"PSA: {len(values)} draws | {y.label} | mean [2.5%, 97.5%] over draws; "
              f"reference policy: {reference}")]
    for policy in result.policies:
        s = _stats(values[policy])
        text = f"  {policy:<20} {s['mean']:.3f} [{s['q2_5']:.3f}, {s['q97_5']:.3f}]"
        if direction:
            text += f"  P(best) {share[policy]:.2f}"
        if policy != reference:
            d = _stats(values[policy] - values[reference])
            text += f"  vs {reference}: {d['mean']:+.3f} [{d['q2_5']:+.3f}, {d['q97_5']:+.3f}]"
        lines.append(text)
    lines.append(f"simulated {result.timings['draws_simulated']} draw(s) in {result.timings['simulate_seconds']:.1f} s"
                 f" ({result.timings['draws_resumed']} resumed from checkpoints)")
    return "\n".join(lines)
