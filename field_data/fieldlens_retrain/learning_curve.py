""" "How many more labels?": validation accuracy against the share of training labels, and what more would give.

The embeddings are cached, so a head on a quarter, a half or three quarters of the training
images costs about a second each; the full set is the candidate's own head. A saturating power
law, ``accuracy(n) = a - b * n ** -c`` in labels per class (the shape learning curves of
classifiers take, Hestness et al. 2017, "Deep learning scaling is predictable, empirically"),
is fitted to the points, and read at twice today's labels: the sentence a person wants is how
much another N labels a class would likely gain, or that accuracy has levelled off.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MIN_PER_CLASS = 4
"""Training images the smallest class needs for a curve: a quarter of them must be at least one."""
LEVELLED_OFF = 0.01
"""A predicted gain under this (one point) is "levelled off"."""


@dataclass(frozen=True)
class CurvePoint:
    fraction: float
    labels_per_class: float
    """Training images per class at this share (their mean over the classes)."""
    accuracy: float


@dataclass(frozen=True)
class LearningCurve:
    points: tuple[CurvePoint, ...]
    fit: tuple[float, float, float] | None
    """(a, b, c) of ``a - b * n ** -c``; None when the points are too few or too flat to fit."""
    validation_images: int

    def predict(self, labels_per_class: float) -> float | None:
        if self.fit is None:
            return None
        a, b, c = self.fit
        return float(min(1.0, max(0.0, a - b * labels_per_class**-c)))

    def sentence(self) -> str:
        if len(self.points) < 3:
            return f"Too few labels a class to draw a learning curve (it needs at least {MIN_PER_CLASS} a class)."
        last = self.points[-1]
        more = max(1, round(last.labels_per_class))
        now, then = self.predict(last.labels_per_class), self.predict(last.labels_per_class + more)
        if now is None or then is None:
            return f"Validation accuracy {last.accuracy:.0%} with {more} labels a class; the curve could not be fitted."
        gain = then - now  # read off the fitted curve at both ends: the measured point carries the noise
        if gain < LEVELLED_OFF:
            return (
                f"Accuracy has levelled off at about {last.accuracy:.0%}: another {more} labels a class would "
                f"likely gain under a point (on {self.validation_images} validation images)."
            )
        return (
            f"Another {more} labels a class would likely gain about {gain * 100:.0f} points "
            f"(read off a curve fitted to {len(self.points)} points on {self.validation_images} validation images)."
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "points": [vars(p) for p in self.points],
            "fit": list(self.fit) if self.fit else None,
            "validation_images": self.validation_images,
            "sentence": self.sentence(),
        }


def subset(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the images, at least one a class; nested for a seed
    (the quarter is inside the half), so the curve measures more labels, not other labels."""
    order = np.random.default_rng(seed).permutation(len(targets))
    chosen = []
    for label in np.unique(targets):
        members = order[targets[order] == label]
        chosen.append(members[: max(1, math.ceil(fraction * len(members)))])
    return np.sort(np.concatenate(chosen))


def fit_curve(points: tuple[CurvePoint, ...]) -> tuple[float, float, float] | None:
    if len(points) < 3:
        return None
    from scipy.optimize import curve_fit

    n = np.array([p.labels_per_class for p in points])
    accuracy = np.array([p.accuracy for p in points])

    def law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return np.asarray(a - b * x**-c)

    try:
        found, _ = curve_fit(
            law,
            n,
            accuracy,
            p0=(min(1.0, accuracy.max() + 0.05), 0.5, 0.5),
            bounds=([0.0, 0.0, 0.05], [1.0, 10.0, 3.0]),
            maxfev=5000,
        )
    except (RuntimeError, ValueError) as exc:  # flat or noisy points: say so rather than invent a curve
        log.info("learning curve not fitted: %s", exc)
        return None
    return float(found[0]), float(found[1]), float(found[2])


def curve_subsets(targets: np.ndarray, seed: int = 0) -> list[tuple[float, np.ndarray]]:
    """The training images each point of the curve trains on: (fraction, image indices) for each of
    :data:`FRACTIONS` that differs from the one before (the last is every image); none where the
    smallest class has under :data:`MIN_PER_CLASS` images (a quarter of under four is one image)."""
    if min(np.bincount(targets)[np.unique(targets)], default=0) < MIN_PER_CLASS:
        return []
    subsets: list[tuple[float, np.ndarray]] = []
    for fraction in FRACTIONS:
        chosen = subset(targets, fraction, seed)
        if not subsets or len(chosen) > len(subsets[-1][1]):  # else too few a class for this share to differ
            subsets.append((fraction, chosen))
    return subsets


def learning_curve(
    features: np.ndarray,
    targets: np.ndarray,
    val_features: np.ndarray,
    val_targets: np.ndarray,
    score_head: Any,
    seed: int = 0,
    trained: Sequence[Any] | None = None,
) -> LearningCurve:
    """Validation accuracy of heads trained on :data:`FRACTIONS` of the training images.

    ``features`` is (images, views, dim) with ``targets`` per image; ``score_head(features,
    targets)`` trains a head on them the way the retrain does and returns a function giving
    predicted class indices for (n, dim) queries. ``trained``: those functions for the heads of
    :func:`curve_subsets`, in order, where the caller has trained them already (a retrain trains
    them with its own head, whose the last one is: train.train_heads); ``score_head`` is then unused."""
    subsets = curve_subsets(targets, seed)
    classes = max(1, len(np.unique(targets)))
    points: list[CurvePoint] = []
    for n, (fraction, chosen) in enumerate(subsets):
        predict = trained[n] if trained is not None else score_head(features[chosen], targets[chosen])
        accuracy = float((predict(val_features) == val_targets).mean()) if len(val_targets) else 0.0
        points.append(CurvePoint(fraction, len(chosen) / classes, round(accuracy, 4)))
    measured = tuple(points)
    return LearningCurve(measured, fit_curve(measured), len(val_targets))


def curve_png(curve: LearningCurve, path: Path, title: str) -> None:
    """The points, and the fitted curve read out to twice today's labels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    try:
        x = [p.labels_per_class for p in curve.points]
        axes.plot(x, [p.accuracy * 100 for p in curve.points], "o", label="measured")
        if curve.fit is not None and x:
            grid = np.linspace(min(x), 2 * max(x), 100)
            axes.plot(grid, [100 * (curve.predict(n) or 0.0) for n in grid], "--", label="fitted")
        axes.set_xlabel("training labels per class")
        axes.set_ylabel(f"validation accuracy, % ({curve.validation_images} images)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.set_layout_engine(None)  # laid out: savefig need not draw it once more to lay it out
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
