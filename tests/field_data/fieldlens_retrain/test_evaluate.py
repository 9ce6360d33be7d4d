from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fieldlens_core.errors import TrainingError
from fieldlens_core.model_package import InputSpec, load_package
from fieldlens_retrain.evaluate import (
    OTHER,
    TIE_MARGIN,
    PredictionCache,
    confusion_png,
    decoded_as_embedded,
    head_answers,
    most_decided,
    predict_files,
    score,
)
from tests.helpers.images import solid_jpeg, solid_png
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


def test_a_recorded_answer_is_the_next_retrains_and_runs_nothing(tmp_path: Path, tiny_package: Path) -> None:
    """A local candidate's answers come from its head (HeadAnswers); recorded, they spare the next
    retrain, where the candidate is the current model, from running it on those images."""
    images = photos(tmp_path / "photos", {"red": (240, 10, 10), "green": (10, 240, 10)})
    PredictionCache(tmp_path / "cache").record(load_package(tiny_package), [sha for sha, _ in images], ["red", "blue"])
    cache = PredictionCache(tmp_path / "cache")
    assert cache.top1(load_package(tiny_package), images) == ["red", "blue"]  # as recorded, not re-run
    assert (cache.computed, cache.reused) == (0, 2)


class Graph:
    """A stand-in for the candidate's graph: each image's logits (keyed by its bytes), counting the images it ran on."""

    labels = ["a", "b"]
    package = SimpleNamespace(variant="fp32")

    def __init__(self, logits: dict[bytes, list[float]]) -> None:
        self.by_image = logits
        self.images = 0

    def tensor(self, body: bytes) -> bytes:
        return body

    def logits(self, tensors: list[bytes]) -> np.ndarray:
        self.images += len(tensors)
        return np.array([self.by_image[body] for body in tensors], np.float32)


def test_the_graph_answers_near_ties_and_images_not_decoded_as_embedded(tmp_path: Path) -> None:
    """The head on an image's cached embedding answers for the graph only where both see the same
    pixels (a small JPEG, a PNG; not a JPEG the service decodes at a reduced scale) and the top-1
    leads by more than float16 rounding could move; the graph also runs on the first sure image."""
    small, png, tie, large = (tmp_path / name for name in ("small.jpg", "p.png", "tie.jpg", "large.jpg"))
    small.write_bytes(solid_jpeg((200, 10, 10)))
    png.write_bytes(solid_png((10, 200, 10)))
    tie.write_bytes(solid_jpeg((150, 10, 10)))
    large.write_bytes(solid_jpeg((10, 10, 200), size=(1200, 900)))  # drafted at 1/2 by the service
    spec = InputSpec(size=224, resize=256, mean=(127.0,) * 3, std=(128.0,) * 3)
    assert decoded_as_embedded(small, spec) and decoded_as_embedded(png, spec)
    assert not decoded_as_embedded(large, spec)
    outputs = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0 - TIE_MARGIN / 2], [3.0, 0.0]], np.float32)
    paths = [small, png, tie, large]
    answers = head_answers(outputs, ["a", "b"], [decoded_as_embedded(path, spec) for path in paths])
    assert answers.top1 == ["a", "b", "a", "a"] and answers.unsure == [2, 3] and answers.checked == 0
    by_image = {small.read_bytes(): [2.01, 0.0], tie.read_bytes(): [0.9, 1.0], large.read_bytes(): [0.0, 1.0]}
    graph = Graph(by_image)
    assert answers.resolve(graph, paths) == ["a", "b", "b", "b"]  # type: ignore[arg-type]
    assert graph.images == 3  # the unsure two and the checked one


def test_a_graph_the_head_does_not_stand_for_stops_the_retrain(tmp_path: Path) -> None:
    """Cached features of another graph (a rebuilt backbone, another ONNX Runtime) would otherwise
    answer for this one unseen: its logits on the checked image give it away."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(solid_jpeg((200, 10, 10)))
    answers = head_answers(np.array([[2.0, 0.0]], np.float32), ["a", "b"], [True])
    with pytest.raises(TrainingError, match="logits 0.100 apart on a.jpg"):
        answers.resolve(Graph({photo.read_bytes(): [2.1, 0.0]}), [photo])  # type: ignore[arg-type]


def test_the_reference_image_is_the_one_every_variant_answers_most_decidedly() -> None:
    """The widest smallest gap over the variants wins, among the images both cover (int8 answers
    only the first INT8_CHECKED) and neither is unsure of (a near tie, a photo not decoded as embedded)."""
    fp32 = head_answers(
        np.array([[4.0, 0.0], [9.0, 0.0], [0.0, 6.0], [8.0, 0.0], [20.0, 0.0]], np.float32),
        ["a", "b"],
        [True, False, True, True, True],  # the second was not decoded as embedded
    )
    int8 = head_answers(np.array([[4.0, 0.0], [9.0, 0.0], [0.0, 6.0], [1.0, 0.0]], np.float32), ["a", "b"], [True] * 4)
    assert most_decided([fp32, int8]) == 2  # not 1 (unsure), 3 (int8 undecided), 4 (int8 never saw it)
    tie = head_answers(np.array([[1.0, 1.0]], np.float32), ["a", "b"], [True])
    assert most_decided([tie]) is None and most_decided([]) is None
