"""Figures for a run's results folder, drawn to be put on a slide:
Kaplan-Meier curves with 95% confidence bands and the numbers at risk under
the axis, and the cumulative incidence of relapse stacked by phenotype.
Every panel has its legend and axis units; a policy has the same colour in
every figure of a study (:func:`~carsim.experiment.sensitivity_plots.policy_colour`)."""

from __future__ import annotations

import numpy as np

from .._units import DAYS_PER_MONTH
from ..experiment.metrics import cause_codes, endpoint_arrays
from ..experiment.sensitivity_plots import new_figure, policy_colour
from ..experiment.survival import competing_risks_curves, kaplan_meier_ci


def _pooled(result, policy: str, endpoint: str, origin: str):
    """Durations (days) and event labels of one endpoint, all replications pooled."""
    phenotypes = result.scenario.relapse_phenotypes
    parts = [endpoint_arrays(result.group(policy, r), endpoint, origin, phenotypes=phenotypes)[1:]
             for r in range(result.replications)]
    return np.concatenate([d for d, _ in parts]), np.concatenate([e for _, e in parts])


def risk_ticks(horizon_months: float) -> np.ndarray:
    """Months at which the numbers at risk are shown (and the x ticks)."""
    step = 6 if horizon_months <= 36 else 12 if horizon_months <= 72 else 24
    return np.arange(0, horizon_months + 1e-9, step)


def numbers_at_risk(durations_days: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Patients still followed (no event, not censored) just before each time."""
    ordered = np.sort(np.asarray(durations_days, dtype=float))
    return ordered.size - np.searchsorted(ordered, np.asarray(months) * DAYS_PER_MONTH - 1e-9, side="left")


def plot_survival(result, path, origin: str = "infusion") -> None:
    """Draw :func:`survival_figure` into ``path`` (PNG)."""
    survival_figure(result, origin).savefig(path, format="png")


def plot_relapse_incidence(result, path, origin: str = "infusion") -> None:
    """Draw :func:`relapse_incidence_figure` into ``path`` (PNG)."""
    relapse_incidence_figure(result, origin).savefig(path, format="png")


def survival_figure(result, origin: str = "infusion"):
    """EFS and OS Kaplan-Meier curves per policy (pooled replications) with
    95% pointwise confidence bands (exponential Greenwood) and the numbers at
    risk under each panel.  ``result``: an
    :class:`~carsim.experiment.runner.ExperimentResult` (or anything with its
    ``scenario``, ``policies``, ``replications``, ``n_patients`` and ``group``)."""
    horizon_months = result.scenario.run.horizon_years * 12
    grid_months = np.linspace(0, horizon_months, 400)
    ticks = risk_ticks(horizon_months)
    policies = result.policies
    figure = new_figure((12, 5.4 + 0.22 * len(policies)))
    grid = figure.add_gridspec(2, 2, height_ratios=[4.2, 0.3 + 0.22 * len(policies)], hspace=0.08, wspace=0.32)
    for column, (endpoint, title) in enumerate((("efs", "Event-free survival"), ("os", "Overall survival"))):
        ax = figure.add_subplot(grid[0, column])
        table = figure.add_subplot(grid[1, column], sharex=ax)
        for row, policy in enumerate(policies):
            d, e = _pooled(result, policy, endpoint, origin)
            colour = policy_colour(policies, policy)
            at_risk = numbers_at_risk(d, ticks) if d.size else np.zeros(ticks.size, dtype=int)
            for t, n in zip(ticks, at_risk, strict=True):
                table.text(t, len(policies) - 1 - row, f"{n:,}", ha="center", va="center", fontsize=7.5,
                           color=colour)
            if d.size == 0:
                continue
            months = grid_months[grid_months * DAYS_PER_MONTH <= d.max() + 1e-9]
            estimate, lower, upper = kaplan_meier_ci(d, e.astype(bool), months * DAYS_PER_MONTH)
            ax.step(months, estimate, where="post", color=colour, lw=1.6, label=f"{policy} (n={d.size:,})")
            ax.fill_between(months, lower, upper, step="post", color=colour, alpha=0.15, lw=0)
        ax.set_title(f"{title} (from {origin}; bands: 95% CI)", fontsize=10)
        ax.set_ylabel("probability")
        ax.set_xlim(0, horizon_months)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", frameon=False, fontsize=8)
        ax.tick_params(labelbottom=False)
        table.set_ylim(-0.6, len(policies) - 0.4)
        table.set_yticks(range(len(policies)), policies[::-1], fontsize=7.5)
        for label, policy in zip(table.get_yticklabels(), policies[::-1], strict=True):
            label.set_color(policy_colour(policies, policy))
        table.set_xticks(ticks)
        table.set_xlabel(f"months since {origin}   (numbers at risk above)")
        table.tick_params(left=False, axis="y", pad=16)
        for side in ("top", "right", "left"):
            table.spines[side].set_visible(False)
    figure.suptitle(f"{result.scenario.name}: {result.n_patients:,} patients x {result.replications} "
                    f"replication(s)", fontsize=11)
    figure.subplots_adjust(left=0.12, right=0.975, bottom=0.09, top=0.9)
    return figure


def relapse_incidence_figure(result, origin: str = "infusion"):
    """Cumulative incidence of relapse among responders, stacked by phenotype
    (Aalen-Johansen, death in remission competing), one panel per policy."""
    phenotypes = result.scenario.relapse_phenotypes
    codes = cause_codes(phenotypes)
    horizon_months = result.scenario.run.horizon_years * 12
    grid_months = np.linspace(0, horizon_months, 300)
    policies = result.policies
    columns = min(len(policies), 4)
    rows = -(-len(policies) // columns)
    figure = new_figure((3.2 * columns + 0.8, 3.3 * rows + 0.9))
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
    top = 0.0
    for ax, policy in zip(axes, policies, strict=False):
        d, causes = _pooled(result, policy, "cir", origin)
        if d.size:
            months = grid_months[grid_months * DAYS_PER_MONTH <= d.max() + 1e-9]
            curves = competing_risks_curves(d, causes, len(phenotypes) + 1, months.max() * DAYS_PER_MONTH + 1)
            _, incidence = curves.at(months * DAYS_PER_MONTH)
            stacked = [incidence[codes[name] - 1] for name in phenotypes]
            ax.stackplot(months, *stacked, labels=[name.replace("_", " ") for name in phenotypes],
                         colors=[f"C{7 + k}" if k < 3 else f"C{k}" for k in range(len(phenotypes))], alpha=0.85,
                         step="post")
            top = max(top, float(np.sum([s[-1] for s in stacked])))
        ax.set_title(f"{policy} (n={d.size:,} responders)", fontsize=9, color=policy_colour(policies, policy))
        ax.set_xlim(0, horizon_months)
        ax.set_xticks(risk_ticks(horizon_months))
        ax.set_xlabel(f"months since {origin}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", frameon=False, fontsize=7, title="relapse phenotype", title_fontsize=7)
    for ax in axes[len(policies):]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("cumulative incidence (probability)")
    axes[0].set_ylim(0, min(1.0, max(0.1, top * 1.25)))
    figure.suptitle(f"{result.scenario.name}: cumulative incidence of relapse by phenotype, stacked "
                    f"(death in remission competing)", fontsize=10)
    figure.tight_layout()
    return figure
