"""The sampling policy's configuration: strategies in order, a per-class quota, rate caps."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fieldlens_core.config import StrictModel
from fieldlens_fielddata.sampling.always import AlwaysConfig
from fieldlens_fielddata.sampling.confidence_band import ConfidenceBandConfig
from fieldlens_fielddata.sampling.entropy import EntropyConfig
from fieldlens_fielddata.sampling.least_confidence import LeastConfidenceConfig
from fieldlens_fielddata.sampling.margin import MarginConfig
from fieldlens_fielddata.sampling.random_sampling import RandomConfig

StrategyConfig = Annotated[
    AlwaysConfig | RandomConfig | LeastConfidenceConfig | MarginConfig | EntropyConfig | ConfidenceBandConfig,
    Field(discriminator="type"),
]


class RateCapsConfig(StrictModel):
    per_minute: int | None = Field(default=None, ge=0, description="Most images kept by the policy in any minute.")
    per_hour: int | None = Field(default=None, ge=0, description="Most images kept by the policy in any hour.")
    per_day: int | None = Field(default=None, ge=0, description="Most images kept by the policy in any 24 hours.")


class ClassQuotaConfig(StrictModel):
    per_day: int | None = Field(
        default=None, ge=0, description="Most images kept per predicted class in any 24 hours (all classes)."
    )
    classes: dict[str, int] = Field(
        default_factory=dict, description="Per-class overrides of per_day: {label: images per 24 hours}."
    )


def _keep_everything() -> list[StrategyConfig]:
    return [AlwaysConfig()]


class SamplingConfig(StrictModel):
    strategies: list[StrategyConfig] = Field(
        default_factory=_keep_everything,
        description="Asked in order; the first that wants an image keeps it (its reason goes in the response). "
        "An empty list keeps only requests with save: true.",
    )
    class_quota: ClassQuotaConfig = Field(default_factory=ClassQuotaConfig, description="Per-class limits.")
    caps: RateCapsConfig = Field(default_factory=RateCapsConfig, description="Per minute, hour and day limits.")
    save_caps: RateCapsConfig = Field(
        default_factory=lambda: RateCapsConfig(per_minute=10, per_hour=100, per_day=1000),
        description="Limits on images kept because a request said save: true (any requester may say it). "
        "Past them a save request is an ordinary one: the policy (strategies, quota, caps) may still keep it.",
    )
