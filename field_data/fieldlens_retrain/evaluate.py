"""Evaluation and the publish gate: candidate and current model on the same held-out field images.

Both models are run the way the device runs them (their ONNX file, the service's
preprocessing). A model that does not know an image's label gets it wrong. The candidate is
published only if its accuracy beats the current model's by ``margin``; ``force`` publishes
anyway, and the report says which and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fieldlens_inference.model_manager import load_model
from fieldlens_inference.preprocess import preprocess

BATCH = 16


def predict_files(model_dir: Path, paths: Sequence[Path], variant: str = "fp32") -> list[str]:
    model = load_model(model_dir, variant)
    spec, labels = model.package.card.input, model.package.labels
    predicted: list[str] = []
    for start in range(0, len(paths), BATCH):
        batch = np.concatenate([preprocess(p.read_bytes(), spec) for p in paths[start : start + BATCH]])
        predicted += [labels[int(i)] for i in model.predict_batch(batch).argmax(axis=1)]
    return predicted


def score(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: truth)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for actual, guess in zip(truth, predicted, strict=True):
        if actual in index and guess in index:
            matrix[index[actual], index[guess]] += 1
    correct = sum(1 for actual, guess in zip(truth, predicted, strict=True) if actual == guess)
    per_class = {}
    for label, i in index.items():
        predicted_as = int(matrix[:, i].sum())
        support = sum(1 for actual in truth if actual == label)
        per_class[label] = {
            "precision": round(float(matrix[i, i]) / predicted_as, 4) if predicted_as else 0.0,
            "recall": round(float(matrix[i, i]) / support, 4) if support else 0.0,
            "support": support,
        }
    return {
        "accuracy": round(correct / len(truth), 4) if truth else 0.0,
        "images": len(truth),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": matrix.tolist(),
    }


def confusion_png(metrics: dict[str, Any], path: Path, title: str) -> None:
    """The confusion matrix as a picture: rows are the truth, columns the prediction."""
    labels, matrix = metrics["labels"], np.asarray(metrics["confusion"])
    cell, margin = 34, 150
    size = margin + cell * len(labels)
    image = Image.new("RGB", (size + 10, size + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), f"{title}: accuracy {metrics['accuracy']:.1%} on {metrics['images']} images", fill="black")
    peak = max(1, int(matrix.max()))
    for row, label in enumerate(labels):
        draw.text((6, 40 + margin + row * cell + 10), label[:22], fill="black")
        draw.text((margin + row * cell + 2, 40 + margin - 14 - (row % 4) * 24), label[:10], fill="black")
        for column in range(len(labels)):
            value = int(matrix[row, column])
            shade = 255 - int(200 * value / peak)
            box = (margin + column * cell, 40 + margin + row * cell)
            colour = (shade, shade, 255) if row == column else (255, shade, shade)
            draw.rectangle([box, (box[0] + cell - 2, box[1] + cell - 2)], fill=colour)
            draw.text((box[0] + 6, box[1] + 10), str(value), fill="black")
    image.save(path)


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str


def gate(candidate: float, current: float | None, margin: float, force: bool) -> GateDecision:
    if current is None:
        return GateDecision(True, f"no current model to compare with; candidate accuracy {candidate:.1%}")
    verdict = f"candidate {candidate:.1%} vs current {current:.1%} (margin {margin:.1%})"
    if candidate >= current + margin:
        return GateDecision(True, f"published: {verdict}")
    if force:
        return GateDecision(True, f"published by --force although it does not beat the current model: {verdict}")
    return GateDecision(False, f"not published: {verdict}")
