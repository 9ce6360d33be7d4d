from __future__ import annotations

import numpy as np
import pytest

from fieldlens_core.loaded_model import softmax, top_k


def test_top_k_is_sorted_probabilities() -> None:
    result = top_k(np.array([1.0, 3.0, 2.0, -1.0]), ["a", "b", "c", "d"], 3)
    assert [r["label"] for r in result] == ["b", "c", "a"]
    confidences = [r["confidence"] for r in result]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences) and sum(confidences) < 1.0


def test_k_is_clipped_to_the_label_count() -> None:
    assert len(top_k(np.array([0.0, 1.0]), ["a", "b"], 10)) == 2


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([1000.0, 1000.0]))
    assert probabilities == pytest.approx([0.5, 0.5])
