"""The retrain scenario on Fashion-MNIST: studio photos for a base model, field photos for a camera
and field photos held out to score on. The loop demo, the retrain and label-order benches and the
measurements in ``tests/measurements`` each build it here, so that "the same images as the demo"
stays true: the same draws in the same order, the same seeds for the field conditions.

The draws, from one generator: ``base`` studio photos a class from the train split, then
``camera`` field photos a class from the test split, then ``holdout`` a class from the rest of
the test split. Anything drawn after it from the same generator follows these three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fieldlens_samples import fashion

CAMERA_SEED, HOLDOUT_SEED = 1, 2
"""The field conditions' seeds: the camera's photos and the held-out ones differ in them too."""


@dataclass(frozen=True)
class Split:
    """One of the dataset's splits, as :func:`fashion.load` reads it."""

    images: np.ndarray
    labels: np.ndarray

    @classmethod
    def load(cls, name: str) -> Split:
        return cls(*fashion.load(name))


@dataclass(frozen=True)
class Scenario:
    """The scenario on disk: ``base/<label>/<index>.jpg``, ``camera/<index>.jpg``, ``holdout/<index>.jpg``."""

    base: Path
    camera: Path
    holdout: Path
    base_indices: list[int]
    """Indices into the train split of the studio photos (for a caller that draws more studio photos)."""
    camera_truth: dict[str, str]
    """Camera photo's file name -> its true label (the demo's stand-in for a person)."""
    holdout_truth: dict[str, str]


def write_scenario(
    work: Path,
    rng: np.random.Generator,
    base: int,
    camera: int,
    holdout: int,
    train: Split | None = None,
    test: Split | None = None,
) -> Scenario:
    """Draw the scenario (``base``, ``camera`` and ``holdout`` photos a class) and write it under ``work``;
    ``train`` and ``test`` when the caller has loaded the splits already."""
    train = Split.load("train") if train is None else train
    test = Split.load("t10k") if test is None else test
    base_indices = fashion.pick(train.labels, base, rng)
    camera_indices = fashion.pick(test.labels, camera, rng)
    holdout_indices = fashion.pick(test.labels, holdout, rng, exclude=set(camera_indices))
    fashion.write_studio(work / "base", train.images, train.labels, base_indices)
    camera_truth = fashion.write_field(work / "camera", test.images, test.labels, camera_indices, seed=CAMERA_SEED)
    holdout_truth = fashion.write_field(work / "holdout", test.images, test.labels, holdout_indices, seed=HOLDOUT_SEED)
    return Scenario(work / "base", work / "camera", work / "holdout", base_indices, camera_truth, holdout_truth)
