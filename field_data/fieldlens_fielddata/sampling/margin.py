"""Keep images where the two best classes are close: the model hesitates between them."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_core.uncertainty import Uncertainty


class MarginConfig(StrictModel):
    type: Literal["margin"] = Field(default="margin", description="Small gap between the top two classes.")
    threshold: float = Field(gt=0, le=1, description="Keep when top-1 minus top-2 confidence is below this.")

    def sampler(self, rng: random.Random) -> MarginSampler:
        return MarginSampler(self)


class MarginSampler:
    def __init__(self, config: MarginConfig) -> None:
        self._config = config

    def wants(self, prediction: Uncertainty) -> str | None:
        gap = prediction.gap
        return f"margin ({gap:.3f} < {self._config.threshold})" if gap < self._config.threshold else None
