"""Admission by time: a request is answered within the budget, or refused BUSY, saying why.

A fixed queue of 8 refused the 9th request of a burst that the device would have answered in a
fraction of a second, and would admit 8 requests that a slow device takes many seconds over. What
a caller cares about is the wait, so that is what is bounded, twice.

**On arrival** (:meth:`Admission.admit`) a request is refused at once when

    expected wait = (requests ahead of it + 1) x measured time between completions

is over the budget. The time between two completions is counted only when every worker was busy
all along between them (at least ``workers`` requests held): then it is the device's service
capacity, whatever the number of workers and however the inference service batches. Gaps with a
worker idle are never counted: a device that sat idle is not thought slow, and neither is one
answering a sequential caller, whose next request often arrives before the last one is counted
finished (counting those round trips as capacity made the estimate 4x too high and refused a
quarter of a burst of 200 on the bench). Until such an interval has been seen, the estimate is
each request's own service time divided by the workers: optimistic, and the start of the moving
average that the busy intervals then correct. Starting from it rather than from the first busy
interval matters: the first intervals of a burst are the slowest (the burst's own arrivals take
the CPU), and taken whole they refused a fifth of a burst of 200 that the device answered in 3 s.

That estimate is the pace measured *before* a request's wait, and a flood changes the pace: in a
burst of 5,000 on the 2-vCPU bench VM, the 254 admitted in its first 130 ms were admitted at the
16 ms a completion that the previous burst had shown, but refusing the other 4,700 took the CPU
and completions came every 33 ms, so the last admitted waited 8.2 s against a 5 s budget. No
estimate made on arrival can see that coming, so the budget is held a second time:

**On start** (:meth:`Admission.start`), when a worker takes a held request: if what it has waited,
plus the 90th percentile of recent service times, is over the budget, it is answered BUSY then
(naming its wait) instead of late, and the device moves on to requests that can still be answered
in time.

Bound: every admitted request is answered, with its result or BUSY, within ``budget_s`` of its
admission, late by at most the amount by which one request's service time exceeds that 90th
percentile (a request started in time that then ran long, or one a worker reached late because
such requests held every worker). Independently of time, at most ``max_held`` requests are held
(memory stays bounded under a burst of any size).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SMOOTHING = 0.2  # weight of the newest interval in the moving average
RECENT_SERVICES = 32  # service times the start check takes its percentile over
SERVICE_QUANTILE = 0.9


@dataclass(frozen=True)
class Decision:
    admitted: bool
    reason: str = ""
    at: float = 0.0
    """When it was admitted (by :meth:`Admission.admit`) or started (by :meth:`Admission.start`),
    on the admission's clock: what the worker hands back to :meth:`Admission.start` and
    :meth:`Admission.finished`."""


class Admission:
    def __init__(
        self, budget_s: float, max_held: int, workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget_s = budget_s
        self.max_held = max_held
        self._workers = workers
        self._clock = clock
        self._lock = threading.Lock()
        self._held = 0  # admitted and not yet finished
        self._interval_s: float | None = None  # between completions under a backlog
        self._service_s: float | None = None  # one request, start to finish
        self._recent_services: deque[float] = deque(maxlen=RECENT_SERVICES)
        self._last_completion: float | None = None
        self._saturated_after_last = False  # every worker still had a request when the last one finished

    @property
    def held(self) -> int:
        """Requests admitted and not yet finished (status reports them)."""
        with self._lock:
            return self._held

    def expected_wait_s(self, ahead: int) -> float:
        """How long a request with ``ahead`` requests before it would wait to be answered."""
        with self._lock:
            return self._expected_locked(ahead)

    def _expected_locked(self, ahead: int) -> float:
        if self._interval_s is not None:
            return (ahead + 1) * self._interval_s
        if self._service_s is not None:
            return (ahead + 1) * self._service_s / self._workers
        return 0.0  # nothing measured yet: admit, the first requests teach the estimate

    def admit(self) -> Decision:
        with self._lock:
            if self._held >= self.max_held:
                return Decision(
                    False, f"{self._held} requests are held, the most this device holds (queueSize + workers)"
                )
            expected = self._expected_locked(self._held)
            if expected > self.budget_s:
                return Decision(
                    False,
                    f"the expected wait is {expected * 1000:.0f} ms ({self._held} requests ahead), "
                    f"over the {self.budget_s * 1000:.0f} ms budget (maxWaitMs)",
                )
            self._held += 1
            return Decision(True, at=self._clock())

    def start(self, admitted_at: float) -> Decision:
        """A worker is about to serve the request admitted at ``admitted_at``: go ahead (``at`` is
        its start, for :meth:`finished`), or BUSY when it can no longer be answered within the
        budget; a refused request is no longer held."""
        with self._lock:
            now = self._clock()
            waited, service = now - admitted_at, self._service_quantile_locked()
            if waited + service <= self.budget_s:
                return Decision(True, at=now)
            self._left_locked()
            return Decision(
                False,
                f"waited {waited * 1000:.0f} ms for a worker; with {service * 1000:.0f} ms of work it would be "
                f"answered after the {self.budget_s * 1000:.0f} ms budget (maxWaitMs): the device is slower "
                "than when it was admitted",
            )

    def _service_quantile_locked(self) -> float:
        if not self._recent_services:
            return 0.0
        ordered = sorted(self._recent_services)
        return ordered[min(len(ordered) - 1, int(SERVICE_QUANTILE * len(ordered)))]

    def finished(self, started_at: float) -> None:
        """A held request that :meth:`start` let go ahead at ``started_at`` was answered."""
        with self._lock:
            now = self._clock()
            service_s = now - started_at
            if self._saturated_after_last and self._last_completion is not None:  # all busy: capacity
                prior = self._interval_s
                if prior is None and self._service_s is not None:
                    prior = self._service_s / self._workers
                self._interval_s = _average(prior, now - self._last_completion)
            self._held -= 1
            self._service_s = _average(self._service_s, service_s)
            self._recent_services.append(service_s)
            # held falls only here and in _left_locked, which keeps this true only while it holds
            self._saturated_after_last, self._last_completion = self._held >= self._workers, now

    def withdrawn(self) -> None:
        """A held request left without being served (refused while shutting down)."""
        with self._lock:
            self._left_locked()

    def _left_locked(self) -> None:
        self._held -= 1
        self._saturated_after_last = self._saturated_after_last and self._held >= self._workers


def _average(current: float | None, sample: float) -> float:
    return sample if current is None else (1 - SMOOTHING) * current + SMOOTHING * sample
