"""The sampling policy: strategies in order, then the per-class quota, then the rate caps (sliding
windows, below: the policy is their only user).

``decide`` returns whether to keep an image, why (the reason goes into the response and
the sidecar), and a usefulness score the store evicts by (1 - top-1 confidence; an image a
request asked to save scores above every sampled one). Counts survive restarts: the caps
are seeded from the capture times of the images already kept.

A request's ``save: true`` keeps its image within the save caps whatever the strategies,
quota and caps say. Past the save caps it is not refused outright: it is then an ordinary
frame, and the policy decides (so saving never keeps less than the policy alone would). The
policy keeps it as a sampled image (``saved`` False), counted in the policy's quota and caps
and filed as sampled by the store, so a flood of saves past their caps evicts nothing that
is not yet uploaded. Its reason names both: the save cap, and what the policy said.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fieldlens_core.messages import Prediction
from fieldlens_core.model_package import ConfidenceBand
from fieldlens_core.uncertainty import Uncertainty
from fieldlens_fielddata.sampling.confidence_band import ConfidenceBandSampler
from fieldlens_fielddata.sampling.config import RateCapsConfig, SamplingConfig

SAVED_SCORE_BONUS = 1.0

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


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str
    score: float
    saved: bool = False
    """Kept on request within the save caps: the store files it as saved (which decides what it
    may evict); False for everything the policy kept, a save past its caps included."""


class SamplingPolicy:
    def __init__(
        self,
        config: SamplingConfig,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        already_kept: Iterable[float] = (),
        already_saved: Iterable[float] = (),
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._samplers = [strategy.sampler(self._rng) for strategy in config.strategies]
        now = clock()
        self._caps = _windows(config.caps, list(already_kept), now)
        self._save_caps = _windows(config.save_caps, list(already_saved), now)
        self._class_windows: dict[str, SlidingWindow] = {}
        self._lock = threading.Lock()

    def decide(self, ranked: Sequence[Prediction], saved: bool = False, band: ConfidenceBand | None = None) -> Verdict:
        """Keep this image? ``saved``: its request said ``save: true`` (within the save caps a keep
        whatever the policy says; past them, whatever the policy says). ``band``: the served model's
        confidence band (its card's operating point), which an unconfigured confidence_band uses."""
        prediction = Uncertainty(ranked)
        uncertainty = round(prediction.least_confidence, 6)
        if not saved:
            return self._sample(prediction, ranked[0].label if ranked else "", uncertainty, band)
        with self._lock:
            full = _count_in(self._save_caps, self._clock())
        if full is None:
            return Verdict(True, "request: save", SAVED_SCORE_BONUS + uncertainty, saved=True)
        # Past the save caps the policy decides (see the module docstring). The reason leads with
        # what decided: "policy: ..." for a keep, as for any sampled image; "save cap: ..." for a refusal.
        cap = f"save cap: {full} reached"
        sampled = self._sample(prediction, ranked[0].label if ranked else "", uncertainty, band)
        if sampled.keep:
            return Verdict(True, f"{sampled.reason}; {cap}", sampled.score)
        return Verdict(False, f"{cap}; {sampled.reason}", sampled.score)

    def _sample(self, prediction: Uncertainty, label: str, uncertainty: float, band: ConfidenceBand | None) -> Verdict:
        """The policy's own verdict: strategies in order, then the per-class quota, then the caps. The
        confidence band is the one strategy whose defaults are the served model's."""
        asked = (
            s.wants(prediction, band) if isinstance(s, ConfidenceBandSampler) else s.wants(prediction)
            for s in self._samplers
        )
        reason = next((r for r in asked if r is not None), None)
        if reason is None:
            return Verdict(False, "policy: no strategy wanted it", uncertainty)
        with self._lock:
            now = self._clock()
            quota = self._class_window(label)
            if quota is not None and quota.full(now):
                return Verdict(False, f"quota: {quota.limit} '{label}' images per day reached", uncertainty)
            full = _count_in(self._caps, now)
            if full is not None:
                return Verdict(False, f"cap: {full} reached", uncertainty)
            if quota is not None:
                quota.add(now)
        return Verdict(True, f"policy: {reason}", uncertainty)

    def _class_window(self, label: str) -> SlidingWindow | None:
        quota = self.config.class_quota
        limit = quota.classes.get(label, quota.per_day)
        if limit is None:
            return None
        if label not in self._class_windows:
            self._class_windows[label] = SlidingWindow(DAY, limit)
        return self._class_windows[label]


def _count_in(windows: dict[str, SlidingWindow], now: float) -> str | None:
    """The first full window as ``name (limit)``; or None, once the image is counted in every window."""
    for name, window in windows.items():
        if window.full(now):
            return f"{name} ({window.limit})"
    for window in windows.values():
        window.add(now)
    return None


def _windows(caps: RateCapsConfig, kept: list[float], now: float) -> dict[str, SlidingWindow]:
    """One sliding window per configured limit, seeded with what was already kept."""
    windows = {
        name: SlidingWindow(span, limit)
        for name, span, limit in (
            ("per_minute", MINUTE, caps.per_minute),
            ("per_hour", HOUR, caps.per_hour),
            ("per_day", DAY, caps.per_day),
        )
        if limit is not None
    }
    for window in windows.values():
        window.seed(kept, now)
    return windows
