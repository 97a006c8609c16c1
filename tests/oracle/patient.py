"""One virtual patient's pathway as SimPy processes.

The main process walks referral -> apheresis -> manufacturing (shared
resources) -> infusion -> day-28 response.  Competing risks run as hazard
clocks (:mod:`carsim.model.hazards`); surveillance processes see the biology
only at scheduled tests; policy rules act on what the tests show.  Death or
the end of follow-up stops every process of the patient at once, so nothing
happens to a patient after either.

Random numbers: each event kind reads its own row of uniforms (see
:mod:`carsim.model.random`), slot by slot, so the same patient draws the same
numbers for the same event under every policy.
"""

from __future__ import annotations

import math

import simpy
from simpy.events import Initialize

from carsim.scenario.distributions import exponential_from_uniform
from .hazards import HazardClock
from .state import PatientState

_END = "end"
RELAPSE_PHENOTYPES = ("cd19pos", "cd19neg", "lineage_switch")
# What happens after an event when no rule of the policy matches it.
DEFAULT_ACTIONS = {"relapse": "salvage"}
_DAY28, _MONTH3 = 28.0, 365.25 / 4


class Patient:
    def __init__(self, sim, index: int, covariates: dict, arrival: float):
        self.sim = sim
        self.env = sim.env
        self.model = sim.model
        self.index = index
        self.arrival = arrival
        self.state = PatientState(self.env, covariates)
        self.outcome = sim.outcomes.new_row(index, arrival)
        self.ended = False
        self.processes: set = set()
        self.pre_infusion_clocks: list[HazardClock] = []
        self.relapse_clocks: list[HazardClock] = []
        self.bca_clock = None
        self.mrd_clock = None
        self.nrm_clock = None
        self.hsct_process = None
        self.hsct_done_in_process = False
        self.reinfusion_process = None
        self.main = None

    # ------------------------------------------------------------ plumbing
    def row(self, kind: str) -> list:
        return self.sim.streams.row(kind, self.index)

    def record(self, event: str, detail: str = ""):
        self.sim.events.append((self.index, self.env.now - self.arrival, event, detail))

    def spawn(self, generator):
        process = self.env.process(generator)
        self.processes.add(process)
        process.callbacks.append(lambda _event: self.processes.discard(process))
        return process

    def interrupt(self, process, cause) -> bool:
        """Interrupt a live, started process other than the running one."""
        if (process is not None and process.is_alive and process is not self.env.active_process
                and not isinstance(process.target, Initialize)):
            process.interrupt(cause)
            return True
        return False

    def day(self) -> float:
        """Days since enrolment (the patient's clock in the outputs)."""
        return self.env.now - self.arrival

    def start(self):
        self.main = self.spawn(self._pathway())
        self.follow_up = self.spawn(self._follow_up_ends(self.sim.model.horizon_days))

    def _follow_up_ends(self, horizon):
        """Follow-up lasts the horizon from enrolment, and from infusion once
        infused (so post-infusion outcomes are observed to the horizon too)."""
        while True:
            try:
                yield self.env.timeout(horizon)
                break
            except simpy.Interrupt as interrupt:
                if interrupt.cause != "infused":
                    return
        if not self.ended:
            self.record("censored")
            self.finish()

    def finish(self):
        """End of the patient's story (death or censoring): stop everything."""
        self.ended = True
        self.outcome["end_day"] = self.day()
        for process in list(self.processes):
            self.interrupt(process, _END)

    def die(self, cause: str):
        if self.ended:
            return
        self.outcome["death_day"] = self.day()
        self.outcome["death_cause"] = cause
        self.outcome["hsct_death"] = cause == "transplant"
        self.record("death", cause)
        self.finish()

    def schedule_death(self, delay: float, cause: str):
        def dying():
            if self.ended:
                return
            try:
                yield self.env.timeout(delay)
            except simpy.Interrupt:
                return
            self.die(cause)

        if delay < math.inf:
            self.spawn(dying())

    def clock(self, name, hazard, uniform, origin, on_fire) -> HazardClock:
        return HazardClock(self, name, hazard, exponential_from_uniform(uniform), origin, on_fire)

    def update_clocks(self):
        for clock in (*self.relapse_clocks, self.mrd_clock, self.bca_clock, self.nrm_clock):
            if clock is not None:
                clock.update()

    def _hold(self, resource_name: str, duration: float):
        """Queue for a shared resource (if finite), hold it for ``duration``;
        returns the time spent queueing."""
        resource = self.sim.resources[resource_name]
        if resource is None:
            yield self.env.timeout(duration)
            return 0.0
        asked = self.env.now
        with resource.request() as request:
            yield request
            waited = self.env.now - asked
            yield self.env.timeout(duration)
        return waited

    # ------------------------------------------------------------ decisions
    def decide(self, event: str):
        """Apply the first matching rule of the policy to ``event``."""
        rule = self.sim.policy.decide(event, self.state)
        if rule is None:
            action = DEFAULT_ACTIONS.get(event, "observe")
        else:
            action = rule.action
            self.record("decision", f"{event}: rule {rule.index} -> {action}")
        if action == "hsct":
            self.request_hsct()
        elif action == "reinfuse":
            self.request_reinfusion()
        elif action == "salvage":
            self.salvage()

    def _skip(self, action: str, reason: str):
        self.record("decision_skipped", f"{action}: {reason}")

    # ------------------------------------------------------------ pre-infusion
    def _pathway(self):
        if self.ended:
            return
        m, st, out = self.model, self.state, self.outcome
        try:
            self.record("enrolled")
            pre = self.row("pre_infusion")
            self.pre_infusion_clocks = [
                self.clock("pre_infusion_death", m.pre_infusion_death, pre[0], self.env.now,
                           lambda c: self.die("pre_infusion")),
                self.clock("withdrawal", m.pre_infusion_withdrawal, pre[1], self.env.now,
                           lambda c: self._leave_pathway("withdrawal", pre[2])),
            ]
            yield self.env.timeout(m.referral_delay.from_uniform(self.row("referral")[0]))
            aph, mfg = self.row("apheresis"), self.row("manufacturing")
            attempt = 0
            while True:
                if attempt == 0 and st.apheresis_deferred:
                    self.record("apheresis_deferred")
                    yield self.env.timeout(m.apheresis_deferral.from_uniform(aph[2 * attempt]))
                if out["apheresis_day"] != out["apheresis_day"]:  # NaN: first collection
                    out["apheresis_day"] = self.day()
                yield from self._hold("apheresis", m.apheresis_duration.from_uniform(aph[2 * attempt + 1]))
                self.record("apheresis", f"attempt {attempt + 1}")
                waited = yield from self._hold_manufacturing(mfg[3 * attempt])
                out["wait_manufacturing_days"] += waited
                attempt += 1
                out["manufacturing_attempts"] = attempt
                if mfg[3 * attempt - 2] >= m.manufacturing_failure:
                    break
                self.record("manufacturing_failure", f"attempt {attempt}")
                if attempt < m.max_manufacturing_attempts and mfg[3 * attempt - 1] < m.recollection:
                    self.record("recollection")
                    continue
                out["manufacturing_failure"] = True
                self._leave_pathway("manufacturing_failure", pre[2])
                return
            yield self.env.timeout(m.infusion_delay.from_uniform(self.row("infusion")[0]))
        except simpy.Interrupt:
            return
        for clock in self.pre_infusion_clocks:
            clock.stop()
        yield from self._after_infusion()

    def _hold_manufacturing(self, uniform):
        self.record("manufacturing_queued")
        resource = self.sim.resources["manufacturing"]
        duration = self.model.manufacturing_duration.from_uniform(uniform)
        if resource is None:
            self.record("manufacturing_start")
            yield self.env.timeout(duration)
            return 0.0
        asked = self.env.now
        with resource.request() as request:
            yield request
            self.record("manufacturing_start")
            waited = self.env.now - asked
            yield self.env.timeout(duration)
        return waited

    def _leave_pathway(self, reason: str, survival_uniform: float):
        """Not infused (withdrawn or product failure): followed for survival."""
        if self.ended:
            return
        self.outcome["withdrawn"] = reason == "withdrawal"
        self.outcome["pathway_exit_day"] = self.day()
        if reason == "withdrawal":
            self.record("withdrawal")
        for clock in self.pre_infusion_clocks:
            clock.stop()
        self.interrupt(self.main, _END)
        self.schedule_death(self.model.survival_after_withdrawal.from_uniform(survival_uniform), "after_" + reason)

    # ------------------------------------------------------------ infusion and response
    def _after_infusion(self):
        m, st, out = self.model, self.state, self.outcome
        now = self.env.now
        st.infusion_time = now
        out["infused"] = True
        out["infusion_day"] = self.day()
        out["vein_to_vein_days"] = self.day() - out["apheresis_day"]
        self.record("infusion")
        self.interrupt(self.follow_up, "infused")
        tox = self.row("toxicity")
        st.severe_crs = tox[0] < m.severe_crs.probability(st)
        st.severe_icans = tox[1] < m.severe_icans.probability(st)
        out["severe_crs"], out["severe_icans"] = st.severe_crs, st.severe_icans
        if st.severe_crs:
            self.record("severe_crs")
        if st.severe_icans:
            self.record("severe_icans")
        if tox[2] < m.early_death.probability(st):
            out["early_toxic_death"] = True
            self.schedule_death(m.time_to_early_death.from_uniform(tox[3]), "toxicity")
        self.nrm_clock = self.clock("non_relapse_death", m.non_relapse_death, self.row("non_relapse_death")[0],
                                    now, lambda c: self.die("non_relapse"))
        self.bca_clock = self.clock("bca_loss", m.bca_loss, self.row("bca")[0], now, self._bca_lost)
        try:
            yield self.env.timeout(m.assessment_day)
        except simpy.Interrupt:
            return
        response = self.row("response")
        st.cr = response[0] < m.complete_remission.probability(st)
        out["cr"] = st.cr
        out["response_day"] = self.day()
        self.record("response", "CR" if st.cr else "NR")
        if not st.cr:
            self.nrm_clock.stop()
            self.bca_clock.stop()
            self.schedule_death(m.survival_after_nonresponse.from_uniform(response[1]), "refractory")
            self.decide("response")
            return
        mrd = self.row("mrd")
        st.mrd_informative = mrd[0] >= m.mrd_uninformative
        out["mrd_informative"] = st.mrd_informative
        st.mrd_present = mrd[1] < m.mrd_positive_at_assessment.probability(st)
        if st.mrd_present:
            out["mrd_emergence_day"] = self.day()
        origin = st.infusion_time
        self.relapse_clocks = [
            self.clock(name, m.relapse[name], u, origin, self._relapse)
            for name, u in zip(RELAPSE_PHENOTYPES, self.row("relapse")[:3])
        ]
        if not st.mrd_present:
            self.mrd_clock = self.clock("mrd_emergence", m.mrd_emergence, mrd[2], origin, self._mrd_emerges)
        self.decide("response")
        if self.ended:
            return
        self.spawn(self._mrd_surveillance())
        if st.bca_lost:
            self.spawn(self._bca_detection())

    # ------------------------------------------------------------ biology
    def _bca_lost(self, clock):
        st = self.state
        st.bca_lost = True
        if self.outcome["bca_loss_day"] != self.outcome["bca_loss_day"]:
            self.outcome["bca_loss_day"] = self.day()
        self.record("bca_lost")
        self.update_clocks()
        if st.cr and not st.relapsed and not st.transplanted:
            self.spawn(self._bca_detection())

    def _mrd_emerges(self, clock):
        self.state.mrd_present = True
        if self.outcome["mrd_emergence_day"] != self.outcome["mrd_emergence_day"]:
            self.outcome["mrd_emergence_day"] = self.day()
        self.record("mrd_emergence")
        self.update_clocks()

    def _relapse(self, clock):
        st, m, out = self.state, self.model, self.outcome
        phenotype = clock.name
        st.relapsed = True
        st.relapse_phenotype = phenotype
        out["relapse_day"] = self.day()
        out["relapse_phenotype"] = phenotype
        self.record("relapse", phenotype)
        for other in (*self.relapse_clocks, self.mrd_clock, self.bca_clock, self.nrm_clock):
            if other is not None and other is not clock:
                other.stop()
        if st.hsct_pending and not self.hsct_done_in_process and self.interrupt(self.hsct_process, "cancel"):
            st.hsct_pending = False
            self.record("hsct_cancelled", "relapse")
        if self.interrupt(self.reinfusion_process, "cancel"):
            self.record("reinfusion_cancelled", "relapse")
        rel = self.row("relapse")
        self.death_after_relapse = m.survival_after_relapse[phenotype].from_uniform(rel[3])
        self.schedule_death(self.death_after_relapse, "post_relapse")
        self.decide("relapse")

    def salvage(self):
        """Salvage therapy after relapse; a re-remission lets rules plan an HSCT.
        Survival after relapse is the phenotype's published law as a whole."""
        st, m = self.state, self.model
        if not st.relapsed:
            self._skip("salvage", "not relapsed")
            return
        rel = self.row("relapse")
        if rel[4] >= m.reremission.probability(st):
            return
        delay = m.time_to_reremission.from_uniform(rel[5])
        if delay >= self.death_after_relapse:
            return

        def reremission():
            try:
                yield self.env.timeout(delay)
            except simpy.Interrupt:
                return
            self.outcome["reremission_day"] = self.day()
            self.record("reremission")
            self.decide("reremission")

        self.spawn(reremission())

    # ------------------------------------------------------------ surveillance
    def _mrd_surveillance(self):
        st, m, out = self.state, self.model, self.outcome
        mrd = self.row("mrd")
        try:
            for number, day in enumerate(m.mrd_test_days):
                when = st.infusion_time + day
                if when < self.env.now - 1e-9:
                    continue
                yield self.env.timeout(when - self.env.now)
                if st.relapsed or st.transplanted:
                    return
                st.mrd_test_number = number
                if not st.mrd_informative:
                    st.mrd_positive, result = False, "uninformative"
                else:
                    st.mrd_positive = st.mrd_present and mrd[3 + number] < m.mrd_sensitivity
                    result = "positive" if st.mrd_positive else "negative"
                if st.mrd_positive:
                    st.mrd_positive_tests += 1
                    if out["first_mrd_positive_day"] != out["first_mrd_positive_day"]:
                        out["first_mrd_positive_day"] = self.day()
                if st.mrd_informative:
                    if abs(day - _DAY28) < 1:
                        out["mrd_day28_positive"] = float(st.mrd_positive)
                    elif abs(day - _MONTH3) < 1:
                        out["mrd_month3_positive"] = float(st.mrd_positive)
                self.record("mrd_test", f"{result} (test {number})")
                self.decide("mrd_result")
        except simpy.Interrupt:
            return

    def _bca_detection(self):
        """B-cell recovery is seen at the first scheduled check after it happens."""
        st = self.state
        since = self.env.now - st.infusion_time
        upcoming = [d for d in self.model.bca_check_days if d >= since - 1e-9]
        if not upcoming or self.ended:
            return
        try:
            yield self.env.timeout(st.infusion_time + upcoming[0] - self.env.now)
        except simpy.Interrupt:
            return
        if st.relapsed or st.transplanted or not st.bca_lost or st.bca_loss_detected:
            return
        st.bca_loss_detected = True
        if self.outcome["bca_loss_detected_day"] != self.outcome["bca_loss_detected_day"]:
            self.outcome["bca_loss_detected_day"] = self.day()
        self.record("bca_loss_detected")
        self.decide("bca_loss")

    # ------------------------------------------------------------ actions
    def request_hsct(self):
        st, m = self.state, self.model
        in_remission = (st.cr and not st.relapsed) or (st.relapsed and self.outcome["reremission_day"] == self.outcome["reremission_day"])
        if st.hsct_pending:
            return self._skip("hsct", "already planned")
        if not in_remission:
            return self._skip("hsct", "not in remission")
        if st.hsct_after_car >= m.max_hsct_after_car:
            return self._skip("hsct", "transplant limit reached")
        st.hsct_pending = True
        self.hsct_done_in_process = False
        self.hsct_process = self.spawn(self._hsct(consolidative=not st.relapsed))

    def _hsct(self, consolidative: bool):
        st, m, out = self.state, self.model, self.outcome
        k = st.hsct_after_car
        u = self.row("hsct")[6 * k: 6 * k + 6]
        self.record("hsct_planned", "consolidative" if consolidative else "salvage")
        try:
            yield self.env.timeout(m.donor_search.from_uniform(u[0]))
            beds = self.sim.resources["hsct_beds"]
            occupancy = m.bed_occupancy.from_uniform(u[1])
            if beds is None:
                self._transplant(consolidative, u)
                yield self.env.timeout(occupancy)
                return
            asked = self.env.now
            with beds.request() as request:
                yield request
                out["hsct_bed_wait_days"] += self.env.now - asked
                self._transplant(consolidative, u)
                yield self.env.timeout(occupancy)
        except simpy.Interrupt:
            return

    def _transplant(self, consolidative: bool, u):
        st, m, out = self.state, self.model, self.outcome
        self.hsct_done_in_process = True
        trm = m.transplant_death.probability(st)  # before counting this one
        st.hsct_pending = False
        st.transplanted = True
        st.hsct_after_car += 1
        st.mrd_present_at_hsct = st.mrd_present
        out["hsct_count"] = st.hsct_after_car
        if out["first_hsct_day"] != out["first_hsct_day"]:
            out["first_hsct_day"] = self.day()
        if consolidative:
            out["consolidative_hsct"] = True
        self.record("hsct", "consolidative" if consolidative else "salvage")
        if not consolidative:
            return  # survival after relapse already reflects salvage transplants
        if u[2] < trm:
            self.schedule_death(m.time_to_transplant_death.from_uniform(u[3]), "transplant")
        if u[4] < m.acute_gvhd:
            self.record("acute_gvhd")
        if u[5] < m.chronic_gvhd:
            self.record("chronic_gvhd")
        if self.bca_clock is not None:
            self.bca_clock.stop()
        self.update_clocks()

    def request_reinfusion(self):
        st, m = self.state, self.model
        if not st.cr or st.relapsed or st.transplanted:
            return self._skip("reinfuse", "not in first remission without HSCT")
        if st.reinfusions >= m.max_reinfusions:
            return self._skip("reinfuse", "reinfusion limit reached")
        if self.reinfusion_process is not None and self.reinfusion_process.is_alive:
            return self._skip("reinfuse", "already planned")
        self.reinfusion_process = self.spawn(self._reinfusion())

    def _reinfusion(self):
        st, m, out = self.state, self.model, self.outcome
        k = st.reinfusions
        u = self.row("reinfusion")[2 * k: 2 * k + 2]
        self.record("reinfusion_planned")
        try:
            yield self.env.timeout(m.reinfusion_delay.from_uniform(u[0]))
        except simpy.Interrupt:
            return
        st.reinfusions += 1
        out["reinfusions"] = st.reinfusions
        self.record("reinfusion")
        st.bca_regained = u[1] < m.regain_bca.probability(st)
        if st.bca_regained:
            out["bca_regained"] = True
            st.bca_lost = False
            st.bca_loss_detected = False
            if self.bca_clock is not None:
                self.bca_clock.stop()
            self.bca_clock = self.clock("bca_loss", m.bca_loss, self.row("bca")[k + 1], self.env.now, self._bca_lost)
            self.update_clocks()
        self.record("reinfusion_result", "bca_regained" if st.bca_regained else "no_bca")
        self.decide("reinfusion_result")
