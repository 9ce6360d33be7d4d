"""Temperature scaling and the operating point a retrain derives from validation (numpy only: every CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fieldlens_core.model_package import load_package
from fieldlens_retrain.calibration import (
    EVENT_PRECISION,
    MIN_IMAGES,
    ece_floor,
    expected_calibration_error,
    fit_temperature,
    operating_point,
    softmax,
    tempered,
)


def overconfident(images: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Outputs whose true probabilities are softmax(outputs / temperature): labels drawn from those."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2.0, (images, 5))
    true_logits[np.arange(images), rng.integers(0, 5, images)] += 2.5
    probabilities = softmax(true_logits)
    truth = np.array([rng.choice(5, p=p) for p in probabilities])
    return true_logits * temperature, truth


def test_ece_is_zero_for_a_perfect_model_and_the_gap_for_a_constant_one() -> None:
    sure = np.eye(4)[[0, 1, 2, 3]]
    assert expected_calibration_error(sure, np.array([0, 1, 2, 3])) == 0.0
    flat = np.tile([0.7, 0.1, 0.1, 0.1], (10, 1))  # says 0.7, right 5 times in 10
    assert expected_calibration_error(flat, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.2)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_the_fitted_temperature_undoes_a_known_one_and_calibrates(temperature: float) -> None:
    outputs, truth = overconfident(4000, temperature)
    fitted = fit_temperature(outputs, truth)
    assert fitted == pytest.approx(temperature, rel=0.1)
    before = expected_calibration_error(softmax(outputs), truth)
    after = expected_calibration_error(softmax(outputs, fitted), truth)
    assert after <= 0.05 < before
    assert (softmax(outputs, fitted).argmax(1) == outputs.argmax(1)).all()  # a temperature changes no top-1


def test_the_operating_point_records_calibration_and_a_threshold_that_meets_its_precision() -> None:
    outputs, truth = overconfident(2000, 3.0, seed=1)
    fitted = operating_point(outputs, truth, "synthetic")
    assert fitted is not None
    temperature, point = fitted
    assert point.calibration is not None and point.calibration.temperature == temperature
    assert point.calibration.ece_after < point.calibration.ece_before
    assert point.calibration.ece_after_cross_fitted is not None and point.calibration.ece_after_cross_fitted <= 0.05
    assert point.confidence_band.low == point.event_threshold <= point.confidence_band.high
    calibrated = softmax(outputs, temperature)
    above = calibrated.max(1) >= point.event_threshold
    assert (calibrated.argmax(1)[above] == truth[above]).mean() >= EVENT_PRECISION


def test_too_few_validation_images_give_no_operating_point() -> None:
    outputs, truth = overconfident(MIN_IMAGES - 1, 2.0)
    assert operating_point(outputs, truth, "synthetic") is None


def test_the_floor_is_what_chance_gives_a_perfectly_calibrated_model() -> None:
    outputs, _ = overconfident(150, 1.0)
    few, many = ece_floor(softmax(outputs)), ece_floor(softmax(np.tile(outputs, (20, 1))))
    assert many < few  # more images, less chance error


def test_the_tempered_head_divides_its_output() -> None:
    head = torch.nn.Linear(3, 4)
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.allclose(tempered(head, 2.0)(x), head(x) / 2.0)


@pytest.mark.slow
def test_a_retrain_bakes_its_temperature_into_the_graph_and_records_its_operating_point(tmp_path: Path) -> None:
    from fieldlens_core.model import load_model
    from fieldlens_core.model_check import check_package
    from fieldlens_retrain.dataset import build_manifest, write_manifest
    from fieldlens_retrain.gate import GateRules
    from fieldlens_retrain.pipeline import run_retrain
    from fieldlens_retrain.train import TrainSettings
    from tests.helpers.colour_photos import write_class_folders

    write_class_folders(tmp_path / "base", 24)
    built = build_manifest(None, {}, tmp_path / "base", None, val_percent=40)
    write_manifest(built, tmp_path / "m.json")
    assert len(built.holdout()) >= MIN_IMAGES
    report = run_retrain(
        tmp_path / "m.json", tmp_path / "models", None, tmp_path / "cache", GateRules(min_val_per_class=1),
        settings=TrainSettings(epochs=60),
    )  # fmt: skip
    assert report.package is not None
    card = load_package(report.package).card
    point = card.operating_point
    assert point is not None and point.calibration is not None
    assert point.calibration.images == len(built.holdout()) and "validation" in point.calibration.images_from
    assert point.calibration.ece_after <= point.calibration.ece_before
    assert 0.4 <= point.event_threshold <= point.confidence_band.high <= 1.0
    check_package(report.package, require_reference=True)  # the tempered graph passes the device's check
    model = load_model(report.package, "fp32")
    top = [model.classify(Path(e.path).read_bytes(), 1).predictions[0] for e in built.holdout()]
    assert sum(p.label == e.label for p, e in zip(top, built.holdout(), strict=True)) >= 0.9 * len(top)
