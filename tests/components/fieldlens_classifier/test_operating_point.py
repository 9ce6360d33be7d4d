"""The served model's operating point: class groups in the smoother, its thresholds as defaults, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fieldlens_classifier.config import DEFAULT_MIN_CONFIDENCE, ClassifierConfig, ContinuousConfig
from fieldlens_classifier.operating_point import ServedOperatingPoints, in_effect
from fieldlens_classifier.smoothing import FrameResult, Smoother, SmoothingSettings, Transition
from fieldlens_core.errors import InferenceUnavailableError
from fieldlens_core.messages import ModelInfo, Prediction
from fieldlens_core.model_package import ConfidenceBand, ModelCard, OperatingPoint
from fieldlens_fielddata.sampling.confidence_band import DEFAULT_BAND, ConfidenceBandConfig
from tests.helpers.predictions import ranked

POINT = OperatingPoint(
    event_threshold=0.3,
    confidence_band=ConfidenceBand(low=0.3, high=0.8),
    class_groups={"cat": ["tabby", "tiger cat", "Egyptian cat"]},
    derived="test",
)
MODEL = ModelInfo(name="m", version="1.0.0", sha256="a" * 64)


def play(smoother: Smoother, frames: list[list[Prediction]]) -> list[Transition]:
    transitions: list[Transition] = []
    for index, predictions in enumerate(frames):
        transitions += smoother.push(FrameResult(index, index / 5, predictions))
    return transitions + smoother.flush(len(frames) / 5, len(frames) - 1)


CAT = ranked(("Egyptian cat", 0.4), ("tiger cat", 0.3), ("tabby", 0.2), ("lynx", 0.05))
CAT_TIGER_FIRST = ranked(("tiger cat", 0.4), ("Egyptian cat", 0.35), ("tabby", 0.15))


def test_near_synonyms_summed_make_one_event_under_the_group_name() -> None:
    frames = [CAT, CAT_TIGER_FIRST] * 10
    assert play(Smoother(SmoothingSettings()), frames) == []  # alone, no label reaches 0.5
    grouped = play(Smoother(SmoothingSettings(class_groups=POINT.groups_by_label())), frames)
    assert [(t.type, t.event.label) for t in grouped] == [("start", "cat"), ("end", "cat")]
    assert grouped[0].event.confidence == pytest.approx(0.9)  # 0.4 + 0.3 + 0.2, and 0.4 + 0.35 + 0.15


def test_a_sure_odd_frame_beside_a_weak_scene_does_not_end_its_event() -> None:
    rocket, cat = ranked(("rocket", 0.45), ("mosque", 0.1)), ranked(("cat", 0.95), ("lynx", 0.01))
    frames = [rocket] * 6 + [cat] + [rocket] * 6  # cat leads two windows in a row, each newer frame is rocket
    transitions = play(Smoother(SmoothingSettings(min_confidence=0.4)), frames)
    assert [(t.type, t.event.label) for t in transitions] == [("start", "rocket"), ("end", "rocket")]


def test_an_object_that_leaves_still_ends_its_event() -> None:
    rocket, noise = ranked(("rocket", 0.6)), ranked(("kite", 0.07), ("web site", 0.05))
    transitions = play(Smoother(SmoothingSettings()), [rocket] * 6 + [noise] * 6)
    end = transitions[1].event
    assert transitions[1].type == "end" and end.last_frame == 7  # once noise leads the window, not at the flush


def test_defaults_come_from_the_model_and_configuration_overrides() -> None:
    unset = ContinuousConfig()
    assert unset.min_confidence_for(None).model_dump() == {"value": DEFAULT_MIN_CONFIDENCE, "source": "default"}
    assert unset.min_confidence_for(POINT).model_dump() == {"value": 0.3, "source": "model"}
    assert ContinuousConfig(min_confidence=0.7).min_confidence_for(POINT).model_dump() == {
        "value": 0.7,
        "source": "configuration",
    }
    assert unset.smoothing(POINT).min_confidence == 0.3 and unset.smoothing(POINT).class_groups["tabby"] == "cat"
    assert ConfidenceBandConfig().band(None) == DEFAULT_BAND
    assert ConfidenceBandConfig().band(POINT.confidence_band) == POINT.confidence_band
    assert ConfidenceBandConfig(low=0.9).band(POINT.confidence_band) == ConfidenceBand(low=0.9, high=0.9)


def test_the_status_says_which_value_is_in_effect_and_whence() -> None:
    config = ClassifierConfig.model_validate(
        {"sampling": {"strategies": [{"type": "confidence_band", "high": 0.95}]}, "thing_name": "t"}
    )
    status = in_effect(config, POINT, MODEL)
    assert status.model == "m 1.0.0" and status.class_groups == ["cat"]
    assert (status.min_confidence.value, status.min_confidence.source) == (0.3, "model")
    assert (status.band_low.value, status.band_low.source) == (0.3, "model")
    assert (status.band_high.value, status.band_high.source) == (0.95, "configuration")


def test_the_operating_point_is_asked_once_per_model_and_a_failed_ping_later_again() -> None:
    replies: list[dict[str, Any] | Exception] = [
        InferenceUnavailableError("down"),
        {"model": MODEL.model_dump(), "operating_point": POINT.model_dump()},
    ]
    asked = []
    now = [0.0]

    def ping() -> dict[str, Any]:
        asked.append(1)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    points = ServedOperatingPoints(ping, clock=lambda: now[0])
    assert points(MODEL) is None  # the ping failed: built-in values meanwhile
    assert points(MODEL) is None and len(asked) == 1  # not asked again at once
    now[0] = 60.0
    assert points(MODEL) == POINT and points(MODEL) == POINT and len(asked) == 2


def test_a_card_refuses_a_malformed_operating_point(default_card: dict[str, Any]) -> None:
    bad = {**POINT.model_dump(), "class_groups": {"cat": ["tabby"], "kitty": ["tabby"]}}
    with pytest.raises(ValueError, match="two class groups"):
        ModelCard.model_validate({**default_card, "metrics": {"operating_point": bad}})
    card = ModelCard.model_validate({**default_card, "metrics": {"operating_point": POINT.model_dump()}})
    assert card.operating_point == POINT


@pytest.fixture
def default_card() -> dict[str, Any]:
    return {
        "name": "m",
        "version": "1.0.0",
        "architecture": "a",
        "input": {"size": 224, "resize": 256, "mean": (0, 0, 0), "std": (1, 1, 1)},
        "num_classes": 2,
        "variants": {"fp32": "model.onnx"},
        "files": {"model.onnx": "0" * 64, "labels.json": "0" * 64},
    }


@pytest.mark.slow
def test_three_objects_in_turn_give_exactly_three_starts_with_the_default_model(default_model: Path) -> None:
    """Issue 25's goal: the real default model and continuous mode's default configuration, the
    scripted video of the bench (one odd frame in ten, noise gaps), cat, cup and rocket."""
    from fieldlens_bench.continuous import run_events

    for seed in (0, 1):
        events = run_events(default_model, "fp32", {"cat": "cat", "coffee": "cup", "rocket": "rocket"}, seed)
        starts = [label for kind, label, *_ in events.events if kind == "start"]
        assert starts == ["cat", "cup", "rocket"], (seed, events.events)
        assert events.spurious_starts == 0
