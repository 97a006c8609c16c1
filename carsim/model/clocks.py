"""Hazard clocks: exact time-to-event under time-varying multipliers.

A clock fires when the patient's cumulative hazard reaches an Exp(1)
threshold drawn once (from the patient's own stream).  The hazard is
``baseline(t - origin) * multiplier(state)``.  When the state changes (BCA
lost, MRD present, HSCT done) the hazard used so far is banked and the
remaining threshold is spent under the new multiplier, which is the exact
conditional residual-time distribution (no ticking).  Because the threshold
is fixed per patient, a patient whose state never changes fires at the same
time under every policy (common random numbers).

:class:`Clocks` holds one clock per row, as arrays; this is the only place
the arithmetic is written.
"""

from __future__ import annotations

import numpy as np

INF = np.inf


class Clocks:
    """One hazard clock (of one law) per row."""

    def __init__(self, law, n: int):
        self.law = law
        self.origin, self.since, self.used = np.zeros(n), np.zeros(n), np.zeros(n)
        self.threshold, self.multiplier = np.zeros(n), np.ones(n)
        self.running = np.zeros(n, bool)

    def start(self, idx, now, origin, threshold, multiplier) -> np.ndarray:
        """Start the rows' clocks at ``now`` (baseline time counted from
        ``origin``); returns their fire times."""
        self.origin[idx], self.since[idx], self.used[idx] = origin, now, 0.0
        self.threshold[idx], self.multiplier[idx] = threshold, multiplier
        self.running[idx] = True
        return self.fire_times(idx)

    def stop(self, idx):
        self.running[idx] = False

    def rebase(self, idx, now, multiplier) -> np.ndarray:
        """The multiplier changes at ``now``: bank the hazard used so far
        under the old one; returns the new fire times."""
        H = self.law.cumulative_hazard
        origin = self.origin[idx]
        base = H(now - origin)
        self.used[idx] += self.multiplier[idx] * (base - H(self.since[idx] - origin))
        self.since[idx] = now
        self.multiplier[idx] = multiplier
        return self._fire_times(idx, origin, base)

    def fire_times(self, idx) -> np.ndarray:
        """Absolute time each running clock fires if nothing changes (inf when
        stopped or when the multiplier is 0)."""
        origin = self.origin[idx]
        return self._fire_times(idx, origin, self.law.cumulative_hazard(self.since[idx] - origin))

    def _fire_times(self, idx, origin, base) -> np.ndarray:
        """As :meth:`fire_times`, given the cumulative hazard ``base`` already used at ``since``."""
        multiplier = self.multiplier[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            target = base + (self.threshold[idx] - self.used[idx]) / multiplier
            out = origin + self.law.inverse_cumulative_hazard(target)
        return np.where(self.running[idx] & (multiplier > 0), out, INF)
