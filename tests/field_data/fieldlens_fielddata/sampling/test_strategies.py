from __future__ import annotations

import random
from pathlib import Path

import pytest

from fieldlens_core.config import validate_config
from fieldlens_core.errors import ConfigurationError
from fieldlens_core.uncertainty import Uncertainty
from fieldlens_fielddata.sampling import Sampler
from fieldlens_fielddata.sampling.config import SamplingConfig
from tests.helpers.predictions import ranked

SURE = Uncertainty(ranked(("hen", 0.97), ("duck", 0.02), ("egg", 0.01)))
UNSURE = Uncertainty(ranked(("hen", 0.45), ("duck", 0.40), ("egg", 0.15)))
MIDDLING = Uncertainty(ranked(("hen", 0.75), ("duck", 0.20), ("egg", 0.05)))


def sampler(raw: dict[str, object], seed: int = 0) -> Sampler:
    config = validate_config(SamplingConfig, {"strategies": [raw]}).strategies[0]
    return config.sampler(random.Random(seed))


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
def test_each_strategy(raw: dict[str, object], scores: Uncertainty, wanted: bool) -> None:
    reason = sampler(raw).wants(scores)
    assert (reason is not None) is wanted
    if reason is not None:
        assert reason.startswith(str(raw["type"]))


def test_random_keeps_about_its_rate_and_is_reproducible_with_a_seed() -> None:
    first, second = sampler({"type": "random", "rate": 0.25}, 7), sampler({"type": "random", "rate": 0.25}, 7)
    draws = [first.wants(SURE) is not None for _ in range(4000)]
    assert 0.22 < sum(draws) / len(draws) < 0.28
    assert draws[:50] == [second.wants(SURE) is not None for _ in range(50)]


def test_entropy_is_normalised() -> None:
    assert Uncertainty(ranked(("a", 1.0))).entropy == 0.0
    assert Uncertainty(ranked(("a", 0.5), ("b", 0.5))).entropy == pytest.approx(1.0)
    assert 0 < MIDDLING.entropy < UNSURE.entropy < 1


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


def test_every_strategy_file_is_in_the_policys_configuration() -> None:
    from typing import get_args

    from fieldlens_fielddata import sampling
    from fieldlens_fielddata.sampling.config import StrategyConfig

    union = get_args(get_args(StrategyConfig)[0])
    files = {path.stem for path in Path(sampling.__file__).parent.glob("*.py")} - {"__init__", "config", "policy"}
    assert {model.__module__.rsplit(".", 1)[-1] for model in union} == files
    for model in union:  # each configuration builds its own sampler
        assert callable(model.model_construct().sampler(random.Random(0)).wants)
