from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_retrain.evaluate import confusion_png, gate, score


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


@pytest.mark.parametrize(
    ("candidate", "current", "force", "publish"),
    [(0.8, 0.7, False, True), (0.71, 0.7, False, False), (0.71, 0.7, True, True), (0.5, None, False, True)],
)
def test_the_gate(candidate: float, current: float | None, force: bool, publish: bool) -> None:
    assert gate(candidate, current, 0.02, force).publish is publish


def test_the_confusion_matrix_is_a_png(tmp_path: Path) -> None:
    confusion_png(score(["a", "b"], ["a", "a"], ["a", "b"]), tmp_path / "c.png", "candidate")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
