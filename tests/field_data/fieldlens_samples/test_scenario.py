"""The Fashion-MNIST scenario is drawn once, the same way for the loop demo, the benches and the measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldlens_samples import fashion
from fieldlens_samples.scenario import Split, write_scenario


def split(seed: int, per_class: int) -> Split:
    """A stand-in for a split of the dataset: random 28x28 items, ``per_class`` of each of the 10 classes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    return Split(rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), labels)


TRAIN, TEST = split(0, 4), split(1, 5)


def test_it_draws_base_then_camera_then_holdout_from_one_generator(tmp_path: Path) -> None:
    """The draws the loop demo and the benches made before it owned them, and the generator left where
    they left it, so that a caller's further draws (studio pools, shuffles) are what they were."""
    scenario = write_scenario(tmp_path / "s", np.random.default_rng(3), 2, 3, 1, TRAIN, TEST)
    rng = np.random.default_rng(3)
    base = fashion.pick(TRAIN.labels, 2, rng)
    camera = fashion.pick(TEST.labels, 3, rng)
    holdout = fashion.pick(TEST.labels, 1, rng, exclude=set(camera))
    assert scenario.base_indices == base
    assert sorted(scenario.camera_truth) == sorted(f"{i:05d}.jpg" for i in camera)
    assert sorted(scenario.holdout_truth) == sorted(f"{i:05d}.jpg" for i in holdout)
    assert not set(scenario.camera_truth) & set(scenario.holdout_truth)
    drawn_after = np.random.default_rng(3)
    write_scenario(tmp_path / "again", drawn_after, 2, 3, 1, TRAIN, TEST)
    assert drawn_after.integers(1 << 30) == rng.integers(1 << 30)


def test_it_writes_studio_photos_by_class_and_field_photos_with_their_truth(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path, np.random.default_rng(0), 2, 3, 1, TRAIN, TEST)
    studio = sorted(scenario.base.glob("*/*.jpg"))
    assert len(studio) == 20 and scenario.base == tmp_path / "base"
    assert all(fashion.LABELS[TRAIN.labels[int(p.stem)]] == p.parent.name for p in studio)
    assert sorted(p.name for p in scenario.camera.iterdir()) == sorted(scenario.camera_truth)
    assert len(scenario.camera_truth) == 30 and len(scenario.holdout_truth) == 10
    for name, label in scenario.camera_truth.items():
        assert fashion.LABELS[TEST.labels[int(name[:-4])]] == label


def test_the_same_draw_gives_the_same_photos(tmp_path: Path) -> None:
    """Field conditions are seeded: two builds of the scenario are the same bytes (the benches' figures
    depend on it)."""
    one = write_scenario(tmp_path / "one", np.random.default_rng(5), 1, 2, 2, TRAIN, TEST)
    two = write_scenario(tmp_path / "two", np.random.default_rng(5), 1, 2, 2, TRAIN, TEST)
    for folder, truth in ((one.camera, one.camera_truth), (one.holdout, one.holdout_truth)):
        for name in truth:
            assert (folder / name).read_bytes() == (tmp_path / "two" / folder.name / name).read_bytes()
    assert two.camera_truth == one.camera_truth
