"""The outcome a sensitivity analysis reports: one metric row of the
results (metric, origin and, for survival and incidence metrics, the time),
checked against the metrics of the scenario (:func:`resolve_outcome`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import CarsimError
from .metrics import ECONOMIC_METRICS, curve_metrics, metric_origins


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

    @property
    def unit(self) -> str:
        """What the outcome's numbers are in (for axis labels)."""
        if self.metric.endswith("_days"):
            return "days"
        return {"rmst_os": "months", "cost": "cost per patient", "nmb": "net benefit per patient",
                "qaly": "QALYs per patient", "life_years": "life-years per patient"}.get(self.metric, "probability")

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})"

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        mask = (frame["metric"] == self.metric) & (frame["origin"] == self.origin)
        if self.time_months is not None:
            mask &= np.isclose(frame["time_months"].astype(float), self.time_months)
        return frame[mask]

    def by_policy(self, frame: pd.DataFrame, index: str = "draw") -> pd.DataFrame:
        """Values as a table: one row per ``index`` value, one column per policy."""
        return self.rows(frame).set_index([index, "policy"])["value"].unstack("policy")


def resolve_outcome(metric: str, time_months: float | None = 24, origin: str | None = None, *,
                    phenotypes, priced: bool = False, follow_up_months: float | None = None) -> Outcome:
    """Check an outcome given on the command line; one-line errors.
    ``phenotypes``: the scenario's relapse phenotypes (``cir_<phenotype>``
    and ``relapse_share_<phenotype>`` are outcomes); ``priced``: the scenario
    has an ``economics`` block (``cost``, ``qaly``, ``life_years``, ``nmb``);
    ``follow_up_months``: the longest time a survival metric can be read at."""
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
    if time_months is None:
        raise OutcomeError(f"{metric} is read at a time: give --time in months")
    check_report_time(float(time_months), follow_up_months)
    return Outcome(metric, origin, float(time_months), origins)


def check_report_time(months: float, follow_up_months: float | None, option: str = "--time") -> float:
    """``months`` as a report time: after the time origin and within follow-up (one-line errors)."""
    if not months > 0 or math.isnan(months):
        raise OutcomeError(f"{option} {months:g}: expected months after the time origin (> 0)")
    if follow_up_months is not None and months > follow_up_months + 1e-9:
        raise OutcomeError(f"{option} {months:g}: beyond the follow-up of {follow_up_months:g} months "
                           f"(run.horizon_years)")
    return months


def report_times_with(scenario, months) -> list[float]:
    """The scenario's report times with ``months`` added (each checked against
    its follow-up), leaving out default times beyond it (an explicit list
    must lie within follow-up)."""
    follow_up = scenario.run.horizon_years * 12
    added = [check_report_time(float(t), follow_up) for t in months]
    return sorted({*(t for t in scenario.run.report_times if t <= follow_up + 1e-9), *added})


def load_with_outcome(path, metric: str, time_months, origin, overrides: dict | None = None):
    """(scenario, outcome) of a sensitivity analysis: the scenario at ``path``
    (with ``overrides``) reporting at the outcome's time, and the checked outcome."""
    from ..scenario import load_scenario

    overrides = dict(overrides or {})
    scenario = load_scenario(path, overrides or None)
    outcome = resolve_outcome(metric, 24 if time_months is None else time_months, origin,
                              phenotypes=scenario.relapse_phenotypes, priced=scenario.economics is not None,
                              follow_up_months=scenario.run.horizon_years * 12)
    if outcome.time_months is not None and outcome.time_months not in scenario.run.report_times:
        overrides["run.report_times"] = report_times_with(scenario, [outcome.time_months])
        scenario = load_scenario(path, overrides)
    return scenario, outcome
