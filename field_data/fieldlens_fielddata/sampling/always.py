"""Keep every image (until the caps say otherwise)."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_core.uncertainty import Uncertainty


class AlwaysConfig(StrictModel):
    type: Literal["always"] = Field(default="always", description="Keep every image.")

    def sampler(self, rng: random.Random) -> AlwaysSampler:
        return AlwaysSampler()


class AlwaysSampler:
    def wants(self, prediction: Uncertainty) -> str | None:
        return "always"
