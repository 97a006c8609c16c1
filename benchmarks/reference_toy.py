"""A fixed reference toy pathway, timed beside carsim so that speed can be
quoted as a ratio on machines of different speed.

The toy, in two versions that give the same outcomes from the same draws:
one SimPy process per patient (:func:`run_toy`), and arrays
(:func:`run_toy_numpy`: the queue is a loop over patients in arrival order
with a heap of the times the slots free up, the rest is vectorised), a
yardstick near what NumPy allows.  Poisson arrivals (1/day) queue for
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


def _draws(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"gap": rng.exponential(1.0, n), "death_wait": rng.exponential(500.0, n),
            "mfg": rng.lognormal(MFG_MU, MFG_SIGMA, n), "respond": rng.random(n) < 0.85,
            "bca": 300.0 * rng.weibull(0.8, n), "relapse": rng.exponential(1 / 0.0008, n),
            "relapse_after_loss": rng.exponential(1 / 0.0032, n), "death_after": rng.exponential(300.0, n)}


def run_toy(n: int, seed: int = 12345) -> dict:
    """The toy with one SimPy process per patient."""
    draws = {name: values.tolist() for name, values in _draws(n, seed).items()}
    gap, death_wait, mfg, respond = draws["gap"], draws["death_wait"], draws["mfg"], draws["respond"]
    bca, relapse, relapse_after_loss = draws["bca"], draws["relapse"], draws["relapse_after_loss"]
    death_after = draws["death_after"]
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


def run_toy_numpy(n: int, seed: int = 12345) -> dict:
    """The toy with arrays: the same outcomes as :func:`run_toy` from the same draws."""
    import heapq

    draws = _draws(n, seed)
    started = time.perf_counter()
    arrival = np.cumsum(draws["gap"])
    dies = arrival + draws["death_wait"]
    # First come, first served: each patient in arrival order takes the slot
    # that frees first, unless death comes before it; it holds the slot
    # until manufacturing ends or it dies.
    free = [0.0] * SLOTS
    made = np.full(n, np.nan)
    for i, (a, d, m) in enumerate(zip(arrival.tolist(), dies.tolist(), draws["mfg"].tolist(), strict=True)):
        start = max(a, free[0])
        if start >= d:
            continue
        heapq.heapreplace(free, min(start + m, d))
        if start + m < d:
            made[i] = start + m
    infused = ~np.isnan(made)  # the others died waiting or during manufacturing
    # Responders relapse at the relapse time, or if B-cell aplasia is lost first, after the faster hazard.
    lost_first = draws["respond"] & (draws["bca"] < draws["relapse"])
    relapsed = made + np.where(lost_first, draws["bca"] + draws["relapse_after_loss"], draws["relapse"])
    last = np.where(draws["respond"], relapsed, made)
    late_death = infused & (last + draws["death_after"] <= arrival + HORIZON)
    deaths = int((~infused).sum() + late_death.sum())
    seconds = time.perf_counter() - started
    return {"patients": n, "seconds": seconds, "patients_per_s": n / seconds, "deaths": deaths}
