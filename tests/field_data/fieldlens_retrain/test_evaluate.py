from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fieldlens_core.model_package import load_package
from fieldlens_retrain.evaluate import OTHER, PredictionCache, confusion_png, predict_files, score
from tests.helpers.images import solid_jpeg
from tests.helpers.tiny_model import make_tiny_package


def test_scores_are_right_on_a_known_confusion() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    guess = ["a", "a", "b", "b", "b", "a"]
    result = score(truth, guess, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert result["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result["per_class"]["a"] == {
        "precision": pytest.approx(2 / 3, abs=1e-4),
        "recall": pytest.approx(2 / 3, abs=1e-4),
        "support": 3,
    }
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}


def test_a_label_the_model_does_not_know_counts_as_wrong() -> None:
    assert score(["a", "z"], ["a", "a"], ["a"])["accuracy"] == 0.5


def test_tables_cover_the_classes_in_play_whatever_the_model_predicts() -> None:
    """The default model predicts 1,000 classes; the person's are two: the matrix is 2 x 3, not 1,000 x 1,000."""
    result = score(["mug", "mug", "kitty"], ["coffee mug", "mug", "tabby"], ["kitty", "mug"])
    assert result["columns"] == ["kitty", "mug", OTHER]
    assert result["confusion"] == [[0, 0, 1], [0, 1, 1]]
    assert result["per_class"]["mug"]["support"] == 2 and result["per_class"]["kitty"]["recall"] == 0.0


def test_a_confusion_picture_of_many_classes_stays_bounded(tmp_path: Path) -> None:
    labels = [f"class {n}" for n in range(300)]
    truth = labels * 2
    confusion_png(score(truth, truth[::-1], labels), tmp_path / "many.png", "candidate")
    from PIL import Image

    with Image.open(tmp_path / "many.png") as picture:
        assert max(picture.size) <= 2500  # 25 inches at 100 dpi, whatever the class count


def test_the_confusion_matrix_is_a_png(tmp_path: Path) -> None:
    confusion_png(score(["a", "b"], ["a", "a"], ["a", "b"]), tmp_path / "c.png", "candidate")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def photos(folder: Path, colours: dict[str, tuple[int, int, int]]) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for name, rgb in colours.items():
        path = folder / f"{name}.jpg"
        path.write_bytes(solid_jpeg(rgb))
        images.append((hashlib.sha256(path.read_bytes()).hexdigest(), path))
    return images


def test_the_prediction_cache_runs_a_model_once_per_image_and_answers_as_the_model(
    tmp_path: Path, tiny_package: Path
) -> None:
    images = photos(tmp_path / "photos", {"red": (240, 10, 10), "green": (10, 240, 10), "blue": (10, 10, 240)})
    cache = PredictionCache(tmp_path / "cache")
    first = cache.top1(load_package(tiny_package), images[:2])
    assert first == predict_files(tiny_package, [path for _, path in images[:2]]) == ["red", "green"]
    assert (cache.computed, cache.reused) == (2, 0)
    again = PredictionCache(tmp_path / "cache")  # the next retrain: a new process, the same cache directory
    assert again.top1(load_package(tiny_package), images) == ["red", "green", "blue"]
    assert (again.computed, again.reused) == (1, 2)  # only the new image ran


def test_another_model_never_gets_a_cached_answer(tmp_path: Path, tiny_package: Path) -> None:
    images = photos(tmp_path / "photos", {"red": (240, 10, 10)})
    cache = PredictionCache(tmp_path / "cache")
    cache.top1(load_package(tiny_package), images)
    other = tmp_path / "other"
    make_tiny_package(other, swap=True)  # another graph: it answers otherwise
    assert cache.top1(load_package(other), images) == predict_files(other, [images[0][1]]) != ["red"]
    assert cache.computed == 2


def test_an_unreadable_cache_file_is_started_again(tmp_path: Path, tiny_package: Path) -> None:
    images = photos(tmp_path / "photos", {"red": (240, 10, 10)})
    PredictionCache(tmp_path / "cache").top1(load_package(tiny_package), images)
    for stored in (tmp_path / "cache" / "predictions").iterdir():
        stored.write_text("{not json")
    cache = PredictionCache(tmp_path / "cache")
    assert cache.top1(load_package(tiny_package), images) == ["red"] and cache.computed == 1
