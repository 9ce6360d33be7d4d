"""The explicit registry of sampling strategies: configuration type -> sampler."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from fieldlens_fielddata.sampling import Sampler
from fieldlens_fielddata.sampling.always import AlwaysSampler
from fieldlens_fielddata.sampling.confidence_band import ConfidenceBandSampler
from fieldlens_fielddata.sampling.entropy import EntropySampler
from fieldlens_fielddata.sampling.least_confidence import LeastConfidenceSampler
from fieldlens_fielddata.sampling.margin import MarginSampler
from fieldlens_fielddata.sampling.random_sampling import RandomSampler

SAMPLERS: dict[str, Callable[[Any, random.Random], Sampler]] = {
    "always": lambda config, rng: AlwaysSampler(config),
    "random": lambda config, rng: RandomSampler(config, rng),
    "least_confidence": lambda config, rng: LeastConfidenceSampler(config),
    "margin": lambda config, rng: MarginSampler(config),
    "entropy": lambda config, rng: EntropySampler(config),
    "confidence_band": lambda config, rng: ConfidenceBandSampler(config),
}


def build_sampler(config: Any, rng: random.Random) -> Sampler:
    return SAMPLERS[config.type](config, rng)
