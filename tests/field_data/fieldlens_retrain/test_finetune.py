"""Partial fine-tuning: the tail on cached activations, its training, and its place in the retrain."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fieldlens_retrain import train as train_module
from fieldlens_retrain.backbone import load_backbone
from fieldlens_retrain.finetune import (
    MAX_BLOCKS,
    TAP_BLOCK,
    TAP_SHAPE,
    Choice,
    choose_fine_tune,
    embed_tail,
    held_out_split,
    put_tail,
    tail_module,
    train_tail,
)
from fieldlens_retrain.train import TrainSettings, inherited_choice, skipped_fine_tune

TINY = TrainSettings(epochs=20, fine_tune_blocks=(1,), fine_tune_epochs=2, fine_tune_patience=1, fine_tune_batch=8)


@pytest.fixture(scope="module")
def network() -> object:
    return load_backbone()


def activations(network: object, images: torch.Tensor) -> torch.Tensor:
    """The activation entering blocks[TAP_BLOCK], computed the long way (the whole torch network)."""
    net: Any = network
    with torch.no_grad():
        x = net._swish(net._bn0(net._conv_stem(images)))
        for block in net._blocks[:TAP_BLOCK]:
            x = block(x)
    tap: torch.Tensor = x
    return tap


def pooled(network: object, images: torch.Tensor) -> np.ndarray:
    net: Any = network
    with torch.no_grad():
        return np.asarray(net._avg_pooling(net.extract_features(images)).flatten(1).numpy())


def test_the_tail_on_the_cached_activation_gives_the_networks_embedding(network: object) -> None:
    images = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    tap = activations(network, images)
    assert tuple(tap.shape[1:]) == TAP_SHAPE
    for blocks in range(1, MAX_BLOCKS + 1):
        assert np.allclose(embed_tail(tail_module(network, blocks), tap.numpy()), pooled(network, images), atol=1e-4)
    with pytest.raises(ValueError):
        tail_module(network, MAX_BLOCKS + 1)


def synthetic(network: object, per_class: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(images, 2 views, 192, 7, 7) float16 activations of classes told apart by a few channels."""
    rng = np.random.default_rng(1)
    base = activations(network, torch.zeros(1, 3, 224, 224)).numpy()[0]
    rows = []
    for label in range(classes):
        for _ in range(per_class):
            row = base + rng.normal(0, 0.3, TAP_SHAPE).astype(np.float32)
            row[label * 8 : label * 8 + 8] += 2.0
            rows.append(np.stack([row, row[:, :, ::-1]]))
    return np.stack(rows).astype(np.float16), np.repeat(np.arange(classes), per_class)


def test_fine_tuning_is_deterministic_trains_only_its_blocks_and_goes_back_into_the_network(network: object) -> None:
    x, y = synthetic(network)
    first = train_tail(network, 1, x, y, 3, TINY, epochs=2)
    second = train_tail(network, 1, x, y, 3, TINY, epochs=2)
    for a, b in zip(first.tail.state_dict().values(), second.tail.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same seed, the same weights
    untouched = tail_module(network, 1)
    frozen_block = [
        torch.equal(a, b)
        for a, b in zip(untouched.blocks[0].parameters(), first.tail.blocks[0].parameters(), strict=True)
    ]
    tuned_block = [
        torch.equal(a, b)
        for a, b in zip(untouched.blocks[1].parameters(), first.tail.blocks[1].parameters(), strict=True)
    ]
    assert all(frozen_block) and not all(tuned_block)  # 1 block: blocks[14] stays ImageNet's
    other = train_tail(network, 1, x, y, 3, dataclasses.replace(TINY, seed=1), epochs=2)
    assert not all(torch.equal(a, b) for a, b in zip(first.tail.parameters(), other.tail.parameters(), strict=True))

    copy = load_backbone()
    put_tail(copy, first.tail)
    images = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32))
    tuned = embed_tail(first.tail, activations(copy, images).numpy())
    assert np.allclose(pooled(copy, images), tuned, atol=1e-4)  # the exported network computes the tail's
    assert not np.allclose(pooled(network, images), tuned, atol=1e-3)


def test_early_stopping_keeps_the_best_held_out_epoch(network: object) -> None:
    x, y = synthetic(network)
    held = held_out_split(y, 0.34, 0)
    trained = train_tail(network, 1, x[~held], y[~held], 3, TINY, (x[held][:, 0], y[held]))
    assert 0 <= trained.epochs <= TINY.fine_tune_epochs and len(trained.history) >= 1 + trained.epochs
    assert all(0.0 <= accuracy <= 1.0 for accuracy in trained.history)


def test_the_held_out_part_is_a_share_of_each_class_and_none_of_a_tiny_one() -> None:
    targets = np.array([0] * 10 + [1] * 5 + [2] * 2)
    held = held_out_split(targets, 0.2, 0)
    assert [int(held[targets == c].sum()) for c in range(3)] == [2, 1, 0]
    assert np.array_equal(held, held_out_split(targets, 0.2, 0)) and not np.array_equal(
        held, held_out_split(targets, 0.2, 7)
    )


def test_the_choice_needs_a_gain_unless_told_to_fine_tune(network: object) -> None:
    x, y = synthetic(network)
    frozen = np.stack([embed_tail(tail_module(network, 1), image) for image in x])

    def same_score(*_: np.ndarray) -> float:  # the fine-tuned network scores as the frozen one
        return 0.5

    auto = choose_fine_tune(network, x, frozen, y, 3, dataclasses.replace(TINY, fine_tune_holdout=0.34), same_score)
    assert not auto.chosen and auto.scores["frozen"] == 0.5 and set(auto.scores) == {"frozen", "1"}
    card = auto.card()
    assert card["chosen"] is False and card["blocks"] == 0 and card["held_out_images"] == 6
    told = dataclasses.replace(TINY, fine_tune="always", fine_tune_holdout=0.34)
    always = choose_fine_tune(network, x, frozen, y, 3, told, same_score)
    assert always.chosen and always.blocks == 1 and always.epochs >= 1 and always.card()["blocks"] == 1
    few = choose_fine_tune(network, x[:4], frozen[:4], y[:4], 3, told, same_score)
    assert not few.chosen and "too few" in few.reason


def test_one_backbone_pass_caches_both_and_a_second_embed_computes_nothing(tmp_path: Path) -> None:
    from fieldlens_retrain.embeddings import VIEWS, EmbeddingCache
    from tests.helpers.colour_photos import write_class_folders

    write_class_folders(tmp_path / "photos", 1)
    paths = sorted((tmp_path / "photos").glob("*/*.jpg"))
    items = [(hashlib.sha256(p.read_bytes()).hexdigest(), p) for p in paths]
    without = EmbeddingCache(tmp_path / "cache", activations=False)
    without.embed(items[:1], progress=False)
    cache = EmbeddingCache(tmp_path / "cache")
    embeddings = cache.embed(items, progress=False, activations=True)
    assert cache.computed == 3 and cache.reused == 0  # the first image had no activation cached: embedded again
    again = EmbeddingCache(tmp_path / "cache")
    assert again.embed(items, progress=False, activations=True).keys() == embeddings.keys()
    assert (again.computed, again.reused) == (0, 3)
    taps = again.activations([sha for sha, _ in items])
    assert taps.shape == (3, len(VIEWS), *TAP_SHAPE) and taps.dtype == np.float16
    tail = tail_module(load_backbone(), 1)
    from_taps = embed_tail(tail, taps[:, 0])
    stored = np.stack([embeddings[sha][0] for sha, _ in items]).astype(np.float32)
    assert np.allclose(from_taps, stored, atol=0.05 * float(np.abs(stored).max()))  # float16 both ways


@pytest.mark.slow
def test_a_fine_tuned_candidate_is_exported_checked_quantized_and_its_card_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantized: list[Path]
) -> None:
    from fieldlens_core.model_check import check_package
    from fieldlens_core.model_package import load_package
    from fieldlens_retrain import packaging
    from fieldlens_retrain.dataset import build_manifest, write_manifest
    from fieldlens_retrain.embeddings import EmbeddingCache
    from fieldlens_retrain.gate import GateRules
    from fieldlens_retrain.pipeline import run_retrain
    from tests.helpers.colour_photos import write_class_folders

    write_class_folders(tmp_path / "base", 8)
    built = build_manifest(None, {}, tmp_path / "base", None, val_percent=30)
    built.entries = [e.model_copy(update={"source": "field"}) for e in built.entries]  # auto needs field images
    built.sha256 = built.digest()
    write_manifest(built, tmp_path / "m.json")
    rules = GateRules(min_val_per_class=1, min_val_images=3, force=True)
    settings = dataclasses.replace(TINY, fine_tune="always", fine_tune_blocks=TrainSettings().fine_tune_blocks)
    tuned = run_retrain(tmp_path / "m.json", tmp_path / "models", None, tmp_path / "cache", rules, settings=settings)
    assert tuned.package is not None and tuned.embedded == 24
    card = load_package(tuned.package).card
    fine_tune = card.metrics["fine_tune"]
    assert fine_tune["chosen"] is True and fine_tune["blocks"] == 2 and fine_tune["epochs"] >= 1  # the default
    assert set(fine_tune["scores"]) == {"frozen", "2"} and fine_tune["held_out_images"] >= 3
    assert "fine-tuned" in card.training["method"] and card.training["fine_tune"] == "always"
    assert card.metrics["fp32_max_abs_probability_diff_vs_torch"] <= packaging.EXPORT_TOLERANCE  # fp32 ONNX = torch
    assert load_package(tuned.package, "int8").labels == ["blue", "green", "red"]
    assert card.metrics["int8_top1_agreement_on_validation"] >= 0.8  # exact kernels or as written: any CPU
    check_package(tuned.package, require_reference=True)
    # its own backbone was quantized (the fine-tuned one), not the shared frozen one
    assert len(quantized) == 1 and not quantized[0].name.startswith("backbone-")
    assert "fine_tune" in tuned.timings_s

    def no_trial(*args: object, **kwargs: object) -> object:
        raise AssertionError("the current model's choice stands for the same classes and images")

    monkeypatch.setattr(train_module, "choose_fine_tune", no_trial)
    again = run_retrain(
        tmp_path / "m.json", tmp_path / "models", tuned.package, tmp_path / "cache", rules, settings=TINY
    )
    inherited = load_package(again.package or Path()).card.metrics["fine_tune"]
    assert inherited["inherited"] is True and inherited["chosen"] is True and inherited["blocks"] == 2
    assert inherited["training_images"] == fine_tune["training_images"] > 0

    def no_activations(self: EmbeddingCache, shas: object) -> np.ndarray:
        raise AssertionError("a frozen-only retrain reads no activations")

    monkeypatch.setattr(EmbeddingCache, "activations", no_activations)
    frozen = run_retrain(
        tmp_path / "m.json",
        tmp_path / "models",
        tuned.package,
        tmp_path / "cache",
        rules,
        settings=dataclasses.replace(TINY, fine_tune="never"),
    )
    assert (frozen.embedded, frozen.reused) == (0, 24)  # the second retrain embeds nothing new
    frozen_card = load_package(frozen.package or Path()).card
    assert frozen_card.metrics["fine_tune"]["chosen"] is False and "frozen" in frozen_card.training["method"]
    # the inherited fine-tuning quantized its own backbone again; the frozen one, the shared int8 backbone
    assert len(quantized) == 3 and quantized[2].name.startswith("backbone-")


def parent_with(labels: list[str], fine_tune: dict[str, Any] | None) -> Any:
    """The two things inherited_choice reads of the current model: its labels and its card."""
    from types import SimpleNamespace

    metrics = {} if fine_tune is None else {"fine_tune": fine_tune}
    return SimpleNamespace(labels=labels, card=SimpleNamespace(version="1.2.0", metrics=metrics))


FROZEN = {"chosen": False, "blocks": 0, "epochs": 0, "scores": {"frozen": 0.7, "2": 0.705}, "training_images": 800}


@pytest.mark.parametrize(
    ("labels", "images", "previous", "settings", "expected"),
    [
        (["a", "b"], 850, FROZEN, TrainSettings(), False),  # 50 more images: the frozen choice stands
        (["a", "b"], 1000, FROZEN, TrainSettings(), False),  # 25% more: still
        (["a", "b"], 1001, FROZEN, TrainSettings(), None),  # more than that: try again
        (["a", "c"], 850, FROZEN, TrainSettings(), None),  # other classes: try again
        (["a", "b"], 850, {**FROZEN, "training_images": None}, TrainSettings(), None),  # a card from before
        (["a", "b"], 850, None, TrainSettings(), None),  # a model never retrained here
        (["a", "b"], 850, FROZEN, TrainSettings(fine_tune="always"), None),  # only auto chooses
        (["a", "b"], 850, {**FROZEN, "chosen": True, "blocks": 2, "epochs": 6}, TrainSettings(), True),
        (["a", "b"], 850, {**FROZEN, "chosen": True, "blocks": 2, "epochs": 0}, TrainSettings(), None),
    ],
)
def test_auto_reuses_the_current_models_choice_while_its_data_still_stands(
    labels: list[str], images: int, previous: dict[str, Any] | None, settings: TrainSettings, expected: bool | None
) -> None:
    choice = inherited_choice(parent_with(["a", "b"], previous), labels, images, settings)
    if expected is None:
        assert choice is None
        return
    assert isinstance(choice, Choice) and choice.inherited and choice.chosen is expected
    assert "as chosen for 1.2.0 on 800 training images" in choice.reason
    assert choice.scores == {"frozen": 0.7, "2": 0.705}
    if expected:
        assert (choice.blocks, choice.epochs) == (2, 6)


def test_auto_tries_fine_tuning_only_with_field_images_among_the_training_images() -> None:
    """Judged on held-out studio photos, a studio-only fine-tune looked good and lost on field photos."""
    from fieldlens_retrain.dataset import ManifestEntry

    def entries(*sources: str) -> list[ManifestEntry]:
        return [
            ManifestEntry(key=f"{i}.jpg", path=f"{i}.jpg", sha256=f"{i:064x}", label="a", split="train", source=source)
            for i, source in enumerate(sources)
        ]

    assert skipped_fine_tune(TrainSettings(), entries("base", "field")) is None
    assert "no field images" in str(skipped_fine_tune(TrainSettings(), entries("base", "base", "pseudo")))
    assert skipped_fine_tune(TrainSettings(fine_tune="always"), entries("base")) is None  # told to
    assert skipped_fine_tune(TrainSettings(fine_tune="never"), entries("field")) == "settings: fine_tune never"
