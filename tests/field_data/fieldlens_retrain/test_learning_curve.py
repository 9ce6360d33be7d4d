from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fieldlens_retrain.learning_curve import (
    CurvePoint,
    LearningCurve,
    curve_png,
    curve_subsets,
    fit_curve,
    learning_curve,
    subset,
)


def centroid_head(features: np.ndarray, targets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Nearest class mean on the plain view: a head that learns more from more labels, in microseconds."""
    plain = features[:, 0]
    classes = np.unique(targets)
    centres = np.stack([plain[targets == c].mean(0) for c in classes])
    return lambda queries: classes[np.argmin(((queries[:, None] - centres[None]) ** 2).sum(-1), axis=1)]


def blobs(per_class: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(99).normal(size=(4, 16))  # one task; ``seed`` draws its samples
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(4), per_class)
    return centres[targets] + noise * rng.normal(size=(len(targets), 16)), targets


def test_subsets_are_stratified_nested_and_never_empty_for_a_class() -> None:
    targets = np.repeat(np.arange(3), [8, 4, 1])
    quarter, half = set(subset(targets, 0.25, 0)), set(subset(targets, 0.5, 0))
    assert quarter <= half and {int(targets[i]) for i in quarter} == {0, 1, 2}
    assert len(subset(targets, 1.0, 0)) == 13


def test_a_hard_task_with_few_labels_predicts_a_gain_and_an_easy_one_levels_off() -> None:
    train, targets = blobs(40, 2.5, 0)
    val, val_targets = blobs(50, 2.5, 1)
    hard = learning_curve(train[:, None], targets, val, val_targets, centroid_head)
    assert [p.fraction for p in hard.points] == [0.25, 0.5, 0.75, 1.0]
    assert hard.points[-1].labels_per_class == 40 and hard.validation_images == 200
    assert 0.25 < hard.points[-1].accuracy < 1.0  # better than chance, short of perfect
    easy_train, easy_targets = blobs(40, 0.05, 0)
    easy_val, easy_val_targets = blobs(50, 0.05, 1)
    easy = learning_curve(easy_train[:, None], easy_targets, easy_val, easy_val_targets, centroid_head)
    assert all(p.accuracy == 1.0 for p in easy.points)
    assert "levelled off" in easy.sentence() or "could not be fitted" in easy.sentence()


def test_a_rising_curve_is_fitted_and_read_in_points() -> None:
    rising = tuple(
        CurvePoint(f, n, a) for f, n, a in [(0.25, 5, 0.50), (0.5, 10, 0.62), (0.75, 15, 0.68), (1, 20, 0.71)]
    )
    fit = fit_curve(rising)
    assert fit is not None
    curve = LearningCurve(rising, fit, 80)
    assert (curve.predict(40) or 0) > (curve.predict(20) or 1)
    assert curve.sentence().startswith("Another 20 labels a class would likely gain about")
    assert "fitted to 4 points on 80 validation images" in curve.sentence()


def test_too_few_labels_say_so_and_the_picture_is_drawn(tmp_path: Path) -> None:
    tiny, targets = blobs(1, 1.0, 0)
    curve = learning_curve(tiny[:, None], targets, tiny, targets, centroid_head)
    assert curve.points == () and "Too few labels" in curve.sentence()
    curve_png(curve, tmp_path / "curve.png", "candidate")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_heads_trained_beforehand_are_scored_in_place_of_training_them() -> None:
    """A retrain trains the curve's heads with its own (train.train_heads) and hands them over: the
    curve scores each on the validation images and trains none."""
    train, targets = blobs(40, 2.5, 0)
    val, val_targets = blobs(50, 2.5, 1)
    subsets = curve_subsets(targets, 0)
    assert [fraction for fraction, _ in subsets] == [0.25, 0.5, 0.75, 1.0] and len(subsets[-1][1]) == len(targets)
    trained = [centroid_head(train[chosen][:, None], targets[chosen]) for _, chosen in subsets]
    wrong = [lambda queries: (val_targets + 1) % 4 for _ in subsets]  # every answer wrong: 0% at each point

    def never(features: np.ndarray, targets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        raise AssertionError("a head trained beforehand was trained again")

    assert learning_curve(train[:, None], targets, val, val_targets, never, 0, trained) == learning_curve(
        train[:, None], targets, val, val_targets, centroid_head
    )
    assert [p.accuracy for p in learning_curve(train[:, None], targets, val, val_targets, never, 0, wrong).points] == [
        0.0
    ] * 4
