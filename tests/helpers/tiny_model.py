"""A tiny, real ONNX classifier for fast tests: mean colour -> {red, green, blue}.

Built with the onnx helper API (no torch), packaged with the real write_card, loaded by the
real ONNX Runtime. A red image comes out "red": so channel order, scaling and the package
checks are all exercised. ``swap`` permutes the classes, to tell two versions apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fieldlens_core.model_package import LABELS_FILE, ModelCard, write_card

LABELS = ["red", "green", "blue"]
SIZE = 32


def tiny_onnx(path: Path, swap: bool = False) -> None:
    weights = np.eye(3, dtype=np.float32) * 10.0
    if swap:
        weights = weights[:, ::-1].copy()  # red image -> "blue", blue -> "red"
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_tiny_package(directory: Path, version: str = "1.0.0", swap: bool = False) -> ModelCard:
    directory.mkdir(parents=True, exist_ok=True)
    tiny_onnx(directory / "model.onnx", swap=swap)
    (directory / LABELS_FILE).write_text(json.dumps(LABELS))
    return write_card(
        directory,
        {
            "name": "tiny-colour",
            "version": version,
            "architecture": "mean-colour",
            "input": {"size": SIZE, "resize": SIZE, "mean": [0, 0, 0], "std": [255, 255, 255]},
            "num_classes": 3,
            "variants": {"fp32": "model.onnx"},
        },
    )
