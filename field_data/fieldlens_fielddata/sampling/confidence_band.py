"""The seed system's rule: keep when top-1 is below ``low`` (hard cases) or above ``high`` (easy positives)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fieldlens_core.config import StrictModel
from fieldlens_fielddata.sampling import Scores


class ConfidenceBandConfig(StrictModel):
    type: Literal["confidence_band"] = Field(default="confidence_band", description="Outside a confidence band.")
    low: float = Field(default=0.6, ge=0, le=1, description="Keep when the top-1 confidence is below this.")
    high: float = Field(default=0.9, ge=0, le=1, description="Keep when the top-1 confidence is above this.")

    @model_validator(mode="after")
    def _ordered(self) -> ConfidenceBandConfig:
        if self.low > self.high:
            raise ValueError("low must not be above high")
        return self


class ConfidenceBandSampler:
    def __init__(self, config: ConfidenceBandConfig) -> None:
        self._config = config

    def wants(self, scores: Scores) -> str | None:
        top = scores[0][1]
        if top < self._config.low:
            return f"confidence_band ({top:.3f} < {self._config.low})"
        if top > self._config.high:
            return f"confidence_band ({top:.3f} > {self._config.high})"
        return None
