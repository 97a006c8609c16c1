"""Plots of sensitivity analyses: the PSA scatter of incremental outcomes
and the one-way tornado diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd


def new_figure(size):
    """A matplotlib figure for a file (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110)


def policy_colour(policies, policy: str) -> str:
    """A policy's colour: by its place in the study's policies, the same in every figure of a study."""
    return f"C{list(policies).index(policy) % 10}"


def plot_psa_scatter(x_values: pd.DataFrame, y_values: pd.DataFrame, policies: list[str], x_label: str,
                     y_label: str, direction: int, title: str, path) -> None:
    """One point per draw and policy: incremental ``y`` against incremental
    ``x`` (each policy minus the reference, the first policy), with the mean
    of each policy as a large marker.  ``*_values``: one row per draw, one
    column per policy.  With a single policy the draws' values are shown."""
    figure = new_figure((7.5, 6))
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
    figure = new_figure((8.5, 1.2 + 0.45 * max(1, len(rows))))
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


def plot_ce_plane(cost: pd.DataFrame, qaly: pd.DataFrame, comparator: str, thresholds, currency: str,
                  title: str, path) -> None:
    """Cost-effectiveness plane: each draw's incremental QALYs (x) and costs
    (y) of every policy against ``comparator``, means as large markers, and a
    line per willingness-to-pay threshold."""
    figure = new_figure((7.5, 6))
    ax = figure.subplots()
    others = [p for p in cost.columns if p != comparator]
    for policy in others:
        dq = (qaly[policy] - qaly[comparator]).to_numpy(float)
        dc = (cost[policy] - cost[comparator]).to_numpy(float)
        colour = f"C{(list(cost.columns).index(policy)) % 10}"
        ax.scatter(dq, dc, s=12, alpha=0.45, color=colour, edgecolors="none", label=policy)
        ax.scatter([dq.mean()], [dc.mean()], s=110, color=colour, edgecolors="black", zorder=3)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    span = np.array(ax.get_xlim())
    for j, w in enumerate(thresholds):
        ax.plot(span, w * span, color="black", lw=0.9, ls=("--", ":", "-.")[j % 3],
                label=f"{w:,.0f} {currency} per QALY")
    ax.set_xlim(*span)
    ax.set_xlabel(f"incremental QALYs vs {comparator} (per patient)")
    ax.set_ylabel(f"incremental cost vs {comparator} ({currency} per patient)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_ceac(ceac: pd.DataFrame, thresholds, currency: str, title: str, path) -> None:
    """Acceptability curve per policy and the acceptability frontier (the
    policy with the highest expected net benefit, drawn thick)."""
    figure = new_figure((7.5, 5))
    ax = figure.subplots()
    for i, (policy, rows) in enumerate(ceac.groupby("policy", sort=False)):
        colour = f"C{i % 10}"
        ax.plot(rows["wtp"], rows["probability_cost_effective"], color=colour, lw=1.3, label=policy)
        frontier = rows["probability_cost_effective"].where(rows["on_frontier"])
        ax.plot(rows["wtp"], frontier, color=colour, lw=4, alpha=0.45)
    for w in thresholds:
        ax.axvline(w, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"willingness to pay ({currency} per QALY)")
    ax.set_ylabel("probability cost-effective")
    ax.set_title(title + " (thick: acceptability frontier)", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
