"""Plots for people who would rather look than read."""

from __future__ import annotations

import numpy as np

from .._units import DAYS_PER_MONTH
from ..experiment.metrics import endpoint_arrays
from ..experiment.survival import kaplan_meier


def plot_survival(result, path, origin: str = "infusion") -> None:
    """EFS and OS Kaplan-Meier curves per policy (pooled replications)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    horizon_months = result.scenario.run.horizon_years * 12
    grid_months = np.linspace(0, horizon_months, 400)
    figure = Figure(figsize=(11, 4.5), dpi=110)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, endpoint, title in zip(axes, ("efs", "os"), ("Event-free survival", "Overall survival")):
        for policy in result.policies:
            durations, events = [], []
            for r in range(result.replications):
                _mask, d, e = endpoint_arrays(result.group(policy, r), endpoint, origin)
                durations.append(d)
                events.append(e)
            d, e = np.concatenate(durations), np.concatenate(events)
            if d.size == 0:
                continue
            grid = grid_months[grid_months * DAYS_PER_MONTH <= d.max() + 1e-9]
            ax.step(grid, kaplan_meier(d, e, grid * DAYS_PER_MONTH), where="post", label=policy)
        ax.set_title(f"{title} (from {origin})")
        ax.set_xlabel("months")
        ax.set_xlim(0, horizon_months)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability")
    axes[1].legend(loc="upper right", frameon=False)
    figure.suptitle(f"{result.scenario.name}: {result.n_patients} patients x {result.replications} replication(s)")
    # Fixed margins: the layout never changes, and tight_layout() would draw the figure twice.
    figure.subplots_adjust(left=0.065, right=0.985, bottom=0.11, top=0.87, wspace=0.04)
    figure.savefig(path, format="png")
