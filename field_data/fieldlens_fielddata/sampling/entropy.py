"""Keep images whose prediction is spread out: high normalised entropy (over the top-k the
inference service returns, the classifier asking for at least 10, and the rest as one bucket:
:class:`~fieldlens_core.uncertainty.Uncertainty`)."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_core.uncertainty import Uncertainty


class EntropyConfig(StrictModel):
    type: Literal["entropy"] = Field(default="entropy", description="A spread-out prediction.")
    threshold: float = Field(ge=0, lt=1, description="Keep when the normalised entropy (0-1) is above this.")

    def sampler(self, rng: random.Random) -> EntropySampler:
        return EntropySampler(self)


class EntropySampler:
    def __init__(self, config: EntropyConfig) -> None:
        self._config = config

    def wants(self, prediction: Uncertainty) -> str | None:
        entropy = prediction.entropy
        return f"entropy ({entropy:.3f} > {self._config.threshold})" if entropy > self._config.threshold else None
