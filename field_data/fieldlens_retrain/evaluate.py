"""Evaluation: candidate and current model scored on the same held-out field images.

Both models are run the way the device runs them (their ONNX file, the service's
preprocessing), each at most once per image: :class:`PredictionCache` keeps their answers. A
model that does not know an image's label gets it wrong. What is done with the scores is the
gate's (:mod:`fieldlens_retrain.gate`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_core.atomic import atomic_write
from fieldlens_core.model import LoadedModel, load_model
from fieldlens_core.model_package import LABELS_FILE, ModelPackage

OTHER = "(other)"
"""The confusion matrix's column for predictions outside the classes in play."""
CELL_TEXT_UP_TO = 40
"""Classes up to which the confusion picture numbers its cells."""


def predict_files(model_dir: Path, paths: Sequence[Path], variant: str = "fp32") -> list[str]:
    return load_model(model_dir, variant).top1([p.read_bytes() for p in paths])


def as_loaded(model: ModelPackage | LoadedModel) -> LoadedModel:
    """``model`` ready to run: a package is loaded (its fp32 graph), a loaded model is itself."""
    return model if isinstance(model, LoadedModel) else load_model(model, "fp32")


class PredictionCache:
    """Top-1 answers by model and image (sha256), one JSON file per model under ``cache_dir``.

    The candidate a retrain evaluates is the current model the next retrain evaluates, on nearly
    the same validation images: without this, a retrain with 50 new images ran the current model
    over every validation image again (about a third of its evaluation time on the bench). A
    model is keyed by what decides its answers: its fp32 graph, its labels and its input spec (not
    the reference answer, which the packager adds after the candidate is evaluated).
    """

    def __init__(self, cache_dir: Path) -> None:
        self._dir = cache_dir / "predictions"
        self.computed = 0
        self.reused = 0

    def top1(self, model: ModelPackage | LoadedModel, images: Sequence[tuple[str, Path]]) -> list[str]:
        """The fp32 variant's top-1 label for each (sha256, path), running the model only on new ones
        (a package is loaded only if there are any)."""
        card = (model.package if isinstance(model, LoadedModel) else model).card
        decides = [card.files[card.variants["fp32"]], card.files[LABELS_FILE], card.input.model_dump()]
        key = hashlib.sha256(json.dumps(decides, sort_keys=True).encode()).hexdigest()
        path = self._dir / f"{key[:32]}.json"
        try:
            known: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: a cache, so start again
            known = {}
        missing = sorted({sha for sha, _ in images if sha not in known})
        if missing:
            where = dict(images)
            answers = as_loaded(model).top1([where[sha].read_bytes() for sha in missing])
            known.update(zip(missing, answers, strict=True))
            self._dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(known).encode(), durable=False)
        self.computed += len(missing)
        self.reused += len(images) - len(missing)
        return [known[sha] for sha, _ in images]


def score(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: truth).

    The tables cover ``labels``, the classes in play, whatever the model predicts: a prediction
    outside them (the ImageNet model's "coffee mug" for a person's "mug") is counted in one extra
    column, ``OTHER``, so memory and the picture stay bounded by the classes in play, not by the
    model's class count."""
    index = {label: i for i, label in enumerate(labels)}
    outside = any(guess not in index for guess in predicted)
    columns = [*labels, OTHER] if outside else list(labels)
    matrix = np.zeros((len(labels), len(columns)), dtype=int)
    for actual, guess in zip(truth, predicted, strict=True):
        if actual in index:
            matrix[index[actual], index.get(guess, len(labels))] += 1
    correct = sum(1 for actual, guess in zip(truth, predicted, strict=True) if actual == guess)
    per_class = {}
    for label, i in index.items():
        predicted_as = int(matrix[:, i].sum())
        support = int(matrix[i].sum())
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
        "columns": columns,
        "confusion": matrix.tolist(),
    }


def confusion_png(metrics: dict[str, Any], path: Path, title: str) -> None:
    """The confusion matrix as a picture: rows are the truth, columns the prediction.

    Readable at any class count: the figure grows with the classes up to a cap, and past
    ``CELL_TEXT_UP_TO`` classes the cells are shaded, not numbered."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine or a device
    from matplotlib import pyplot as plt

    labels, matrix = metrics["labels"], np.asarray(metrics["confusion"])
    columns = metrics.get("columns", labels)
    side = min(24.0, max(4.0, 0.45 * len(columns) + 2))
    font = 8 if len(columns) <= CELL_TEXT_UP_TO else max(3, int(400 / len(columns)))
    figure, axes = plt.subplots(figsize=(side + 1, side))
    try:
        axes.imshow(matrix, cmap="Blues", aspect="auto")
        axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=font)
        axes.set_yticks(range(len(labels)), labels, fontsize=font)
        if len(columns) <= CELL_TEXT_UP_TO:
            peak = max(1, int(matrix.max()))
            for (row, column), value in np.ndenumerate(matrix):
                colour = "white" if value > peak / 2 else "black"
                axes.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=8)
        axes.set_title(f"{title}: accuracy {metrics['accuracy']:.1%} on {metrics['images']} images")
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
