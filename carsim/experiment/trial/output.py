"""A trial's results folder (power table, trials, figure, manifest) and its
terminal table."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..._io import atomic_write
from ..manifest import Manifest, clear
from ..sensitivity_plots import new_figure, policy_colour
from ..tables import write_table
from .design import H0, H1
from .simulate import TrialResult


def write_trial_results(out_dir, loaded, result: TrialResult, command=None) -> Path:
    """power.{csv,md,tex}, trials.csv, power.png and manifest.json (last)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear(out_dir)
    write_table(result.power, out_dir, "power")
    atomic_write(out_dir / "trials.csv", lambda p: result.trials.to_csv(p, index=False))
    atomic_write(out_dir / "power.png", lambda p: plot_power(result, p))
    design = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(result.design).items()}
    Manifest(
        "trial", loaded.scenario, result.design.seed,
        settings={"trial": loaded.name, "trials": result.design.trials, "engine": result.timings.get("engine"),
                  "design": design, "set": loaded.spec.set, "grid": loaded.spec.grid},
        files=["power.csv", "power.md", "power.tex", "trials.csv", "power.png"],
        timings=result.timings, command=command,
        extra={"trial": loaded.name, "trial_file": str(loaded.path), "design": design,
               "engine": result.timings.get("engine"), "set": loaded.spec.set, "grid": loaded.spec.grid,
               "targets": loaded.targets, "resolved_trial": loaded.spec.model_dump(mode="json")},
    ).write(out_dir)
    return out_dir


def plot_power(result: TrialResult, path) -> None:
    """Rejection rate against sample size with 95% Monte Carlo intervals, one
    panel per grid combination: power (H1, solid) and type I error (H0,
    dashed) of each comparison, coloured by its experimental arm's policy."""
    power = result.power
    keys = [c for c in (result.grid[0] if result.grid else {}) if c in power.columns]
    combinations = list(power.groupby(keys, sort=False)) if keys else [((), power)]
    columns = min(len(combinations), 3)
    rows = -(-len(combinations) // columns)
    figure = new_figure((4.6 * columns + 2.4, 3.6 * rows + 1.0))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    arms = list(result.design.arms)
    for ax, (values, part) in zip(axes, combinations, strict=False):
        values = values if isinstance(values, tuple) else (values,)
        for comparison, by_comparison in part.groupby("comparison", sort=False):
            arm = next((a for a in arms[1:] if str(comparison).startswith(a)), arms[-1])
            for hypothesis, style in ((H1, "-o"), (H0, "--s")):
                g = by_comparison[by_comparison.hypothesis == hypothesis]
                if g.empty:
                    continue
                rate = g.rejection_rate.to_numpy(dtype=float)  # arrays: matplotlib reads a one-row Series badly
                what = "power" if hypothesis == H1 else "type I error"
                ax.errorbar(g.n_total.to_numpy(dtype=float), rate,
                            yerr=np.array([rate - g.rate_lower.to_numpy(dtype=float),
                                           g.rate_upper.to_numpy(dtype=float) - rate]),
                            fmt=style, capsize=3, color=policy_colour(arms, arm), label=f"{comparison}: {what}")
        ax.axhline(result.design.alpha, color="grey", lw=0.8, ls=":")
        ax.axhline(0.8, color="grey", lw=0.8, ls=":")
        ax.set_title(", ".join(f"{_short(k)} = {v:g}" if not isinstance(v, str) else str(v)
                               for k, v in zip(keys, values, strict=True)) or "design as given", fontsize=8.5)
        ax.set_xlabel("patients randomised (total)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="center right")
    for ax in axes[len(combinations):]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("rejection rate (probability)")
    figure.suptitle(f"{result.design.endpoint.upper()} from {result.design.origin}, {result.design.test}: "
                    f"{result.design.trials} simulated trials per point (95% Monte Carlo intervals; dotted: "
                    f"alpha and 80%)", fontsize=9.5)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _short(path: str) -> str:
    """A grid path for a narrow column: without 'pathway.'/'surveillance.' and '.value'."""
    for prefix in ("pathway.", "surveillance."):
        path = path.removeprefix(prefix)
    return path.removesuffix(".value")


def terminal_table(result: TrialResult) -> str:
    """The power table as aligned text."""
    power = result.power
    grid_paths = list(result.grid[0]) if result.grid else []
    header = [_short(p) for p in grid_paths] + ["N", "comparison", "hypothesis", "rate (95% MC interval)",
                                                "events", "median HR"]
    lines = [header]
    for _, r in power.iterrows():
        lines.append([f"{r[p]:g}" for p in grid_paths] + [
            str(r.n_total), r.comparison, r.hypothesis,
            f"{r.rejection_rate:.3f} ({r.rate_lower:.3f}-{r.rate_upper:.3f})",
            f"{r.mean_events:.1f}", "-" if not math.isfinite(r.median_hr) else f"{r.median_hr:.2f}"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for k, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
