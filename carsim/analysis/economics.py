"""Cost-effectiveness of the policies: costs, QALYs, the efficient frontier
(strict and extended dominance, ICERs) and net monetary benefit.

Per-patient costs and QALYs come from the model's accounting
(:mod:`carsim.model.economics`).  Intervals are 95% Monte Carlo intervals
for the expected value: across replications when there are several
(t-interval of the replication means), otherwise from the patients (mean
+- 1.96 standard errors).  Differences between policies are paired: the same
patients under both policies (common random numbers).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..model.economics import ECONOMIC_FIELDS, categories, cost_column
from .summary import _t_interval

STATUSES = ("reference", "frontier", "dominated", "extendedly dominated")


def incremental_analysis(strategies, costs, effects) -> pd.DataFrame:
    """The incremental analysis of mutually exclusive strategies.

    Strategies are ordered by cost; a strategy is *dominated* when another
    costs no more and gives at least as much effect (one of them strictly);
    among the rest, one is *extendedly dominated* when its ICER exceeds that
    of the next more costly one (a mix of its neighbours would do better),
    removed one at a time until the ICERs rise.  The least costly strategy
    left is the ``reference``; each other ``frontier`` strategy's ICER is
    against the frontier strategy before it.  Dominated strategies get no
    ICER (as dampack's ``calculate_icers``)."""
    frame = pd.DataFrame({"strategy": list(strategies), "cost": np.asarray(costs, float),
                          "effect": np.asarray(effects, float)})
    order = np.lexsort((-frame["effect"].to_numpy(), frame["cost"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    status = np.array(["frontier"] * len(frame), dtype=object)
    cost, effect = frame["cost"].to_numpy(), frame["effect"].to_numpy()
    for i in range(len(frame)):
        others = np.arange(len(frame)) != i
        no_worse = (cost[others] <= cost[i]) & (effect[others] >= effect[i])
        strictly = (cost[others] < cost[i]) | (effect[others] > effect[i])
        same = (cost[others] == cost[i]) & (effect[others] == effect[i])
        earlier_twin = same & (np.flatnonzero(others) < i)  # exact ties: keep the first listed
        if np.any(no_worse & strictly) or np.any(earlier_twin):
            status[i] = "dominated"
    while True:
        kept = np.flatnonzero(status == "frontier")
        if len(kept) < 3:
            break
        icers = np.diff(cost[kept]) / np.diff(effect[kept])
        rising = np.flatnonzero(icers[:-1] > icers[1:])
        if not len(rising):
            break
        status[kept[rising[0] + 1]] = "extendedly dominated"
    kept = np.flatnonzero(status == "frontier")
    incremental_cost = np.full(len(frame), np.nan)
    incremental_effect = np.full(len(frame), np.nan)
    icer = np.full(len(frame), np.nan)
    compared_with = np.array([""] * len(frame), dtype=object)
    if len(kept):
        status[kept[0]] = "reference"
        for before, after in itertools.pairwise(kept):
            incremental_cost[after] = cost[after] - cost[before]
            incremental_effect[after] = effect[after] - effect[before]
            icer[after] = incremental_cost[after] / incremental_effect[after]
            compared_with[after] = frame["strategy"][before]
    frame["incremental_cost"] = incremental_cost
    frame["incremental_effect"] = incremental_effect
    frame["icer"] = icer
    frame["compared_with"] = compared_with
    frame["status"] = status
    return frame


def _mean_interval(values: np.ndarray, replication: np.ndarray, replications: int):
    """Mean and 95% Monte Carlo interval of a per-patient quantity."""
    values = np.asarray(values, float)
    if replications > 1:  # the summary's interval across replication means
        return _t_interval(np.array([values[replication == r].mean() for r in range(replications)]))
    mean = values.mean()
    half = 1.959963984540054 * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def patient_economics(result) -> dict[str, pd.DataFrame]:
    """Per policy: a frame of the per-patient economic columns, rows in the
    same (replication, patient) order for every policy (the CRN pairing)."""
    out = {}
    for policy in result.policies:
        frames = []
        for r in range(result.replications):
            group = result.group(policy, r)
            frame = pd.DataFrame({k: np.asarray(v) for k, v in group.items()
                                  if k in ECONOMIC_FIELDS or k.startswith(cost_column(""))})
            frame.insert(0, "replication", r)
            frames.append(frame)
        out[policy] = pd.concat(frames, ignore_index=True)
    return out


def economics_tables(result) -> dict[str, pd.DataFrame]:
    """``economics`` (one row per policy) and ``costs_by_category`` tables."""
    economics = result.scenario.economics
    per_policy = patient_economics(result)
    policies = result.policies
    comparator = result.scenario.economic_comparator
    replications = result.replications
    base = per_policy[comparator]
    rows = []
    for policy in policies:
        frame = per_policy[policy]
        rep = frame["replication"].to_numpy()
        row = {"policy": policy}
        for name, column in (("cost", "cost"), ("qaly", "qaly"), ("life_years", "life_years")):
            row[name], row[f"{name}_lower"], row[f"{name}_upper"] = _mean_interval(frame[column], rep, replications)
        for name in ("cost_undiscounted", "qaly_undiscounted", "life_years_undiscounted"):
            row[name] = frame[name].mean()
        for name in ("cost", "qaly"):
            if policy == comparator:
                row[f"incremental_{name}"] = row[f"incremental_{name}_lower"] = row[f"incremental_{name}_upper"] = 0.0
            else:
                diff = frame[name].to_numpy() - base[name].to_numpy()
                (row[f"incremental_{name}"], row[f"incremental_{name}_lower"],
                 row[f"incremental_{name}_upper"]) = _mean_interval(diff, rep, replications)
        for wtp in economics.willingness_to_pay:
            nmb = wtp * frame["qaly"].to_numpy() - frame["cost"].to_numpy()
            label = f"nmb_at_{wtp:g}"
            row[label], row[f"{label}_lower"], row[f"{label}_upper"] = _mean_interval(nmb, rep, replications)
        rows.append(row)
    table = pd.DataFrame(rows)
    frontier = incremental_analysis(table["policy"], table["cost"], table["qaly"]).set_index("strategy")
    table["icer"] = table["policy"].map(frontier["icer"])
    table["icer_versus"] = table["policy"].map(frontier["compared_with"])
    table["status"] = table["policy"].map(frontier["status"])
    table.insert(1, "comparator", comparator)
    rows = []
    for policy in policies:
        total = per_policy[policy]["cost"].mean()
        for category in categories(economics):
            cost = per_policy[policy][cost_column(category)].mean()
            rows.append({"policy": policy, "category": category, "cost": cost,
                         "share": cost / total if total else np.nan})
    breakdown = pd.DataFrame(rows)
    return {"economics": table, "costs_by_category": breakdown}


def economics_lines(table: pd.DataFrame, economics) -> list[str]:
    """The terminal's cost-effectiveness lines: cost, QALYs and ICER per policy."""
    lines = [(f"Cost-effectiveness ({economics.currency} {economics.price_year}, {economics.perspective}; "
              f"discounted {economics.discount.costs.value:.1%} costs / {economics.discount.outcomes.value:.1%} "
              f"outcomes)")]
    width = max(len(p) for p in table["policy"])
    for row in table.itertuples(index=False):
        if row.status == "reference":
            icer = "reference (least costly on the frontier)"
        elif row.status == "frontier":
            icer = f"ICER {row.icer:,.0f} per QALY vs {row.icer_versus}"
        else:
            icer = row.status
        lines.append(f"  {row.policy:<{width}}  cost {row.cost:>12,.0f} ({row.cost_lower:,.0f}-{row.cost_upper:,.0f})"
                     f"  QALY {row.qaly:6.2f} ({row.qaly_lower:.2f}-{row.qaly_upper:.2f})  {icer}")
    return lines
