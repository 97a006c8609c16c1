"""``carsim trial TRIAL.yaml``."""

from __future__ import annotations

import sys
from pathlib import Path

from ... import __version__
from ..._io import check_output_folder
from ..output import default_output_dir
from .output import terminal_table, write_trial_results
from .simulate import run_trial_file


def command_trial(args) -> int:
    """``carsim trial TRIAL.yaml``: simulate, print the power table, write the results folder."""
    show = None if getattr(args, "quiet", False) else "simulated trials"
    if args.out is not None:
        check_output_folder(args.out, create=False)  # before the trial file is even read
    loaded, result = run_trial_file(args.trial, trials=args.trials, n_jobs=args.n_jobs, seed=args.seed,
                                    backend=args.backend, scheduler=args.scheduler, progress=show,
                                    engine=getattr(args, "engine", None))
    out_dir = check_output_folder(args.out or default_output_dir(f"trial_{loaded.name}",
                                                                 root=Path("results") / loaded.scenario.name))
    write_trial_results(out_dir, loaded, result, command=sys.argv)
    if not getattr(args, "quiet", False):
        d = result.design
        print(f"carsim {__version__} | trial {loaded.name} on scenario {loaded.scenario.name} | {d.trials} "
              f"simulated trials per row | seed {d.seed}")
        test = d.test + (f" at {d.landmark_months:g} months" if d.test == "landmark" else "")
        print(f"{d.endpoint.upper()} from {d.origin}, {test}, {d.sides}-sided alpha {d.alpha:g}"
              + (f" (Bonferroni: {d.alpha_per_comparison:g} per comparison)" if d.multiplicity == "bonferroni"
                 else "")
              + f"; analysis {d.follow_up_months:g} months after the last enrolment")
        for path, values in [*((p, [v]) for p, v in loaded.spec.set.items()), *loaded.spec.grid.items()]:
            print(f"{'grid' if path in loaded.spec.grid else 'set'} {path} ({loaded.targets[path]}): "
                  + ", ".join(f"{v:g}" for v in values))
        print("H1: each arm under its own policy, rate = power; H0: both arms under the control policy, "
              "rate = type I error\n")
        print(terminal_table(result))
        print(f"\nsimulated in {result.timings['simulate_seconds']:.1f} s on {result.timings['workers']} worker(s)")
    print(f"results: {out_dir}")
    return 0
