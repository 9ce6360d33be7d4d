"""The served model's operating point, as the classifier learns it, and the thresholds in effect.

A model card may carry an operating point (``metrics.operating_point``: an event threshold, a
confidence band, class groups; fieldlens_core.model_package.OperatingPoint). The classifier does not
read the card: the inference service serves the model and says its operating point in its ping.
Each classified frame names its model (name, version, sha256); :class:`ServedOperatingPoints` asks
the ping once per model and remembers the answer, so a hot reload's new model brings its own
thresholds with its first frame. Configuration overrides each value (``continuous.minConfidence``,
a confidence_band's ``low`` and ``high``); :func:`in_effect` says which value is used and whence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core.errors import FieldlensError
from fieldlens_core.messages import ModelInfo, OperatingPointStatus, SettingInEffect
from fieldlens_core.model_package import OPERATING_POINT, OperatingPoint
from fieldlens_fielddata.sampling.confidence_band import ConfidenceBandConfig

log = logging.getLogger(__name__)

RETRY_S = 10.0
"""A ping that failed is not asked again for this long (frames keep the built-in values meanwhile)."""

OperatingPoints = Callable[[ModelInfo], OperatingPoint | None]
"""The served model's operating point, for the model a frame names (None: it has none, or unknown yet)."""


def no_operating_point(model: ModelInfo) -> OperatingPoint | None:
    """For stand-in inference services (tests) that have no ping."""
    return None


def point_of(reply: dict[str, Any]) -> OperatingPoint | None:
    """The operating point in a ping reply; None when there is none or it does not validate (logged)."""
    raw = reply.get(OPERATING_POINT)
    if raw is None:
        return None
    try:
        return OperatingPoint.model_validate(raw)
    except ValidationError as exc:
        log.warning("the served model's operating point is unreadable, using defaults: %s", exc.errors()[0]["msg"])
        return None


class ServedOperatingPoints:
    """Operating points by model sha256, from the inference service's ping (thread-safe)."""

    def __init__(self, ping: Callable[[], dict[str, Any]], clock: Callable[[], float] = time.monotonic) -> None:
        self._ping = ping
        self._clock = clock
        self._known: dict[str, OperatingPoint | None] = {}
        self._failed_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, model: ModelInfo) -> OperatingPoint | None:
        with self._lock:
            if model.sha256 in self._known:
                return self._known[model.sha256]
            if self._clock() - self._failed_at < RETRY_S:
                return None
            try:
                reply = self._ping()
            except FieldlensError as exc:
                self._failed_at = self._clock()
                log.warning("cannot ask the inference service for the model's operating point: %s", exc)
                return None
            served = reply.get("model") or {}
            point = point_of(reply)
            if isinstance(served, dict) and served.get("sha256"):
                self._known[str(served["sha256"])] = point
            if served.get("sha256") != model.sha256:  # reloaded between the frame and the ping
                return self._known.get(model.sha256)
            log.info("model %s %s: %s", model.name, model.version, describe(point))
            return point


def describe(point: OperatingPoint | None) -> str:
    if point is None:
        return "no operating point on its card: built-in thresholds"
    groups = f", {len(point.class_groups)} class groups" if point.class_groups else ""
    return (
        f"event threshold {point.event_threshold:g}, confidence band {point.confidence_band.low:g}-"
        f"{point.confidence_band.high:g}{groups}"
    )


def in_effect(config: ClassifierConfig, point: OperatingPoint | None, model: ModelInfo | None) -> OperatingPointStatus:
    """Which thresholds the classifier uses for ``model`` now, and where each comes from."""
    band_config = next(
        (s for s in config.sampling.strategies if isinstance(s, ConfidenceBandConfig)), ConfidenceBandConfig()
    )
    model_band = point.confidence_band if point is not None else None
    band = band_config.band(model_band)

    def bound(configured: float | None, value: float) -> SettingInEffect:
        if configured is not None:
            return SettingInEffect(value=value, source="configuration")
        return SettingInEffect(value=value, source="model" if model_band is not None else "default")

    return OperatingPointStatus(
        model=f"{model.name} {model.version}" if model is not None else None,
        min_confidence=config.continuous.min_confidence_for(point),
        band_low=bound(band_config.low, band.low),
        band_high=bound(band_config.high, band.high),
        class_groups=sorted(point.class_groups) if point is not None else [],
    )
