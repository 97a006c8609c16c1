"""The fast engine: the same model as :mod:`carsim.model.patient`, computed
for a whole cohort at once.

* Before infusion, patients interact through the apheresis and
  manufacturing queues.  That stretch is an exact discrete-event loop over a
  heap (first come, first served, leaving the queue at death or withdrawal),
  in plain Python but only a handful of events a patient.  It does not depend
  on the policy, so it runs once for all policies.
* After infusion, every patient advances one event per round: each round
  computes all patients' next event times from their hazard clocks and
  schedules, takes the earliest per patient, and applies that event to all
  patients who have it with array operations.  Hazard clocks bank used
  hazard exactly as :class:`carsim.model.hazards.HazardClock` does.  All
  policies, and several cohorts (replications) of the same model, run in
  the same rounds: each (cohort, policy, patient) is one row, so the fixed
  cost of a round is paid once, not once per policy and cohort.
* Transplant beds are the one post-infusion resource.  The engine assumes a
  free bed at the end of the donor search and then checks the assumption:
  if beds would ever have been over-subscribed, the cohort is simulated by
  the SimPy engine instead (``engine`` in the result says which ran).

With the same random numbers (the same per-patient rows, see
:mod:`carsim.model.random`) the two engines produce the same patients.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from itertools import pairwise

import numpy as np

from carsim._units import DAYS_PER_MONTH
from carsim.scenario.conditions import vectorise_condition
from .definition import CompiledHazard, CompiledProbability, Factor, ModelDefinition, reads_state
from .patient import DEFAULT_ACTIONS, RELAPSE_PHENOTYPES
from .records import OUTCOME_FIELDS, column_dtype, event_columns
from carsim.scenario.vocabulary import INITIAL_STATE

INF = np.inf
_DAY28, _MONTH3 = 28.0, 365.25 / 4

# ------------------------------------------------------------------ vector functions of the state


class _View:
    """Attribute access to the state arrays of the patients ``idx`` at ``now``."""

    __slots__ = ("_arrays", "_idx", "_infusion", "_now")

    def __init__(self, arrays: dict, idx, now, infusion):
        self._arrays, self._idx, self._now, self._infusion = arrays, idx, now, infusion

    def __getattr__(self, name):
        if name == "days_since_infusion":
            return np.where(np.isnan(self._infusion[self._idx]), 0.0, self._now - self._infusion[self._idx])
        if name == "months_since_infusion":
            return self.days_since_infusion / DAYS_PER_MONTH
        return self._arrays[name][self._idx]


def _as_mask(values, n: int) -> np.ndarray:
    """A condition's value for n patients (a condition on constants gives a scalar)."""
    values = np.asarray(values, dtype=bool)
    return values if values.shape == (n,) else np.full(n, bool(values))


def _vector_factor(factor: Factor):
    if factor.condition is not None:
        test = vectorise_condition(factor.condition)
        return lambda view, n: np.where(_as_mask(test(view), n), factor.value, 1.0)
    return lambda view, n: factor.value ** np.asarray(getattr(view, factor.per), dtype=float)


class _VectorProduct:
    def __init__(self, factors):
        self.factors = tuple(factors)
        self.parts = [_vector_factor(f) for f in self.factors]

    def __call__(self, view, n):
        out = np.ones(n)
        for part in self.parts:
            out = out * part(view, n)
        return out

    def split(self):
        """(static, dynamic) products: factors that read only baseline
        covariates can be evaluated once per patient."""
        return (_VectorProduct([f for f in self.factors if not reads_state(f)]),
                _VectorProduct([f for f in self.factors if reads_state(f)]))


def _vector_probability(probability: CompiledProbability):
    product = _VectorProduct(probability.odds_ratios)
    base = probability.base

    def evaluate(view, n):
        if not product.parts:
            return np.full(n, base)
        ratio = product(view, n)
        if base >= 1.0:
            return np.ones(n)
        if base <= 0.0:
            return np.zeros(n)
        odds = base / (1.0 - base) * ratio
        with np.errstate(invalid="ignore", over="ignore"):
            p = odds / (1.0 + odds)
        return np.where(np.isinf(ratio), 1.0, np.where(ratio == 0, 0.0, p))

    return evaluate


class VectorModel:
    """Array versions of a ModelDefinition's multipliers, probabilities and rules."""

    def __init__(self, model: ModelDefinition):
        self.model = model
        self.hazards = {}
        self.probabilities = {}
        for name in ("pre_infusion_death", "pre_infusion_withdrawal", "bca_loss", "mrd_emergence",
                     "non_relapse_death"):
            self.hazards[name] = _VectorProduct(getattr(model, name).factors)
        for name, hazard in model.relapse.items():
            self.hazards[name] = _VectorProduct(hazard.factors)
        for name in ("severe_crs", "severe_icans", "early_death", "complete_remission", "mrd_positive_at_assessment",
                     "reremission", "transplant_death", "regain_bca"):
            self.probabilities[name] = _vector_probability(getattr(model, name))
        self.split_hazards = {name: product.split() for name, product in self.hazards.items()}
        self.rules = {
            policy_name: {event: [(rule.index, vectorise_condition(rule.condition), rule.action) for rule in rules]
                          for event, rules in policy.rules_by_event.items()}
            for policy_name, policy in model.policies.items()
        }


def vector_model(model: ModelDefinition) -> VectorModel:
    cached = getattr(model, "_vector_model", None)
    if cached is None:
        cached = VectorModel(model)
        model._vector_model = cached
    return cached


def _fire_times(law, origin, since, used, threshold, multiplier):
    """Absolute time each clock fires (inf when the multiplier is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        base = law.cumulative_hazard(since - origin)
        target = base + (threshold - used) / multiplier
        out = origin + law.inverse_cumulative_hazard(target)
    return np.where(multiplier > 0, out, INF)


def _exp1(u):
    return -np.log1p(-np.asarray(u, dtype=float))


# ------------------------------------------------------------------ before infusion (shared by all policies)

_ARRIVE, _REFERRED, _DEFERRED, _APH_DONE, _MFG_DONE, _INFUSE, _EXIT = range(7)


class PreInfusion:
    """Outcome of the access pathway for patients start..stop-1 (policy-independent)."""

    def __init__(self, model: ModelDefinition, streams, covariates: dict, arrivals: np.ndarray, start: int, stop: int,
                 record_events: bool = True):
        vm = vector_model(model)
        n = stop - start
        self.n = n
        self.start = start
        self.record_events = record_events
        self.events: list[tuple] = []
        self._event_arrays = None  # built from self.events on first use
        arrays = {name: np.asarray(values[start:stop]) for name, values in covariates.items()}
        arrays.update(_initial_state(n))
        self.covariates = arrays
        view = _View(arrays, slice(None), 0.0, np.full(n, np.nan))
        arrival = np.asarray(arrivals[start:stop], dtype=float)
        pre = streams.block("pre_infusion")[start:stop]
        horizon = model.horizon_days
        t_death = arrival + _clock_once(model.pre_infusion_death, vm.hazards["pre_infusion_death"](view, n), pre[:, 0])
        t_withdraw = arrival + _clock_once(model.pre_infusion_withdrawal,
                                           vm.hazards["pre_infusion_withdrawal"](view, n), pre[:, 1])
        t_censor = arrival + horizon
        survival_after_exit = model.survival_after_withdrawal.from_uniform(pre[:, 2])
        referral = model.referral_delay.from_uniform(streams.block("referral")[start:stop, 0])
        aph = streams.block("apheresis")[start:stop]
        mfg = streams.block("manufacturing")[start:stop]
        attempts = model.max_manufacturing_attempts
        deferral = model.apheresis_deferral.from_uniform(aph[:, 0])
        aph_duration = np.column_stack([model.apheresis_duration.from_uniform(aph[:, 2 * a + 1])
                                        for a in range(attempts)])
        mfg_duration = np.column_stack([model.manufacturing_duration.from_uniform(mfg[:, 3 * a])
                                        for a in range(attempts)])
        infusion_delay = model.infusion_delay.from_uniform(streams.block("infusion")[start:stop, 0])

        out = {name: np.full(n, default, dtype=column_dtype(default)) for name, default in OUTCOME_FIELDS.items()}
        out["arrival_day"] = arrival.copy()
        self.out = out
        self.infusion_time = np.full(n, np.nan)

        # Python lists: scalar access in the event loop is several times faster than NumPy's.
        arrival_l, death_l, withdraw_l, censor_l = arrival.tolist(), t_death.tolist(), t_withdraw.tolist(), \
            t_censor.tolist()
        exit_time = np.minimum(np.minimum(t_death, t_withdraw), t_censor).tolist()
        referral_l, deferral_l, infusion_l = referral.tolist(), deferral.tolist(), infusion_delay.tolist()
        aph_l, mfg_l = aph_duration.tolist(), mfg_duration.tolist()
        fail_l = mfg[:, 1:3 * attempts:3].tolist()  # attempt a's uniforms are columns 3a, 3a + 1, 3a + 2
        recollect_l = mfg[:, 2:3 * attempts:3].tolist()
        deferred_l = np.asarray(arrays["apheresis_deferred"], dtype=bool).tolist()
        survival_l = survival_after_exit.tolist()
        failure_p, recollection_p = model.manufacturing_failure, model.recollection
        caps = {"apheresis": model.capacities["apheresis"], "manufacturing": model.capacities["manufacturing"]}
        busy = {"apheresis": 0, "manufacturing": 0}
        waiting = {"apheresis": deque(), "manufacturing": deque()}
        holding = [None] * n
        status = [0] * n  # 0 on the pathway, 1 infused, 2 left
        token = [0] * n
        attempt = [0] * n
        asked = [0.0] * n
        hold_start = [0.0] * n
        busy_days = {"apheresis": 0.0, "manufacturing": 0.0}
        first_request = {"apheresis": None, "manufacturing": None}
        last_release = {"apheresis": None, "manufacturing": None}
        started = [0.0] * n
        aph_day = [np.nan] * n
        mfg_wait = [0.0] * n
        record = self.events.append if record_events else (lambda event: None)
        patient_ids = list(range(start, stop))
        heap = []
        seq = 0

        def push(time, kind, i):
            nonlocal seq
            heapq.heappush(heap, (time, seq, kind, i, token[i]))
            seq += 1

        def request(resource, i, now):
            asked[i] = now
            if first_request[resource] is None:
                first_request[resource] = now
            cap = caps[resource]
            if cap is None or busy[resource] < cap:
                begin(resource, i, now)
            else:
                waiting[resource].append(i)

        def begin(resource, i, now):
            if caps[resource] is not None:
                busy[resource] += 1
                holding[i] = resource
                hold_start[i] = now
            if resource == "apheresis":
                push(now + aph_l[i][attempt[i]], _APH_DONE, i)
            else:
                record((patient_ids[i], now - arrival_l[i], "manufacturing_start", ""))
                started[i] = now
                push(now + mfg_l[i][attempt[i]], _MFG_DONE, i)

        def release(i, now):
            resource = holding[i]
            if resource is None:
                return
            holding[i] = None
            busy[resource] -= 1
            busy_days[resource] += now - hold_start[i]
            last_release[resource] = now
            queue = waiting[resource]
            while queue:
                j = queue.popleft()
                if status[j] == 0:
                    begin(resource, j, now)
                    break

        def leave(i, now, reason):
            """Withdrawn or final product failure: followed for survival."""
            status[i] = 2
            token[i] += 1
            out["pathway_exit_day"][i] = now - arrival_l[i]
            out["withdrawn"][i] = reason == "withdrawal"
            if reason == "withdrawal":
                record((patient_ids[i], now - arrival_l[i], "withdrawal", ""))
            release(i, now)
            dies = now + survival_l[i]
            if dies < censor_l[i]:
                self._finish(i, dies, "death", "after_" + reason)
            else:
                self._finish(i, censor_l[i], "censored", "")

        # Arrivals are read in (time, patient) order beside the heap rather
        # than pushed up front: the heap then holds only patients on the
        # pathway.  At equal times an arrival goes first, as if pushed first.
        arrival_order = np.lexsort((np.arange(n), arrival)).tolist()
        arrived = 0
        while True:
            if arrived < n and (not heap or arrival_l[arrival_order[arrived]] <= heap[0][0]):
                i = arrival_order[arrived]
                arrived += 1
                now, kind, tok = arrival_l[i], _ARRIVE, token[i]
            elif heap:
                now, _, kind, i, tok = heapq.heappop(heap)
            else:
                break
            if tok != token[i] or status[i] != 0:
                continue
            if kind == _ARRIVE:
                record((patient_ids[i], 0.0, "enrolled", ""))
                push(exit_time[i], _EXIT, i)
                push(now + referral_l[i], _REFERRED, i)
            elif kind == _EXIT:
                if exit_time[i] == death_l[i]:
                    self._finish(i, now, "death", "pre_infusion")
                    status[i] = 2
                    release(i, now)
                elif exit_time[i] == withdraw_l[i]:
                    leave(i, now, "withdrawal")
                else:
                    self._finish(i, now, "censored", "")
                    status[i] = 2
                    release(i, now)
            elif kind == _REFERRED:
                if deferred_l[i]:
                    record((patient_ids[i], now - arrival_l[i], "apheresis_deferred", ""))
                    push(now + deferral_l[i], _DEFERRED, i)
                else:
                    aph_day[i] = now - arrival_l[i]
                    request("apheresis", i, now)
            elif kind == _DEFERRED:
                aph_day[i] = now - arrival_l[i]
                request("apheresis", i, now)
            elif kind == _APH_DONE:
                release(i, now)
                record((patient_ids[i], now - arrival_l[i], "apheresis", f"attempt {attempt[i] + 1}"))
                record((patient_ids[i], now - arrival_l[i], "manufacturing_queued", ""))
                request("manufacturing", i, now)
            elif kind == _MFG_DONE:
                release(i, now)
                mfg_wait[i] += started[i] - asked[i]
                attempt[i] += 1
                a = attempt[i]
                out["manufacturing_attempts"][i] = a
                if fail_l[i][a - 1] >= failure_p:
                    push(now + infusion_l[i], _INFUSE, i)
                    continue
                record((patient_ids[i], now - arrival_l[i], "manufacturing_failure", f"attempt {a}"))
                if a < attempts and recollect_l[i][a - 1] < recollection_p:
                    record((patient_ids[i], now - arrival_l[i], "recollection", ""))
                    request("apheresis", i, now)
                    continue
                out["manufacturing_failure"][i] = True
                leave(i, now, "manufacturing_failure")
            elif kind == _INFUSE:
                status[i] = 1
                token[i] += 1
                self.infusion_time[i] = now
        out["apheresis_day"] = np.asarray(aph_day, dtype=float)
        self.resource_use = {
            name: ({"busy_days": busy_days[name], "capacity": caps[name],
                    "span_days": (last_release[name] or now) - first_request[name]}
                   if caps[name] is not None and first_request[name] is not None
                   else {"busy_days": float("nan"), "capacity": None, "span_days": 0.0})
            for name in ("apheresis", "manufacturing")
        }
        out["wait_manufacturing_days"] = np.asarray(mfg_wait, dtype=float)

    def event_arrays(self) -> tuple:
        """The recorded events as (patient, time_days, event, detail) arrays, by patient."""
        if self._event_arrays is None:
            self._event_arrays = tuple(event_columns(self.events).values())
        return self._event_arrays

    def part(self, first: int, stop: int) -> _PreInfusionPart:
        """Patients ``start + first .. start + stop - 1`` alone."""
        return _PreInfusionPart(self, first, stop)

    def _finish(self, i, time, event, cause):
        arrival = self.out["arrival_day"][i]
        if self.record_events:
            self.events.append((self.start + i, time - arrival, event, cause))
        self.out["end_day"][i] = time - arrival
        if event == "death":
            self.out["death_day"][i] = time - arrival
            self.out["death_cause"][i] = cause


class _PreInfusionPart:
    """A contiguous range of a PreInfusion's patients, with the attributes
    PostInfusion reads (their queue was simulated with the whole cohort)."""

    def __init__(self, pre: PreInfusion, first: int, stop: int):
        rows = slice(first, stop)
        self.start, self.n = pre.start + first, stop - first
        self.out = {k: v[rows] for k, v in pre.out.items()}
        self.covariates = {k: v[rows] for k, v in pre.covariates.items()}
        self.infusion_time = pre.infusion_time[rows]
        patient, *columns = pre.event_arrays()
        mine = (patient >= self.start) & (patient < self.start + self.n)
        self._events = (patient[mine], *(c[mine] for c in columns))

    def event_arrays(self) -> tuple:
        return self._events


def _clock_once(hazard: CompiledHazard, multiplier, uniforms):
    """Delay to a constant-multiplier clock's firing (inf for a zero multiplier)."""
    with np.errstate(divide="ignore"):
        delay = hazard.law.inverse_cumulative_hazard(_exp1(uniforms) / multiplier)
    return np.where(multiplier > 0, delay, INF)


def _initial_state(n: int) -> dict:
    return {name: np.full(n, value, dtype=column_dtype(value)) for name, value in INITIAL_STATE.items()}


# ------------------------------------------------------------------ after infusion (all policies at once)

_CLOCKS = ("non_relapse_death", "bca_loss", "mrd_emergence", *RELAPSE_PHENOTYPES)
(_S_DEATH, _S_CENSOR, _S_RESPONSE, _S_NRM, _S_BCA, _S_MRD, _S_POS, _S_NEG, _S_LS, _S_TEST, _S_DETECT, _S_HSCT,
 _S_REINFUSION, _S_REREMISSION) = range(14)
_CLOCK_SOURCE = {name: _S_NRM + k for k, name in enumerate(_CLOCKS)}


class _PerPatient:
    """A patient's block of uniforms, read by row: every policy's row of a
    patient sees the same numbers (common random numbers)."""

    __slots__ = ("block", "patient_of_row")

    def __init__(self, block: np.ndarray, patient_of_row: np.ndarray):
        self.block, self.patient_of_row = block, patient_of_row

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.block[(self.patient_of_row[key[0]], *key[1:])]
        return self.block[self.patient_of_row[key]]


class PostInfusion:
    """Rounds of array updates, one event per row per round.

    ``cohorts`` are (PreInfusion, RandomStreams) pairs of the same model.
    Rows come in groups, one per (cohort, policy), cohort-major: group
    ``g = c * len(policies) + k`` holds cohort ``c``'s patients under
    ``policies[k]``, in patient order, at rows ``group_start[g]`` on."""

    def __init__(self, model: ModelDefinition, policies, cohorts, record_events: bool = True):
        self.model, self.vm = model, vector_model(model)
        self.policies = list(policies)
        self.cohorts = [pre for pre, _streams in cohorts]
        self.record_events = record_events
        self.chunks: list[tuple] = []
        self.rules = [self.vm.rules[policy] for policy in self.policies]
        n_policies = len(self.policies)
        sizes = [pre.n for pre in self.cohorts]
        patient_offset = np.concatenate([[0], np.cumsum(sizes)])  # into the cohorts' patients, concatenated
        group_sizes = np.repeat(sizes, n_policies)
        self.group_start = np.concatenate([[0], np.cumsum(group_sizes)])
        self.n = n = int(self.group_start[-1])
        self.group_of_row = np.repeat(np.arange(len(group_sizes)), group_sizes)
        self.policy_of_row = self.group_of_row % n_policies
        self.patient_of_row = np.concatenate(
            [np.tile(np.arange(pre.n), n_policies) + patient_offset[c] for c, pre in enumerate(self.cohorts)])
        self.ids = np.concatenate([np.tile(np.arange(pre.start, pre.start + pre.n), n_policies)
                                   for pre in self.cohorts])

        def per_row(values: list) -> np.ndarray:
            return np.concatenate([np.tile(v, n_policies) for v in values])

        self.arrival = per_row([pre.out["arrival_day"] for pre in self.cohorts])
        self.out = {k: per_row([pre.out[k] for pre in self.cohorts]) for k in self.cohorts[0].out}
        self.state = {k: per_row([pre.covariates[k] for pre in self.cohorts]) for k in self.cohorts[0].covariates}
        self.infusion = per_row([pre.infusion_time for pre in self.cohorts])
        self.u = {kind: _PerPatient(np.concatenate([streams.block(kind)[pre.start:pre.start + pre.n]
                                                    for pre, streams in cohorts]), self.patient_of_row)
                  for kind in ("toxicity", "response", "mrd", "relapse", "non_relapse_death", "bca", "hsct",
                               "reinfusion")}
        self.laws = {name: (model.relapse[name].law if name in model.relapse else getattr(model, name).law)
                     for name in _CLOCKS}
        self.times = np.full((n, 14), INF)
        self.clock = {name: {"origin": np.zeros(n), "since": np.zeros(n), "used": np.zeros(n),
                             "threshold": np.zeros(n), "multiplier": np.ones(n), "running": np.zeros(n, bool)}
                      for name in _CLOCKS}
        self.ended = np.ones(n, bool)
        self.mrd_test_index = np.zeros(n, np.int64)
        self.test_days = np.asarray(model.mrd_test_days, dtype=float)
        self.check_days = np.asarray(model.bca_check_days, dtype=float)
        # Event details of every (result, test number), looked up rather than formatted per patient.
        self.mrd_test_details = np.array([[f"{result} (test {k})" for k in range(len(self.test_days))]
                                          for result in ("uninformative", "positive", "negative")], dtype=object)
        self.death_after_relapse = np.full(n, INF)
        self.hsct_consolidative = np.zeros(n, bool)
        self.beds = []  # (patients, start, end) of transplants, for the capacity check
        self.static_multiplier = {}
        self.state_dependent_clocks = [name for name in _CLOCKS if self.vm.split_hazards[name][1].parts]
        # Events at which some policy has a rule, or whose default action is not to observe.
        self.decided_events = {event for rules in self.rules for event in rules if rules[event]} | {
            event for event, action in DEFAULT_ACTIONS.items() if action != "observe"}

    # ------------------------------------------------------------ helpers
    def view(self, idx, now):
        return _View(self.state, idx, now, self.infusion)

    def record(self, idx, now, event, detail=""):
        """Append events as array chunks (in time order for each row)."""
        if not self.record_events or len(idx) == 0:
            return
        rel = now - self.arrival[idx]
        if rel.shape != idx.shape:
            rel = np.broadcast_to(rel, idx.shape)
        self.chunks.append((idx, rel, event, detail))

    def event_columns(self) -> list[dict]:
        """Per group (cohort, policy): the cohort's pre-infusion events and
        the group's post-infusion chunks as columns, each patient's events in
        time order."""
        parts = []
        n_policies = len(self.policies)
        for c, pre in enumerate(self.cohorts):
            patient, time_days, event, detail = pre.event_arrays()
            starts = self.group_start[c * n_policies:(c + 1) * n_policies]
            parts.append((np.concatenate([patient - pre.start + start for start in starts]),
                          np.tile(time_days, n_policies), np.tile(event, n_policies), np.tile(detail, n_policies)))
        for rows, rel, event, detail in self.chunks:
            n = len(rows)
            parts.append((rows, np.asarray(rel, dtype=float), np.full(n, event, dtype=object),
                          np.full(n, detail, dtype=object) if isinstance(detail, str)
                          else np.asarray(detail, dtype=object)))
        rows, time_days, event, detail = (np.concatenate([p[k] for p in parts]) for k in range(4))
        # Stable: a row's events keep the order they happened in.
        order = np.argsort(rows, kind="stable")
        rows, time_days, event, detail = rows[order], time_days[order], event[order], detail[order]
        bounds = np.searchsorted(rows, self.group_start)
        return [{"patient": self.ids[rows[a:b]], "time_days": time_days[a:b], "event": event[a:b],
                 "detail": detail[a:b]} for a, b in pairwise(bounds)]

    def first_day(self, column, idx, now):
        """Set outcome ``column`` (days since arrival) where it is not yet set."""
        first = np.isnan(self.out[column][idx])
        self.out[column][idx[first]] = now[first] - self.arrival[idx[first]]

    def start_clock(self, name, idx, now, origin, uniforms):
        c = self.clock[name]
        c["origin"][idx] = origin
        c["since"][idx] = now
        c["used"][idx] = 0.0
        c["threshold"][idx] = _exp1(uniforms)
        c["multiplier"][idx] = self._multiplier(name, idx, now)
        c["running"][idx] = True
        self._retime(name, idx)

    def _multiplier(self, name, idx, now):
        """Baseline-covariate factors (computed once per patient) times the
        state-dependent ones, in the order the SimPy engine multiplies them."""
        static, dynamic = self.vm.split_hazards[name]
        if name not in self.static_multiplier:
            everyone = np.arange(self.n)
            self.static_multiplier[name] = static(self.view(everyone, 0.0), self.n)
        cached = self.static_multiplier[name]
        if not dynamic.parts:
            return cached[idx]
        out = cached[idx].copy()
        view = self.view(idx, now)
        for part in dynamic.parts:
            out = out * part(view, len(idx))
        return out

    def _retime(self, name, idx):
        c = self.clock[name]
        times = _fire_times(self.laws[name], c["origin"][idx], c["since"][idx], c["used"][idx],
                            c["threshold"][idx], c["multiplier"][idx])
        self.times[idx, _CLOCK_SOURCE[name]] = np.where(c["running"][idx], times, INF)

    def stop_clock(self, name, idx):
        self.clock[name]["running"][idx] = False
        self.times[idx, _CLOCK_SOURCE[name]] = INF

    def update_clocks(self, idx, now):
        """Re-read every running clock's multiplier after a state change; bank
        the hazard used so far where it changed (as HazardClock.update)."""
        now = np.broadcast_to(np.asarray(now, dtype=float), idx.shape)
        for name in self.state_dependent_clocks:  # the others' multipliers cannot change
            c = self.clock[name]
            running = c["running"][idx]
            if not running.any():
                continue
            sub, t = idx[running], now[running]
            new = self._multiplier(name, sub, t)
            changed = new != c["multiplier"][sub]
            if not changed.any():
                continue
            sub, t, new = sub[changed], t[changed], new[changed]
            H = self.laws[name].cumulative_hazard
            c["used"][sub] += c["multiplier"][sub] * (H(t - c["origin"][sub]) - H(c["since"][sub] - c["origin"][sub]))
            c["since"][sub] = t
            c["multiplier"][sub] = new
            self._retime(name, sub)

    def schedule_death(self, idx, when, cause):
        earlier = when < self.times[idx, _S_DEATH]
        sub = idx[earlier]
        self.times[sub, _S_DEATH] = when[earlier]
        self.death_cause[sub] = cause

    def finish(self, idx, now):
        self.ended[idx] = True
        self.out["end_day"][idx] = now - self.arrival[idx]
        self.times[idx, :] = INF
        for name in _CLOCKS:
            self.clock[name]["running"][idx] = False

    # ------------------------------------------------------------ the run
    def run(self):
        infused = np.nonzero(~np.isnan(self.infusion))[0]
        self.death_cause = np.full(self.n, "", dtype=object)
        if len(infused):
            self._infuse(infused)
        while True:
            active = np.nonzero(~self.ended)[0]
            if len(active) == 0:
                break
            times = self.times[active]
            source = np.argmin(times, axis=1)
            when = times[np.arange(len(active)), source]
            for s in np.unique(source):
                pick = source == s
                self._apply(int(s), active[pick], when[pick])
        return self

    def _apply(self, source, idx, now):
        if source == _S_DEATH:
            self._die(idx, now, self.death_cause[idx])
        elif source == _S_CENSOR:
            self.record(idx, now, "censored")
            self.finish(idx, now)
        elif source == _S_RESPONSE:
            self.times[idx, _S_RESPONSE] = INF
            self._response(idx, now)
        elif source == _S_NRM:
            self._die(idx, now, "non_relapse")
        elif source == _S_BCA:
            self.stop_clock("bca_loss", idx)
            self._bca_lost(idx, now)
        elif source == _S_MRD:
            self.stop_clock("mrd_emergence", idx)
            self._mrd_emerges(idx, now)
        elif source in (_S_POS, _S_NEG, _S_LS):
            self._relapse(idx, now, RELAPSE_PHENOTYPES[source - _S_POS])
        elif source == _S_TEST:
            self._mrd_test(idx, now)
        elif source == _S_DETECT:
            self.times[idx, _S_DETECT] = INF
            self._bca_detected(idx, now)
        elif source == _S_HSCT:
            self.times[idx, _S_HSCT] = INF
            self._transplant(idx, now)
        elif source == _S_REINFUSION:
            self.times[idx, _S_REINFUSION] = INF
            self._reinfusion(idx, now)
        elif source == _S_REREMISSION:
            self.times[idx, _S_REREMISSION] = INF
            out = self.out
            out["reremission_day"][idx] = now - self.arrival[idx]
            self.record(idx, now, "reremission")
            self._decide("reremission", idx, now)

    def _die(self, idx, now, cause):
        out = self.out
        out["death_day"][idx] = now - self.arrival[idx]
        out["death_cause"][idx] = cause
        out["hsct_death"][idx] = np.asarray(cause, dtype=object) == "transplant"
        self.record(idx, now, "death", cause if isinstance(cause, str) else np.asarray(cause, dtype=object))
        self.finish(idx, now)

    def _infuse(self, idx):
        m, st, out, u = self.model, self.state, self.out, self.u
        now = self.infusion[idx]
        self.ended[idx] = False
        out["infused"][idx] = True
        out["infusion_day"][idx] = now - self.arrival[idx]
        out["vein_to_vein_days"][idx] = out["infusion_day"][idx] - out["apheresis_day"][idx]
        self.record(idx, now, "infusion")
        self.times[idx, _S_CENSOR] = now + m.horizon_days
        tox = u["toxicity"][idx]
        view = self.view(idx, now)
        st["severe_crs"][idx] = tox[:, 0] < self.vm.probabilities["severe_crs"](view, len(idx))
        st["severe_icans"][idx] = tox[:, 1] < self.vm.probabilities["severe_icans"](view, len(idx))
        out["severe_crs"][idx] = st["severe_crs"][idx]
        out["severe_icans"][idx] = st["severe_icans"][idx]
        crs = idx[st["severe_crs"][idx]]
        self.record(crs, self.infusion[crs], "severe_crs")
        icans = idx[st["severe_icans"][idx]]
        self.record(icans, self.infusion[icans], "severe_icans")
        early = tox[:, 2] < self.vm.probabilities["early_death"](self.view(idx, now), len(idx))
        out["early_toxic_death"][idx] = early
        e = idx[early]
        self.schedule_death(e, self.infusion[e] + m.time_to_early_death.from_uniform(tox[early, 3]), "toxicity")
        self.start_clock("non_relapse_death", idx, now, now, u["non_relapse_death"][idx, 0])
        self.start_clock("bca_loss", idx, now, now, u["bca"][idx, 0])
        self.times[idx, _S_RESPONSE] = now + m.assessment_day

    def _response(self, idx, now):
        m, st, out, u = self.model, self.state, self.out, self.u
        resp = u["response"][idx]
        cr = resp[:, 0] < self.vm.probabilities["complete_remission"](self.view(idx, now), len(idx))
        st["cr"][idx] = cr
        out["cr"][idx] = cr
        out["response_day"][idx] = now - self.arrival[idx]
        self.record(idx, now, "response", np.where(cr, "CR", "NR"))
        nr, nr_now = idx[~cr], now[~cr]
        self.stop_clock("non_relapse_death", nr)
        self.stop_clock("bca_loss", nr)
        self.schedule_death(nr, nr_now + m.survival_after_nonresponse.from_uniform(resp[~cr, 1]), "refractory")
        self._decide("response", nr, nr_now)
        yes, now = idx[cr], now[cr]
        if len(yes) == 0:
            return
        mrd = u["mrd"][yes]
        st["mrd_informative"][yes] = mrd[:, 0] >= m.mrd_uninformative
        out["mrd_informative"][yes] = st["mrd_informative"][yes]
        present = mrd[:, 1] < self.vm.probabilities["mrd_positive_at_assessment"](self.view(yes, now), len(yes))
        st["mrd_present"][yes] = present
        out["mrd_emergence_day"][yes[present]] = now[present] - self.arrival[yes[present]]
        origin = self.infusion[yes]
        rel = u["relapse"][yes]
        for k, name in enumerate(RELAPSE_PHENOTYPES):
            self.start_clock(name, yes, now, origin, rel[:, k])
        absent = ~present
        self.start_clock("mrd_emergence", yes[absent], now[absent], origin[absent], mrd[absent, 2])
        self._decide("response", yes, now)
        alive = ~self.ended[yes]
        yes, now = yes[alive], now[alive]
        # MRD surveillance: the first scheduled test not before now
        since = now - self.infusion[yes]
        first = np.searchsorted(self.test_days, since - 1e-9, side="left")
        self.mrd_test_index[yes] = first
        has = first < len(self.test_days)
        self.times[yes[has], _S_TEST] = self.infusion[yes[has]] + self.test_days[first[has]]
        lost = st["bca_lost"][yes]
        self._schedule_detection(yes[lost], now[lost])

    def _schedule_detection(self, idx, now):
        if len(idx) == 0:
            return
        since = now - self.infusion[idx]
        k = np.searchsorted(self.check_days, since - 1e-9, side="left")
        has = k < len(self.check_days)
        sub = idx[has]
        when = self.infusion[sub] + self.check_days[k[has]]
        self.times[sub, _S_DETECT] = np.minimum(self.times[sub, _S_DETECT], when)

    def _bca_lost(self, idx, now):
        st = self.state
        st["bca_lost"][idx] = True
        self.first_day("bca_loss_day", idx, now)
        self.record(idx, now, "bca_lost")
        self.update_clocks(idx, now)
        watch = st["cr"][idx] & ~st["relapsed"][idx] & ~st["transplanted"][idx]
        self._schedule_detection(idx[watch], now[watch])

    def _mrd_emerges(self, idx, now):
        st = self.state
        st["mrd_present"][idx] = True
        self.first_day("mrd_emergence_day", idx, now)
        self.record(idx, now, "mrd_emergence")
        self.update_clocks(idx, now)

    def _relapse(self, idx, now, phenotype):
        m, st, out, u = self.model, self.state, self.out, self.u
        st["relapsed"][idx] = True
        st["relapse_phenotype"][idx] = phenotype
        out["relapse_day"][idx] = now - self.arrival[idx]
        out["relapse_phenotype"][idx] = phenotype
        self.record(idx, now, "relapse", phenotype)
        for name in _CLOCKS:
            self.stop_clock(name, idx)
        cancel = st["hsct_pending"][idx] & self.hsct_consolidative[idx] & np.isfinite(self.times[idx, _S_HSCT])
        c = idx[cancel]
        st["hsct_pending"][c] = False
        self.times[c, _S_HSCT] = INF
        self.record(c, now[cancel], "hsct_cancelled", "relapse")
        pending = np.isfinite(self.times[idx, _S_REINFUSION])
        self.times[idx[pending], _S_REINFUSION] = INF
        self.record(idx[pending], now[pending], "reinfusion_cancelled", "relapse")
        self.times[idx, _S_TEST] = INF
        self.times[idx, _S_DETECT] = INF
        rel = u["relapse"][idx]
        delay = m.survival_after_relapse[phenotype].from_uniform(rel[:, 3])
        self.death_after_relapse[idx] = delay
        self.schedule_death(idx, now + delay, "post_relapse")
        self._decide("relapse", idx, now)

    def _salvage(self, idx, now):
        m, st, u = self.model, self.state, self.u
        relapsed = st["relapsed"][idx]
        self.record(idx[~relapsed], now[~relapsed], "decision_skipped", "salvage: not relapsed")
        idx, now = idx[relapsed], now[relapsed]
        rel = u["relapse"][idx]
        p = self.vm.probabilities["reremission"](self.view(idx, now), len(idx))
        ok = rel[:, 4] < p
        delay = m.time_to_reremission.from_uniform(rel[:, 5])
        ok &= delay < self.death_after_relapse[idx]
        self.times[idx[ok], _S_REREMISSION] = now[ok] + delay[ok]

    def _mrd_test(self, idx, now):
        m, st, out = self.model, self.state, self.out
        number = self.mrd_test_index[idx]
        st["mrd_test_number"][idx] = number
        informative = st["mrd_informative"][idx]
        sens_u = self.u["mrd"][idx, 3 + number]
        positive = informative & st["mrd_present"][idx] & (sens_u < m.mrd_sensitivity)
        st["mrd_positive"][idx] = positive
        st["mrd_positive_tests"][idx] += positive
        self.first_day("first_mrd_positive_day", idx[positive], now[positive])
        day = self.test_days[number]
        d28 = informative & (np.abs(day - _DAY28) < 1)
        m3 = informative & ~d28 & (np.abs(day - _MONTH3) < 1)
        out["mrd_day28_positive"][idx[d28]] = positive[d28].astype(float)
        out["mrd_month3_positive"][idx[m3]] = positive[m3].astype(float)
        if self.record_events:
            result = np.where(~informative, 0, np.where(positive, 1, 2))
            self.record(idx, now, "mrd_test", self.mrd_test_details[result, number])
        nxt = number + 1
        has = nxt < len(self.test_days)
        self.mrd_test_index[idx] = nxt
        self.times[idx, _S_TEST] = INF
        self.times[idx[has], _S_TEST] = self.infusion[idx[has]] + self.test_days[nxt[has]]
        self._decide("mrd_result", idx, now)

    def _bca_detected(self, idx, now):
        st = self.state
        seen = ~st["relapsed"][idx] & ~st["transplanted"][idx] & st["bca_lost"][idx] & ~st["bca_loss_detected"][idx]
        idx, now = idx[seen], now[seen]
        st["bca_loss_detected"][idx] = True
        self.first_day("bca_loss_detected_day", idx, now)
        self.record(idx, now, "bca_loss_detected")
        self._decide("bca_loss", idx, now)

    # ------------------------------------------------------------ decisions and actions
    def _decide(self, event, idx, now):
        if len(idx) == 0 or event not in self.decided_events:
            return  # nothing fires: everyone observes
        now = np.broadcast_to(now, idx.shape)
        action = np.full(len(idx), DEFAULT_ACTIONS.get(event, "observe"), dtype=object)
        details = np.full(len(idx), "", dtype=object)
        fired = np.zeros(len(idx), bool)
        policy_of = self.policy_of_row[idx]
        for k, rules in enumerate(self.rules):
            if not rules.get(event):
                continue
            members = np.nonzero(policy_of == k)[0]
            view = self.view(idx[members], now[members])
            undecided = np.ones(len(members), bool)
            for index, test, act in rules[event]:
                hit = undecided & _as_mask(test(view), len(members))
                action[members[hit]] = act
                details[members[hit]] = f"{event}: rule {index} -> {act}"
                undecided &= ~hit
            fired[members] = ~undecided
        self.record(idx[fired], now[fired], "decision", details[fired])
        for act, handler in (("hsct", self._request_hsct), ("reinfuse", self._request_reinfusion),
                             ("salvage", self._salvage)):
            pick = action == act
            if pick.any():
                handler(idx[pick], now[pick])

    def _request_hsct(self, idx, now):
        m, st, out = self.model, self.state, self.out
        in_remission = (st["cr"][idx] & ~st["relapsed"][idx]) | (st["relapsed"][idx]
                                                                 & ~np.isnan(out["reremission_day"][idx]))
        pending = st["hsct_pending"][idx]
        self.record(idx[pending], now[pending], "decision_skipped", "hsct: already planned")
        bad = ~pending & ~in_remission
        self.record(idx[bad], now[bad], "decision_skipped", "hsct: not in remission")
        limit = ~pending & in_remission & (st["hsct_after_car"][idx] >= m.max_hsct_after_car)
        self.record(idx[limit], now[limit], "decision_skipped", "hsct: transplant limit reached")
        go = ~pending & in_remission & ~limit
        idx, now = idx[go], now[go]
        st["hsct_pending"][idx] = True
        consolidative = ~st["relapsed"][idx]
        self.hsct_consolidative[idx] = consolidative
        k = st["hsct_after_car"][idx]
        u = self.u["hsct"][idx[:, None], 6 * k[:, None] + np.arange(6)]
        self.record(idx, now, "hsct_planned", np.where(consolidative, "consolidative", "salvage"))
        self.times[idx, _S_HSCT] = now + m.donor_search.from_uniform(u[:, 0])

    def _transplant(self, idx, now):
        m, st, out = self.model, self.state, self.out
        k = st["hsct_after_car"][idx]
        u = self.u["hsct"][idx[:, None], 6 * k[:, None] + np.arange(6)]
        occupancy = m.bed_occupancy.from_uniform(u[:, 1])
        self.beds.append((idx.copy(), now.copy(), now + occupancy))
        trm = self.vm.probabilities["transplant_death"](self.view(idx, now), len(idx))
        st["hsct_pending"][idx] = False
        st["transplanted"][idx] = True
        st["hsct_after_car"][idx] += 1
        st["mrd_present_at_hsct"][idx] = st["mrd_present"][idx]
        out["hsct_count"][idx] = st["hsct_after_car"][idx]
        self.first_day("first_hsct_day", idx, now)
        consolidative = self.hsct_consolidative[idx]
        out["consolidative_hsct"][idx[consolidative]] = True
        self.record(idx, now, "hsct", np.where(consolidative, "consolidative", "salvage"))
        idx, now, u, trm = idx[consolidative], now[consolidative], u[consolidative], trm[consolidative]
        dies = u[:, 2] < trm
        self.schedule_death(idx[dies], now[dies] + m.time_to_transplant_death.from_uniform(u[dies, 3]), "transplant")
        a = u[:, 4] < m.acute_gvhd
        self.record(idx[a], now[a], "acute_gvhd")
        c = u[:, 5] < m.chronic_gvhd
        self.record(idx[c], now[c], "chronic_gvhd")
        self.stop_clock("bca_loss", idx)
        self.times[idx, _S_TEST] = INF
        self.times[idx, _S_DETECT] = INF
        self.update_clocks(idx, now)

    def _request_reinfusion(self, idx, now):
        m, st = self.model, self.state
        bad = ~st["cr"][idx] | st["relapsed"][idx] | st["transplanted"][idx]
        self.record(idx[bad], now[bad], "decision_skipped", "reinfuse: not in first remission without HSCT")
        limit = ~bad & (st["reinfusions"][idx] >= m.max_reinfusions)
        self.record(idx[limit], now[limit], "decision_skipped", "reinfuse: reinfusion limit reached")
        pending = ~bad & ~limit & np.isfinite(self.times[idx, _S_REINFUSION])
        self.record(idx[pending], now[pending], "decision_skipped", "reinfuse: already planned")
        go = ~bad & ~limit & ~pending
        idx, now = idx[go], now[go]
        k = st["reinfusions"][idx]
        self.record(idx, now, "reinfusion_planned")
        delay = m.reinfusion_delay.from_uniform(self.u["reinfusion"][idx, 2 * k])
        self.times[idx, _S_REINFUSION] = now + delay

    def _reinfusion(self, idx, now):
        st, out = self.state, self.out
        k = st["reinfusions"][idx]
        st["reinfusions"][idx] += 1
        out["reinfusions"][idx] = st["reinfusions"][idx]
        self.record(idx, now, "reinfusion")
        p = self.vm.probabilities["regain_bca"](self.view(idx, now), len(idx))
        regained = self.u["reinfusion"][idx, 2 * k + 1] < p
        st["bca_regained"][idx] = regained
        r, r_now = idx[regained], now[regained]
        out["bca_regained"][r] = True
        st["bca_lost"][r] = False
        st["bca_loss_detected"][r] = False
        self.stop_clock("bca_loss", r)
        self.start_clock("bca_loss", r, r_now, r_now, self.u["bca"][r, k[regained] + 1])
        self.update_clocks(r, r_now)
        self.record(idx, now, "reinfusion_result", np.where(regained, "bca_regained", "no_bca"))
        self._decide("reinfusion_result", idx, now)

    def bed_intervals(self, group: int):
        """(start, end) of each transplant bed stay in ``group`` (a cohort
        under one policy); a death or the end of follow-up frees the bed early."""
        if not self.beds:
            return np.zeros(0), np.zeros(0)
        idx = np.concatenate([b[0] for b in self.beds])
        starts = np.concatenate([b[1] for b in self.beds])
        ends = np.concatenate([b[2] for b in self.beds])
        mine = self.group_of_row[idx] == group
        idx, starts, ends = idx[mine], starts[mine], ends[mine]
        return starts, np.minimum(ends, self.arrival[idx] + self.out["end_day"][idx])



def _beds_suffice(capacity, starts, ends) -> bool:
    """Were beds never over-subscribed by these stays?  Then no one queued,
    and assuming a free bed was exact."""
    if capacity is None or len(starts) <= capacity:
        return True
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, times))  # a bed freed at t serves a request at t
    return int(np.cumsum(steps[order]).max()) <= capacity


# ------------------------------------------------------------------ entry point


# Rows one PostInfusion advances at most: beyond a few tens of thousands
# each row costs more (the arrays outgrow the CPU caches), so a large cohort
# is advanced in slabs of patients after its shared queue is simulated.
SLAB_ROWS = 40_000


def simulate_cohorts(model: ModelDefinition, policies, cohorts, record_events: bool = True) -> list[dict]:
    """Simulate cohorts of the same model under each policy, in shared rounds.

    ``cohorts``: (streams, covariates, arrivals, start, stop) per cohort, the
    patients ``start .. stop-1`` of its streams.  Returns per cohort
    ``{policy: (outcome columns, event columns, resource use)}``, or None for a
    policy whose transplant beds would have queued (the caller then runs the
    SimPy engine, where queues are modelled)."""
    policies = list(policies)
    prepared = [(PreInfusion(model, streams, covariates, arrivals, start, stop, record_events), streams)
                for streams, covariates, arrivals, start, stop in cohorts]
    # Slabs of patients: whole small cohorts together, large ones cut.
    slabs, slab, rows = [], [], 0
    for c, (pre, streams) in enumerate(prepared):
        pieces = -(-pre.n * len(policies) // SLAB_ROWS)
        bounds = np.linspace(0, pre.n, pieces + 1).round().astype(int)
        for first, stop in pairwise(bounds):
            piece = pre if pieces == 1 else pre.part(int(first), int(stop))
            if slab and rows + piece.n * len(policies) > SLAB_ROWS:
                slabs.append(slab)
                slab, rows = [], 0
            slab.append((c, piece, streams))
            rows += piece.n * len(policies)
    slabs.append(slab)
    located = [[[] for _ in policies] for _ in prepared]  # per cohort and policy: (post, group) in patient order
    for slab in slabs:
        post = PostInfusion(model, policies, [(piece, streams) for _, piece, streams in slab], record_events).run()
        events = post.event_columns() if record_events else None
        for position, (c, _piece, _streams) in enumerate(slab):
            for k in range(len(policies)):
                group = position * len(policies) + k
                located[c][k].append((post, group, events[group] if record_events else None))
    capacity = model.capacities["hsct_beds"]
    results = []
    for c, (pre, _streams) in enumerate(prepared):
        cohort = {}
        for k, policy in enumerate(policies):
            segments = located[c][k]
            stays = [post.bed_intervals(group) for post, group, _ in segments]
            starts, ends = np.concatenate([s for s, _ in stays]), np.concatenate([e for _, e in stays])
            if not _beds_suffice(capacity, starts, ends):
                cohort[policy] = None
                continue
            row_ranges = [(post, slice(post.group_start[group], post.group_start[group + 1]))
                          for post, group, _ in segments]
            out = {name: np.concatenate([post.out[name][rows] for post, rows in row_ranges])
                   for name in row_ranges[0][0].out}
            out["patient"] = np.concatenate([post.ids[rows] for post, rows in row_ranges])
            events = ({name: np.concatenate([e[name] for _, _, e in segments]) for name in segments[0][2]}
                      if record_events else None)
            cohort[policy] = (out, events, _resource_use(pre, capacity, starts, ends))
        results.append(cohort)
    return results


def _resource_use(pre, capacity, starts, ends) -> dict:
    use = dict(pre.resource_use)
    if capacity is None or len(starts) == 0:
        use["hsct_beds"] = {"busy_days": float("nan"), "capacity": None, "span_days": 0.0}
    else:
        # fsum: exact, so the same whatever order the stays were recorded in
        use["hsct_beds"] = {"busy_days": math.fsum(ends - starts), "capacity": capacity,
                            "span_days": float(ends.max() - starts.min())}
    return use
