"""The head the retrain puts on the backbone: linear, prototypes, and their blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldlens_retrain.train import head_module, prototypes


def test_prototypes_are_unit_mean_directions_and_an_empty_class_scores_zero() -> None:
    features = np.array([[3.0, 0.0], [0.0, 2.0], [5.0, 5.0], [1.0, 1.0]], np.float32)
    centres = prototypes(features, np.array([0, 0, 1, 1]), classes=3)
    assert centres[0] == pytest.approx([2**-0.5, 2**-0.5])  # the mean of (1, 0) and (0, 1), normalised
    assert centres[1] == pytest.approx([2**-0.5, 2**-0.5])  # scale does not matter, direction does
    assert np.all(centres[2] == 0) and np.isfinite(centres).all()


def test_the_blend_outputs_the_log_of_the_mean_of_both_probabilities() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4), torch.randn(3)
    centres = prototypes(np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32), np.arange(9) % 3, 3)
    x = torch.randn(5, 4)
    with torch.no_grad():
        blended = torch.softmax(head_module(weight, bias, centres, 30.0)(x), dim=1)
        linear = torch.softmax(x @ weight.T + bias, dim=1)
        cosine = torch.nn.functional.normalize(x, dim=1) @ torch.from_numpy(centres).T
        expected = (linear + torch.softmax(30.0 * cosine, dim=1)) / 2
    assert torch.allclose(blended, expected, atol=1e-6)
    assert isinstance(head_module(weight, bias, None, 30.0), torch.nn.Linear)


def test_prototypes_classify_a_few_examples_a_linear_head_has_not_seen_enough_of() -> None:
    """Two classes along two directions, three noisy examples each: the prototype of each class
    points the right way, whatever the norms (which a linear head would have to learn)."""
    rng = np.random.default_rng(1)
    directions = np.eye(8, dtype=np.float32)[:2]
    features = np.concatenate([directions[c] * rng.uniform(0.5, 5, (3, 1)) for c in (0, 1)])
    features += rng.normal(0, 0.05, features.shape).astype(np.float32)
    centres = prototypes(features, np.array([0, 0, 0, 1, 1, 1]), 2)
    queries = np.concatenate([directions[c] * rng.uniform(0.1, 10, (20, 1)) for c in (0, 1)])
    assert ((queries @ centres.T).argmax(1) == np.repeat([0, 1], 20)).all()
