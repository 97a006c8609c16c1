"""Cost-effectiveness of a PSA, each a function of its tables: the
acceptability curves (CEAC) and frontier (CEAF), the expected value of
perfect information (EVPI) and of partial perfect information per
parameter (EVPPI).

Net monetary benefit of policy k in draw d at threshold w:
NMB = w QALY - cost (means per enrolled patient, discounted).

* CEAC(w, k): share of draws in which k has the highest NMB.
* CEAF(w): the policy with the highest expected NMB, with its CEAC value.
* EVPI(w) = E_d[max_k NMB] - max_k E_d[NMB], per patient; times the
  scenario's decision population for the population EVPI.
* EVPPI(w, parameter): the same with NMB replaced by its regression on the
  parameter (a non-parametric regression, as Strong, Oakley & Brennan,
  Med Decis Making 2014): E[max_k g_k(x)] - max_k E[g_k(x)].  One parameter:
  a least-squares cubic regression spline (knots at quantiles); a group
  (the calibration draws): a quadratic regression on its columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..outcomes import Outcome


def cost_qaly_by_draw(draws: pd.DataFrame, policies: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cost, qaly): one row per draw, one column per policy."""
    return tuple(Outcome(metric, "enrollment", None).by_policy(draws)[policies].sort_index()
                 for metric in ("cost", "qaly"))


def wtp_grid(thresholds) -> np.ndarray:
    """0 to three times the largest scenario threshold, with the thresholds themselves."""
    top = 3 * max(thresholds)
    return np.unique(np.concatenate([np.linspace(0, top, 61), np.asarray(thresholds, float)]))


def acceptability(cost: pd.DataFrame, qaly: pd.DataFrame, wtp: np.ndarray) -> pd.DataFrame:
    """CEAC rows (wtp, policy, probability_cost_effective, on_frontier)."""
    policies = list(cost.columns)
    c, q = cost.to_numpy(), qaly.to_numpy()
    rows = []
    for w in wtp:
        nmb = w * q - c
        best = np.argmax(nmb, axis=1)
        probability = np.bincount(best, minlength=len(policies)) / len(best)
        optimal = int(np.argmax(nmb.mean(axis=0)))  # the acceptability frontier follows expected NMB
        rows += [(float(w), policy, float(probability[k]), k == optimal) for k, policy in enumerate(policies)]
    return pd.DataFrame(rows, columns=["wtp", "policy", "probability_cost_effective", "on_frontier"])


def evpi(cost: pd.DataFrame, qaly: pd.DataFrame, wtp: np.ndarray, population: float | None) -> pd.DataFrame:
    """EVPI per patient (and for ``population`` patients) at each threshold."""
    c, q = cost.to_numpy(), qaly.to_numpy()
    rows = []
    for w in wtp:
        nmb = w * q - c
        per_patient = _not_noise(float(nmb.max(axis=1).mean() - nmb.mean(axis=0).max()), nmb)
        rows.append((float(w), per_patient, per_patient * population if population else np.nan))
    return pd.DataFrame(rows, columns=["wtp", "evpi_per_patient", "evpi_population"])


def _not_noise(value: float, nmb: np.ndarray) -> float:
    """Zero for a value at floating-point rounding of the net benefits (and never negative)."""
    return 0.0 if value <= 1e-12 * max(1.0, float(np.abs(nmb).max())) else value


def _spline_basis(x: np.ndarray, knots: int = 4) -> np.ndarray:
    """Cubic regression spline basis (truncated powers, interior knots at quantiles)."""
    x = (x - x.mean()) / (x.std() or 1.0)
    inner = np.unique(np.quantile(x, np.linspace(0, 1, knots + 2)[1:-1]))
    columns = [np.ones_like(x), x, x ** 2, x ** 3] + [np.clip(x - k, 0, None) ** 3 for k in inner]
    return np.column_stack(columns)


def _quadratic_basis(x: np.ndarray) -> np.ndarray:
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    columns = [np.ones(len(x)), *x.T, *(x.T ** 2)]
    return np.column_stack(columns)


def fitted_nmb(basis: np.ndarray, nmb: np.ndarray) -> np.ndarray:
    """Least-squares fit of every policy's NMB on ``basis`` (draws x columns)."""
    coefficients, *_ = np.linalg.lstsq(basis, nmb, rcond=None)
    return basis @ coefficients


def evppi(cost: pd.DataFrame, qaly: pd.DataFrame, parameters: pd.DataFrame, groups: dict[str, list[str]],
          wtp: np.ndarray) -> pd.DataFrame:
    """EVPPI per patient for each parameter group at each threshold.

    ``parameters``: one row per draw (index ``draw``), one column per varied
    parameter; ``groups``: name -> its columns (single parameters are
    groups of one)."""
    c, q = cost.to_numpy(), qaly.to_numpy()
    values = parameters.loc[cost.index]
    rows = []
    for name, columns in groups.items():
        x = values[columns].to_numpy(float)
        if np.all(x.std(axis=0) == 0):
            continue
        basis = _spline_basis(x[:, 0]) if x.shape[1] == 1 else _quadratic_basis(x)
        if basis.shape[1] >= len(x) // 2:  # too few draws for the regression
            continue
        for w in wtp:
            g = fitted_nmb(basis, w * q - c)
            value = _not_noise(float(g.max(axis=1).mean() - g.mean(axis=0).max()), g)
            rows.append((name, len(columns), float(w), value))
    return pd.DataFrame(rows, columns=["parameter", "columns", "wtp", "evppi_per_patient"])
