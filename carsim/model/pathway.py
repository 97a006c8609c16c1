"""The pathway after infusion, written once: states, hazard clocks, events,
transitions, decisions and actions.

:class:`Pathway` holds patient-policy *rows* as arrays: the state each
condition reads, the outcome columns, the running hazard clocks and, per row
and per event *source*, the time the source next fires (``times``).  Every
transition (response, B-cell aplasia loss and its detection, MRD emergence
and tests, relapse, salvage, transplant, reinfusion, death, censoring, and
the policy decisions between them) is a method that applies one event to an
array of rows at their own times.  Engines only *schedule*: they decide
which source fires next for which rows and call :meth:`Pathway.fire`.  The
array engine calls it for every row that has that next event, round by
round; the SimPy engine calls it for one row (an array of one) from that
patient's process.  Shared resources are the engines' business too: a
transplant asks ``beds.request`` for a bed and the engine calls
:meth:`Pathway.transplant` when one is granted.

Hazard clocks fire when the cumulative hazard reaches an Exp(1) threshold
drawn once per clock.  The hazard is ``baseline(t - origin) *
multiplier(state)``; when the state changes (BCA lost, MRD present, HSCT
done) the hazard used so far is banked and the remaining threshold is spent
under the new multiplier: the exact conditional residual time, no ticking.
Because the threshold is fixed per patient, a patient whose state never
changes fires at the same time under every policy (common random numbers).

Relapse phenotypes come from the scenario: each is a clock
``relapse.<name>`` with its own law, multipliers and post-relapse survival.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ..scenario.schema import ACTIONS
from ..scenario.vocabulary import INITIAL_STATE
from .access import exp1
from .clocks import Clocks
from .definition import ModelDefinition, StateView, as_mask, product
from .records import code_of, codes_of, column_dtype, vocabulary

INF = np.inf
_DAY28, _MONTH3 = 28.0, 365.25 / 4
# What happens after an event when no rule of the policy matches it.
DEFAULT_ACTIONS = {"relapse": "salvage"}
# Scheduled (non-clock) event sources, in the order ties are broken.
SCHEDULED = ("death", "censor", "response")
_TIME_VARIABLES = frozenset({"days_since_infusion", "months_since_infusion"})
LATER = ("mrd_test", "bca_check", "donor_found", "reinfusion", "reremission")


def per_row(values, idx) -> np.ndarray:
    """``values`` as one float per row of ``idx`` (a scalar is repeated)."""
    if values.__class__ is np.ndarray and values.shape == idx.shape:
        return values
    return np.broadcast_to(np.asarray(values, dtype=float), idx.shape)


def _labels(flag, yes: str, no: str) -> np.ndarray:
    """The event-detail codes (:func:`~carsim.model.records.code_of`) of
    ``yes`` where ``flag``, else of ``no``: details given per row as codes
    need no coding when the event table is built."""
    return np.array([code_of(no), code_of(yes)], dtype=np.int64)[np.asarray(flag, dtype=np.intp)]


class UnlimitedBeds:
    """Transplant beds without a queue: a bed is free when the donor is found.
    Stays are kept for the capacity check (were beds ever over-subscribed?)."""

    def __init__(self):
        self.stays = []  # (rows, start, planned end)

    def request(self, pathway, idx, now, occupancy):
        self.stays.append((idx.copy(), now.copy(), now + occupancy))
        pathway.transplant(idx, now)

    def cancel(self, pathway, idx, now):
        pass

    def release(self, pathway, idx, now):
        pass


class _PerPatient:
    """Named uniforms read by row: every policy's row of a patient sees the
    same numbers (common random numbers)."""

    def __init__(self, cohorts, patient_of_row):
        self.cohorts = cohorts  # (patients: a slice or positions in the streams, streams) per cohort
        self.patient_of_row = patient_of_row
        self.vectors = {}

    def __call__(self, name: str, idx) -> np.ndarray:
        vector = self.vectors.get(name)
        if vector is None:
            vector = self.vectors[name] = np.concatenate(
                [streams.uniforms(name)[patients] for patients, streams in self.cohorts])
        return vector[self.patient_of_row[idx]]

    def occurrence(self, template: str, k, idx) -> np.ndarray:
        """The uniforms ``template.format(k)`` for rows whose occurrence is ``k``."""
        if len(idx) == 0:
            return np.empty(0)
        first = int(k[0])
        if (k == first).all():  # the usual case: one occurrence for all
            return self(template.format(first), idx)
        out = np.empty(len(idx))
        for value in np.unique(k):
            pick = k == value
            out[pick] = self(template.format(int(value)), idx[pick])
        return out


class Pathway:
    """Patient-policy rows after infusion and the transitions that move them.

    ``cohorts`` are (access pathway, random streams) pairs of the same model.
    Rows come in groups, one per (cohort, policy), cohort-major: group
    ``g = c * len(policies) + k`` holds cohort ``c``'s patients under
    ``policies[k]``, in patient order, at rows ``group_start[g]`` on."""

    def __init__(self, model: ModelDefinition, policies, cohorts, record_events: bool = True, beds=None,
                 only_events: frozenset | None = None):
        self.model = model
        self.policies = list(policies)
        self.cohorts = [access for access, _streams in cohorts]
        self.record_events = record_events
        self.only_events = only_events  # if given, the only events recorded (e.g. those the accounting reads)
        self.beds = UnlimitedBeds() if beds is None else beds
        self.chunks: list[tuple] = []
        self.rules = [model.policies[policy].rules_by_event for policy in self.policies]
        n_policies = len(self.policies)
        sizes = [access.n for access in self.cohorts]
        patient_offset = np.concatenate([[0], np.cumsum(sizes)])
        group_sizes = np.repeat(sizes, n_policies)
        self.group_start = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int64)
        self.n = n = int(self.group_start[-1])
        self.group_of_row = np.repeat(np.arange(len(group_sizes)), group_sizes)
        self.policy_of_row = self.group_of_row % n_policies
        self.patient_of_row = np.concatenate(
            [np.tile(np.arange(a.n), n_policies) + patient_offset[c] for c, a in enumerate(self.cohorts)]
        ).astype(np.int64)
        self.ids = np.concatenate([np.tile(a.patient_ids, n_policies) for a in self.cohorts])

        def per_row(values: list) -> np.ndarray:
            return np.concatenate([np.tile(v, n_policies) for v in values])

        self.arrival = per_row([a.out["arrival_day"] for a in self.cohorts])
        self.out = {k: per_row([a.out[k] for a in self.cohorts]) for k in self.cohorts[0].out}
        # each group's covariates as its policy has them (what the policy assigns, see policy_covariates)
        chosen = [model.policy_covariates(policy, a.covariates) for a in self.cohorts for policy in self.policies]
        self.state = {k: np.concatenate([c[k] for c in chosen]) for k in self.cohorts[0].covariates}
        self.state.update({name: np.full(n, value, dtype=column_dtype(value)) for name, value in INITIAL_STATE.items()})
        self.infusion = per_row([a.infusion_time for a in self.cohorts])
        self.u = _PerPatient([(a.patients, streams) for a, (_a, streams) in zip(self.cohorts, cohorts)],
                             self.patient_of_row)
        self.clocks = dict(model.clocks)
        self.sources = [*SCHEDULED, *(f"clock:{name}" for name in self.clocks), *LATER]
        self.column = {name: k for k, name in enumerate(self.sources)}
        self.times = np.full((n, len(self.sources)), INF)
        self.clock = {name: Clocks(hazard.law, n) for name, hazard in self.clocks.items()}
        self.ended = np.ones(n, bool)
        self.death_cause = np.full(n, "", dtype=object)
        self.mrd_test_index = np.zeros(n, np.int64)
        self.test_days = np.asarray(model.mrd_test_days, dtype=float)
        self.check_days = np.asarray(model.bca_check_days, dtype=float)
        # Event-detail codes of every (result, test number), looked up rather than formatted per row.
        self.mrd_test_details = np.array([[code_of(f"{result} (test {k})") for k in range(len(self.test_days))]
                                          for result in ("uninformative", "positive", "negative")], dtype=np.int64)
        self.death_after_relapse = np.full(n, INF)
        self.hsct_consolidative = np.zeros(n, bool)
        self.bed_asked = np.zeros(n)  # when the latest bed request was made
        self.static_multiplier = {}
        # clock -> the changing state variables its multiplier reads
        self.state_dependent_clocks = {name: frozenset().union(*(f.names for f in hazard.dynamic))
                                       for name, hazard in self.clocks.items() if hazard.dynamic}
        # Events at which some policy has a rule, or whose default action is not to observe.
        self.decided_events = {event for rules in self.rules for event in rules if rules[event]} | {
            event for event, action in DEFAULT_ACTIONS.items() if action != "observe"}
        self.handlers = [self._handler(name) for name in self.sources]

    # ------------------------------------------------------------ helpers
    def view(self, idx, now) -> StateView:
        return StateView(self.state, idx, now, self.infusion)

    def records(self, event: str) -> bool:
        """Are events of this kind recorded?"""
        return self.record_events and (self.only_events is None or event in self.only_events)

    def record(self, idx, now, event, detail=""):
        """Append events as array chunks (in time order for each row).
        ``detail``: one text, or per row texts (an object array) or their
        codes (:func:`~carsim.model.records.code_of`)."""
        if len(idx) == 0 or not self.records(event):
            return
        self.chunks.append((idx, per_row(now - self.arrival[idx], idx), event, detail))

    def event_columns(self, coded: bool = False) -> list[dict]:
        """Per group (cohort, policy): the cohort's access-pathway events and
        the group's own chunks as columns, each patient's events in time order.
        ``coded``: event and detail as codes (``event_code``, ``detail_code``;
        :func:`~carsim.model.records.vocabulary`), for the accounting alone.

        The texts are handled as codes throughout (sorting and splitting
        integers, not object arrays) and looked up once at the end."""
        n_policies = len(self.policies)
        rows, time_days, event, detail = [], [], [], []
        for c, access in enumerate(self.cohorts):
            patient, days, names, details = access.event_arrays(coded=True)
            starts = self.group_start[c * n_policies:(c + 1) * n_policies]
            local = np.searchsorted(access.patient_ids, patient)
            rows.append(np.concatenate([local + start for start in starts]))
            time_days.append(np.tile(days, n_policies))
            event.append(np.tile(names, n_policies))
            detail.append(np.tile(details, n_policies))
        if self.chunks:
            # A chunk's event name (and usually its detail) is one string: coded
            # once per chunk; details given per row mostly come as codes already.
            sizes = [len(chunk[0]) for chunk in self.chunks]
            event.append(np.repeat([code_of(chunk[2]) for chunk in self.chunks], sizes))
            chunk_details = np.repeat([code_of(chunk[3]) if isinstance(chunk[3], str) else -1
                                       for chunk in self.chunks], sizes)
            per_row = [chunk[3] if chunk[3].dtype != object else codes_of(chunk[3])
                       for chunk in self.chunks if not isinstance(chunk[3], str)]
            if per_row:
                chunk_details[chunk_details < 0] = np.concatenate(per_row)
            rows.append(np.concatenate([chunk[0] for chunk in self.chunks]))
            time_days.append(np.concatenate([np.asarray(chunk[1], dtype=float) for chunk in self.chunks]))
            detail.append(chunk_details)
        rows, time_days, event, detail = (np.concatenate(x) for x in (rows, time_days, event, detail))
        # A row's events keep the order they happened in; rows below 2**16 (a
        # slab's, see array_engine.SLAB_ROWS) are sorted as 16-bit numbers, by radix.
        order = np.argsort(rows.astype(np.uint16) if self.n <= 2**16 else rows, kind="stable")
        rows, time_days, event, detail = rows[order], time_days[order], event[order], detail[order]
        bounds = np.searchsorted(rows, self.group_start)
        if coded:
            return [{"patient": self.ids[rows[a:b]], "time_days": time_days[a:b], "event_code": event[a:b],
                     "detail_code": detail[a:b]} for a, b in pairwise(bounds)]
        texts = vocabulary()
        return [{"patient": self.ids[rows[a:b]], "time_days": time_days[a:b], "event": texts[event[a:b]],
                 "detail": texts[detail[a:b]]} for a, b in pairwise(bounds)]

    def first_day(self, column, idx, now):
        """Set outcome ``column`` (days since enrolment) where it is not yet set."""
        first = np.isnan(self.out[column][idx])
        self.out[column][idx[first]] = now[first] - self.arrival[idx[first]]

    def set_time(self, source: str, idx, when):
        self.times[idx, self.column[source]] = when

    def next_event(self, idx):
        """(source index, time) of each row's next event."""
        times = self.times[idx]
        source = np.argmin(times, axis=1)
        return source, times[np.arange(len(idx)), source]

    # ------------------------------------------------------------ hazard clocks
    def start_clock(self, name, idx, now, origin, uniforms):
        times = self.clock[name].start(idx, now, origin, exp1(uniforms), self._multiplier(name, idx, now))
        self.times[idx, self.column["clock:" + name]] = times

    def _multiplier(self, name, idx, now):
        """Baseline-covariate factors (computed once per patient) times the
        state-dependent ones."""
        hazard = self.clocks[name]
        cached = self.static_multiplier.get(name)
        if cached is None:
            cached = self.static_multiplier[name] = product(hazard.static, self.view(np.arange(self.n), 0.0), self.n)
        if not hazard.dynamic:
            return cached[idx]
        out = cached[idx].copy()
        view = self.view(idx, now)
        for factor in hazard.dynamic:
            out = out * factor(view, len(idx))
        return out

    def stop_clock(self, name, idx):
        self.clock[name].stop(idx)
        self.times[idx, self.column["clock:" + name]] = INF

    def update_clocks(self, idx, now, changed):
        """Re-read the multiplier of every running clock that reads one of the
        ``changed`` state variables (or the time since infusion) and re-time
        the clocks whose multiplier moved."""
        now = per_row(now, idx)
        changed = _TIME_VARIABLES | set(changed)
        for name, reads in self.state_dependent_clocks.items():  # the others' multipliers cannot change
            if not reads & changed:
                continue
            clock = self.clock[name]
            running = clock.running[idx]
            if not running.any():
                continue
            sub, t = idx[running], now[running]
            new = self._multiplier(name, sub, t)
            moved = new != clock.multiplier[sub]
            if not moved.any():
                continue
            sub = sub[moved]
            self.times[sub, self.column["clock:" + name]] = clock.rebase(sub, t[moved], new[moved])

    # ------------------------------------------------------------ dispatch
    def _handler(self, source: str):
        """The function ``(pathway, idx, now)`` that applies ``source``'s event.
        It takes the pathway as an argument rather than holding it: a pathway
        holding closures over itself would be a reference cycle, its arrays
        freed only when the cyclic garbage collector next ran (a slab after
        another, hundreds of MB at 100,000 patients)."""
        cls = type(self)
        if source.startswith("clock:relapse."):
            phenotype = source[len("clock:relapse."):]
            return lambda p, idx, now: p.relapse(idx, now, phenotype)
        if source.startswith("clock:"):
            name = source[len("clock:"):]
            transition = {"non_relapse_death": lambda p, idx, now: p.die(idx, now, "non_relapse"),
                          "bca_loss": cls.bca_lost, "mrd_emergence": cls.mrd_emerges}[name]

            def fire_clock(p, idx, now):
                p.stop_clock(name, idx)
                transition(p, idx, now)
            return fire_clock
        transition = {"death": lambda p, idx, now: p.die(idx, now, p.death_cause[idx]),
                      "censor": cls.censor, "response": cls.response, "mrd_test": cls.mrd_test,
                      "bca_check": cls.bca_check, "donor_found": cls.donor_found,
                      "reinfusion": cls.reinfusion, "reremission": cls.reremission}[source]
        if source in ("death", "censor", "mrd_test"):
            return transition  # these re-time or end the row themselves
        column = self.column[source]

        def fire_once(p, idx, now):
            p.times[idx, column] = INF
            transition(p, idx, now)
        return fire_once

    def fire(self, source: int, idx, now):
        """Apply the event ``sources[source]`` to rows ``idx`` at times ``now``."""
        self.handlers[source](self, idx, now)

    # ------------------------------------------------------------ start and end
    def infuse(self, idx):
        """Infusion: toxicity, the clocks that start at infusion, the response assessment."""
        m, st, out, u = self.model, self.state, self.out, self.u
        now = self.infusion[idx]
        self.ended[idx] = False
        out["infused"][idx] = True
        out["infusion_day"][idx] = now - self.arrival[idx]
        out["vein_to_vein_days"][idx] = out["infusion_day"][idx] - out["apheresis_day"][idx]
        self.record(idx, now, "infusion")
        self.set_time("censor", idx, now + m.horizon_days)
        view = self.view(idx, now)
        n = len(idx)
        st["severe_crs"][idx] = u("toxicity.severe_crs", idx) < m.severe_crs(view, n)
        st["severe_icans"][idx] = u("toxicity.severe_icans", idx) < m.severe_icans(view, n)
        out["severe_crs"][idx] = st["severe_crs"][idx]
        out["severe_icans"][idx] = st["severe_icans"][idx]
        crs = idx[st["severe_crs"][idx]]
        self.record(crs, self.infusion[crs], "severe_crs")
        icans = idx[st["severe_icans"][idx]]
        self.record(icans, self.infusion[icans], "severe_icans")
        early = u("toxicity.early_death", idx) < m.early_death(self.view(idx, now), n)
        out["early_toxic_death"][idx] = early
        e = idx[early]
        self.schedule_death(e, self.infusion[e] + m.time_to_early_death.from_uniform(
            u("toxicity.time_to_early_death", e)), "toxicity")
        self.start_clock("non_relapse_death", idx, now, now, u("non_relapse_death", idx))
        self.start_clock("bca_loss", idx, now, now, u("bca.loss.0", idx))
        self.set_time("response", idx, now + m.assessment_day)

    def schedule_death(self, idx, when, cause):
        column = self.column["death"]
        earlier = when < self.times[idx, column]
        sub = idx[earlier]
        self.times[sub, column] = when[earlier]
        self.death_cause[sub] = cause

    def finish(self, idx, now):
        """Death or the end of follow-up: nothing happens to these rows after."""
        self.ended[idx] = True
        self.out["end_day"][idx] = now - self.arrival[idx]
        self.times[idx, :] = INF
        for clock in self.clock.values():
            clock.stop(idx)
        self.beds.release(self, idx, now)

    def die(self, idx, now, cause):
        out = self.out
        out["death_day"][idx] = now - self.arrival[idx]
        out["death_cause"][idx] = cause
        out["hsct_death"][idx] = np.asarray(cause, dtype=object) == "transplant"
        self.record(idx, now, "death", cause if isinstance(cause, str) else np.asarray(cause, dtype=object))
        self.finish(idx, now)

    def censor(self, idx, now):
        self.record(idx, now, "censored")
        self.finish(idx, now)

    # ------------------------------------------------------------ response and biology
    def response(self, idx, now):
        m, st, out, u = self.model, self.state, self.out, self.u
        cr = u("response.cr", idx) < m.complete_remission(self.view(idx, now), len(idx))
        st["cr"][idx] = cr
        out["cr"][idx] = cr
        out["response_day"][idx] = now - self.arrival[idx]
        self.record(idx, now, "response", _labels(cr, "CR", "NR"))
        nr, nr_now = idx[~cr], now[~cr]
        self.stop_clock("non_relapse_death", nr)
        self.stop_clock("bca_loss", nr)
        self.schedule_death(nr, nr_now + m.survival_after_nonresponse.from_uniform(
            u("response.survival_after_nonresponse", nr), self.view(nr, nr_now), len(nr)), "refractory")
        self.decide("response", nr, nr_now)
        yes, now = idx[cr], now[cr]
        if len(yes) == 0:
            return
        st["mrd_informative"][yes] = u("mrd.informative", yes) >= m.mrd_uninformative
        out["mrd_informative"][yes] = st["mrd_informative"][yes]
        present = u("mrd.present_at_assessment", yes) < m.mrd_positive_at_assessment(self.view(yes, now), len(yes))
        st["mrd_present"][yes] = present
        out["mrd_emergence_day"][yes[present]] = now[present] - self.arrival[yes[present]]
        origin = self.infusion[yes]
        for phenotype in m.phenotypes:
            self.start_clock(f"relapse.{phenotype}", yes, now, origin, u(f"relapse.{phenotype}", yes))
        absent = ~present
        self.start_clock("mrd_emergence", yes[absent], now[absent], origin[absent], u("mrd.emergence", yes[absent]))
        self.decide("response", yes, now)
        alive = ~self.ended[yes]
        yes, now = yes[alive], now[alive]
        # MRD surveillance: the first scheduled test not before now
        since = now - self.infusion[yes]
        first = np.searchsorted(self.test_days, since - 1e-9, side="left")
        self.mrd_test_index[yes] = first
        has = first < len(self.test_days)
        self.set_time("mrd_test", yes[has], self.infusion[yes[has]] + self.test_days[first[has]])
        lost = st["bca_lost"][yes]
        self._schedule_check(yes[lost], now[lost])

    def _schedule_check(self, idx, now):
        """B-cell recovery is seen at the first scheduled check after it happens."""
        if len(idx) == 0:
            return
        since = now - self.infusion[idx]
        k = np.searchsorted(self.check_days, since - 1e-9, side="left")
        has = k < len(self.check_days)
        sub = idx[has]
        when = self.infusion[sub] + self.check_days[k[has]]
        column = self.column["bca_check"]
        self.times[sub, column] = np.minimum(self.times[sub, column], when)

    def bca_lost(self, idx, now):
        st = self.state
        st["bca_lost"][idx] = True
        self.first_day("bca_loss_day", idx, now)
        self.record(idx, now, "bca_lost")
        self.update_clocks(idx, now, ("bca_lost",))
        watch = st["cr"][idx] & ~st["relapsed"][idx] & ~st["transplanted"][idx]
        self._schedule_check(idx[watch], now[watch])

    def mrd_emerges(self, idx, now):
        self.state["mrd_present"][idx] = True
        self.first_day("mrd_emergence_day", idx, now)
        self.record(idx, now, "mrd_emergence")
        self.update_clocks(idx, now, ("mrd_present",))

    def relapse(self, idx, now, phenotype):
        st, out = self.state, self.out
        st["relapsed"][idx] = True
        st["relapse_phenotype"][idx] = phenotype
        out["relapse_day"][idx] = now - self.arrival[idx]
        out["relapse_phenotype"][idx] = phenotype
        self.record(idx, now, "relapse", phenotype)
        for name in self.clocks:
            self.stop_clock(name, idx)
        donor = self.column["donor_found"]
        cancel = st["hsct_pending"][idx] & self.hsct_consolidative[idx]
        c, c_now = idx[cancel], now[cancel]
        st["hsct_pending"][c] = False
        self.times[c, donor] = INF
        self.beds.cancel(self, c, c_now)
        self.record(c, c_now, "hsct_cancelled", "relapse")
        reinfusion = self.column["reinfusion"]
        pending = np.isfinite(self.times[idx, reinfusion])
        self.times[idx[pending], reinfusion] = INF
        self.record(idx[pending], now[pending], "reinfusion_cancelled", "relapse")
        self.set_time("mrd_test", idx, INF)
        self.set_time("bca_check", idx, INF)
        delay = self.model.survival_after_relapse[phenotype].from_uniform(self.u("post_relapse.survival", idx),
                                                                          self.view(idx, now), len(idx))
        self.death_after_relapse[idx] = delay
        self.schedule_death(idx, now + delay, "post_relapse")
        self.decide("relapse", idx, now)

    def salvage(self, idx, now):
        """Salvage therapy after relapse; a re-remission lets rules plan an HSCT.
        Survival after relapse is the phenotype's published law as a whole."""
        m, st, u = self.model, self.state, self.u
        relapsed = st["relapsed"][idx]
        self.record(idx[~relapsed], now[~relapsed], "decision_skipped", "salvage: not relapsed")
        idx, now = idx[relapsed], now[relapsed]
        ok = u("salvage.reremission", idx) < m.reremission(self.view(idx, now), len(idx))
        delay = m.time_to_reremission.from_uniform(u("salvage.time_to_reremission", idx))
        ok &= delay < self.death_after_relapse[idx]
        self.set_time("reremission", idx[ok], now[ok] + delay[ok])

    def reremission(self, idx, now):
        self.out["reremission_day"][idx] = now - self.arrival[idx]
        self.record(idx, now, "reremission")
        self.decide("reremission", idx, now)

    # ------------------------------------------------------------ surveillance
    def mrd_test(self, idx, now):
        m, st, out = self.model, self.state, self.out
        number = self.mrd_test_index[idx]
        st["mrd_test_number"][idx] = number
        informative = st["mrd_informative"][idx]
        sensitivity_u = self.u.occurrence("mrd.test.{}", number, idx)
        positive = informative & st["mrd_present"][idx] & (sensitivity_u < m.mrd_sensitivity)
        st["mrd_positive"][idx] = positive
        st["mrd_positive_tests"][idx] += positive
        self.first_day("first_mrd_positive_day", idx[positive], now[positive])
        day = self.test_days[number]
        d28 = informative & (np.abs(day - _DAY28) < 1)
        m3 = informative & ~d28 & (np.abs(day - _MONTH3) < 1)
        out["mrd_day28_positive"][idx[d28]] = positive[d28].astype(float)
        out["mrd_month3_positive"][idx[m3]] = positive[m3].astype(float)
        if self.records("mrd_test"):  # (its details cost a lookup per row)
            result = np.where(~informative, 0, np.where(positive, 1, 2))
            self.record(idx, now, "mrd_test", self.mrd_test_details[result, number])
        nxt = number + 1
        has = nxt < len(self.test_days)
        self.mrd_test_index[idx] = nxt
        self.set_time("mrd_test", idx, INF)
        self.set_time("mrd_test", idx[has], self.infusion[idx[has]] + self.test_days[nxt[has]])
        self.decide("mrd_result", idx, now)

    def bca_check(self, idx, now):
        st = self.state
        seen = ~st["relapsed"][idx] & ~st["transplanted"][idx] & st["bca_lost"][idx] & ~st["bca_loss_detected"][idx]
        idx, now = idx[seen], now[seen]
        st["bca_loss_detected"][idx] = True
        self.first_day("bca_loss_detected_day", idx, now)
        self.record(idx, now, "bca_loss_detected")
        self.decide("bca_loss", idx, now)

    # ------------------------------------------------------------ decisions and actions
    def decide(self, event, idx, now):
        """Apply the first matching rule of each row's policy to ``event``."""
        if len(idx) == 0 or event not in self.decided_events:
            return  # nothing fires: everyone observes
        now = per_row(now, idx)
        # Actions as codes into ACTIONS and details as positions in ``texts``:
        # object arrays of strings for every row would cost more than the rules.
        action = np.full(len(idx), ACTIONS.index(DEFAULT_ACTIONS.get(event, "observe")), dtype=np.int8)
        detail = np.full(len(idx), -1, dtype=np.int64)
        texts = []
        policy_of = self.policy_of_row[idx]
        for k, rules in enumerate(self.rules):
            if not rules.get(event):
                continue
            members = np.nonzero(policy_of == k)[0]
            if len(members) == 0:
                continue
            view = self.view(idx[members], now[members])
            undecided = np.ones(len(members), bool)
            for rule in rules[event]:
                hit = undecided & as_mask(rule.test(view), len(members))
                action[members[hit]] = ACTIONS.index(rule.action)
                detail[members[hit]] = len(texts)
                texts.append(f"{event}: rule {rule.index} -> {rule.action}")
                undecided &= ~hit
        fired = detail >= 0
        if fired.any():
            self.record(idx[fired], now[fired], "decision", np.array([code_of(t) for t in texts])[detail[fired]])
        for act, handler in (("hsct", self.request_hsct), ("reinfuse", self.request_reinfusion),
                             ("salvage", self.salvage)):
            pick = action == ACTIONS.index(act)
            if pick.any():
                handler(idx[pick], now[pick])

    def request_hsct(self, idx, now):
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
        self.record(idx, now, "hsct_planned", _labels(consolidative, "consolidative", "salvage"))
        self.set_time("donor_found", idx, now + m.donor_search.from_uniform(
            self.u.occurrence("hsct.{}.donor_search", k, idx)))

    def donor_found(self, idx, now):
        """A donor is found: ask for a bed (the engine calls transplant when one is free)."""
        k = self.state["hsct_after_car"][idx]
        occupancy = self.model.bed_occupancy.from_uniform(self.u.occurrence("hsct.{}.bed_occupancy", k, idx))
        self.bed_asked[idx] = now
        self.beds.request(self, idx, now, occupancy)

    def transplant(self, idx, now):
        m, st, out, u = self.model, self.state, self.out, self.u
        k = st["hsct_after_car"][idx]
        trm = m.transplant_death(self.view(idx, now), len(idx))  # before counting this one
        st["hsct_pending"][idx] = False
        st["transplanted"][idx] = True
        st["hsct_after_car"][idx] += 1
        st["mrd_present_at_hsct"][idx] = st["mrd_present"][idx]
        out["hsct_count"][idx] = st["hsct_after_car"][idx]
        out["hsct_bed_wait_days"][idx] += now - self.bed_asked[idx]
        self.first_day("first_hsct_day", idx, now)
        consolidative = self.hsct_consolidative[idx]
        out["consolidative_hsct"][idx[consolidative]] = True
        self.record(idx, now, "hsct", _labels(consolidative, "consolidative", "salvage"))
        law = m.survival_after_salvage_hsct
        if law is not None:  # a salvage transplant replaces the course drawn at relapse
            s, s_now = idx[~consolidative], now[~consolidative]
            delay = law.from_uniform(u.occurrence("hsct.{}.survival_after_salvage", k[~consolidative], s),
                                     self.view(s, s_now), len(s))
            self.times[s, self.column["death"]] = s_now + delay
            self.death_cause[s] = "post_relapse"
        # Every transplant, consolidative or salvage, carries transplant mortality.
        dies = u.occurrence("hsct.{}.transplant_death", k, idx) < trm
        d = idx[dies]
        self.schedule_death(d, now[dies] + m.time_to_transplant_death.from_uniform(
            u.occurrence("hsct.{}.time_to_transplant_death", k[dies], d)), "transplant")
        a = u.occurrence("hsct.{}.acute_gvhd", k, idx) < m.acute_gvhd
        self.record(idx[a], now[a], "acute_gvhd")
        c = u.occurrence("hsct.{}.chronic_gvhd", k, idx) < m.chronic_gvhd
        self.record(idx[c], now[c], "chronic_gvhd")
        idx, now = idx[consolidative], now[consolidative]  # after relapse no clock runs
        self.stop_clock("bca_loss", idx)
        self.set_time("mrd_test", idx, INF)
        self.set_time("bca_check", idx, INF)
        self.update_clocks(idx, now, ("hsct_pending", "transplanted", "hsct_after_car", "mrd_present_at_hsct"))

    def request_reinfusion(self, idx, now):
        m, st = self.model, self.state
        bad = ~st["cr"][idx] | st["relapsed"][idx] | st["transplanted"][idx]
        self.record(idx[bad], now[bad], "decision_skipped", "reinfuse: not in first remission without HSCT")
        limit = ~bad & (st["reinfusions"][idx] >= m.max_reinfusions)
        self.record(idx[limit], now[limit], "decision_skipped", "reinfuse: reinfusion limit reached")
        pending = ~bad & ~limit & np.isfinite(self.times[idx, self.column["reinfusion"]])
        self.record(idx[pending], now[pending], "decision_skipped", "reinfuse: already planned")
        go = ~bad & ~limit & ~pending
        idx, now = idx[go], now[go]
        k = st["reinfusions"][idx]
        self.record(idx, now, "reinfusion_planned")
        delay = m.reinfusion_delay.from_uniform(self.u.occurrence("reinfusion.{}.delay", k, idx))
        self.set_time("reinfusion", idx, now + delay)

    def reinfusion(self, idx, now):
        st, out = self.state, self.out
        k = st["reinfusions"][idx]
        st["reinfusions"][idx] += 1
        out["reinfusions"][idx] = st["reinfusions"][idx]
        self.record(idx, now, "reinfusion")
        p = self.model.regain_bca(self.view(idx, now), len(idx))
        regained = self.u.occurrence("reinfusion.{}.regain_bca", k, idx) < p
        st["bca_regained"][idx] = regained
        r, r_now = idx[regained], now[regained]
        out["bca_regained"][r] = True
        st["bca_lost"][r] = False
        st["bca_loss_detected"][r] = False
        self.stop_clock("bca_loss", r)
        self.start_clock("bca_loss", r, r_now, r_now, self.u.occurrence("bca.loss.{}", k[regained] + 1, r))
        self.update_clocks(r, r_now, ("bca_lost", "bca_loss_detected", "bca_regained", "reinfusions"))
        self.record(idx, now, "reinfusion_result", _labels(regained, "bca_regained", "no_bca"))
        self.decide("reinfusion_result", idx, now)
