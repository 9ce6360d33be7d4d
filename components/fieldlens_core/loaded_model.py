"""A model package loaded into ONNX Runtime: the one place an image becomes predictions.

preprocess (the card's InputSpec, :mod:`fieldlens_core.preprocess`) -> predict (the session)
-> postprocess (softmax, top k, here).
The inference service, the retrain gate and the default model's checks all classify through
:meth:`LoadedModel.classify` or :meth:`LoadedModel.top1`, so what is measured offline is
what the device runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model_package import InputSpec, ModelPackage, load_package
from fieldlens_core.preprocess import image_tensor, preprocess


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    exp = np.exp(shifted, dtype=np.float64)
    result: np.ndarray = exp / exp.sum()
    return result


def top_k(logits: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    probabilities = softmax(np.asarray(logits, dtype=np.float64).reshape(-1))
    k = max(1, min(k, len(labels)))
    best = np.argpartition(-probabilities, k - 1)[:k]
    best = best[np.argsort(-probabilities[best], kind="stable")]
    return [{"label": labels[i], "confidence": round(float(probabilities[i]), 6)} for i in best]


@dataclass(frozen=True)
class Classification:
    predictions: list[dict[str, Any]]
    timing_ms: dict[str, float]


@dataclass(frozen=True)
class LoadedModel:
    package: ModelPackage
    session: ort.InferenceSession
    input_name: str

    @property
    def info(self) -> dict[str, str]:
        return {"name": self.package.card.name, "version": self.package.card.version, "sha256": self.package.sha256}

    max_batch: int = 64  # 1 when the graph's batch axis is fixed

    @property
    def spec(self) -> InputSpec:
        return self.package.card.input

    @property
    def labels(self) -> list[str]:
        return self.package.labels

    def tensor(self, image: bytes | Image.Image, content_type: str | None = None) -> np.ndarray:
        """The model's input for an encoded image (decoded as ``content_type`` only) or a decoded one."""
        if isinstance(image, Image.Image):
            return image_tensor(image, self.spec)
        return preprocess(image, self.spec, content_type)

    def classify(
        self,
        image: bytes | Image.Image,
        k: int,
        content_type: str | None = None,
        predict: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Classification:
        """preprocess -> predict -> postprocess, each timed: what the service, the gate and the
        default model's checks all run. ``predict`` replaces the plain session call (the
        service passes its batcher). BadImageError for an image that does not decode."""
        started = time.perf_counter()
        tensor = self.tensor(image, content_type)
        preprocessed = time.perf_counter()
        logits = (predict or self.predict)(tensor)
        predicted = time.perf_counter()
        predictions = top_k(logits, self.labels, k)
        finished = time.perf_counter()
        return Classification(
            predictions,
            {
                "preprocess": round((preprocessed - started) * 1000, 3),
                "inference": round((predicted - preprocessed) * 1000, 3),
                "postprocess": round((finished - predicted) * 1000, 3),
            },
        )

    def top1(self, images: Sequence[bytes | Image.Image], batch: int = 16) -> list[str]:
        """The top-1 label of each image, run in batches (the gate's evaluation)."""
        labels: list[str] = []
        for start in range(0, len(images), batch):
            tensors = np.concatenate([self.tensor(image) for image in images[start : start + batch]])
            labels += [self.labels[int(i)] for i in self.predict_batch(tensors).argmax(axis=1)]
        return labels

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        """Logits of one image."""
        logits: np.ndarray = self.predict_batch(tensor)[0]
        return logits

    def predict_batch(self, tensor: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {self.input_name: tensor})
        logits: np.ndarray = outputs[0]
        return logits


def load_model(model_dir: Path, variant: str, threads: int = 0, spinning: bool = False) -> LoadedModel:
    package = load_package(model_dir, variant)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:  # idle ORT threads otherwise spin, taking the cores the decoder and the classifier need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(package.model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt graphs
        raise ModelPackageError(f"ONNX Runtime cannot load {package.model_path}: {exc}") from None
    input_name = session.get_inputs()[0].name
    spec = package.card.input
    probe = np.zeros((1, 3, spec.size, spec.size), dtype=np.float32)
    try:
        classes = session.run(None, {input_name: probe})[0].shape[-1]  # also warms the session up
    except Exception as exc:
        raise ModelPackageError(f"model {package.model_path} does not run on a {spec.size}px input: {exc}") from None
    if classes != len(package.labels):
        raise ModelPackageError(f"model outputs {classes} classes but labels.json has {len(package.labels)}")
    batch_axis = session.get_inputs()[0].shape[0]
    return LoadedModel(package, session, input_name, max_batch=batch_axis if isinstance(batch_axis, int) else 64)
