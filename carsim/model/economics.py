"""Costs, QALYs and life-years of each simulated patient, from its records.

Economics is an accounting over the flat records both engines write (one
event table, one outcome row per patient), so it is written once and any
event kind a scenario adds can carry a cost by name.  The scenario's
``economics`` block says what each event costs, which events move a patient
between exclusive health states (each with a cost per month and a utility),
and which events open and close overlay periods (e.g. immunoglobulin
replacement while B-cell aplasia lasts).

Discounting is continuous from each patient's enrolment: an annual rate r
is a force ln(1 + r) per year, so a cost c at t years is worth c (1 + r)^-t
and a constant rate over [a, b] is integrated exactly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from .._units import DAYS_PER_MONTH
from .records import text_codes, vocabulary

DAYS_PER_YEAR = 365.25

# Per-patient columns added to the outcome rows (discounted unless named so).
ECONOMIC_FIELDS = ("cost", "qaly", "life_years", "cost_undiscounted", "qaly_undiscounted", "life_years_undiscounted",
                   "nmb")


def cost_column(category: str) -> str:
    return f"cost_{category}"


def event_category(key: str, cost) -> str:
    """The category an event's cost is reported under (default: the event key)."""
    return cost.category or key.replace("/", "_")


def categories(economics) -> list[str]:
    """Cost categories in the order the scenario first names them."""
    seen: dict[str, None] = {}
    for key, cost in economics.event_costs.items():
        seen.setdefault(event_category(key, cost), None)
    for section in (economics.states, economics.periods):
        for name, entry in section.items():
            if entry.cost_per_month is not None:
                seen.setdefault(entry.cost_per_month.category or name, None)
    if economics.extrapolation is not None and economics.extrapolation.cost_per_month is not None:
        seen.setdefault(economics.extrapolation.cost_per_month.category or "extrapolated_follow_up", None)
    return list(seen)


def accounted_events(economics) -> frozenset[str]:
    """The events the accounting reads (those a cost, a QALY loss, a state
    or a period names, by event or by ``event/detail``): a run that records
    events for the accounting alone need record no others."""
    return frozenset(key.split("/")[0] for key, _where in economics.event_keys())


def present_value(start_days, stop_days, force_per_day: float):
    """Integral of exp(-force t) over [start, stop] (days): discounted days."""
    start_days, stop_days = np.asarray(start_days, float), np.asarray(stop_days, float)
    if force_per_day == 0:
        return stop_days - start_days
    return (np.exp(-force_per_day * start_days) - np.exp(-force_per_day * stop_days)) / force_per_day


def discount_factor(days, force_per_day: float):
    return np.exp(-force_per_day * np.asarray(days, float))


def force_per_day(annual_rate: float) -> float:
    return math.log1p(annual_rate) / DAYS_PER_YEAR


class EventIndex:
    """Event rows coded once: each row's patient row and a code per
    ``event`` and per ``event/detail`` key, so that matching a list of keys
    is an integer lookup."""

    def __init__(self, events: dict, patient_ids: np.ndarray, end_day: np.ndarray):
        rows = _positions(patient_ids, events["patient"])
        time_days = np.asarray(events["time_days"], float)
        coded = "event_code" in events  # the array engine's codes (records.vocabulary), not texts
        event = events["event_code"] if coded else np.asarray(events["event"], object)
        detail = events["detail_code"] if coded else np.asarray(events["detail"], object)
        if not _in_order(rows, time_days):  # the engines give each patient's events in time order
            order = np.lexsort((time_days, rows))
            rows, time_days, event, detail = rows[order], time_days[order], event[order], detail[order]
        self.rows, self.time_days = rows, time_days
        if coded:
            self.event_names = detail_names = vocabulary()
            self.event_codes, detail_codes = np.asarray(event, np.int64), np.asarray(detail, np.int64)
        else:
            self.event_codes, self.event_names = text_codes(event)
            detail_codes, detail_names = text_codes(detail)
        # an ``event/detail`` key per distinct pair, from integer codes (no string per row)
        width = max(1, len(detail_names))
        pairs, self.pair_codes = _compact(self.event_codes * width + detail_codes, len(self.event_names) * width)
        self.pair_names = [f"{self.event_names[p // width]}/{detail_names[p % width]}" for p in pairs]
        keep = self.time_days <= end_day[self.rows] + 1e-9
        self.rows, self.time_days = self.rows[keep], self.time_days[keep]
        self.event_codes, self.pair_codes = self.event_codes[keep], self.pair_codes[keep]

    def lookup(self, mapping: dict[str, int], default: int = -1) -> np.ndarray:
        """Per event row: ``mapping`` of its ``event/detail`` key, else of its
        ``event`` key, else ``default``."""
        by_event = np.array([mapping.get(name, default) for name in self.event_names], dtype=np.int64)
        by_pair = np.array([mapping.get(name, default) for name in self.pair_names], dtype=np.int64)
        pair = by_pair[self.pair_codes] if len(self.pair_codes) else np.zeros(0, np.int64)
        event = by_event[self.event_codes] if len(self.event_codes) else np.zeros(0, np.int64)
        return np.where(pair != default, pair, event)


def _positions(patient_ids: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Where each of ``patients`` is in ``patient_ids`` (sorted, distinct):
    a subtraction when the ids are a run of consecutive numbers, as a
    cohort's or a chunk's are."""
    if len(patient_ids) and patient_ids[-1] - patient_ids[0] == len(patient_ids) - 1:
        return np.asarray(patients, np.int64) - patient_ids[0]
    return np.searchsorted(patient_ids, patients)


def _in_order(rows: np.ndarray, times: np.ndarray) -> bool:
    """Are the events sorted by row, then time (what a stable sort by both would leave unchanged)?"""
    if len(rows) < 2:
        return True
    step = np.diff(rows)
    return bool((step >= 0).all() and (times[1:][step == 0] >= times[:-1][step == 0]).all())


def _compact(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` for non-negative codes below ``size``, by counting."""
    present = np.bincount(codes, minlength=size) > 0
    position = np.cumsum(present) - 1
    return np.flatnonzero(present), position[codes]


def _next_in_patient(rows: np.ndarray, times: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For rows sorted by patient then time: the next row's time in the same
    patient, or the patient's end."""
    following = np.empty_like(times)
    if len(times):
        same = np.r_[rows[1:] == rows[:-1], False]
        following[:-1] = times[1:]
        following[~same] = end[rows[~same]]
    return following


def account(economics, events: dict, outcomes: dict, covariates: dict | None = None,
            lifetime: bool = False) -> dict[str, np.ndarray]:
    """Per-patient discounted and undiscounted costs (total and per
    category), QALYs and life-years over the simulated follow-up and, with
    ``lifetime``, over the survivors' extrapolated remaining life."""
    patient_ids = np.asarray(outcomes["patient"])
    n = len(patient_ids)
    end = np.nan_to_num(np.asarray(outcomes["end_day"], float), nan=0.0)
    index = EventIndex(events, patient_ids, end)
    cost_force = force_per_day(economics.discount.costs.value)
    outcome_force = force_per_day(economics.discount.outcomes.value)
    cats = categories(economics)
    out = {name: np.zeros(n) for name in ECONOMIC_FIELDS}
    by_category = {c: np.zeros(n) for c in cats}

    def add(target, rows, values):
        target += np.bincount(rows, weights=values, minlength=n)

    # one-off costs and QALY losses at events
    keys = list(economics.event_costs)
    code = index.lookup({k: i for i, k in enumerate(keys)})
    hit = code >= 0
    rows, t = index.rows[hit], index.time_days[hit]
    amounts = np.array([economics.event_costs[k].value for k in keys])[code[hit]] if keys else np.zeros(0)
    discounted = amounts * discount_factor(t, cost_force)
    add(out["cost"], rows, discounted)
    add(out["cost_undiscounted"], rows, amounts)
    for i, per_patient in enumerate(_by_kind(code[hit], len(keys), rows, discounted, n)):
        by_category[event_category(keys[i], economics.event_costs[keys[i]])] += per_patient
    losses = list(economics.qaly_losses)
    code = index.lookup({k: i for i, k in enumerate(losses)})
    hit = code >= 0
    if hit.any():
        amounts = np.array([economics.qaly_losses[k].value for k in losses])[code[hit]]
        add(out["qaly"], index.rows[hit], -amounts * discount_factor(index.time_days[hit], outcome_force))
        add(out["qaly_undiscounted"], index.rows[hit], -amounts)

    # exclusive states: the latest entering event sets the state
    names = list(economics.states)
    state_of = {}
    for s, name in enumerate(names):
        for key in economics.states[name].entered_by:
            state_of.setdefault(key, s)
    code = index.lookup(state_of)
    hit = code >= 0
    rows, start, state = index.rows[hit], index.time_days[hit], code[hit]
    stop = np.minimum(_next_in_patient(rows, start, end), end[rows])
    start = np.minimum(start, stop)
    last_state = np.full(n, -1)
    last_state[rows] = state  # rows are in time order: the last write per patient is its state at the end
    _accrue(economics.states, names, rows, start, stop, state, cost_force, outcome_force, out, by_category, n,
            utility_sign=1.0)

    # overlay periods
    for name, period in economics.periods.items():
        marks = {k: 1 for k in period.opened_by}
        marks.update({k: 0 for k in period.closed_by if k not in marks})
        code = index.lookup(marks)
        hit = code >= 0
        rows, times, opens = index.rows[hit], index.time_days[hit], code[hit] == 1
        stop = np.minimum(_next_in_patient(rows, times, end), end[rows])
        if period.months is not None:
            stop = np.minimum(stop, times + period.months.value * DAYS_PER_MONTH)
        rows, start, stop = rows[opens], times[opens], np.maximum(stop[opens], times[opens])
        _accrue({name: period}, [name], rows, start, stop, np.zeros(len(rows), np.int64), cost_force,
                outcome_force, out, by_category, n, utility_sign=-1.0)

    out["life_years"] = present_value(0.0, end, outcome_force) / DAYS_PER_YEAR
    out["life_years_undiscounted"] = end / DAYS_PER_YEAR
    if lifetime:
        _extrapolate(economics, outcomes, covariates or {}, end, last_state, names, cost_force, outcome_force, out,
                     by_category)
    out["nmb"] = economics.willingness_to_pay[0] * out["qaly"] - out["cost"]  # at the first threshold
    out.update({cost_column(c): v for c, v in by_category.items()})
    return out


# Mean remaining life at 100 and over (published e100 of the same tables):
# the open last row is a constant hazard with that mean.
E100_YEARS = {"us_2019": {"female": 2.3, "male": 2.0}}


@functools.lru_cache(maxsize=4)  # read once per process, not once per simulated chunk
def life_table(name: str) -> dict[str, np.ndarray]:
    """Annual hazards -ln(1 - qx) by single year of age 0..100, per sex."""
    from importlib import resources

    with resources.files("carsim").joinpath("data", f"us_life_table_{name.split('_')[1]}.csv").open() as handle:
        frame = pd.read_csv(handle, comment="#")
    hazards = {}
    for sex, rows in frame.groupby("sex"):
        q = rows.sort_values("age")["qx"].to_numpy(float)
        h = -np.log1p(-np.minimum(q, 1 - 1e-12))
        h[-1] = 1.0 / E100_YEARS[name][sex]
        hazards[sex] = h
    return hazards


def remaining_life(hazards: np.ndarray, age, force_per_year: float):
    """Expected (discounted at ``force_per_year``, from the start age) years
    lived from ``age`` on, under piecewise-constant annual ``hazards`` by age
    (the last one holding for ever)."""
    age = np.asarray(age, float)
    total = np.zeros_like(age)
    survival = np.ones_like(age)  # survival times discount factor at the segment's start
    top = len(hazards) - 1
    x = np.minimum(np.floor(age), top)
    position = age.copy()
    for _ in range(top + 1):
        h = hazards[x.astype(int)]
        last = x >= top
        length = np.where(last, np.inf, x + 1 - position)
        rate = h + force_per_year
        with np.errstate(invalid="ignore", over="ignore"):
            piece = np.where(rate > 0, -np.expm1(-rate * length) / rate, length)
        total += survival * piece
        survival = np.where(last, 0.0, survival * np.exp(-rate * np.where(last, 0.0, length)))
        if not np.any(survival > 0):
            break
        position = np.where(last, position, x + 1)
        x = np.minimum(x + 1, top)
    return total


def _extrapolate(economics, outcomes, covariates, end, last_state, names, cost_force, outcome_force, out,
                 by_category):
    """Add the survivors' remaining life after follow-up: life table x excess
    mortality, in the utility of the state they end in, discounted from enrolment."""
    spec = economics.extrapolation
    alive = np.isnan(np.asarray(outcomes["death_day"], float)) & (last_state >= 0)
    if not alive.any():
        return
    hazards = life_table(spec.life_table)
    ratio = spec.excess_mortality_ratio.value
    age = np.asarray(covariates["age_years"], float)[alive] + end[alive] / DAYS_PER_YEAR
    sex = (np.asarray(covariates["sex"], object)[alive] if "sex" in covariates
           else np.full(alive.sum(), None, dtype=object))
    per_year = {"outcome": outcome_force * DAYS_PER_YEAR, "cost": cost_force * DAYS_PER_YEAR}
    years = {k: np.zeros(alive.sum()) for k in (*per_year, "undiscounted")}
    for level in ("female", "male", None):
        mine = sex == level if level is not None else ~np.isin(sex, ["female", "male"])
        if not mine.any():
            continue
        # without a sex covariate: the mean of the two sexes' expectations (equal shares)
        levels = [level] if level is not None else ["female", "male"]
        for key, force in (*per_year.items(), ("undiscounted", 0.0)):
            years[key][mine] = np.mean([remaining_life(ratio * hazards[s], age[mine], force) for s in levels],
                                       axis=0)
    utility = np.array([economics.states[name].utility.value for name in names])[last_state[alive]]
    outcome_factor = discount_factor(end[alive], outcome_force)
    out["life_years"][alive] += years["outcome"] * outcome_factor
    out["life_years_undiscounted"][alive] += years["undiscounted"]
    out["qaly"][alive] += utility * years["outcome"] * outcome_factor
    out["qaly_undiscounted"][alive] += utility * years["undiscounted"]
    if spec.cost_per_month is not None:
        per_year_cost = spec.cost_per_month.value * 12
        values = per_year_cost * years["cost"] * discount_factor(end[alive], cost_force)
        out["cost"][alive] += values
        out["cost_undiscounted"][alive] += per_year_cost * years["undiscounted"]
        by_category[spec.cost_per_month.category or "extrapolated_follow_up"][alive] += values


def _accrue(entries, names, rows, start, stop, which, cost_force, outcome_force, out, by_category, n,
            utility_sign):
    """Add cost per month and utility (states) or utility decrement (periods)
    over intervals [start, stop] (days) of ``rows``, ``which`` naming the entry."""
    if not len(rows):
        return
    days = stop - start
    per_day = np.array([0.0 if entries[name].cost_per_month is None
                        else entries[name].cost_per_month.value / DAYS_PER_MONTH for name in names])
    utility = [entries[name].utility if utility_sign > 0 else entries[name].utility_decrement for name in names]
    per_year = np.array([0.0 if u is None else utility_sign * u.value / DAYS_PER_YEAR for u in utility])
    # Each entry's intervals summed per patient (in one pass per quantity), then added entry by entry.
    costs = _by_kind(which, len(names), rows, per_day[which] * present_value(start, stop, cost_force), n)
    undiscounted_costs = _by_kind(which, len(names), rows, per_day[which] * days, n)
    qalys = _by_kind(which, len(names), rows, per_year[which] * present_value(start, stop, outcome_force), n)
    undiscounted_qalys = _by_kind(which, len(names), rows, per_year[which] * days, n)
    for i, name in enumerate(names):
        entry = entries[name]
        if entry.cost_per_month is not None:
            out["cost"] += costs[i]
            out["cost_undiscounted"] += undiscounted_costs[i]
            by_category[entry.cost_per_month.category or name] += costs[i]
        if utility[i] is not None:
            out["qaly"] += qalys[i]
            out["qaly_undiscounted"] += undiscounted_qalys[i]


def _by_kind(kind: np.ndarray, n_kinds: int, rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sums of ``values`` per (kind, patient row), shape ``(n_kinds, n)``:
    one tally, each cell adding its values in the order given (as a tally
    per kind would)."""
    return np.bincount(kind * n + rows, weights=values, minlength=n_kinds * n).reshape(n_kinds, n)
