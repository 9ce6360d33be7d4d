"""The head the retrain puts on the backbone: linear, prototypes, and their blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldlens_retrain.train import (
    DEFAULT_SETTINGS,
    TrainSettings,
    choose_linear_share,
    head_module,
    linear_share_for,
    prototypes,
    train_head,
    train_heads,
)


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
    with torch.no_grad():
        mostly_prototypes = torch.softmax(head_module(weight, bias, centres, 30.0, linear_share=0.25)(x), dim=1)
    assert torch.allclose(mostly_prototypes, 0.25 * linear + 0.75 * torch.softmax(30.0 * cosine, dim=1), atol=1e-6)
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


FAST = TrainSettings(epochs=30)


def images(
    rng: np.random.Generator, scale_of: list[float], direction_of: list[int], per_class: int, noise: float = 0.05
) -> np.ndarray:
    """(images, 2 views, 8): class c along axis direction_of[c] with norm about scale_of[c]."""
    axes = np.eye(8, dtype=np.float32)
    rows = [
        axes[direction_of[c]] * scale_of[c] * rng.uniform(0.8, 1.2) + rng.normal(0, noise, 8)
        for c in range(len(scale_of))
        for _ in range(per_class)
    ]
    return np.stack([np.stack([row, row * 1.01]) for row in rows]).astype(np.float32)


def test_cross_validation_leaves_out_the_half_that_cannot_tell_the_classes_apart() -> None:
    """Classes along one direction, told apart only by their norm: cosine prototypes see one class;
    the linear head tells them apart. The folds say so, and the chosen share leans on the linear half."""
    rng = np.random.default_rng(2)
    features = images(rng, [1.0, 6.0], [0, 0], per_class=9, noise=0.0)  # one direction exactly
    share, folds = choose_linear_share(features, np.repeat([0, 1], 9), 2, FAST)
    assert folds["0"] <= 0.6 and folds["1"] == 1.0  # prototypes alone: a coin; linear alone: right
    assert share >= 0.5


def test_an_even_blend_from_enough_labels_on_without_folds() -> None:
    rng = np.random.default_rng(3)
    many = images(rng, [1.0, 1.0], [0, 1], per_class=DEFAULT_SETTINGS.cross_validate_below)
    assert linear_share_for(many, np.repeat([0, 1], DEFAULT_SETTINGS.cross_validate_below), 2, FAST) == (0.5, None)
    few = many[::5]
    share, folds = linear_share_for(few, np.repeat([0, 1], len(few) // 2), 2, FAST)
    assert folds is not None and set(folds) == {"0", "0.25", "0.5", "0.75", "1"} and share in FAST.linear_shares


def test_heads_trained_together_are_the_heads_trained_alone() -> None:
    """The learning curve's heads share the candidate's epochs (train_heads): each must still be the
    head train_head gives its own rows, with its own standardisation, seed and loss."""
    rng = np.random.default_rng(3)
    features = (rng.normal(size=(90, 6)) * rng.uniform(0.1, 4, 6) + rng.uniform(-2, 2, 6)).astype(np.float32)
    targets = rng.integers(0, 3, 90)
    subsets = [np.arange(0, 90, 3), np.arange(45), np.arange(90)]
    together = train_heads(features, targets, subsets, 3, FAST)
    for rows, (weight, bias) in zip(subsets, together, strict=True):
        alone_weight, alone_bias = train_head(features[rows], targets[rows], 3, FAST)
        assert torch.allclose(weight, alone_weight, atol=1e-4) and torch.allclose(bias, alone_bias, atol=1e-4)
    assert not torch.allclose(together[0][0], together[2][0], atol=1e-2)  # other rows, another head
