"""Admission by time: a request is refused BUSY when its expected wait exceeds the budget.

A fixed queue of 8 refused the 9th request of a burst that the device would have answered in a
fraction of a second, and would admit 8 requests that a slow device takes many seconds over. What
a caller cares about is the wait, so that is what is bounded:

    expected wait of a new request = (requests ahead of it + 1) x measured time between completions

The time between two completions is counted only when every worker was busy all along between
them (at least ``workers`` requests held): then it is the device's service capacity, whatever
the number of workers and however the inference service batches. Gaps with a worker idle are
never counted: a device that sat idle is not thought slow, and neither is one answering a
sequential caller, whose next request often arrives before the last one is counted finished
(counting those round trips as capacity made the estimate 4x too high and refused a quarter of
a burst of 200 on the bench). Until such an interval has been seen, the estimate is each
request's own service time divided by the workers: optimistic, and the start of the moving
average that the busy intervals then correct. Starting from it rather than from the first busy
interval matters: the first intervals of a burst are the slowest (the burst's own arrivals take
the CPU), and taken whole they refused a fifth of a burst of 200 that the device answered in 3 s.

Independently of time, at most ``max_held`` requests are held (memory stays bounded under a
burst of any size). Invariant: a request is admitted only if, by the estimate at that moment,
every request already admitted plus this one finish within ``budget_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SMOOTHING = 0.2  # weight of the newest interval in the moving average


@dataclass(frozen=True)
class Decision:
    admitted: bool
    reason: str = ""


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
            return Decision(True)

    def finished(self, service_s: float) -> None:
        """A held request was answered after ``service_s`` of work."""
        with self._lock:
            now = self._clock()
            if self._saturated_after_last and self._last_completion is not None:  # all busy: capacity
                prior = self._interval_s
                if prior is None and self._service_s is not None:
                    prior = self._service_s / self._workers
                self._interval_s = _average(prior, now - self._last_completion)
            self._held -= 1
            self._service_s = _average(self._service_s, service_s)
            # held only falls at a completion, so this holds until the next one
            self._saturated_after_last, self._last_completion = self._held >= self._workers, now

    def withdrawn(self) -> None:
        """A held request left without being served (refused while shutting down)."""
        with self._lock:
            self._held -= 1


def _average(current: float | None, sample: float) -> float:
    return sample if current is None else (1 - SMOOTHING) * current + SMOOTHING * sample
