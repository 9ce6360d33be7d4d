from __future__ import annotations

import random

import pytest

from fieldlens_core.config import validate_config
from fieldlens_core.errors import ConfigurationError
from fieldlens_fielddata.sampling.config import SamplingConfig
from fieldlens_fielddata.sampling.entropy import normalised_entropy
from fieldlens_fielddata.sampling.registry import SAMPLERS, build_sampler

SURE = [("hen", 0.97), ("duck", 0.02), ("egg", 0.01)]
UNSURE = [("hen", 0.45), ("duck", 0.40), ("egg", 0.15)]
MIDDLING = [("hen", 0.75), ("duck", 0.20), ("egg", 0.05)]


def sampler(raw: dict[str, object], seed: int = 0) -> object:
    config = validate_config(SamplingConfig, {"strategies": [raw]}).strategies[0]
    return build_sampler(config, random.Random(seed))


@pytest.mark.parametrize(
    ("raw", "scores", "wanted"),
    [
        ({"type": "always"}, SURE, True),
        ({"type": "least_confidence", "threshold": 0.6}, UNSURE, True),
        ({"type": "least_confidence", "threshold": 0.6}, SURE, False),
        ({"type": "margin", "threshold": 0.1}, UNSURE, True),
        ({"type": "margin", "threshold": 0.1}, MIDDLING, False),
        ({"type": "entropy", "threshold": 0.8}, UNSURE, True),
        ({"type": "entropy", "threshold": 0.8}, SURE, False),
        ({"type": "confidence_band"}, UNSURE, True),  # the seed: < 0.6
        ({"type": "confidence_band"}, SURE, True),  # the seed: > 0.9
        ({"type": "confidence_band"}, MIDDLING, False),
    ],
)
def test_each_strategy(raw: dict[str, object], scores: list[tuple[str, float]], wanted: bool) -> None:
    reason = sampler(raw).wants(scores)  # type: ignore[attr-defined]
    assert (reason is not None) is wanted
    if wanted:
        assert reason.startswith(str(raw["type"]))


def test_random_keeps_about_its_rate_and_is_reproducible_with_a_seed() -> None:
    first, second = sampler({"type": "random", "rate": 0.25}, 7), sampler({"type": "random", "rate": 0.25}, 7)
    draws = [first.wants(SURE) is not None for _ in range(4000)]  # type: ignore[attr-defined]
    assert 0.22 < sum(draws) / len(draws) < 0.28
    assert draws[:50] == [second.wants(SURE) is not None for _ in range(50)]  # type: ignore[attr-defined]


def test_entropy_is_normalised() -> None:
    assert normalised_entropy([("a", 1.0)]) == 0.0
    assert normalised_entropy([("a", 0.5), ("b", 0.5)]) == pytest.approx(1.0)
    assert 0 < normalised_entropy(MIDDLING) < normalised_entropy(UNSURE) < 1


@pytest.mark.parametrize(
    "raw",
    [
        {"strategies": [{"type": "psychic"}]},
        {"strategies": [{"type": "random"}]},
        {"strategies": [{"type": "random", "rate": 2}]},
        {"strategies": [{"type": "confidence_band", "low": 0.9, "high": 0.6}]},
        {"strategies": [{"type": "margin", "threshold": 0.1, "extra": 1}]},
        {"caps": {"perMinute": -1}},
    ],
)
def test_bad_policies_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        validate_config(SamplingConfig, raw)


def test_every_strategy_type_is_registered() -> None:
    from typing import get_args

    from fieldlens_fielddata.sampling.config import StrategyConfig

    union = get_args(get_args(StrategyConfig)[0])
    assert {model.model_fields["type"].default for model in union} == set(SAMPLERS)
