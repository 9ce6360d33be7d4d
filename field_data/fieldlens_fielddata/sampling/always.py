"""Keep every image (until the caps say otherwise)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_fielddata.sampling import Scores


class AlwaysConfig(StrictModel):
    type: Literal["always"] = Field(default="always", description="Keep every image.")


class AlwaysSampler:
    def __init__(self, config: AlwaysConfig) -> None:
        self._config = config

    def wants(self, scores: Scores) -> str | None:
        return "always"
