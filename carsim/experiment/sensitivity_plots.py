"""Plots of sensitivity analyses: the PSA scatter of incremental outcomes
and the one-way tornado diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _figure(size):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110)


def plot_psa_scatter(x_values: pd.DataFrame, y_values: pd.DataFrame, policies: list[str], x_label: str,
                     y_label: str, direction: int, title: str, path) -> None:
    """One point per draw and policy: incremental ``y`` against incremental
    ``x`` (each policy minus the reference, the first policy), with the mean
    of each policy as a large marker.  ``*_values``: one row per draw, one
    column per policy.  With a single policy the draws' values are shown."""
    figure = _figure((7.5, 6))
    ax = figure.subplots()
    reference = policies[0]
    colours = [f"C{i}" for i in range(10)]
    if len(policies) == 1:
        ax.scatter(x_values[reference], y_values[reference], s=14, alpha=0.6, color=colours[0], label=reference)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
    else:
        for i, policy in enumerate(policies[1:]):
            dx = (x_values[policy] - x_values[reference]).to_numpy(dtype=float)
            dy = (y_values[policy] - y_values[reference]).to_numpy(dtype=float)
            ok = np.isfinite(dx) & np.isfinite(dy)
            colour = colours[(i + 1) % len(colours)]
            ax.scatter(dx[ok], dy[ok], s=14, alpha=0.55, color=colour, edgecolors="none",
                       label=f"{policy} (n={int(ok.sum())})")
            if ok.any():
                ax.scatter([dx[ok].mean()], [dy[ok].mean()], s=110, marker="X", color=colour, edgecolors="black",
                           linewidths=0.8, zorder=3)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axvline(0, color="grey", linewidth=0.8)
        better = {1: " (higher is better)", -1: " (lower is better)"}.get(direction, "")
        ax.set_xlabel(f"incremental {x_label} vs {reference}")
        ax.set_ylabel(f"incremental {y_label} vs {reference}{better}")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(f"{title}\n(crosses: means over draws)", fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_tornado(tornado: pd.DataFrame, outcome_label: str, base: float, path) -> None:
    """Bars from the base-case outcome to the outcome at each parameter's low
    and high value, largest swing on top."""
    rows = tornado.iloc[::-1]  # matplotlib draws the first bar at the bottom
    figure = _figure((8.5, 1.2 + 0.45 * max(1, len(rows))))
    ax = figure.subplots()
    y = np.arange(len(rows))
    low = rows["outcome_low"].to_numpy(dtype=float) - base
    high = rows["outcome_high"].to_numpy(dtype=float) - base
    ax.barh(y, np.nan_to_num(low), left=base, height=0.6, color="C0", label="parameter at its low value")
    ax.barh(y, np.nan_to_num(high), left=base, height=0.6, color="C3", alpha=0.75,
            label="parameter at its high value")
    labels = [f"{name.removeprefix('pathway.')}\n[{lo:.4g}, {hi:.4g}]"
              for name, lo, hi in zip(rows["parameter"], rows["low_value"], rows["high_value"], strict=True)]
    ax.set_yticks(y, labels, fontsize="small")
    ax.axvline(base, color="black", linewidth=1)
    ax.set_xlabel(f"{outcome_label} (base case {base:.4g})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(frameon=False, fontsize="small", loc="best")
    figure.tight_layout()
    figure.savefig(path, format="png")
