"""The array engine: schedules the pathway for whole cohorts at once.

* Before infusion, patients interact through the apheresis and
  manufacturing queues: an exact discrete-event loop over a heap (first
  come, first served, leaving the queue at death or withdrawal) calls the
  access pathway's transition function; both are compiled
  (:mod:`carsim.model.compiled`).  It does not depend on the policy, so it
  runs once for all policies.
* After infusion, every patient-policy row advances one event per round:
  each round takes every row's earliest next event and fires it for all the
  rows that have it, with array operations.  All policies, and several
  cohorts (replications) of the same model, run in the same rounds.
* Transplant beds: rows first assume a free bed when the donor is found; if
  beds were never over-subscribed that was exact.  Otherwise the cohort is
  simulated again under the policies whose beds were, with a bed queue per
  policy (:class:`~carsim.model.queues.BedQueue`), still in rounds, with
  exact first-come-first-served grants.
"""

from __future__ import annotations

import heapq
import math
from itertools import pairwise

import numpy as np

from .access import (
    ARRIVAL,
    ATTEMPTS,
    ENROL,
    EXIT,
    EXIT_TIME,
    INFUSED,
    NO_STEP,
    REQUEST,
    RESOURCES,
    WAIT,
    AccessPathway,
    transition,
)
from .compiled import compiled
from .definition import ModelDefinition
from .economics import accounted_events
from .pathway import INF, Pathway
from .queues import GroupQueues, beds_suffice, queue_growth

_STEP, _HOLD_DONE, _EXIT = range(3)  # what a heap entry is


def run_access(access: AccessPathway, capacities: dict) -> dict:
    """Simulate the access pathway of a cohort; returns resource use."""
    caps = np.array([-1 if capacities[name] is None else capacities[name] for name in RESOURCES], np.int64)
    arrival = access.arrival
    order = np.lexsort((np.arange(access.n), arrival))
    (busy_days, first_request, last_release), now = _run_queues(*access.arrays(), order, caps)
    access.finish()
    use = {}
    for r, name in enumerate(RESOURCES):
        if caps[r] >= 0 and not np.isnan(first_request[r]):
            released = last_release[r] if not np.isnan(last_release[r]) and last_release[r] != 0.0 else now
            use[name] = {"busy_days": float(busy_days[r]), "capacity": capacities[name],
                         "span_days": float(released - first_request[r])}
        else:
            use[name] = {"busy_days": float("nan"), "capacity": None, "span_days": 0.0}
    return use


# Per-patient queue state: columns of one integer and one float array.
_HOLDING, _GRANTED, _DONE, _NEXT, _STATUS, _TOKEN = range(6)  # _STATUS: 0 on the pathway, 1 infused, 2 left
_HOLD_START, _HOLD = range(2)


@compiled
def _run_queues(f, k, s, log, days, logged, texts, order, caps):
    """The access pathway's event loop over a heap: first come, first served
    at each resource (``caps``: slots, -1 unlimited), leaving a queue or a
    slot at death or withdrawal.  Heap entries are (time, sequence, kind,
    patient, token), ordered by time then sequence (the order of pushing); a
    patient's token changes when it leaves the pathway, voiding its
    entries.  Returns per resource (columns) the busy slot-days, the first
    request and the last release (rows; NaN: none), and the time of the last
    event."""
    n = len(order)
    # (Element by element below: numba compiles array-wide assignments slowly.)
    busy = np.zeros(2, np.int64)
    use = np.zeros((3, 2))  # busy slot-days, first request, last release (NaN: none)
    for r in range(2):
        use[1, r] = use[2, r] = np.nan
    p = np.zeros((n, 6), np.int64)
    for j in range(n):
        p[j, _HOLDING] = -1  # the resource whose slot the patient holds
    pf = np.zeros((n, 2))  # when its hold started, and how long its current request holds
    # First-come-first-served waiting lines (a patient asks at most once per attempt).
    line = np.empty((2, n * int(s[ATTEMPTS]) + 1), np.int64)
    ends = np.zeros((2, 2), np.int64)  # each line's head and tail
    heap = [(0.0, 0, 0, 0, 0)]  # (time, sequence, kind, patient, token); typed by this first entry
    heap.pop()
    heap_n = np.zeros(1, np.int64)  # the next sequence number
    entry = np.empty(2, np.int64)  # steps read at run time (a constant argument compiles the callee again)
    entry[0], entry[1] = ENROL, EXIT
    arrived = 0
    now = 0.0
    while True:
        # Arrivals are read in (time, patient) order beside the heap: at equal
        # times an arrival goes first, as if pushed first.
        if arrived < n and (len(heap) == 0 or f[order[arrived], ARRIVAL] <= heap[0][0]):
            i = order[arrived]
            arrived += 1
            now = f[i, ARRIVAL]
            _push(heap, heap_n, f[i, EXIT_TIME], _EXIT, i, p[i, _TOKEN])
            action, value, resource, then, granted = transition(f, k, s, log, days, logged, texts, entry[0], i, now)
        elif len(heap) > 0:
            now, _seq, kind, i, token = heapq.heappop(heap)
            if token != p[i, _TOKEN] or p[i, _STATUS] != 0:
                continue
            if kind == _STEP:
                step = p[i, _NEXT]
            elif kind == _HOLD_DONE:  # a held slot's time is up
                _release(f, k, s, log, days, logged, texts, heap, heap_n, i, now, caps, busy, use, p, pf,
                         line, ends)
                step = p[i, _DONE]
            else:
                step = entry[1]
            action, value, resource, then, granted = transition(f, k, s, log, days, logged, texts, step, i, now)
        else:
            break
        # What the transition asked for next.
        if action == WAIT:
            p[i, _NEXT] = then
            _push(heap, heap_n, value, _STEP, i, p[i, _TOKEN])
        elif action == REQUEST:
            pf[i, _HOLD] = value
            p[i, _GRANTED] = granted
            p[i, _DONE] = then
            if np.isnan(use[1, resource]):
                use[1, resource] = now
            if caps[resource] < 0 or busy[resource] < caps[resource]:
                _begin(f, k, s, log, days, logged, texts, heap, heap_n, resource, i, now, caps, busy, p, pf)
            else:
                line[resource, ends[resource, 1]] = i
                ends[resource, 1] += 1
        else:  # infused or left
            p[i, _STATUS] = 1 if action == INFUSED else 2
            p[i, _TOKEN] += 1
            _release(f, k, s, log, days, logged, texts, heap, heap_n, i, now, caps, busy, use, p, pf, line,
                     ends)
    return use, now


@compiled(inline=True)
def _begin(f, k, s, log, days, logged, texts, heap, heap_n, resource, i, now, caps, busy, p, pf):
    """Patient ``i`` takes a slot of ``resource`` now."""
    if caps[resource] >= 0:
        busy[resource] += 1
        p[i, _HOLDING] = resource
        pf[i, _HOLD_START] = now
    if p[i, _GRANTED] != NO_STEP:
        transition(f, k, s, log, days, logged, texts, p[i, _GRANTED], i, now)
    _push(heap, heap_n, now + pf[i, _HOLD], _HOLD_DONE, i, p[i, _TOKEN])


@compiled(inline=True)
def _release(f, k, s, log, days, logged, texts, heap, heap_n, i, now, caps, busy, use, p, pf, line, ends):
    """Patient ``i`` frees the slot it holds (if any), which goes to the
    first patient still waiting for it."""
    resource = p[i, _HOLDING]
    if resource < 0:
        return
    p[i, _HOLDING] = -1
    busy[resource] -= 1
    use[0, resource] += now - pf[i, _HOLD_START]
    use[2, resource] = now
    while ends[resource, 0] < ends[resource, 1]:
        j = line[resource, ends[resource, 0]]
        ends[resource, 0] += 1
        if p[j, _STATUS] == 0:
            _begin(f, k, s, log, days, logged, texts, heap, heap_n, resource, j, now, caps, busy, p, pf)
            return


@compiled(inline=True)
def _push(heap, heap_n, t, kind, i, token):
    """Push (t, next sequence number, kind, i, token) onto the heap."""
    heapq.heappush(heap, (t, heap_n[0], kind, i, token))
    heap_n[0] += 1


def advance(pathway: Pathway, queue: GroupQueues | None = None) -> Pathway:
    """Fire every row's events, round by round, until every row has ended."""
    infused = np.nonzero(~np.isnan(pathway.infusion))[0]
    if len(infused):
        pathway.infuse(infused)
    if queue is not None:
        return _advance_queued(pathway, queue)
    while True:
        active = np.nonzero(~pathway.ended)[0]
        if len(active) == 0:
            break
        source, when = pathway.next_event(active)
        _fire(pathway, active, source, when)
    return pathway


def _fire(pathway: Pathway, rows, source, when):
    """Fire each source's event for its rows, source by source (in source
    order), each source's rows in the order given: one stable sort of the
    source numbers (by radix: fewer than 256), not a pass per source."""
    n_sources = len(pathway.sources)
    order = np.argsort(source.astype(np.uint8) if n_sources < 256 else source, kind="stable")
    rows, when = rows[order], when[order]
    counts = np.bincount(source, minlength=n_sources)
    end = np.cumsum(counts)
    for s in np.flatnonzero(counts):
        first, last = end[s] - counts[s], end[s]
        pathway.fire(int(s), rows[first:last], when[first:last])


def _advance_queued(pathway: Pathway, queue: GroupQueues) -> Pathway:
    """As :func:`advance`, with a bed queue: few rows may fire each round, so
    each row's next event is kept and recomputed only for the rows that fired
    (a row's times change only through its own events and its bed grants)."""
    source = np.zeros(pathway.n, np.int64)
    when = np.full(pathway.n, INF)
    live = np.nonzero(~pathway.ended)[0]
    source[live], when[live] = pathway.next_event(live)
    while True:
        active = np.nonzero(~pathway.ended)[0]
        if len(active) == 0:
            break
        rows = queue.advance(pathway, active, source, when)
        _fire(pathway, rows, source[rows], when[rows])
        source[rows], when[rows] = pathway.next_event(rows)
    return pathway


# Rows one Pathway advances at most: beyond a few tens of thousands each row
# costs more (the arrays outgrow the CPU caches), so a large cohort is
# advanced in slabs of patients after its shared queue is simulated.  (Below
# 2**16, the event table sorts a slab's rows as 16-bit numbers.)
SLAB_ROWS = 40_000


def simulate_access(model: ModelDefinition, streams, covariates, arrivals, start: int, stop: int,
                    record_events: bool = True) -> tuple[AccessPathway, dict]:
    """The access pathway of patients ``start .. stop-1``, simulated, and its resource use."""
    access = AccessPathway(model, streams, covariates, arrivals, start, stop, record_events)
    return access, run_access(access, model.capacities)


def simulate_cohorts(model: ModelDefinition, policies, cohorts, record_events: bool = True,
                     advanced: tuple[int, int] | None = None, coded: bool = False) -> list[dict]:
    """Simulate cohorts of the same model under each policy, in shared rounds.

    ``cohorts``: (streams, covariates, arrivals, start, stop) per cohort, the
    patients ``start .. stop-1`` of its streams, optionally followed by
    (access pathway, resource use) when its access pathway was simulated
    already (:func:`simulate_access`).  Returns per cohort
    ``{policy: (outcome columns, event columns, resource use, warnings,
    bed stays)}``, bed stays as (start, end) arrays.

    ``advanced``: (first, last): the access pathway (its shared queues) is
    simulated for every patient of a cohort, but only patients ``first ..
    last-1`` are advanced after infusion and returned: a part of a cohort
    whose queue is the whole cohort's.  The transplant-bed check needs every
    part's stays, so it is then the caller's (see :func:`beds_checked`).

    ``coded``: the event columns hold codes (``Pathway.event_columns``), for
    the accounting of a run that keeps no event table: after infusion, only
    the events the accounting reads are recorded."""
    policies = list(policies)
    priced = model.scenario.economics is not None
    only_events = accounted_events(model.scenario.economics) if coded and record_events and priced else None
    prepared = []
    for streams, covariates, arrivals, start, stop, *simulated in cohorts:
        access, use = simulated[0] if simulated else simulate_access(model, streams, covariates, arrivals, start,
                                                                     stop, record_events)
        prepared.append((access, streams, use, (0, access.n) if advanced is None else
                         (advanced[0] - start, advanced[1] - start)))
    slabs, slab, rows = [], [], 0
    for c, (access, streams, _use, (offset, end)) in enumerate(prepared):
        pieces = -(-(end - offset) * len(policies) // SLAB_ROWS)
        bounds = np.linspace(offset, end, pieces + 1).round().astype(int)
        for first, stop in pairwise(bounds):
            piece = (access if pieces == 1 and (offset, end) == (0, access.n)
                     else access.part(slice(int(first), int(stop))))
            if slab and rows + piece.n * len(policies) > SLAB_ROWS:
                slabs.append(slab)
                slab, rows = [], 0
            slab.append((c, piece, streams, int(first) - offset))
            rows += piece.n * len(policies)
    slabs.append(slab)
    # Per cohort and policy, the slabs' (event columns, bed stays), and the outcome columns,
    # into which each slab's rows are copied as soon as it has ended (once: no joining of
    # slabs after), so that one slab's arrays are alive at a time.
    segments = [[[] for _ in policies] for _ in prepared]
    outcomes = [[None] * len(policies) for _ in prepared]
    for slab in slabs:
        pathway = advance(Pathway(model, policies, [(piece, streams) for _, piece, streams, _ in slab],
                                  record_events, only_events=only_events))
        events = pathway.event_columns(coded) if record_events else None
        for position, (c, piece, _streams, at) in enumerate(slab):
            _access, _streams, _use, (offset, end) = prepared[c]
            for k in range(len(policies)):
                group = position * len(policies) + k
                rows = slice(pathway.group_start[group], pathway.group_start[group + 1])
                if outcomes[c][k] is None:
                    outcomes[c][k] = {name: np.empty(end - offset, values.dtype)
                                      for name, values in (*pathway.out.items(), ("patient", pathway.ids))}
                out = outcomes[c][k]
                mine = slice(at, at + piece.n)
                for name, values in pathway.out.items():
                    out[name][mine] = values[rows]
                out["patient"][mine] = pathway.ids[rows]
                segments[c][k].append((events[group] if record_events else None, _bed_stays(pathway, group)))
        del pathway, events
    capacity = model.capacities["hsct_beds"]
    results = []
    for c, (access, streams, use, _offset) in enumerate(prepared):
        stays = {}
        for k, policy in enumerate(policies):
            parts = [bed_stays for _, bed_stays in segments[c][k]]
            stays[policy] = (np.concatenate([s for s, _ in parts]), np.concatenate([e for _, e in parts]))
        cohort = {policy: (outcomes[c][k], _assemble(segments[c][k], record_events))
                  for k, policy in enumerate(policies)}
        segments[c] = outcomes[c] = None
        warnings = {policy: [] for policy in policies}
        # Policies whose beds were over-subscribed: simulate them again with the
        # queue, together (one row group per policy, one queue per group).  Only
        # patients who asked for a bed need it: the others' stories never
        # touch the queue, so they are the same with or without it.
        queued = [] if advanced is not None else [
            policy for policy in policies if not beds_suffice(capacity, *stays[policy])]
        if queued:
            asked = np.nonzero(np.any([cohort[p][0]["hsct_count"] > 0 for p in queued], axis=0))[0]
            queues = GroupQueues(capacity, len(queued))
            pathway = advance(Pathway(model, queued, [(access.part(asked), streams)], record_events, beds=queues,
                                      only_events=only_events), queues)
            events = pathway.event_columns(coded) if record_events else [None] * len(queued)
            for group, policy in enumerate(queued):
                rows = slice(pathway.group_start[group], pathway.group_start[group + 1])
                out, all_events = cohort[policy]
                for name in out:
                    if name != "patient":
                        out[name][asked] = pathway.out[name][rows]
                if record_events:
                    all_events = _replace_events(all_events, events[group], pathway.ids[rows])
                cohort[policy] = (out, all_events)
                stays[policy] = _bed_stays(pathway, group)
                warnings[policy] = queue_growth("hsct_beds", capacity, queues.queues[group].requests(),
                                                *stays[policy])
        results.append({policy: (*cohort[policy], _resource_use(use, capacity, *stays[policy]), warnings[policy],
                                 stays[policy])
                        for policy in policies})
    return results


def beds_checked(model: ModelDefinition, use: dict, stays) -> tuple[dict, bool]:
    """(resource use, whether the beds sufficed) of a whole cohort under one
    policy whose parts were advanced apart (``simulate_cohorts`` with
    ``advanced``): ``stays`` are all the parts' bed stays.  If the beds
    did not suffice, the cohort must be simulated whole (with the queue)."""
    capacity = model.capacities["hsct_beds"]
    starts, ends = (np.concatenate(column) for column in zip(*stays, strict=True))
    return _resource_use(use, capacity, starts, ends), beds_suffice(capacity, starts, ends)


def _assemble(segments, record_events: bool):
    """One cohort's event columns under one policy, from the slabs that advanced its patients."""
    if not record_events:
        return None
    if len(segments) == 1:
        return segments[0][0]
    return join_columns([e for e, _ in segments])


def join_columns(pieces: list[dict]) -> dict:
    """Column dicts joined column by column, each column's pieces dropped as
    soon as it is joined (so the pieces and the whole are not all in memory)."""
    joined = {}
    for name in list(pieces[0]):
        joined[name] = np.concatenate([piece.pop(name) for piece in pieces])
    return joined


def _replace_events(events: dict, replacement: dict, patients) -> dict:
    """``events`` with the events of ``patients`` replaced by ``replacement``
    (both by patient, each patient's events in order)."""
    keep = ~np.isin(events["patient"], patients)
    merged = {name: np.concatenate([events[name][keep], replacement[name]]) for name in events}
    order = np.argsort(merged["patient"], kind="stable")
    return {name: values[order] for name, values in merged.items()}


def _bed_stays(pathway: Pathway, group: int):
    """(start, end) of each transplant bed stay in ``group`` (a cohort under
    one policy); a death or the end of follow-up frees the bed early."""
    stays = pathway.beds.stays
    if not stays:
        return np.zeros(0), np.zeros(0)
    idx = np.concatenate([s[0] for s in stays])
    starts = np.concatenate([s[1] for s in stays])
    ends = np.concatenate([s[2] for s in stays])
    mine = pathway.group_of_row[idx] == group
    idx, starts, ends = idx[mine], starts[mine], ends[mine]
    return starts, np.minimum(ends, pathway.arrival[idx] + pathway.out["end_day"][idx])


def _resource_use(access_use: dict, capacity, starts, ends) -> dict:
    use = dict(access_use)
    if capacity is None or len(starts) == 0:
        use["hsct_beds"] = {"busy_days": float("nan"), "capacity": None, "span_days": 0.0}
    else:
        # fsum: exact, so the same whatever order the stays were recorded in
        use["hsct_beds"] = {"busy_days": math.fsum(ends - starts), "capacity": capacity,
                            "span_days": float(ends.max() - starts.min())}
    return use

