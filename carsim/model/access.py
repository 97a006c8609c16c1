"""The access pathway, enrolment to infusion: referral, apheresis (possibly
deferred), manufacturing (possibly failing, re-collected), release and
lymphodepletion, with death and withdrawal competing throughout.

It is written once, as per-patient transitions of :class:`AccessPathway`.
Each transition applies one step and says what comes next: a wait, a request
for a shared slot (held for a duration, after which ``done`` runs) or the
end of the pathway.  Engines only
schedule: the array engine runs an exact event loop over a heap for the whole
cohort; the SimPy engine runs one process per patient with shared
``simpy.Resource`` s.  Nothing here depends on the policy, so the array
engine runs it once for all policies.

Before infusion the hazards of death and withdrawal read only baseline
covariates, so each patient's exit time (death, withdrawal or the end of
follow-up, whichever comes first) is known on enrolment.
"""

from __future__ import annotations

import numpy as np

from .definition import ModelDefinition, StateView
from .random import RandomStreams
from .records import OUTCOME_FIELDS, codes_of, column_dtype, event_columns

INF = np.inf


# What a transition returns (plain tuples: the event loop makes half a million):
#   (WAIT, until, then): wait until ``until``, then run ``then(i, now)``;
#   (REQUEST, resource, hold, granted, done): ask for a slot of ``resource``
#   ("apheresis" or "manufacturing") and hold it ``hold`` days;
#   ``granted(i, now)`` (or None) runs when it is granted, ``done(i, now)``
#   when the hold ends;
#   INFUSED or LEFT: the end of the access pathway.
WAIT, REQUEST = "wait", "request"
_DEATH, _WITHDRAWAL, _CENSORED = range(3)  # why a patient leaves before infusion


def _ignore(_event):
    pass
# Death causes after leaving the pathway, one string each (not one per patient).
_AFTER = {reason: "after_" + reason for reason in ("withdrawal", "manufacturing_failure")}
INFUSED = "infused"  # the pathway's last step: the patient is infused
LEFT = "left"  # died, withdrew, failed manufacturing or reached the end of follow-up


def exp1(u):
    """Exp(1) variates from uniforms (a hazard clock's threshold)."""
    return -np.log1p(-np.asarray(u, dtype=float))


def clock_once(hazard, multiplier, uniforms):
    """Delay to a constant-multiplier clock's firing (inf for a zero multiplier)."""
    with np.errstate(divide="ignore"):
        delay = hazard.law.inverse_cumulative_hazard(exp1(uniforms) / multiplier)
    return np.where(multiplier > 0, delay, INF)


class AccessPathway:
    """The access pathway of patients ``start .. stop - 1`` of a cohort.

    Outcome columns are in ``out`` (one row per patient, local index ``i``),
    events in ``events`` as (patient id, days since enrolment, event, detail)."""

    def __init__(self, model: ModelDefinition, streams: RandomStreams, covariates: dict, arrivals: np.ndarray,
                 start: int, stop: int, record_events: bool = True):
        n = stop - start
        self.n, self.start = n, start
        self.patients = slice(start, stop)  # where they are in the random streams
        self.patient_ids = np.arange(start, stop)
        self.model = model
        self.record_events = record_events
        self.events: list[tuple] = []
        self._event_arrays = None
        self._event_codes = None
        self.covariates = {name: np.asarray(values[start:stop]) for name, values in covariates.items()}
        arrival = np.asarray(arrivals[start:stop], dtype=float)

        def u(name):
            return streams.uniforms(name)[start:stop]

        view = StateView(self.covariates, slice(None), 0.0, np.full(n, np.nan))
        death = arrival + clock_once(model.pre_infusion_death, model.pre_infusion_death.multiplier(view, n),
                                     u("pre_infusion.death"))
        withdraw = arrival + clock_once(model.pre_infusion_withdrawal,
                                        model.pre_infusion_withdrawal.multiplier(view, n), u("pre_infusion.withdrawal"))
        censor = arrival + model.horizon_days
        attempts = model.max_manufacturing_attempts
        # Python lists: scalar access in the event loop is several times faster than NumPy's.
        self.arrival = arrival.tolist()
        self.ids = list(range(start, stop))
        # Events as (patient, days since enrolment, event, detail), appended directly.
        self.log = self.events.append if record_events else _ignore
        self.exit_time = np.minimum(np.minimum(death, withdraw), censor).tolist()
        first = np.minimum(np.minimum(death, withdraw), censor)
        self.exit_reason = np.where(first == death, _DEATH, np.where(first == withdraw, _WITHDRAWAL, _CENSORED)).tolist()
        self.censor = censor.tolist()
        self.survival_after_exit = model.survival_after_withdrawal.from_uniform(
            u("pre_infusion.survival_after_exit")).tolist()
        self.referral = model.referral_delay.from_uniform(u("referral")).tolist()
        self.deferral = model.apheresis_deferral.from_uniform(u("apheresis.deferral")).tolist()
        self.deferred = np.asarray(self.covariates["apheresis_deferred"], dtype=bool).tolist()
        self.apheresis = np.column_stack([model.apheresis_duration.from_uniform(u(f"apheresis.duration.{a}"))
                                          for a in range(attempts)]).tolist()
        self.manufacturing = np.column_stack([model.manufacturing_duration.from_uniform(
            u(f"manufacturing.duration.{a}")) for a in range(attempts)]).tolist()
        self.failure_u = np.column_stack([u(f"manufacturing.failure.{a}") for a in range(attempts)]).tolist()
        self.recollection_u = np.column_stack([u(f"manufacturing.recollection.{a}")
                                               for a in range(attempts)]).tolist()
        self.infusion_delay = model.infusion_delay.from_uniform(u("infusion.delay")).tolist()
        self.out = {name: np.full(n, default, dtype=column_dtype(default)) for name, default in OUTCOME_FIELDS.items()}
        self.out["arrival_day"] = arrival.copy()
        self.infusion_time = np.full(n, np.nan)
        # Per-patient values kept in lists while the pathway runs (scalar access
        # is several times faster than NumPy's) and written to ``out`` when the
        # patient leaves the pathway (:meth:`_settle`).
        self.attempt = [0] * n
        self.attempt_detail = [f"attempt {k + 1}" for k in range(attempts)]  # formatted once
        self.apheresis_day = [None] * n
        self.waited = [0.0] * n
        self.asked = [0.0] * n  # when the current manufacturing request was made
        self.started = [0.0] * n  # when manufacturing started

    # ------------------------------------------------------------ helpers
    def record(self, i: int, now: float, event: str, detail: str = ""):
        self.log((self.ids[i], now - self.arrival[i], event, detail))

    def event_arrays(self, coded: bool = False) -> tuple:
        """The recorded events as (patient, time_days, event, detail) arrays,
        by patient; ``coded``: event and detail as codes (records.code_of)."""
        if self._event_arrays is None:
            self._event_arrays = tuple(event_columns(self.events).values())
        if not coded:
            return self._event_arrays
        if self._event_codes is None:
            patient, days, names, details = self._event_arrays
            self._event_codes = (patient, days, codes_of(names), codes_of(details))
        return self._event_codes

    def part(self, rows) -> AccessPart:
        """Some patients alone: ``rows`` (a slice, or sorted positions) of this cohort."""
        return AccessPart(self, rows)

    def _end(self, i: int, when: float, event: str, cause: str = ""):
        self._settle(i)
        day = when - self.arrival[i]
        self.record(i, when, event, cause)
        self.out["end_day"][i] = day
        if event == "death":
            self.out["death_day"][i] = day
            self.out["death_cause"][i] = cause

    # ------------------------------------------------------------ transitions
    def enrol(self, i: int, now: float):
        self.log((self.ids[i], 0.0, "enrolled", ""))
        return WAIT, now + self.referral[i], self.referred

    def referred(self, i: int, now: float):
        if self.deferred[i]:
            self.record(i, now, "apheresis_deferred")
            return WAIT, now + self.deferral[i], self.collect
        return self.collect(i, now)

    def collect(self, i: int, now: float):
        if self.apheresis_day[i] is None:  # the first collection
            self.apheresis_day[i] = now - self.arrival[i]
        return REQUEST, "apheresis", self.apheresis[i][self.attempt[i]], None, self.collected

    def collected(self, i: int, now: float):
        day = now - self.arrival[i]
        self.log((self.ids[i], day, "apheresis", self.attempt_detail[self.attempt[i]]))
        self.log((self.ids[i], day, "manufacturing_queued", ""))
        self.asked[i] = now
        return REQUEST, "manufacturing", self.manufacturing[i][self.attempt[i]], self.manufacturing_started, \
            self.manufactured

    def manufacturing_started(self, i: int, now: float):
        self.log((self.ids[i], now - self.arrival[i], "manufacturing_start", ""))
        self.started[i] = now

    def manufactured(self, i: int, now: float):
        self.waited[i] += self.started[i] - self.asked[i]
        self.attempt[i] += 1
        a = self.attempt[i]
        if self.failure_u[i][a - 1] >= self.model.manufacturing_failure:
            return WAIT, now + self.infusion_delay[i], self.infuse
        self.record(i, now, "manufacturing_failure", self.attempt_detail[a - 1])
        if a < self.model.max_manufacturing_attempts and self.recollection_u[i][a - 1] < self.model.recollection:
            self.record(i, now, "recollection")
            return self.collect(i, now)
        self.out["manufacturing_failure"][i] = True
        self._leave(i, now, "manufacturing_failure")
        return LEFT

    def infuse(self, i: int, now: float):
        self.infusion_time[i] = now
        self._settle(i)
        return INFUSED

    def _settle(self, i: int):
        out = self.out
        if self.apheresis_day[i] is not None:
            out["apheresis_day"][i] = self.apheresis_day[i]
        out["wait_manufacturing_days"][i] = self.waited[i]
        out["manufacturing_attempts"][i] = self.attempt[i]

    def exit(self, i: int, now: float):
        """The patient's exit time came before infusion."""
        reason = self.exit_reason[i]
        if reason == _DEATH:
            self._end(i, now, "death", "pre_infusion")
        elif reason == _WITHDRAWAL:
            self._leave(i, now, "withdrawal")
        else:
            self._end(i, now, "censored")
        return LEFT

    def _leave(self, i: int, now: float, reason: str):
        """Withdrawn or final product failure: followed for survival."""
        self.out["pathway_exit_day"][i] = now - self.arrival[i]
        self.out["withdrawn"][i] = reason == "withdrawal"
        if reason == "withdrawal":
            self.record(i, now, "withdrawal")
        dies = now + self.survival_after_exit[i]
        if dies < self.censor[i]:
            self._end(i, dies, "death", _AFTER[reason])
        else:
            self._end(i, self.censor[i], "censored")


class AccessPart:
    """Some of an AccessPathway's patients (a contiguous range or a sorted
    selection), with the attributes the post-infusion rows read (their queue
    was simulated with the whole cohort)."""

    def __init__(self, access: AccessPathway, rows):
        if isinstance(rows, slice):
            self.patients = slice(access.start + rows.start, access.start + rows.stop)
            self.patient_ids = np.arange(self.patients.start, self.patients.stop)
        else:
            self.patient_ids = self.patients = access.start + np.asarray(rows)
        self.n = len(self.patient_ids)
        self.out = {k: v[rows] for k, v in access.out.items()}
        self.covariates = {k: v[rows] for k, v in access.covariates.items()}
        self.infusion_time = access.infusion_time[rows]
        self._access = access
        self._events = {}

    def event_arrays(self, coded: bool = False) -> tuple:
        if coded not in self._events:
            patient, *columns = self._access.event_arrays(coded)
            if isinstance(self.patients, slice):  # events are by patient
                first, last = np.searchsorted(patient, [self.patients.start, self.patients.stop])
                mine = slice(first, last)
            else:
                mine = np.isin(patient, self.patient_ids)
            self._events[coded] = (patient[mine], *(c[mine] for c in columns))
        return self._events[coded]
