"""Hazard clocks: exact time-to-event under time-varying multipliers.

A clock fires when the patient's cumulative hazard reaches an Exp(1)
threshold drawn once (from the patient's own stream).  The hazard is
``baseline(t - origin) * multiplier(state)``.  When the state changes (BCA
lost, MRD present, HSCT done) the clock is interrupted: the hazard used so
far is banked and the remaining threshold is spent under the new multiplier,
which is the exact conditional residual-time distribution (no ticking).
Because the threshold is fixed per patient, a patient whose state never
changes fires at the same time under every policy (common random numbers).
"""

from __future__ import annotations

import math

import simpy

from .definition import CompiledHazard

_STOP = "stop"
_UPDATE = "update"


class HazardClock:
    def __init__(self, patient, name: str, hazard: CompiledHazard, threshold: float, origin: float, on_fire):
        self.patient = patient
        self.env = patient.env
        self.name = name
        self.hazard = hazard
        self.law = hazard.law
        self.threshold = threshold
        self.origin = origin
        self.on_fire = on_fire
        self.used = 0.0  # cumulative hazard spent up to ``self.since``
        self.since = self.env.now
        self.multiplier = hazard.multiplier(patient.state)
        self.stopped = False
        self.process = patient.spawn(self._run())

    def fire_time(self) -> float:
        """Absolute time at which the clock fires if nothing changes."""
        if self.multiplier <= 0.0:
            return math.inf
        remaining = self.threshold - self.used
        base_now = float(self.law.cumulative_hazard(self.since - self.origin))
        return self.origin + float(self.law.inverse_cumulative_hazard(base_now + remaining / self.multiplier))

    def _run(self):
        env = self.env
        if self.stopped or self.patient.ended:
            return
        while True:
            when = self.fire_time()
            try:
                if when == math.inf:
                    yield env.event()  # never triggered: waits for an update or a stop
                else:
                    yield env.timeout(max(0.0, when - env.now))
            except simpy.Interrupt as interrupt:
                if interrupt.cause == _UPDATE:
                    continue
                return
            self.on_fire(self)
            return

    @property
    def running(self) -> bool:
        return self.process.is_alive

    def update(self):
        """Re-read the multiplier after a state change; re-time if it moved."""
        if not self.process.is_alive:
            return
        new = self.hazard.multiplier(self.patient.state)
        if new == self.multiplier:
            return
        now = self.env.now
        H = self.law.cumulative_hazard
        self.used += self.multiplier * float(H(now - self.origin) - H(self.since - self.origin))
        self.since = now
        self.multiplier = new
        self.patient.interrupt(self.process, _UPDATE)  # a clock not yet started reads the new multiplier itself

    def stop(self):
        self.stopped = True
        self.patient.interrupt(self.process, _STOP)
