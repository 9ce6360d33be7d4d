"""Retraining for real (the wheel's backbone, ONNX export, int8) on small colour datasets (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.model import decode, load_model
from fieldlens_core.model_check import check_package
from fieldlens_core.model_package import ModelCard, load_package, write_card
from fieldlens_retrain import packaging
from fieldlens_retrain.backbone import INPUT_SPEC
from fieldlens_retrain.dataset import build_manifest, read_manifest, write_manifest
from fieldlens_retrain.decisions import read_decisions
from fieldlens_retrain.evaluate import INT8_CHECKED
from fieldlens_retrain.gate import GateDecision, GateRules
from fieldlens_retrain.pipeline import RetrainReport, run_retrain
from fieldlens_retrain.train import TrainSettings
from tests.helpers.colour_photos import write_class_folders

pytestmark = pytest.mark.slow
FAST = TrainSettings(epochs=60)
SMALL = GateRules(min_val_per_class=1, min_val_images=3)
"""These datasets are a few photos a class: the gate judges on what they hold."""


def manifest(tmp_path: Path, name: str) -> Path:
    built = build_manifest(None, {}, tmp_path / "base", None, val_percent=30)
    write_manifest(built, tmp_path / name)
    return tmp_path / name


def test_a_first_model_then_a_retrain_that_embeds_only_the_new_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantized: list[Path]
) -> None:
    cards: list[Path] = []

    def counted(package_dir: Path, fields: dict[str, Any]) -> ModelCard:
        cards.append(package_dir)
        return write_card(package_dir, fields)

    monkeypatch.setattr(packaging, "write_card", counted)
    write_class_folders(tmp_path / "base", 8)
    first = run_retrain(
        manifest(tmp_path, "m1.json"), tmp_path / "models", None, tmp_path / "cache", SMALL, settings=FAST
    )
    assert first.decision.publish and first.package is not None and first.version == "1.0.0"
    assert first.embedded == 24 and first.reused == 0
    for variant in ("fp32", "int8"):
        assert load_package(first.package, variant).labels == ["blue", "green", "red"]
    card = load_package(first.package).card
    assert card.metrics["accuracy"] >= 0.9 and set(card.metrics["per_class"]) == {"blue", "green", "red"}
    assert card.metrics["fp32_max_abs_logit_diff_vs_torch"] < 1e-3 and card.dataset_manifest_sha256
    import torch

    assert card.training["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # the head trains on a GPU

    features = {path: path.stat().st_ino for path in (tmp_path / "cache").rglob("int8-*/*/*.npy")}
    checked = {e.sha256 for e in read_manifest(tmp_path / "m1.json").holdout()[:INT8_CHECKED]}
    assert {path.stem for path in features} == checked  # the int8 check's images, kept for the next retrain

    write_class_folders(tmp_path / "base", 2, seed=5)  # six new photos
    second = run_retrain(
        manifest(tmp_path, "m2.json"),
        tmp_path / "models",
        first.package,
        tmp_path / "cache",
        GateRules(margin=-1.0, class_margin=1.0, min_val_per_class=1, min_val_images=3),
        settings=FAST,
    )
    assert (second.embedded, second.reused) == (6, 24)
    assert second.version == "1.1.0" and load_package(second.package or Path()).card.parent_version == "1.0.0"
    report = json.loads((second.report_dir / "report.json").read_text())
    assert report["published"] and report["current"]["accuracy"] == second.current["accuracy"]  # type: ignore[index]
    assert report["parent_version"] == "1.0.0" and report["timings_s"] == second.timings_s  # one complete document
    assert report["verdict"] == "published" and report["learning_curve"]["points"]
    assert (second.report_dir / "confusion-candidate.png").read_bytes()[:4] == b"\x89PNG"

    # read back what the retrain left: one card write a package, and card, report and decision log agree
    assert len(cards) == 2 and len(set(cards)) == 2
    published = load_package(second.package or Path()).card
    check_package(second.package or Path(), require_reference=True)
    holdout = read_manifest(tmp_path / "m2.json").holdout()
    served = [np.asarray(decode(Path(e.path).read_bytes(), INPUT_SPEC)) for e in holdout]
    with Image.open((second.package or Path()) / "reference.png") as reference:  # a photo the heads chose, as served
        assert any(np.array_equal(np.asarray(reference), pixels) for pixels in served)
    decision = read_decisions(tmp_path / "models")[0]  # newest first
    assert published.version == report["version"] == decision["candidate"] == "1.1.0"
    assert published.parent_version == report["parent_version"] == decision["current"]
    assert published.metrics["evaluated_on"] == report["evaluated_on"] == decision["evaluated_on"]
    assert published.metrics["gate"] == report["verdict"] == decision["verdict"]
    assert published.metrics["accuracy"] == report["candidate"]["accuracy"] == decision["candidate_accuracy"]
    assert published.metrics["learning_curve"] == report["learning_curve"]
    assert set(second.timings_s) >= {"embed", "train", "export", "evaluate"}

    # the backbone was quantized once, for both candidates; each int8 graph is it with its head
    assert len(quantized) == 1 and quantized[0].name.startswith("backbone-")
    assert published.metrics["int8_validation_images"] == report["candidate"]["images"]
    assert published.metrics["int8_top1_agreement_on_validation"] >= 0.8  # exact kernels or as written: any CPU

    # the int8 check's answers came from the head on those features, kept from the first retrain
    # (not written again) and made for the new images only; they are what the int8 graph answers
    assert all(path.stat().st_ino == inode for path, inode in features.items())
    entries = read_manifest(tmp_path / "m2.json").holdout()[:INT8_CHECKED]
    now = {path.stem for path in (tmp_path / "cache").rglob("int8-*/*/*.npy")}
    assert now == checked | {e.sha256 for e in entries}
    images = [Path(e.path).read_bytes() for e in entries]
    fp32 = load_model(second.package or Path(), "fp32").top1(images)
    int8 = load_model(second.package or Path(), "int8", as_written=True).top1(images)
    same = sum(a == b for a, b in zip(fp32, int8, strict=True)) / len(images)
    assert published.metrics["int8_top1_agreement_on_validation"] == round(same, 4)


def test_the_gate_keeps_the_current_model_unless_forced(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "base", 6)
    path = manifest(tmp_path, "m.json")
    first = run_retrain(path, tmp_path / "models", None, tmp_path / "cache", SMALL, settings=FAST)
    strict = GateRules(margin=0.5, min_val_per_class=1, min_val_images=3)
    rejected = run_retrain(path, tmp_path / "models", first.package, tmp_path / "cache", strict, settings=FAST)
    assert not rejected.decision.publish and rejected.package is None
    assert "not published" in rejected.decision.reason and not (tmp_path / "models" / rejected.version).exists()
    forced = run_retrain(
        path,
        tmp_path / "models",
        first.package,
        tmp_path / "cache",
        GateRules(margin=0.5, min_val_per_class=1, min_val_images=3, force=True),
        settings=FAST,
    )
    assert forced.decision.publish and "--force" in forced.decision.reason


def test_the_summary_of_a_retrain_judged_on_no_images_names_no_set(tmp_path: Path) -> None:
    """It once printed the hash of an empty set of images as if it named one."""
    decision = GateDecision(False, "not enough to judge, so not published: …", "not enough to judge", False)
    report = RetrainReport("1.0.0", decision, {"images": 0, "accuracy": 0.0}, None, None, tmp_path)
    assert report.summary()[0] == "candidate 1.0.0: no validation images to score it on"
