"""Statistics over a PSA's draws: per policy and key outcome, the
probability that each policy is best, and each policy's increment over the
reference (the first policy), draw by draw."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...scenario.parameters import uncertain_parameters
from ...scenario.schema import Scenario

# Key outcomes of the PSA tables, and which way is better (+1 higher, -1 lower).
DIRECTIONS = {"efs": 1, "rfs": 1, "os": 1, "rmst_os": 1, "cir": -1, "hsct_death": -1,
              "cost": -1, "qaly": 1, "life_years": 1, "nmb": 1}
ORIGIN_ORDER = {"infusion": 0, "enrollment": 1}

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


def describe(values: pd.Series) -> dict:
    """Mean, sd, 2.5%, 50% and 97.5% quantiles and the number of the finite values."""
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
        "origin": ORIGIN_ORDER,
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
                        "time_months": times[(metric, origin, key_time)], **describe(group["value"])})
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
    ordered = sorted(counts.index, key=lambda k: (metric_rank[k[0]], ORIGIN_ORDER[k[1]], k[2]))
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
                            "key_time": keys[2], "time_months": times[keys], **describe(values),
                            "prob_better": float(better)})
    frame = _order(pd.DataFrame(records), policies)
    return frame[columns]


def parameter_summary(scenario: Scenario, table: pd.DataFrame) -> pd.DataFrame:
    """The drawn parameter values against their stated distributions."""
    records = []
    for p in uncertain_parameters(scenario):
        values = table[p.path]
        low, high = p.interval()
        records.append({"parameter": p.path, "family": p.family, "point": p.point,
                        "interval_low": low, "interval_high": high, **describe(values)})
    return pd.DataFrame(records, columns=["parameter", "family", "point", "interval_low", "interval_high",
                                          *STAT_COLUMNS, "n_draws"])
