"""Keep images the model is unsure of: top-1 confidence below a threshold."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_core.uncertainty import Uncertainty


class LeastConfidenceConfig(StrictModel):
    type: Literal["least_confidence"] = Field(default="least_confidence", description="Low top-1 confidence.")
    threshold: float = Field(gt=0, le=1, description="Keep when the top-1 confidence is below this.")

    def sampler(self, rng: random.Random) -> LeastConfidenceSampler:
        return LeastConfidenceSampler(self)


class LeastConfidenceSampler:
    def __init__(self, config: LeastConfidenceConfig) -> None:
        self._config = config

    def wants(self, prediction: Uncertainty) -> str | None:
        top = prediction.top
        return f"least_confidence ({top:.3f} < {self._config.threshold})" if top < self._config.threshold else None
