"""The seed system's rule: keep when top-1 is below ``low`` (hard cases) or above ``high`` (easy positives).

``low`` and ``high`` default to the served model's own band (its card's operating point, derived from
validation when it was retrained), and to 0.6 and 0.9 for a model without one; set, they override it.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, model_validator

from fieldlens_core.config import StrictModel
from fieldlens_core.model_package import ConfidenceBand
from fieldlens_core.uncertainty import Uncertainty

DEFAULT_BAND = ConfidenceBand(low=0.6, high=0.9)
"""The band of a model whose card has no operating point."""


class ConfidenceBandConfig(StrictModel):
    type: Literal["confidence_band"] = Field(default="confidence_band", description="Outside a confidence band.")
    low: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Keep when the top-1 confidence is below this; null: the served model's own (0.6 without one).",
    )
    high: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Keep when the top-1 confidence is above this; null: the served model's own (0.9 without one).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ConfidenceBandConfig:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("low must not be above high")
        return self

    def band(self, model: ConfidenceBand | None) -> ConfidenceBand:
        """The band in effect: each configured bound, else the model's, else DEFAULT_BAND's (a
        configured bound beyond the model's other one moves that one with it)."""
        base = model or DEFAULT_BAND
        low = self.low if self.low is not None else base.low
        high = self.high if self.high is not None else base.high
        if self.high is None:
            high = max(high, low)
        elif self.low is None:
            low = min(low, high)
        return ConfidenceBand(low=low, high=high)

    def sampler(self, rng: random.Random) -> ConfidenceBandSampler:
        return ConfidenceBandSampler(self)


class ConfidenceBandSampler:
    def __init__(self, config: ConfidenceBandConfig) -> None:
        self._config = config

    def wants(self, prediction: Uncertainty, model: ConfidenceBand | None = None) -> str | None:
        """``model``: the served model's band (None: it has none)."""
        band = self._config.band(model)
        top = prediction.top
        if top < band.low:
            return f"confidence_band ({top:.3f} < {band.low})"
        if top > band.high:
            return f"confidence_band ({top:.3f} > {band.high})"
        return None
