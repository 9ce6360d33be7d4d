"""Keep images where the two best classes are close: the model hesitates between them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_fielddata.sampling import Scores


class MarginConfig(StrictModel):
    type: Literal["margin"] = Field(default="margin", description="Small gap between the top two classes.")
    threshold: float = Field(gt=0, le=1, description="Keep when top-1 minus top-2 confidence is below this.")


class MarginSampler:
    def __init__(self, config: MarginConfig) -> None:
        self._config = config

    def wants(self, scores: Scores) -> str | None:
        second = scores[1][1] if len(scores) > 1 else 0.0
        margin = scores[0][1] - second
        return f"margin ({margin:.3f} < {self._config.threshold})" if margin < self._config.threshold else None
