"""Sliding-window limits: rate caps per minute/hour/day and per-class quotas per day."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


class SlidingWindow:
    """How many events happened in the last ``span`` seconds; memory bounded by the limit."""

    def __init__(self, span: float, limit: int) -> None:
        self.span = span
        self.limit = limit
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.span:
            self._times.popleft()

    def full(self, now: float) -> bool:
        self._expire(now)
        return len(self._times) >= self.limit

    def add(self, now: float) -> None:
        self._times.append(now)
        while len(self._times) > self.limit:  # never needs more than `limit` entries
            self._times.popleft()

    def seed(self, times: Iterable[float], now: float) -> None:
        for moment in sorted(times):
            if moment > now - self.span:
                self.add(moment)
