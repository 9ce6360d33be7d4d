"""A tiny, real ONNX classifier for fast tests: mean colour -> {red, green, blue}.

Built with the onnx helper API (no torch), packaged with the real write_card, loaded by the
real ONNX Runtime. A red image comes out "red": so channel order, scaling and the package
checks are all exercised. ``swap`` permutes the classes, to tell two versions apart.

Like every package the writer makes, it carries its known answer (a red ``reference.png``
and ``reference.json``), computed by the same :func:`~fieldlens_core.model_check.reference_answers`
the package writer uses; ``reference=False`` makes a package written before that existed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fieldlens_core.model import load_model
from fieldlens_core.model_check import reference_answers, write_reference
from fieldlens_core.model_package import LABELS_FILE, ModelCard, read_card, write_card
from tests.helpers.images import solid_png

LABELS = ["red", "green", "blue"]
SIZE = 32
REFERENCE_COLOUR = (230, 40, 30)


def tiny_onnx(path: Path, swap: bool = False, classes: int = 3, size: int = SIZE, batch: int | str = "batch") -> None:
    """The mean-colour graph; ``classes`` other than 3 repeats the colours (a graph that disagrees with its card);
    ``batch`` a number: a graph whose batch axis is fixed."""
    weights = np.eye(3, dtype=np.float32) * 10.0
    if swap:
        weights = weights[:, ::-1].copy()  # red image -> "blue", blue -> "red"
    weights = np.tile(weights, (1, classes // 3 + 1))[:, :classes].copy()
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_tiny_package(
    directory: Path, version: str = "1.0.0", swap: bool = False, reference: bool = True, int8: bool = False
) -> ModelCard:
    """A package as the writer makes one; ``int8`` adds a model.int8.onnx variant (the same graph)."""
    directory.mkdir(parents=True, exist_ok=True)
    tiny_onnx(directory / "model.onnx", swap=swap)
    variants = {"fp32": "model.onnx"}
    if int8:
        tiny_onnx(directory / "model.int8.onnx", swap=swap)
        variants["int8"] = "model.int8.onnx"
    (directory / LABELS_FILE).write_text(json.dumps(LABELS))
    fields = {
        "name": "tiny-colour",
        "version": version,
        "architecture": "mean-colour",
        "input": {"size": SIZE, "resize": SIZE, "mean": [0, 0, 0], "std": [255, 255, 255]},
        "num_classes": 3,
        "variants": variants,
    }
    card = write_card(directory, fields)
    if reference:
        image = solid_png(REFERENCE_COLOUR)
        answers, _ = reference_answers({v: load_model(directory, v) for v in variants}, image, "image/png")
        write_reference(directory, image, answers)
        card = write_card(directory, fields)
    return card


def recard(directory: Path, **changes: object) -> ModelCard:
    """Rewrite the card with ``changes`` and every file hashed again: a tampered package whose hashes agree."""
    fields = read_card(directory).model_dump(exclude={"files"})
    return write_card(directory, {**fields, **changes})
