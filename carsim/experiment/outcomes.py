"""The outcome a sensitivity analysis reports: one metric row of the
results (metric, origin and, for survival and incidence metrics, the time),
checked against the metrics of the scenario (:func:`resolve_outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import CarsimError
from .metrics import ECONOMIC_METRICS, TIMES_MONTHS, curve_metrics, metric_origins


class OutcomeError(CarsimError):
    pass


@dataclass(frozen=True)
class Outcome:
    """One metric row of the results: metric, origin and (for survival and
    incidence metrics) the time in months.  ``origins``: the origins the
    metric is reported from (a label names the origin when there are two)."""

    metric: str
    origin: str
    time_months: float | None
    origins: tuple[str, ...] = field(default=("infusion", "enrollment"), compare=False)

    @property
    def label(self) -> str:
        # Survival and incidence metrics (read at a time) in capitals: EFS, CIR_CD19NEG.
        name = self.metric.upper() if self.time_months is not None else self.metric
        at = f" at {self.time_months:g} months" if self.time_months is not None else ""
        where = f" from {self.origin}" if len(self.origins) > 1 else ""
        return f"{name}{at}{where}"

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        mask = (frame["metric"] == self.metric) & (frame["origin"] == self.origin)
        if self.time_months is not None:
            mask &= np.isclose(frame["time_months"].astype(float), self.time_months)
        return frame[mask]

    def by_policy(self, frame: pd.DataFrame, index: str = "draw") -> pd.DataFrame:
        """Values as a table: one row per ``index`` value, one column per policy."""
        return self.rows(frame).set_index([index, "policy"])["value"].unstack("policy")


def resolve_outcome(metric: str, time_months: float | None = 24, origin: str | None = None, *,
                    phenotypes, priced: bool = False) -> Outcome:
    """Check an outcome given on the command line; one-line errors.
    ``phenotypes``: the scenario's relapse phenotypes (``cir_<phenotype>``
    and ``relapse_share_<phenotype>`` are outcomes); ``priced``: the scenario
    has an ``economics`` block (``cost``, ``qaly``, ``life_years``, ``nmb``)."""
    origins_of = metric_origins(phenotypes, priced)
    if metric not in origins_of:
        hint = (f"; {', '.join(ECONOMIC_METRICS)} need an economics block in the scenario"
                if metric in ECONOMIC_METRICS else "")
        raise OutcomeError(f"unknown outcome {metric!r}; expected one of: {', '.join(origins_of)}{hint}")
    origins = origins_of[metric]
    if origin is None:
        origin = origins[0]
    elif origin not in origins:
        raise OutcomeError(f"outcome {metric!r} is defined from {' or '.join(origins)}, not {origin!r}")
    if metric not in curve_metrics(phenotypes):
        return Outcome(metric, origin, None, origins)  # shares, medians; rmst_os is up to the horizon
    if time_months is None or float(time_months) not in TIMES_MONTHS:
        raise OutcomeError(f"time {time_months} months: {metric} is reported at "
                           f"{', '.join(str(t) for t in TIMES_MONTHS)} months")
    return Outcome(metric, origin, float(time_months), origins)
