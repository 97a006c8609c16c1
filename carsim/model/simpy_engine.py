"""The SimPy engine (the reference): one process per patient, shared
``simpy.Resource`` s for apheresis, manufacturing and transplant beds.

It schedules the same transitions as the array engine: the access pathway's
per-patient steps (:mod:`carsim.model.access`) and the pathway after
infusion (:mod:`carsim.model.pathway`), called for one row (an array of
one).  A patient's process waits for its own next event, or for a bed it
has asked for, whichever comes first; patients interact only through the
resources' queues.
"""

from __future__ import annotations

import numpy as np
import simpy

from .access import ENROL, EXIT, INFUSED, LEFT, NO_STEP, RESOURCES, WAIT, AccessPathway
from .definition import ModelDefinition
from .pathway import INF, Pathway
from .queues import queue_growth


class TrackedResource(simpy.Resource):
    """A Resource that integrates its busy slots over time (utilisation)."""

    def __init__(self, env, capacity):
        super().__init__(env, capacity)
        self.busy_days = 0.0
        self.first_request = None
        self.last_release = None
        self._last = env.now

    def _tally(self):
        now = self._env.now
        self.busy_days += len(self.users) * (now - self._last)
        self._last = now

    def request(self):
        self._tally()
        if self.first_request is None:
            self.first_request = self._env.now
        return super().request()

    def release(self, request):
        self._tally()
        self.last_release = self._env.now
        return super().release(request)

    def use(self, end: float) -> dict:
        if self.first_request is None:
            return {"busy_days": float("nan"), "capacity": None, "span_days": 0.0}
        self._tally()
        return {"busy_days": self.busy_days, "capacity": self.capacity,
                "span_days": (self.last_release or end) - self.first_request}


class SimpyBeds:
    """Transplant beds as a shared ``simpy.Resource`` (or unlimited)."""

    def __init__(self, env, resource: TrackedResource | None, n: int):
        self.env = env
        self.resource = resource
        self.asked = [None] * n  # pending request per row
        self.held = [[] for _ in range(n)]  # (end, granted request) of each stay a row holds
        self.until = np.full(n, INF)  # when the row's earliest stay ends
        self.occupancy = np.zeros(n)
        self.requests: list[list] = []  # [asked, granted or NaN] per request, for the unstable-queue check
        self.request_of_row = [None] * n
        self.stays: list[list] = []  # [start, end] per stay

    def request(self, pathway, idx, now, occupancy):
        for row, stay in zip(idx.tolist(), occupancy.tolist()):
            self.occupancy[row] = stay
            if self.resource is None:
                pathway.transplant(np.array([row]), np.array([self.env.now]))
            else:
                self.asked[row] = self.resource.request()
                self.request_of_row[row] = len(self.requests)
                self.requests.append([self.env.now, np.nan])

    def granted(self, pathway, row: int):
        request, self.asked[row] = self.asked[row], None
        self.requests[self.request_of_row[row]][1] = self.env.now
        self.held[row].append((self.env.now + self.occupancy[row], request, len(self.stays)))
        self.stays.append([self.env.now, self.env.now + self.occupancy[row]])
        self.until[row] = min(end for end, *_ in self.held[row])
        pathway.transplant(np.array([row]), np.array([self.env.now]))

    def warnings(self) -> list[str]:
        """The unstable-queue warning, where a queue formed (as the array engine gives it)."""
        if self.resource is None or not self.requests:
            return []
        asked, granted = np.array(self.requests, dtype=float).T
        if not np.any(granted > asked):
            return []
        starts, ends = np.array(self.stays, dtype=float).reshape(-1, 2).T
        return queue_growth("hsct_beds", self.resource.capacity, (asked, granted), starts, ends)

    def cancel(self, pathway, idx, now):
        for row in idx.tolist():
            if self.asked[row] is not None:
                _withdraw(self.resource, self.asked[row])
                self.asked[row] = None

    def release(self, pathway, idx, now):
        self.cancel(pathway, idx, now)
        for row in idx.tolist():
            while self.held[row]:
                self.end_stay(row)

    def end_stay(self, row: int):
        """End the row's earliest stay."""
        held = self.held[row]
        if held:
            earliest = min(range(len(held)), key=lambda k: held[k][0])
            _end, request, stay = held.pop(earliest)
            self.resource.release(request)
            self.stays[stay][1] = self.env.now
        self.until[row] = min((end for end, *_ in held), default=INF)


def _withdraw(resource, request):
    """Leave a queue: a request granted this instant (not yet seen) is released."""
    if request.triggered:
        resource.release(request)
    else:
        request.cancel()


def simulate(model: ModelDefinition, policy: str, streams, covariates: dict, arrivals, start: int, stop: int,
             record_events: bool = True):
    """Patients ``start .. stop - 1`` under one policy: (outcome columns,
    event columns, resource use, warnings)."""
    env = simpy.Environment()
    resources = {name: (None if capacity is None else TrackedResource(env, capacity))
                 for name, capacity in model.capacities.items()}
    access = AccessPathway(model, streams, covariates, arrivals, start, stop, record_events)
    beds = SimpyBeds(env, resources["hsct_beds"], access.n)
    pathway = Pathway(model, [policy], [(access, streams)], record_events, beds=beds)
    # One policy and one cohort: row i is patient i, and the access pathway
    # writes straight into the rows' outcome columns.
    pathway.out = access.out
    pathway.infusion = access.infusion_time

    def patient(i: int):
        yield env.timeout(access.arrival[i] - env.now)
        exit_event = env.timeout(access.exit_time[i] - env.now)
        action, value, resource, then, granted = access.step(ENROL, i, env.now)
        while action != INFUSED:
            if action == LEFT:
                return
            if action == WAIT:
                wait = env.timeout(value - env.now)
                yield wait | exit_event
                if not wait.processed:
                    access.step(EXIT, i, env.now)
                    return
                action, value, resource, then, granted = access.step(then, i, env.now)
                continue
            slots = resources[RESOURCES[resource]]  # a request for a slot, held ``value`` days
            slot = None
            if slots is not None:
                slot = slots.request()
                yield slot | exit_event
                if not slot.processed:
                    _withdraw(slots, slot)
                    access.step(EXIT, i, env.now)
                    return
            if granted != NO_STEP:
                access.step(granted, i, env.now)
            held = env.timeout(value)
            yield held | exit_event
            if slot is not None:
                slots.release(slot)
            if not held.processed:
                access.step(EXIT, i, env.now)
                return
            action, value, resource, then, granted = access.step(then, i, env.now)
        access.finish(i)  # the access pathway's columns, which the pathway after infusion reads
        yield from after_infusion(i)

    def after_infusion(i: int):
        row = np.array([i])
        pathway.infuse(row)
        while not pathway.ended[i]:
            source, when = pathway.next_event(row)
            source, when = int(source[0]), float(when[0])
            stay_ends = beds.until[i]
            if stay_ends <= when and stay_ends < INF:
                yield env.timeout(stay_ends - env.now)
                beds.end_stay(i)
                continue
            wake = env.timeout(when - env.now)
            asked = beds.asked[i]
            if asked is not None:
                yield wake | asked
                if not wake.processed:
                    beds.granted(pathway, i)
                    continue
            else:
                yield wake
            pathway.fire(source, row, np.array([when]))

    for i in range(access.n):
        env.process(patient(i))
    env.run()
    access.finish()
    use = {name: (resource.use(env.now) if resource is not None
                  else {"busy_days": float("nan"), "capacity": None, "span_days": 0.0})
           for name, resource in resources.items()}
    out = dict(access.out)
    out["patient"] = np.arange(start, stop)
    events = pathway.event_columns()[0]
    return out, events, use, beds.warnings()
