"""A fixed reference toy pathway, timed beside carsim so that speed can be
quoted as a ratio on machines of different speed.

The toy (one SimPy process per patient): Poisson arrivals (1/day) queue for
one of 20 manufacturing slots (lognormal, mean 25 days); death while waiting
(0.002/day) leaves the queue; at infusion 85% respond; responders lose B-cell
aplasia after Weibull(0.8, 300 days) and relapse at 0.0008/day, four times
that after the loss; death follows relapse (or non-response) after a mean of
300 days; follow-up ends five years after arrival.  About ten events a
patient.
"""

from __future__ import annotations

import math
import time

import numpy as np
import simpy

SLOTS = 20
MFG_SIGMA = 0.3
MFG_MU = math.log(25.0) - MFG_SIGMA**2 / 2
HORIZON = 5 * 365.25


def run_toy(n: int, seed: int = 12345) -> dict:
    rng = np.random.default_rng(seed)
    gap = rng.exponential(1.0, n).tolist()
    death_wait = rng.exponential(500.0, n).tolist()
    mfg = rng.lognormal(MFG_MU, MFG_SIGMA, n).tolist()
    respond = (rng.random(n) < 0.85).tolist()
    bca = (300.0 * rng.weibull(0.8, n)).tolist()
    relapse = rng.exponential(1 / 0.0008, n).tolist()
    relapse_after_loss = rng.exponential(1 / 0.0032, n).tolist()
    death_after = rng.exponential(300.0, n).tolist()
    env = simpy.Environment()
    slots = simpy.Resource(env, SLOTS)
    deaths = [0]

    def patient(i):
        horizon = env.now + HORIZON
        dies = env.timeout(death_wait[i])
        request = slots.request()
        got = yield request | dies
        if request not in got:
            request.cancel()
            deaths[0] += 1
            return
        made = env.timeout(mfg[i])
        got = yield made | dies
        slots.release(request)
        if made not in got:
            deaths[0] += 1
            return
        if respond[i]:
            loss, rel = env.timeout(bca[i]), env.timeout(relapse[i])
            got = yield loss | rel
            if rel not in got:
                yield env.timeout(relapse_after_loss[i])
        if env.now + death_after[i] <= horizon:
            yield env.timeout(death_after[i])
            deaths[0] += 1

    def arrivals():
        for i in range(n):
            yield env.timeout(gap[i])
            env.process(patient(i))

    env.process(arrivals())
    started = time.perf_counter()
    env.run()
    seconds = time.perf_counter() - started
    return {"patients": n, "seconds": seconds, "patients_per_s": n / seconds, "deaths": deaths[0]}
