"""``carsim psa SCENARIO --draws N`` (or ``--resume DIR``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..._io import check_output_folder
from ...errors import CarsimError
from ...scenario.parameters import uncertain_parameters
from ..outcomes import load_with_outcome
from ..output import default_output_dir
from ..parallel import backend_context
from .run import NO_DISTRIBUTIONS, PsaResult, run_psa, stored_settings
from .statistics import DIRECTIONS, describe


def command_psa(args) -> int:
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
        stored = {}
        if args.draws is None:
            raise CarsimError("--draws N is required (or --resume DIR to continue a run)")
        draws, seed, patients, chunk_size = args.draws, args.seed, args.patients, args.chunk_size
        keep = bool(args.keep_patients)
        engine = args.engine
        out = None
    overrides = {"run.engine": engine} if engine else {}
    if args.resume is not None and "report_times" in stored:
        overrides["run.report_times"] = stored["report_times"]
    scenario, outcome = load_with_outcome(args.scenario, args.outcome, args.time, args.origin, overrides)
    if not uncertain_parameters(scenario) and not args.quiet:
        print(f"carsim: note: {NO_DISTRIBUTIONS}", file=sys.stderr)
    if out is None:
        out = args.out or default_output_dir("psa", root=Path("results") / scenario.name)
    out = check_output_folder(out, "--resume" if args.resume is not None else "--out")
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
        s = describe(values[policy])
        text = f"  {policy:<20} {s['mean']:.3f} [{s['q2_5']:.3f}, {s['q97_5']:.3f}]"
        if direction:
            text += f"  P(best) {share[policy]:.2f}"
        if policy != reference:
            d = describe(values[policy] - values[reference])
            text += f"  vs {reference}: {d['mean']:+.3f} [{d['q2_5']:+.3f}, {d['q97_5']:+.3f}]"
        lines.append(text)
    lines.append(f"simulated {result.timings['draws_simulated']} draw(s) in {result.timings['simulate_seconds']:.1f} s"
                 f" ({result.timings['draws_resumed']} resumed from checkpoints)")
    return "\n".join(lines)
