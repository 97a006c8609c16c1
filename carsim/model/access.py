"""The access pathway, enrolment to infusion: referral, apheresis (possibly
deferred), manufacturing (possibly failing, re-collected), release and
lymphodepletion, with death and withdrawal competing throughout.

It is written once, as one function, :func:`transition`: given a patient
and the step due now, it applies that step and says what comes next: a
wait, a request for a shared slot (held for a duration, after which the
next step runs) or the end of the pathway.  Engines only schedule: the
array engine runs an exact event loop over a heap for the whole cohort
(compiled, :mod:`carsim.model.compiled`); the SimPy engine runs one process
per patient with shared ``simpy.Resource`` s.  Nothing here depends on the
policy, so the array engine runs it once for all policies.

The patients' draws, state and outcome columns are two arrays with one row
per patient, named columns (module constants); the event log holds text
codes (:func:`~carsim.model.records.code_of`).

Before infusion the hazards of death and withdrawal read only baseline
covariates, so each patient's exit time (death, withdrawal or the end of
follow-up, whichever comes first) is known on enrolment.
"""

from __future__ import annotations

import numpy as np

from .compiled import compiled, interpreted
from .definition import ModelDefinition, StateView
from .random import RandomStreams
from .records import OUTCOME_FIELDS, code_of, column_dtype, vocabulary

INF = np.inf

# What a transition returns: (action, time or hold, resource, next step, step when granted).
#   WAIT: wait until ``time``, then run the next step;
#   REQUEST: ask for a slot of ``resource`` and hold it ``hold`` days; the
#   granted step (NO_STEP: none) runs when it is granted, the next step when
#   the hold ends;
#   INFUSED or LEFT: the end of the access pathway (died, withdrew, failed
#   manufacturing or reached the end of follow-up).
WAIT, REQUEST, INFUSED, LEFT = range(4)
RESOURCES = ("apheresis", "manufacturing")
APHERESIS, MANUFACTURING = range(2)
# The steps.
ENROL, REFERRED, COLLECT, COLLECTED, MANUFACTURING_STARTED, MANUFACTURED, INFUSE, EXIT = range(8)
NO_STEP = -1
_DEATH, _WITHDRAWAL, _CENSORED = range(3)  # why a patient leaves before infusion

# The event texts the pathway writes, by position in ``AccessPathway.texts``.
TEXTS = ("", "enrolled", "apheresis_deferred", "apheresis", "manufacturing_queued", "manufacturing_start",
         "manufacturing_failure", "recollection", "withdrawal", "death", "censored", "pre_infusion",
         "after_withdrawal", "after_manufacturing_failure")
(_NONE, _ENROLLED, _DEFERRED, _APHERESIS, _QUEUED, _STARTED, _FAILURE, _RECOLLECTION, _WITHDRAWN, _DIED,
 _CENSOR, _PRE_INFUSION, _AFTER_WITHDRAWAL, _AFTER_FAILURE) = range(len(TEXTS))
# Events one patient can write at most: enrolled, deferred, five per
# manufacturing attempt, withdrawal and the end.
_EVENTS_PER_PATIENT, _EVENTS_PER_ATTEMPT = 4, 5

# The patients' values, one row per patient (a row's values sit together in
# memory; compiled calls pass a few arrays, not dozens).  Floats: the draws,
# the state while on the pathway and the float outcome columns, then four
# columns per manufacturing attempt.
(ARRIVAL, EXIT_TIME, CENSOR, SURVIVAL_AFTER_EXIT, REFERRAL, DEFERRAL, INFUSION_DELAY, FIRST_COLLECTION, WAITED,
 ASKED, STARTED, INFUSION_TIME, PATHWAY_EXIT_DAY, END_DAY, DEATH_DAY, PER_ATTEMPT) = range(16)
APHERESIS_HOLD, MANUFACTURING_HOLD, FAILURE_U, RECOLLECTION_U = range(4)  # + PER_ATTEMPT + 4 * attempt
# Integers: the draws, the state and the integer and flag outcome columns (death cause as a text code).
EXIT_REASON, DEFERRED, ATTEMPT, FAILED, WITHDRAWN, DEATH_CAUSE, INTEGERS = range(7)
# Settings: the model's probabilities, the number of attempts, the first patient's id, whether to log.
FAILURE_PROBABILITY, RECOLLECTION_PROBABILITY, ATTEMPTS, FIRST_ID, RECORD = range(5)
# The event log: (patient, event, detail) codes beside the days since enrolment.
LOG_PATIENT, LOG_EVENT, LOG_DETAIL = range(3)


def exp1(u):
    """Exp(1) variates from uniforms (a hazard clock's threshold)."""
    return -np.log1p(-np.asarray(u, dtype=float))


def clock_once(hazard, multiplier, uniforms):
    """Delay to a constant-multiplier clock's firing (inf for a zero multiplier)."""
    with np.errstate(divide="ignore"):
        delay = hazard.law.inverse_cumulative_hazard(exp1(uniforms) / multiplier)
    return np.where(multiplier > 0, delay, INF)


# ------------------------------------------------------------ the transitions
# ``f``, ``k``: the float and integer values, one row per patient; ``s``:
# the settings; ``log``, ``days``, ``logged``: the event log and its length;
# ``texts``: the codes of TEXTS, then of "attempt 1", "attempt 2", ...
# Calls pass text codes read from ``texts`` rather than constants: numba
# compiles a function again for every distinct constant it is called with.
@compiled
def _log(s, log, days, logged, i, day, event, detail):
    if s[RECORD]:
        n = logged[0]
        log[n, LOG_PATIENT] = int(s[FIRST_ID]) + i
        log[n, LOG_EVENT] = event
        log[n, LOG_DETAIL] = detail
        days[n] = day
        logged[0] = n + 1


@compiled
def _end(f, k, s, log, days, logged, texts, i, when, event, cause):
    day = when - f[i, ARRIVAL]
    _log(s, log, days, logged, i, day, event, cause)
    f[i, END_DAY] = day
    if event == texts[_DIED]:
        f[i, DEATH_DAY] = day
        k[i, DEATH_CAUSE] = cause


@compiled
def _leave(f, k, s, log, days, logged, texts, i, now, after):
    """Withdrawn or final product failure (``after``: the death cause's
    code, after withdrawal or after manufacturing failure): followed for
    survival."""
    withdrawal = after == texts[_AFTER_WITHDRAWAL]
    f[i, PATHWAY_EXIT_DAY] = now - f[i, ARRIVAL]
    k[i, WITHDRAWN] = withdrawal
    if withdrawal:
        _log(s, log, days, logged, i, now - f[i, ARRIVAL], texts[_WITHDRAWN], texts[_NONE])
    dies = now + f[i, SURVIVAL_AFTER_EXIT]
    if dies < f[i, CENSOR]:
        _end(f, k, s, log, days, logged, texts, i, dies, texts[_DIED], after)
    else:
        _end(f, k, s, log, days, logged, texts, i, f[i, CENSOR], texts[_CENSOR], texts[_NONE])


@compiled
def _collect(f, k, i, now):
    if np.isnan(f[i, FIRST_COLLECTION]):
        f[i, FIRST_COLLECTION] = now - f[i, ARRIVAL]
    return REQUEST, f[i, PER_ATTEMPT + 4 * k[i, ATTEMPT] + APHERESIS_HOLD], APHERESIS, COLLECTED, NO_STEP


@compiled
def transition(f, k, s, log, days, logged, texts, step, i, now):
    """Apply ``step`` to patient ``i`` at time ``now`` (days); what comes
    next, as (action, time or hold, resource, next step, granted step)."""
    none = texts[_NONE]
    if step == ENROL:
        _log(s, log, days, logged, i, 0.0, texts[_ENROLLED], none)
        return WAIT, now + f[i, REFERRAL], -1, REFERRED, NO_STEP
    if step == REFERRED:
        if k[i, DEFERRED]:
            _log(s, log, days, logged, i, now - f[i, ARRIVAL], texts[_DEFERRED], none)
            return WAIT, now + f[i, DEFERRAL], -1, COLLECT, NO_STEP
        return _collect(f, k, i, now)
    if step == COLLECT:
        return _collect(f, k, i, now)
    if step == COLLECTED:
        day = now - f[i, ARRIVAL]
        _log(s, log, days, logged, i, day, texts[_APHERESIS], texts[len(TEXTS) + k[i, ATTEMPT]])  # "attempt 1", ...
        _log(s, log, days, logged, i, day, texts[_QUEUED], none)
        f[i, ASKED] = now
        return (REQUEST, f[i, PER_ATTEMPT + 4 * k[i, ATTEMPT] + MANUFACTURING_HOLD], MANUFACTURING, MANUFACTURED,
                MANUFACTURING_STARTED)
    if step == MANUFACTURING_STARTED:
        _log(s, log, days, logged, i, now - f[i, ARRIVAL], texts[_STARTED], none)
        f[i, STARTED] = now
        return WAIT, now, -1, NO_STEP, NO_STEP  # (ignored: a granted step only records)
    if step == MANUFACTURED:
        f[i, WAITED] += f[i, STARTED] - f[i, ASKED]
        done = PER_ATTEMPT + 4 * k[i, ATTEMPT]
        k[i, ATTEMPT] += 1
        if f[i, done + FAILURE_U] >= s[FAILURE_PROBABILITY]:
            return WAIT, now + f[i, INFUSION_DELAY], -1, INFUSE, NO_STEP
        _log(s, log, days, logged, i, now - f[i, ARRIVAL], texts[_FAILURE], texts[len(TEXTS) + k[i, ATTEMPT] - 1])
        if k[i, ATTEMPT] < s[ATTEMPTS] and f[i, done + RECOLLECTION_U] < s[RECOLLECTION_PROBABILITY]:
            _log(s, log, days, logged, i, now - f[i, ARRIVAL], texts[_RECOLLECTION], none)
            return _collect(f, k, i, now)
        k[i, FAILED] = 1
        _leave(f, k, s, log, days, logged, texts, i, now, texts[_AFTER_FAILURE])
        return LEFT, now, -1, NO_STEP, NO_STEP
    if step == INFUSE:
        f[i, INFUSION_TIME] = now
        return INFUSED, now, -1, NO_STEP, NO_STEP
    # EXIT: the patient's exit time came before infusion.
    reason = k[i, EXIT_REASON]
    if reason == _DEATH:
        _end(f, k, s, log, days, logged, texts, i, now, texts[_DIED], texts[_PRE_INFUSION])
    elif reason == _WITHDRAWAL:
        _leave(f, k, s, log, days, logged, texts, i, now, texts[_AFTER_WITHDRAWAL])
    else:
        _end(f, k, s, log, days, logged, texts, i, now, texts[_CENSOR], none)
    return LEFT, now, -1, NO_STEP, NO_STEP


class AccessPathway:
    """The access pathway of patients ``start .. stop - 1`` of a cohort.

    Outcome columns are in ``out`` (one row per patient, local index ``i``;
    written by :meth:`finish`), events in a log of codes, read with
    :meth:`event_arrays` as (patient id, days since enrolment, event, detail)."""

    def __init__(self, model: ModelDefinition, streams: RandomStreams, covariates: dict, arrivals: np.ndarray,
                 start: int, stop: int, record_events: bool = True):
        n = stop - start
        self.n, self.start = n, start
        self.patients = slice(start, stop)  # where they are in the random streams
        self.patient_ids = np.arange(start, stop)
        self.model = model
        self.record_events = record_events
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
        first = np.minimum(np.minimum(death, withdraw), censor)
        f = self.floats = np.full((n, PER_ATTEMPT + 4 * attempts), np.nan)
        f[:, ARRIVAL], f[:, EXIT_TIME], f[:, CENSOR] = arrival, first, censor
        f[:, SURVIVAL_AFTER_EXIT] = model.survival_after_withdrawal.from_uniform(u("pre_infusion.survival_after_exit"))
        f[:, REFERRAL] = model.referral_delay.from_uniform(u("referral"))
        f[:, DEFERRAL] = model.apheresis_deferral.from_uniform(u("apheresis.deferral"))
        f[:, INFUSION_DELAY] = model.infusion_delay.from_uniform(u("infusion.delay"))
        f[:, WAITED] = f[:, ASKED] = f[:, STARTED] = 0.0
        for a in range(attempts):
            at = PER_ATTEMPT + 4 * a
            f[:, at + APHERESIS_HOLD] = model.apheresis_duration.from_uniform(u(f"apheresis.duration.{a}"))
            f[:, at + MANUFACTURING_HOLD] = model.manufacturing_duration.from_uniform(u(f"manufacturing.duration.{a}"))
            f[:, at + FAILURE_U] = u(f"manufacturing.failure.{a}")
            f[:, at + RECOLLECTION_U] = u(f"manufacturing.recollection.{a}")
        k = self.integers = np.zeros((n, INTEGERS), np.int64)
        k[:, EXIT_REASON] = np.where(first == death, _DEATH, np.where(first == withdraw, _WITHDRAWAL, _CENSORED))
        k[:, DEFERRED] = np.asarray(self.covariates["apheresis_deferred"], dtype=bool)
        k[:, DEATH_CAUSE] = -1
        self.settings = np.array([model.manufacturing_failure, model.recollection, attempts, start,
                                  bool(record_events)], dtype=float)
        events = n * (_EVENTS_PER_PATIENT + _EVENTS_PER_ATTEMPT * attempts) if record_events else 0
        self.log = np.empty((events, 3), np.int64)
        self.log_days = np.empty(events)
        self.logged = np.zeros(1, np.int64)
        self.texts = np.array([code_of(t) for t in (*TEXTS, *(f"attempt {a + 1}" for a in range(attempts)))],
                              np.int64)
        self.out = {name: np.full(n, default, dtype=column_dtype(default)) for name, default in OUTCOME_FIELDS.items()}
        self.out["arrival_day"] = arrival.copy()

    def arrays(self) -> tuple:
        """The arrays the transitions read and write, in their order."""
        return self.floats, self.integers, self.settings, self.log, self.log_days, self.logged, self.texts

    def step(self, step: int, i: int, now: float) -> tuple:
        """One transition of one patient, as plain Python (the SimPy engine's
        per-patient calls; a compiled call would cost more than it saves)."""
        return _transition_python(*self.arrays(), step, i, now)

    @property
    def arrival(self) -> np.ndarray:
        return self.floats[:, ARRIVAL]

    @property
    def exit_time(self) -> np.ndarray:
        """When each patient dies, withdraws or reaches the end of follow-up, if not infused first."""
        return self.floats[:, EXIT_TIME]

    @property
    def infusion_time(self) -> np.ndarray:
        return self.floats[:, INFUSION_TIME]

    def finish(self, rows=None):
        """Once the pathway has run (or patients ``rows`` have been infused):
        its outcome columns into ``out``.  In the SimPy engine the pathway
        after infusion shares ``out``, so only what the access pathway set is
        written."""
        rows = np.arange(self.n) if rows is None else np.atleast_1d(rows)
        f, k, out = self.floats[rows], self.integers[rows], self.out
        out["apheresis_day"][rows] = f[:, FIRST_COLLECTION]
        out["wait_manufacturing_days"][rows] = f[:, WAITED]
        out["manufacturing_attempts"][rows] = k[:, ATTEMPT]
        left = ~np.isnan(f[:, END_DAY])  # left the pathway before infusion
        for name, column in (("pathway_exit_day", PATHWAY_EXIT_DAY), ("end_day", END_DAY), ("death_day", DEATH_DAY)):
            out[name][rows[left]] = f[left, column]
        out["manufacturing_failure"][rows[left]] = k[left, FAILED] != 0
        out["withdrawn"][rows[left]] = k[left, WITHDRAWN] != 0
        died = left & (k[:, DEATH_CAUSE] >= 0)
        if died.any():
            out["death_cause"][rows[died]] = vocabulary()[k[died, DEATH_CAUSE]]

    # ------------------------------------------------------------ results
    def event_arrays(self, coded: bool = False) -> tuple:
        """The recorded events as (patient, time_days, event, detail) arrays,
        by patient (each patient's in time order); ``coded``: event and
        detail as codes (records.code_of)."""
        if self._event_codes is None:
            length = int(self.logged[0])
            log = self.log[:length]
            order = np.argsort(log[:, LOG_PATIENT], kind="stable")  # events were logged in time order
            log = log[order]
            self._event_codes = (log[:, LOG_PATIENT], self.log_days[:length][order], log[:, LOG_EVENT],
                                 log[:, LOG_DETAIL])
        if coded:
            return self._event_codes
        if self._event_arrays is None:
            patient, days, names, details = self._event_codes
            texts = vocabulary()
            self._event_arrays = (patient, days, texts[names], texts[details])
        return self._event_arrays

    def part(self, rows) -> AccessPart:
        """Some patients alone: ``rows`` (a slice, or sorted positions) of this cohort."""
        return AccessPart(self, rows)


_transition_python = interpreted(transition)


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
