"""Keep images whose prediction is spread out: high normalised entropy.

Computed over the top-k the inference service returns (the classifier asks for at least
10), with the probability mass outside them as one more bucket, normalised to [0, 1] by
the log of the bucket count.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_fielddata.sampling import Scores


def normalised_entropy(scores: Scores) -> float:
    probabilities = [p for _, p in scores if p > 0]
    rest = 1.0 - sum(probabilities)
    if rest > 1e-6:
        probabilities.append(rest)
    if len(probabilities) < 2:
        return 0.0
    return -sum(p * math.log(p) for p in probabilities) / math.log(len(probabilities))


class EntropyConfig(StrictModel):
    type: Literal["entropy"] = Field(default="entropy", description="A spread-out prediction.")
    threshold: float = Field(ge=0, lt=1, description="Keep when the normalised entropy (0-1) is above this.")


class EntropySampler:
    def __init__(self, config: EntropyConfig) -> None:
        self._config = config

    def wants(self, scores: Scores) -> str | None:
        entropy = normalised_entropy(scores)
        return f"entropy ({entropy:.3f} > {self._config.threshold})" if entropy > self._config.threshold else None
