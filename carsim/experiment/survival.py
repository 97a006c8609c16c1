"""Fast non-parametric survival estimators for simulated cohorts.

Kaplan–Meier, its exponential-Greenwood interval, the Aalen–Johansen
cumulative incidence under competing risks and the restricted mean survival
time.  They reproduce lifelines 0.30 to rounding error but need only NumPy:
importing lifelines alone takes longer than a whole ``carsim run``.

Estimators taking ``weights`` accept case weights of shape ``(n,)`` or
``(B, n)``.  The second form evaluates ``B`` bootstrap resamples in one pass
(see :func:`bootstrap_weights`) and gives results a leading axis of length B.

:func:`kaplan_meier_curve` and :func:`competing_risks_curves` return whole
curves, to read at several times or integrate, and estimate on a subgroup
of a cohort whose weights are held one row per subject (the transpose of
:func:`bootstrap_weights`), so that many subgroups of one bootstrapped
cohort need no copies of the weights.

Conventions (as lifelines): curves are right-continuous step functions, so
the value at ``t`` includes events at exactly ``t``; subjects censored at
``t`` are still at risk at ``t``.  Durations are non-negative.
"""

from __future__ import annotations

from itertools import pairwise
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

__all__ = [
    "CompetingRisksCurves",
    "KaplanMeierCurve",
    "StepCurve",
    "bootstrap_weights",
    "competing_risks",
    "competing_risks_curves",
    "cumulative_incidence",
    "kaplan_meier",
    "kaplan_meier_ci",
    "kaplan_meier_curve",
    "restricted_mean",
]

# Internally time runs along axis 0 of every table and curve, and resamples
# (if any) along axis 1: one code path then serves one or B weight rows, and
# results are turned resample-first only when read off.


class _RiskTable(NamedTuple):
    """Weighted counts at the distinct event times."""

    event_times: np.ndarray  # (m,) ascending
    at_risk: np.ndarray  # (m, *batch)
    deaths: np.ndarray  # (m, *batch), events of any kind
    # Per event kind 1..n_kinds: the indices of the event times at which that
    # kind occurs, and its deaths there.  At other times its deaths are 0, so
    # its incidence needs no work there.
    kind_deaths: tuple[tuple[np.ndarray, np.ndarray], ...]


class StepCurve(NamedTuple):
    """Right-continuous step function(s) that change by a running product or sum.

    The value is ``start`` before ``knots[0]`` and, from ``knots[j - 1]`` on,
    ``start`` combined by ``fold`` (``np.multiply`` or ``np.add``) with
    ``changes[0], ..., changes[j - 1]`` in that order.  ``changes`` has shape
    ``(m,)``, or ``(m, B)`` for B resamples.
    """

    knots: np.ndarray
    changes: np.ndarray
    start: float
    fold: np.ufunc

    def values(self) -> np.ndarray:
        """The value on each step, ``(m + 1,)`` or ``(m + 1, B)``: start, then after each knot."""
        steps = np.empty((self.changes.shape[0] + 1,) + self.changes.shape[1:])
        steps[0] = self.start
        self.fold.accumulate(self.changes, axis=0, out=steps[1:])
        return steps

    def at(self, times) -> np.ndarray:
        """Values at ``times``: shape ``times.shape``, or ``(B,) + times.shape``."""
        n_changes = np.searchsorted(self.knots, np.asarray(times, dtype=float), side="right")
        if self.changes.ndim == 1 or self.changes.shape[1] == 1:
            # numpy reduces a single column pairwise, not in running order.
            found = self.values()[n_changes]
            return found if self.changes.ndim == 1 else np.ascontiguousarray(np.moveaxis(found, -1, 0))
        # Folding in whole rows up to each time asked for is ~10x faster than
        # the running accumulate (which numpy walks one column at a time) and
        # combines in the same order, so gives the same bits.
        wanted = np.unique(n_changes)
        found = np.empty((wanted.size,) + self.changes.shape[1:])
        value, done = np.full(self.changes.shape[1:], self.start), 0
        for i, upto in enumerate(wanted):
            if upto > done:
                value = self.fold.reduce(np.concatenate([value[None], self.changes[done:upto]]), axis=0)
                done = upto
            found[i] = value
        return np.ascontiguousarray(np.moveaxis(found[np.searchsorted(wanted, n_changes)], -1, 0))


def _as_durations(durations, labels) -> tuple[np.ndarray, np.ndarray]:
    durations = np.asarray(durations, dtype=float)
    labels = np.asarray(labels)
    if durations.ndim != 1 or labels.shape != durations.shape:
        raise ValueError(
            f"durations and event labels must be 1-D of equal length, got {durations.shape} and {labels.shape}"
        )
    if not np.isfinite(durations).all() or (durations < 0).any():
        raise ValueError("durations must be finite and non-negative")
    return durations, labels


def _as_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    weights = np.asarray(weights, dtype=float)
    if weights.ndim not in (1, 2) or weights.shape[-1] != n:
        raise ValueError(f"weights must have shape (n,) or (B, n) with n={n}, got {weights.shape}")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    return weights


def _as_subject_weights(weights_by_subject, subjects, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights one row per subject, (N,) or (N, B), and the row of each of the ``n`` durations."""
    if weights_by_subject is None:
        if subjects is not None:
            raise ValueError("subjects select rows of weights_by_subject, which is missing")
        return np.ones(n), np.arange(n)
    weights_by_subject = np.asarray(weights_by_subject, dtype=float)
    if weights_by_subject.ndim not in (1, 2):
        raise ValueError(f"weights_by_subject must have shape (N,) or (N, B), got {weights_by_subject.shape}")
    if (weights_by_subject < 0).any():
        raise ValueError("weights must be non-negative")
    subjects = np.arange(n) if subjects is None else np.asarray(subjects)
    if subjects.dtype == bool:
        subjects = np.flatnonzero(subjects)
    n_subjects = weights_by_subject.shape[0]
    if subjects.shape != (n,) or (n > 0 and not 0 <= subjects.min() <= subjects.max() < n_subjects):
        raise ValueError(f"subjects must be {n} row indices of weights_by_subject (N={n_subjects}), "
                         f"got shape {subjects.shape}")
    return weights_by_subject, subjects


def _horizon(times) -> float:
    """Latest time asked for: later event times cannot change the answer."""
    return float(np.max(times, initial=-np.inf))


def _check_horizon(latest, horizon: float) -> None:
    if np.max(latest, initial=-np.inf) > horizon:
        raise ValueError(f"the curve is estimated up to {horizon}, asked at {np.max(latest)}")


def _tally(categories, n_categories: int, weights_by_subject, subjects) -> np.ndarray:
    """Total weight per category, ``(n_categories, *batch)``: subject ``subjects[i]`` counts in ``categories[i]``."""
    if weights_by_subject.ndim == 1:
        return np.bincount(categories, weights=weights_by_subject[subjects], minlength=n_categories)
    from scipy import sparse  # imported here: only resampling needs it, and it takes ~0.2 s to import

    # A 0/1 (category x subject) matrix times the (N, B) weights tallies all B
    # resamples in one pass over the sample's own rows, copying none of them.
    membership = sparse.csr_array(
        (np.ones(categories.size), (categories, subjects)), shape=(n_categories, weights_by_subject.shape[0])
    )
    return membership @ weights_by_subject


def _searched(knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.searchsorted(knots, values, side="right")``, the values searched
    in sorted order: the searches then walk through the knots in order
    (cache friendly), several times faster for many values."""
    if values.size < 4096:
        return np.searchsorted(knots, values, side="right")
    order = np.argsort(values)
    out = np.empty(values.size, dtype=np.intp)
    out[order] = np.searchsorted(knots, values[order], side="right")
    return out


def _risk_table(durations, kinds, n_kinds: int, weights_by_subject, subjects, horizon: float) -> _RiskTable:
    """Weighted at-risk totals and deaths at event times up to ``horizon``.

    ``kinds`` is 0 for censoring and 1..n_kinds for event kinds counted
    separately; the weights of ``durations[i]`` are row ``subjects[i]`` of
    ``weights_by_subject``.
    """
    if kinds.size and not 0 <= kinds.min() <= kinds.max() <= n_kinds:
        raise ValueError(f"event kinds must be 0 (censored) to {n_kinds}, got {kinds.min()} to {kinds.max()}")
    is_event = kinds > 0
    event_times = np.unique(durations[is_event & (durations <= horizon)])
    n_times = event_times.size
    batch_shape = weights_by_subject.shape[1:]
    if n_times == 0:
        nobody = np.zeros((0,) + batch_shape)
        return _RiskTable(event_times, nobody, nobody, ((np.arange(0), nobody),) * n_kinds)

    # Block j holds everyone leaving the risk set in [t_j, t_{j+1}), the last
    # block everyone from the last event time on, so at_risk(t_j) is the sum
    # of blocks >= j.  Deaths after the horizon count there as plain leavers;
    # subjects leaving before the first event time never count.
    block = _searched(event_times, durations) - 1
    counted = block >= 0
    dies = counted & is_event & (durations == event_times[block])
    leaves = counted & ~dies
    # Tally rows: the other leavers of each block, then the deaths at each
    # event time, or with several kinds at each (kind, event time) that occurs.
    if n_kinds == 1:
        death_row = block[dies]
        n_death_rows = n_times
    else:
        kind_and_time, death_row = np.unique(kinds[dies] * n_times + block[dies], return_inverse=True)
        n_death_rows = kind_and_time.size
    tally = _tally(np.concatenate([block[leaves], n_times + death_row]), n_times + n_death_rows,
                   weights_by_subject, np.concatenate([subjects[leaves], subjects[dies]]))
    others, death_tally = tally[:n_times], tally[n_times:]

    if n_kinds == 1:
        deaths = death_tally
        kind_deaths = ((np.arange(n_times), deaths),)
    else:
        kind_start = np.searchsorted(kind_and_time, np.arange(1, n_kinds + 2) * n_times)
        kind_deaths = tuple(
            (kind_and_time[start:end] % n_times, death_tally[start:end])
            for start, end in pairwise(kind_start)
        )
        deaths = np.zeros_like(others)
        for time_index, kind_count in kind_deaths:
            deaths[time_index] += kind_count
    # Summing from the last block back (not total minus a forward sum) gives
    # at_risk >= deaths exactly, and exactly 0 once only zero weights remain.
    # In place: every (m, B) array spared is also memory not faulted in anew.
    at_risk = others
    at_risk += deaths
    np.cumsum(at_risk[::-1], axis=0, out=at_risk[::-1])
    return _RiskTable(event_times, at_risk, deaths, kind_deaths)


_SMALLEST_POSITIVE = np.nextafter(0.0, 1.0)


def _hazard(deaths: np.ndarray, at_risk: np.ndarray) -> np.ndarray:
    """Discrete hazard d/n; 0 where nobody (of positive weight) is at risk."""
    # Nobody at risk means no deaths either, and 0 divided by the smallest
    # positive double is 0: cheaper than a masked division.
    hazard = np.maximum(at_risk, _SMALLEST_POSITIVE)
    return np.divide(deaths, hazard, out=hazard)


def _survival(deaths: np.ndarray, at_risk: np.ndarray, event_times) -> StepCurve:
    """Product-limit survival: the running product of 1 - d/n over the event times."""
    factors = _hazard(deaths, at_risk)
    np.subtract(1.0, factors, out=factors)
    return StepCurve(event_times, factors, 1.0, np.multiply)


class KaplanMeierCurve(NamedTuple):
    """Kaplan–Meier curve(s) up to ``horizon``, from :func:`kaplan_meier_curve`."""

    survival: StepCurve
    horizon: float

    def at(self, times) -> np.ndarray:
        """S(t) at ``times`` (up to the horizon): shape ``times.shape``, or ``(B,) + times.shape``."""
        _check_horizon(times, self.horizon)
        return self.survival.at(times)

    def restricted_mean(self, tau: float):
        """Area under the curve on [0, tau], tau up to the horizon: a float, or shape ``(B,)``.

        Past the last observation the curve holds its last value, as in lifelines.
        """
        if not tau >= 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        _check_horizon(tau, self.horizon)
        knots, values = self.survival.knots, self.survival.values()
        n_steps = np.searchsorted(knots, tau, side="right")
        # Step j of the curve holds from its knot to the next one, cut at tau.
        widths = np.diff(np.concatenate([[0.0], knots[:n_steps], [tau]]))
        # Resamples as contiguous rows, so that BLAS sums each row's steps in
        # the same order whatever the horizon of the curve.
        area = np.ascontiguousarray(values[: n_steps + 1].T) @ widths
        return float(area) if area.ndim == 0 else area


class CompetingRisksCurves(NamedTuple):
    """Survival from any cause and each cause's cumulative incidence up to
    ``horizon``, from :func:`competing_risks_curves`."""

    survival: StepCurve
    incidence: tuple[StepCurve, ...]  # causes 1..n_causes
    horizon: float

    def at(self, times) -> tuple[np.ndarray, np.ndarray]:
        """(survival, incidence) at ``times`` (up to the horizon): shapes
        ``times.shape`` and ``(n_causes,) + times.shape``, each after a
        leading ``(B,)`` for B resamples."""
        _check_horizon(times, self.horizon)
        cause_axis = self.survival.changes.ndim - 1
        return self.survival.at(times), np.stack([curve.at(times) for curve in self.incidence], axis=cause_axis)


def kaplan_meier_curve(durations, events, horizon: float, weights_by_subject=None,
                       subjects=None) -> KaplanMeierCurve:
    """Kaplan–Meier curve up to ``horizon``, to read at several times or integrate.

    ``weights_by_subject`` holds case weights one row per subject of a
    cohort: shape ``(N,)``, or ``(N, B)`` for B resamples (the transpose of
    :func:`bootstrap_weights`); unweighted if None.  ``subjects`` gives the
    row of each duration (indices, or a boolean mask over the N subjects),
    all rows in order if omitted.
    """
    durations, events = _as_durations(durations, events)
    weights_by_subject, subjects = _as_subject_weights(weights_by_subject, subjects, durations.size)
    _, curve = _kaplan_meier(durations, events, weights_by_subject, subjects, horizon)
    return curve


def _kaplan_meier(durations, events, weights_by_subject, subjects, horizon: float):
    """(risk table, curve) up to ``horizon``."""
    kinds = events.astype(bool).astype(np.intp)
    table = _risk_table(durations, kinds, 1, weights_by_subject, subjects, horizon)
    return table, KaplanMeierCurve(_survival(table.deaths, table.at_risk, table.event_times), horizon)


def _weighted_kaplan_meier(durations, events, weights, horizon: float):
    """:func:`_kaplan_meier` for weights as the estimators at given times take them."""
    durations, events = _as_durations(durations, events)
    weights = _as_weights(weights, durations.size)
    return _kaplan_meier(durations, events, weights.T, np.arange(durations.size), horizon)


def kaplan_meier(durations, events, times, weights=None) -> np.ndarray:
    """Kaplan–Meier survival S(t) at ``times``.

    ``events`` is True for an observed event, False for censoring.  Shape
    ``times.shape``, or ``(B,) + times.shape`` for weights of shape ``(B, n)``.
    """
    _, curve = _weighted_kaplan_meier(durations, events, weights, _horizon(times))
    return curve.at(times)


def kaplan_meier_ci(durations, events, times, alpha: float = 0.05):
    """Kaplan–Meier estimate with its pointwise ``1 - alpha`` interval.

    Exponential Greenwood (log(-log) transform), as lifelines'
    ``KaplanMeierFitter.confidence_interval_``: (1, 1) before the first event,
    (0, 0) once the estimate is 0.  Returns ``(estimate, lower, upper)``,
    each shaped like ``times``.
    """
    table, curve = _weighted_kaplan_meier(durations, events, None, _horizon(times))
    deaths, at_risk = table.deaths, table.at_risk
    survivors = at_risk - deaths
    # Greenwood's d / (n (n - d)) is infinite when all at risk die; lifelines
    # counts it as 0 (the estimate and the whole interval are then 0 anyway).
    terms = np.divide(deaths, at_risk * survivors, out=np.zeros_like(deaths), where=survivors > 0)
    greenwood = StepCurve(table.event_times, terms, 0.0, np.add)

    estimate = curve.at(times)
    variance = greenwood.at(times)
    # The transform is finite only strictly inside (0, 1); at 0 or 1 the
    # interval collapses onto the estimate, as it does in lifelines.
    inside = (estimate > 0) & (estimate < 1)
    log_s = np.log(np.where(inside, estimate, 0.5))
    shift = NormalDist().inv_cdf(1 - alpha / 2) * np.sqrt(variance) / log_s
    log_minus_log = np.log(-log_s)
    lower = np.where(inside, np.exp(-np.exp(log_minus_log - shift)), estimate)
    upper = np.where(inside, np.exp(-np.exp(log_minus_log + shift)), estimate)
    return estimate, lower, upper


def competing_risks_curves(durations, causes, n_causes: int, horizon: float, weights_by_subject=None,
                           subjects=None) -> CompetingRisksCurves:
    """Survival from any cause and the Aalen–Johansen cumulative incidence of
    every cause ``1..n_causes`` up to ``horizon``, from one risk table.

    ``causes`` is 0 for censoring; weights and subjects as in
    :func:`kaplan_meier_curve`.
    """
    durations, causes = _as_durations(durations, causes)
    weights_by_subject, subjects = _as_subject_weights(weights_by_subject, subjects, durations.size)
    return _competing_risks(durations, causes, n_causes, weights_by_subject, subjects, horizon)


def _competing_risks(durations, causes, n_causes: int, weights_by_subject, subjects,
                     horizon: float) -> CompetingRisksCurves:
    kinds = np.asarray(causes, dtype=np.intp)
    table = _risk_table(durations, kinds, n_causes, weights_by_subject, subjects, horizon)
    survival = _survival(table.deaths, table.at_risk, table.event_times)
    survival_before = survival.values()  # [j]: just before event time j
    incidence = tuple(_incidence_curve(table.event_times, time_index, deaths, table.at_risk, survival_before)
                      for time_index, deaths in table.kind_deaths)
    return CompetingRisksCurves(survival, incidence, horizon)


def _incidence_curve(event_times, time_index, deaths, at_risk, survival_before) -> StepCurve:
    """A cause's Aalen-Johansen cumulative incidence: a step S(t-) d / n at
    each event time ``event_times[time_index]`` where the cause occurs
    (``deaths`` of it there)."""
    increments = _hazard(deaths, at_risk[time_index])
    increments *= survival_before[time_index]
    return StepCurve(event_times[time_index], increments, 0.0, np.add)


def _weighted_competing_risks(durations, causes, n_causes: int, weights, horizon: float) -> CompetingRisksCurves:
    """:func:`_competing_risks` for weights as the estimators at given times take them."""
    durations, causes = _as_durations(durations, causes)
    weights = _as_weights(weights, durations.size)
    return _competing_risks(durations, causes, n_causes, weights.T, np.arange(durations.size), horizon)


def cumulative_incidence(durations, causes, cause: int, times, weights=None) -> np.ndarray:
    """Aalen–Johansen cumulative incidence of ``cause`` at ``times``.

    ``causes`` is 0 for censoring, else a positive int per event type; all
    other types compete with ``cause``.  Shapes as :func:`kaplan_meier`.
    """
    causes = np.asarray(causes)
    # Kind 1: the cause of interest, kind 2: a competing event.
    kinds = np.where(causes == cause, 1, 2 * (causes != 0))
    curves = _weighted_competing_risks(durations, kinds, 2, weights, _horizon(times))
    return curves.incidence[0].at(times)


def competing_risks(durations, causes, n_causes: int, times, weights=None):
    """Overall survival and the Aalen–Johansen cumulative incidence of every
    cause ``1..n_causes`` from one risk table.

    Returns ``(survival, incidence)``: survival shaped as :func:`kaplan_meier`
    (the KM of any event), incidence with an extra axis of length
    ``n_causes`` before the time axis.  Incidences of several causes add up
    to the incidence of their union, and with survival they sum to 1.
    """
    return _weighted_competing_risks(durations, causes, n_causes, weights, _horizon(times)).at(times)


def restricted_mean(durations, events, tau: float, weights=None):
    """Restricted mean survival time: area under the Kaplan–Meier curve on [0, tau].

    A float, or shape ``(B,)`` for weights of shape ``(B, n)``.  Past the last
    observation the curve holds its last value, as in lifelines.
    """
    if not tau >= 0:
        raise ValueError(f"tau must be non-negative, got {tau}")
    _, curve = _weighted_kaplan_meier(durations, events, weights, tau)
    return curve.restricted_mean(tau)


def bootstrap_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Case weights for ``n_boot`` bootstrap resamples of ``n`` subjects.

    Row b counts how often each subject was drawn (multinomial, sums to n);
    shape ``(n_boot, n)``, integer.
    """
    draws = rng.integers(0, n, size=(n_boot, n))
    # Offset each row's draws so that one bincount tallies every row.
    flat = (draws + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


# ---------------------------------------------------------------- influence functions
# For large cohorts the summary's intervals come from the delta method: each
# estimator's empirical influence function (one value per subject of the
# cohort, 0 for those outside the subgroup) gives its variance as
# sum(IF**2) / N**2, and the difference of two estimators on the same
# subjects (common random numbers) as sum((IF_a - IF_b)**2) / N**2.  For the
# Kaplan-Meier curve this is Greenwood's variance; for the Aalen-Johansen
# incidence, the delta-method (Aalen) variance.  No resampling: O(N) a curve.


class _Steps(NamedTuple):
    """A subgroup's unweighted risk table as the influence functions read it,
    and where each subject's time falls among its knots."""

    knots: np.ndarray  # distinct event times up to the horizon
    deaths: np.ndarray  # events of any kind at each knot
    at_risk: np.ndarray  # subjects at risk at each knot
    scale: np.ndarray  # N / n: the inverse share of the cohort at risk
    weight: np.ndarray  # N / (n (1 - h)), h = d / n: Greenwood's weight (0 where all at risk die)
    survival: np.ndarray  # S from each knot on, after a leading 1 (so survival[j] is S just before knot j)
    cumulative: np.ndarray  # running sum of h * weight, after a leading 0
    count: np.ndarray  # per subject: the knots at or before its time
    own: np.ndarray  # per subject: the knot equal to its event time, or len(knots) (censored, beyond the horizon)


def _steps(durations, events, n_cohort: int, horizon: float) -> _Steps:
    """The counts of :func:`_risk_table` without weights, from one search of the knots."""
    knots = np.unique(durations[events & (durations <= horizon)])
    m = knots.size
    count = _searched(knots, durations)
    own = np.full(durations.size, m)
    hit = events & (count > 0)
    hit[hit] = knots[count[hit] - 1] == durations[hit]
    own[hit] = count[hit] - 1
    deaths = np.bincount(own, minlength=m + 1)[:m].astype(float)
    at_risk = np.bincount(count, minlength=m + 1)[::-1].cumsum()[::-1][1:].astype(float)  # leaving at or after each knot
    hazard = deaths / at_risk
    remaining = 1.0 - hazard
    safe = np.where(remaining > 0, remaining, 1.0)
    weight = np.where(remaining > 0, n_cohort / (at_risk * safe), 0.0)
    return _Steps(knots, deaths, at_risk, n_cohort / at_risk, weight,
                  np.concatenate([[1.0], np.cumprod(remaining)]), np.concatenate([[0.0], np.cumsum(hazard * weight)]),
                  count, own)


def _steps_survival(steps: _Steps) -> StepCurve:
    """The Kaplan-Meier curve of the steps, computed as :func:`_survival` computes it (the same bits)."""
    return _survival(steps.deaths, steps.at_risk, steps.knots)


def _at_own(steps: _Steps, values: np.ndarray) -> np.ndarray:
    """``values`` (per knot) at each subject's own event time; 0 if none."""
    return np.concatenate([values, [0.0]])[steps.own]


def _rows(subjects, n: int) -> np.ndarray:
    rows = np.arange(n) if subjects is None else np.asarray(subjects)
    return np.flatnonzero(rows) if rows.dtype == bool else rows


def _survival_influence(steps: _Steps, durations, times, n_cohort: int, rows) -> np.ndarray:
    """Influence on S(t) at ``times``: -S(t) (w(T_i) 1{event, T_i <= t} - sum of h w over knots <= min(T_i, t))."""
    own = _at_own(steps, steps.weight)
    out = np.zeros((times.size, n_cohort))
    for k, at_t in enumerate(np.searchsorted(steps.knots, times, side="right")):
        count = np.minimum(steps.count, at_t)
        value = np.where(steps.own < at_t, own, 0.0)
        value -= steps.cumulative[count]
        value *= -steps.survival[at_t]
        out[k, rows] = value
    return out


def kaplan_meier_influence(durations, events, times, n_cohort: int | None = None,
                           subjects=None, tau: float | None = None, curve: bool = False):
    """Influence of each subject on the Kaplan-Meier S(t) at ``times``,
    shape ``(len(times), N)`` (and, with ``tau``, on the restricted mean
    up to ``tau``: a second array of shape ``(N,)``).

    ``subjects``: the cohort rows of the durations (indices or a mask over
    the N = ``n_cohort`` subjects; others have influence 0).  The variance
    of S(t) is ``sum(IF**2) / N**2``: Greenwood's formula.

    ``curve``: also return, first, the estimate itself (the
    :class:`KaplanMeierCurve` of :func:`kaplan_meier_curve`, the same bits),
    from the same risk table."""
    durations, events = _as_durations(durations, events)
    n_cohort = durations.size if n_cohort is None else int(n_cohort)
    rows = _rows(subjects, durations.size)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    horizon = max(_horizon(times), -np.inf if tau is None else tau)
    steps = _steps(durations, events.astype(bool), n_cohort, horizon)
    out = (_survival_influence(steps, durations, times, n_cohort, rows),)
    if tau is not None:
        out += (_restricted_mean_influence(steps, durations, tau, n_cohort, rows),)
    if curve:
        out = (KaplanMeierCurve(_steps_survival(steps), horizon), *out)
    return out[0] if len(out) == 1 else out


def _restricted_mean_influence(steps: _Steps, durations, tau: float, n_cohort: int, rows) -> np.ndarray:
    """The integral over [0, tau] of the influence on S(t)."""
    m = int(np.searchsorted(steps.knots, tau, side="right"))
    edges = np.concatenate([[0.0], steps.knots[:m], [tau]])
    widths = np.diff(edges)
    survival, cumulative = steps.survival[:m + 1], steps.cumulative[:m + 1]  # on [edges[j], edges[j + 1])
    area = np.concatenate([[0.0], np.cumsum(survival * widths)])
    weighted_area = np.concatenate([[0.0], np.cumsum(survival * cumulative * widths)])
    count = np.minimum(steps.count, m)
    x = np.minimum(durations, tau)
    into = x - edges[count]
    tail = area[-1] - (area[count] + survival[count] * into)  # the integral of S from x to tau
    out = np.zeros(n_cohort)
    out[rows] = (-np.where(steps.own < m, _at_own(steps, steps.weight), 0.0) * tail
                 + weighted_area[count] + survival[count] * cumulative[count] * into + cumulative[count] * tail)
    return out


def competing_risks_influence(durations, causes, n_causes: int, times, n_cohort: int | None = None,
                              subjects=None, curves: bool = False):
    """Influence of each subject on the survival from any cause and on the
    Aalen-Johansen incidence of each cause ``1..n_causes`` at ``times``:
    shapes ``(len(times), N)`` and ``(n_causes, len(times), N)`` (subjects
    as in :func:`kaplan_meier_influence`).

    ``curves``: also return, first, the estimates themselves (the
    :class:`CompetingRisksCurves` of :func:`competing_risks_curves`, the
    same bits), from the same risk table."""
    durations, causes = _as_durations(durations, causes)
    causes = np.asarray(causes, dtype=np.intp)
    n_cohort = durations.size if n_cohort is None else int(n_cohort)
    rows = _rows(subjects, durations.size)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    steps = _steps(durations, causes > 0, n_cohort, _horizon(times))
    survival = _survival_influence(steps, durations, times, n_cohort, rows)
    # F_k(t) = sum over knots <= t of S(t-) d_k / n; its influence (the delta
    # method through S(t-) and the cause's hazard):
    #   S(T-) N / n(T) 1{cause k at T <= t} - sum_{knots <= min(T, t)} S(t-) (N / n) h_k
    #   + sum_{knots <= min(T, t)} dF_k Q(t-) - (w(T) 1{event} - Q(T)) (F_k(t) - F_k(T)) 1{T < t},
    # Q the running sum of h w (as in the survival's influence).
    own = np.where(steps.own < steps.knots.size, _at_own(steps, steps.weight), 0.0) - steps.cumulative[steps.count]
    before = steps.survival[:-1]
    own_scale = _at_own(steps, before * steps.scale)
    sums = []  # per cause: its subjects, running sums of dF_k, S(t-) (N / n) h_k and dF_k Q(t-) (after a
    # leading 0), and the first of these at each subject's own time (the same at every t: read once)
    if curves:  # the estimates, as _competing_risks computes them from a risk table
        survival_curve = _steps_survival(steps)
        survival_before, incidence_curves = survival_curve.values(), []
    for cause in range(1, n_causes + 1):
        mine = causes == cause
        deaths = np.bincount(steps.own[mine], minlength=steps.knots.size + 1)[:-1]
        increments = before * deaths * steps.scale / n_cohort
        running, drift, carried = (np.concatenate([[0.0], np.cumsum(values)]) for values in
                                   (increments, increments * steps.scale, increments * steps.cumulative[:-1]))
        sums.append((mine, running, drift, carried, running[steps.count]))
        if curves:
            occurs = np.flatnonzero(deaths)
            incidence_curves.append(_incidence_curve(steps.knots, occurs, deaths[occurs].astype(float),
                                                     steps.at_risk, survival_before))
    incidence = np.zeros((n_causes, times.size, n_cohort))
    for k, at_t in enumerate(np.searchsorted(steps.knots, times, side="right")):
        count = np.minimum(steps.count, at_t)
        own_before = np.where(steps.own < at_t, own_scale, 0.0)
        earlier = durations < times[k]
        for cause, (mine, running, drift, carried, running_own) in enumerate(sums, start=1):
            later = np.where(earlier, running[at_t] - running_own, 0.0)
            # (own_before 1{mine} - drift + carried - own later), in place: the same sums in the same order
            value = np.where(mine, own_before, 0.0)
            value -= drift[count]
            value += carried[count]
            later *= own
            value -= later
            incidence[cause - 1, k, rows] = value
    if curves:
        estimates = CompetingRisksCurves(survival_curve, tuple(incidence_curves), _horizon(times))
        return estimates, survival, incidence
    return survival, incidence
