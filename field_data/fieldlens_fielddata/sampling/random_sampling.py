"""Keep a random fraction of images: an unbiased sample of what the camera sees."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_core.uncertainty import Uncertainty


class RandomConfig(StrictModel):
    type: Literal["random"] = Field(default="random", description="Keep each image with probability `rate`.")
    rate: float = Field(ge=0, le=1, description="Probability of keeping an image.")

    def sampler(self, rng: random.Random) -> RandomSampler:
        return RandomSampler(self, rng)


class RandomSampler:
    def __init__(self, config: RandomConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()

    def wants(self, prediction: Uncertainty) -> str | None:
        return f"random (rate {self._config.rate})" if self._rng.random() < self._config.rate else None
