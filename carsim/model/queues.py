"""Transplant beds for the array engine: an exact first-come-first-served
queue for rows that advance in rounds, and the check that says whether a
queue formed at all.

Rows advance independently, one event per round, so at any moment some rows
are further ahead in time than others.  Requests and releases up to the
*low-water mark* ``L`` (the earliest next event of any row) are final: no row
can still ask or free a bed before ``L``.  A bed freed later, at ``r``, may
still be granted now when the answer cannot change: the request at the head
of the queue was made before ``L`` (so any request still to come is behind
it), its patient has no event of its own before ``r`` (so is still waiting),
and no patient in a bed has an event before ``r`` (so no bed frees earlier).
A row waiting for a bed fires its own events only while no grant can come
first.  Rows not waiting are never held back.  This is the discipline of
``simpy.Resource``, so the engines agree patient for patient.
"""

from __future__ import annotations

import heapq

import numpy as np

from .pathway import per_row


class BedQueue:
    """The transplant-bed queue of one cohort under one policy (one row group).

    A row can hold a bed and ask for its next one (a salvage transplant may
    be planned before the first stay ends; and a row's own events run ahead
    of the queue), so requests carry a per-row token that voids stale heap
    entries, and stays are numbered, a row holding any number of them."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.free = self.capacity
        self.asks: list[tuple] = []  # requests not yet final: (time, seq, row, token)
        self.releases: list[tuple] = []  # planned and early ends of stays: (time, seq, row, stay)
        self.seq = 0
        self.waiting: list[tuple] = []  # (row, token, request time) in request order, read from ``head``
        self.head = 0
        self.asked = self.holding = None  # per row: asked for a bed; number of beds held
        self.ask_token = None
        self.open_stays: dict[int, set] = {}  # row holding a bed -> ids of its stays not yet ended
        self.occupancy = None
        self.stays = []  # (rows, start, planned end), as UnlimitedBeds keeps them
        self.asked_at: list[float] = []
        self.granted_at: list[float] = []
        self._request_number = None

    def _ensure(self, n: int):
        if self.asked is None:
            self.asked, self.holding = np.zeros(n, bool), np.zeros(n, np.int64)
            self.ask_token = np.zeros(n, np.int64)
            self.occupancy = np.zeros(n)
            self._request_number = np.zeros(n, np.int64)

    def _push(self, heap, time, row, token):
        heapq.heappush(heap, (float(time), self.seq, int(row), int(token)))
        self.seq += 1

    def _next_release(self) -> float:
        """The earliest pending release of a stay still open (inf: none)."""
        releases = self.releases
        while releases and releases[0][3] not in self.open_stays.get(releases[0][2], ()):
            heapq.heappop(releases)
        return releases[0][0] if releases else np.inf

    def _end_stay(self) -> float:
        """End the stay of the earliest pending release (already checked open); its time."""
        t, _, row, stay = heapq.heappop(self.releases)
        self.open_stays[row].discard(stay)
        if not self.open_stays[row]:
            del self.open_stays[row]  # its keys are the rows holding a bed
        self.holding[row] -= 1
        self.free += 1
        return t

    def _head(self):
        """The earliest request still waiting, or None."""
        while self.head < len(self.waiting):
            row, token, _ = self.waiting[self.head]
            if self.asked[row] and self.ask_token[row] == token:
                return self.waiting[self.head]
            self.head += 1
        return None

    # ------------------------------------------------------------ the pathway's side
    def request(self, pathway, idx, now, occupancy):
        self._ensure(pathway.n)
        for row, t, stay in zip(idx.tolist(), per_row(now, idx).tolist(), occupancy.tolist()):
            self.ask_token[row] += 1
            self.asked[row] = True
            self.occupancy[row] = stay
            self._request_number[row] = len(self.asked_at)
            self.asked_at.append(t)
            self.granted_at.append(np.nan)
            self._push(self.asks, t, row, self.ask_token[row])

    def cancel(self, pathway, idx, now):
        if self.asked is None or len(idx) == 0:
            return
        asked = idx[self.asked[idx]]
        self.asked[asked] = False
        self.ask_token[asked] += 1

    def release(self, pathway, idx, now):
        """Rows ended (death, end of follow-up): free their beds, drop their requests."""
        if self.asked is None or len(idx) == 0:
            return
        self.cancel(pathway, idx, now)
        holding = self.holding[idx] > 0
        for row, t in zip(idx[holding].tolist(), per_row(now, idx)[holding].tolist()):
            for stay in self.open_stays[row]:
                self._push(self.releases, t, row, stay)

    # ------------------------------------------------------------ the engine's side
    def advance(self, pathway, active, source, when) -> np.ndarray:
        """Run the queue as far as it is final and return the ``active`` rows
        allowed to fire this round.  ``source`` and ``when`` (every row's next
        event) are updated in place for rows given a bed."""
        self._ensure(pathway.n)
        upcoming = when[active]
        low = float(upcoming.min())
        granted = False
        asks = self.asks
        # Requests and releases up to the low-water mark, in time order (at
        # equal times a bed is freed before it is asked for).
        while True:
            release = self._next_release()
            ask = asks[0][0] if asks else np.inf
            if min(release, ask) > low:
                break
            if release <= ask:
                t = self._end_stay()
            else:
                t, _, row, token = heapq.heappop(asks)
                if token == self.ask_token[row] and self.asked[row]:
                    self.waiting.append((row, token, t))
            for row in self._grant(t):
                # The patient is transplanted now; its own events from t on
                # (a transplant death, say) may come before the queue's next.
                self._transplant(pathway, row, t, source, when)
                low = min(low, float(when[row]))
                granted = True
        # Beds freed after the low-water mark, granted where no later event
        # can change who gets them or when (see the module docstring).
        while self.free == 0:
            release = self._next_release()
            head = self._head()
            if head is None or not release < np.inf or not head[2] < low or not when[head[0]] > release:
                break
            if float(when[list(self.open_stays)].min()) <= release:
                break
            t = self._end_stay()
            for row in self._grant(t):
                self._transplant(pathway, row, t, source, when)
                granted = True
        if granted:
            upcoming = when[active]
        asked = self.asked[active]
        if not asked.any():
            return active
        # The earliest time a bed could be granted from now on: with every bed
        # taken, a release must come first (a new request waits behind).
        if self.free == 0:
            bound = self._next_release()
        else:
            bound = min(self._next_release(), asks[0][0] if asks else np.inf)
        holders = self.holding[active] > 0
        if holders.any():
            bound = min(bound, float(upcoming[holders].min()))
        return active[~asked | (upcoming <= low) | (upcoming < bound)]

    @staticmethod
    def _transplant(pathway, row, t, source, when):
        rows = np.array([row])
        pathway.transplant(rows, np.array([t]))
        source[rows], when[rows] = pathway.next_event(rows)

    def _grant(self, t) -> list[int]:
        """Give free beds at ``t`` to the earliest waiting requests; the rows given one."""
        granted = []
        while self.free > 0 and self._head() is not None:
            row, _, _ = self.waiting[self.head]
            self.head += 1
            self.free -= 1
            self.asked[row] = False
            self.ask_token[row] += 1
            self.holding[row] += 1
            stay = len(self.stays)
            self.open_stays.setdefault(row, set()).add(stay)
            self.granted_at[self._request_number[row]] = t
            self.stays.append((np.array([row]), np.array([t]), np.array([t + self.occupancy[row]])))
            self._push(self.releases, t + self.occupancy[row], row, stay)
            granted.append(row)
        return granted

    def requests(self) -> tuple[np.ndarray, np.ndarray]:
        """(request time, grant time or NaN) of every bed request, in request order."""
        return np.asarray(self.asked_at, dtype=float), np.asarray(self.granted_at, dtype=float)


class GroupQueues:
    """One :class:`BedQueue` per row group (a cohort under one policy), for
    groups advanced in the same rounds; each group's rows see only its queue."""

    def __init__(self, capacity: int, groups: int):
        self.queues = [BedQueue(capacity) for _ in range(groups)]

    @property
    def stays(self) -> list:
        return [stay for queue in self.queues for stay in queue.stays]

    def _split(self, pathway, idx):
        group = pathway.group_of_row[idx]
        for g, queue in enumerate(self.queues):
            pick = group == g
            if pick.any():
                yield queue, pick

    def request(self, pathway, idx, now, occupancy):
        now = per_row(now, idx)
        for queue, pick in self._split(pathway, idx):
            queue.request(pathway, idx[pick], now[pick], occupancy[pick])

    def cancel(self, pathway, idx, now):
        now = per_row(now, idx)
        for queue, pick in self._split(pathway, idx):
            queue.cancel(pathway, idx[pick], now[pick])

    def release(self, pathway, idx, now):
        now = per_row(now, idx)
        for queue, pick in self._split(pathway, idx):
            queue.release(pathway, idx[pick], now[pick])

    def advance(self, pathway, active, source, when) -> np.ndarray:
        rows = [queue.advance(pathway, active[pick], source, when) for queue, pick in self._split(pathway, active)]
        return np.concatenate(rows) if rows else active


def beds_suffice(capacity, starts, ends) -> bool:
    """Were beds never over-subscribed by these stays?  Then no one queued,
    and assuming a free bed was exact."""
    if capacity is None or len(starts) <= capacity:
        return True
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, times))  # a bed freed at t serves a request at t
    return int(np.cumsum(steps[order]).max()) <= capacity


def queue_growth(resource: str, capacity: int, requests, starts, ends) -> list[str]:
    """A warning when requests arrive faster than ``capacity`` slots can serve
    them (utilisation >= 1): the queue then does not settle and waits grow
    with the cohort (longer accrual), so a reported wait depends on the cohort
    size.  The message gives the numbers: arrival rate, capacity, mean hold,
    and the median wait of requests made early and late in accrual."""
    asked, granted = requests
    if len(asked) < 2 or len(starts) == 0:
        return []
    span = float(asked.max() - asked.min())
    if span <= 0:
        return []
    arrival_rate = (len(asked) - 1) / span  # requests per day
    mean_stay = float(np.mean(ends - starts))
    service_rate = capacity / mean_stay if mean_stay > 0 else np.inf
    utilisation = arrival_rate / service_rate
    if utilisation < 1.0:
        return []
    served = ~np.isnan(granted)
    third = np.minimum(((asked - asked.min()) / span * 3).astype(int), 2)
    waits = []
    for part in (0, 2):
        pick = served & (third == part)
        waits.append(f"{np.median(granted[pick] - asked[pick]):.0f} days" if pick.any() else "none served")
    message = (f"{resource}: requests arrive at {arrival_rate:.3f}/day but {capacity} slot(s) held "
            f"{mean_stay:.1f} days on average serve at most {service_rate:.3f}/day (utilisation "
            f"{utilisation:.2f}), so the queue does not settle: median wait of requests in the first third of "
            f"accrual {waits[0]}, in the last third {waits[1]}; {int((~served).sum())} of "
            f"{len(asked)} requests were never served (relapse, death or the end of follow-up came first). "
            f"Reported waits depend on the cohort size.")
    return [message]
