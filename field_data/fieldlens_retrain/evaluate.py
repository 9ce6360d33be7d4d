"""Evaluation: candidate and current model scored on the same held-out field images.

Both models give the answers the device would (their ONNX file, the service's preprocessing),
each at most once per image: :class:`PredictionCache` keeps their answers. A local candidate on
the frozen backbone gives most of its own without running the network (:class:`HeadAnswers`).
A model that does not know an image's label gets it wrong. What is done with the scores is the
gate's (:mod:`fieldlens_retrain.gate`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fieldlens_core.atomic import atomic_write
from fieldlens_core.errors import TrainingError
from fieldlens_core.model import MAX_DECODED_PIXELS, LoadedModel, load_model
from fieldlens_core.model_package import LABELS_FILE, InputSpec, ModelPackage

log = logging.getLogger(__name__)

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
        path, known = self._known(model)
        missing = sorted({sha for sha, _ in images if sha not in known})
        if missing:
            where = dict(images)
            answers = as_loaded(model).top1([where[sha].read_bytes() for sha in missing])
            known.update(zip(missing, answers, strict=True))
            self._store(path, known)
        self.computed += len(missing)
        self.reused += len(images) - len(missing)
        return [known[sha] for sha, _ in images]

    def record(self, model: ModelPackage | LoadedModel, shas: Sequence[str], answers: Sequence[str]) -> None:
        """Keep ``answers`` as ``model``'s for the images ``shas``: a candidate's, found without running
        its graph on each image (:class:`HeadAnswers`), so that the next retrain, where it is the
        current model, runs it on none of them."""
        path, known = self._known(model)
        known.update(zip(shas, answers, strict=True))
        self._store(path, known)

    def _known(self, model: ModelPackage | LoadedModel) -> tuple[Path, dict[str, str]]:
        card = (model.package if isinstance(model, LoadedModel) else model).card
        decides = [card.files[card.variants["fp32"]], card.files[LABELS_FILE], card.input.model_dump()]
        key = hashlib.sha256(json.dumps(decides, sort_keys=True).encode()).hexdigest()
        path = self._dir / f"{key[:32]}.json"
        try:
            known: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: a cache, so start again
            known = {}
        return path, known

    def _store(self, path: Path, known: dict[str, str]) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(known).encode(), durable=False)


TIE_MARGIN = 0.05
"""Top-1 lead (in the head's output, the graph's logits) under which a validation image's answer is
taken from the candidate's fp32 graph, not from its head on the cached embedding: the embedding is
stored in float16, and the graph computes in float32, so a near tie could go the other way there."""


@dataclass(frozen=True)
class HeadAnswers:
    """A local candidate's top-1 on the validation images, from its head on their cached plain-view
    embeddings, and which images its fp32 graph must answer itself (``unsure``).

    A frozen candidate's fp32 graph is the backbone graph the embeddings came from with this head
    after it (packaging.stitch_head), so the head on an image's embedding is the graph on the image
    wherever the service decodes the image to the pixels the embedding was made from and the answer
    does not hang on float16 rounding. Running the graph over every validation image again cost a
    fifth of an incremental retrain (1.1 s for 190 images on two cores); the images it must still
    see are few or none. Its int8 graph is the shared int8 backbone with the same head after it, so
    its int8 answers come the same way, from the head on the int8 backbone's cached features
    (EmbeddingCache.int8_features; pipeline.int8_agreement).

    That the head stands in for the graph is checked, not assumed: the graph also runs on one image
    the head is sure of (``checked``), and its logits must be the head's within half the tie margin."""

    top1: list[str]
    unsure: list[int]
    outputs: np.ndarray
    """The head's (images, classes) outputs: the graph's logits, as far as the features are the graph's."""

    @property
    def checked(self) -> int | None:
        """The first sure (and as-served) image: the graph runs on it to check the head against it."""
        unsure = set(self.unsure)
        return next((i for i in range(len(self.top1)) if i not in unsure), None)

    def resolve(self, graph: LoadedModel, paths: Sequence[Path]) -> list[str]:
        """The top-1 of every image (``paths``, in order), ``graph`` (the candidate's graph of the
        variant these answers stand in for) run on the unsure ones and the checked one. TrainingError
        where the graph's logits on the checked image are not the head's."""
        if len(paths) != len(self.top1):
            raise ValueError(f"answers for {len(self.top1)} images, asked for {len(paths)}")
        answers = list(self.top1)
        checked = self.checked
        run = sorted({*self.unsure, *([] if checked is None else [checked])})
        if not run:
            return answers
        logits = graph.logits([graph.tensor(paths[i].read_bytes()) for i in run])
        for i, row in zip(run, logits, strict=True):
            answers[i] = graph.labels[int(row.argmax())]
        if checked is not None:
            apart = float(np.abs(logits[run.index(checked)] - self.outputs[checked]).max())
            log.info("the %s graph checked on one image: its logits %.2g from its head's", graph.package.variant, apart)
            if apart > TIE_MARGIN / 2:
                raise TrainingError(
                    f"the candidate's {graph.package.variant} graph and its head on the cached features give "
                    f"logits {apart:.3f} apart on {paths[checked].name}: the cache is not this graph's",
                    "Retrain with an empty --cache folder; if it happens again, report it with the model card",
                )
        return answers


def head_answers(outputs: np.ndarray, labels: Sequence[str], as_served: Sequence[bool]) -> HeadAnswers:
    """HeadAnswers from the head's (images, classes) ``outputs`` on the cached features of some images:
    unsure where the top-1 leads by under :data:`TIE_MARGIN` or where the features were not made
    from the pixels the service decodes (``as_served[i]`` false; :func:`decoded_as_embedded`)."""
    ranked = np.sort(outputs, axis=1)
    leads = ranked[:, -1] - ranked[:, -2] if outputs.shape[1] > 1 else np.full(len(outputs), np.inf)
    unsure = [i for i, served in enumerate(as_served) if leads[i] < TIE_MARGIN or not served]
    return HeadAnswers([labels[int(i)] for i in outputs.argmax(axis=1)], unsure, outputs)


def most_decided(answers: Sequence[HeadAnswers]) -> int | None:
    """The image every variant's head answers most decidedly (the widest of its smallest top-1 over
    top-2 confidence gaps), among those every one covers and none is unsure of; None when none is.

    A frozen candidate's package takes it as its reference image (packaging.add_reference): its
    head's answers are its graphs' (HeadAnswers), so one image, not eight, is run through each graph
    as written (0.5 s of an incremental retrain on an AVX2 CPU, where int8 as written runs op by op)."""
    covered = min((len(one.top1) for one in answers), default=0)
    if covered == 0 or answers[0].outputs.shape[1] < 2:
        return None
    gaps = []
    for one in answers:
        logits = one.outputs[:covered]
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        top = np.sort(probabilities, axis=1)
        gaps.append(top[:, -1] - top[:, -2])
    gap = np.min(gaps, axis=0)
    gap[[i for one in answers for i in one.unsure if i < covered]] = -1.0
    best = int(gap.argmax())
    return best if gap[best] >= 0 else None


INT8_CHECKED = 64
"""Validation images the candidate's int8 answers are compared with its fp32 answers on (at most)."""


def decoded_as_embedded(path: Path, spec: InputSpec) -> bool:
    """Whether the service's decode of ``path`` (fieldlens_core.model.decode: JPEG or PNG only, a JPEG
    drafted at a reduced scale where it is twice the model's resize or more) gives the pixels the
    embedding pass decoded (the whole image, Image.open): a small JPEG or a PNG the service decodes at
    all. Reads the header only."""
    try:
        with Image.open(path) as image:
            if image.format not in ("JPEG", "PNG") or image.width * image.height > MAX_DECODED_PIXELS:
                return False
            size = image.size
            image.draft("RGB", (spec.resize, spec.resize))
            return image.size == size
    except (OSError, SyntaxError, ValueError):
        return False


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
    from matplotlib.font_manager import FontProperties

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
            cell_font = FontProperties(size=8)  # one for every cell: each looking up its own took 0.1 s a picture
            for (row, column), value in np.ndenumerate(matrix):
                colour = "white" if value > peak / 2 else "black"
                cell = axes.text(
                    column, row, str(value), ha="center", va="center", color=colour, fontproperties=cell_font
                )
                cell.set_in_layout(False)  # inside the axes: the layout need not measure it
        axes.set_title(f"{title}: accuracy {metrics['accuracy']:.1%} on {metrics['images']} images")
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        figure.tight_layout()
        figure.set_layout_engine(None)  # laid out: savefig need not draw it once more to lay it out
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
