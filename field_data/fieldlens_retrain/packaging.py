"""PyTorch -> ONNX (fp32) -> static int8 -> a model package, checked against torch on the way.

One way to write a model package: export, quantize, label, check against torch, card, publish.

Both the embedded default model and every retrained candidate go through :func:`write_package`,
so a package always has the same files, the same checks and the same card fields. The package
is assembled in a staging directory beside ``out_dir`` and renamed into place: a crash leaves
the old package (or none), never half of a new one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_core.errors import TrainingError
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model import LoadedModel, load_model
from fieldlens_core.model_package import LABELS_FILE, InputSpec, ModelCard, write_card

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(model: Any, path: Path, size: int) -> None:
    """One self-contained .onnx file with a dynamic batch axis (the legacy exporter, dynamo=False)."""
    import torch

    example = torch.zeros(1, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's notes on constant folding and deprecation
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def onnx_logits(path: Path, tensors: Sequence[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: t})[0] for t in tensors])


def torch_logits(model: Any, tensors: Sequence[np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(t)).numpy() for t in tensors])


class _Calibration:
    """Feeds calibration tensors to ONNX Runtime's static quantizer, one at a time."""

    def __init__(self, tensors: Sequence[np.ndarray]) -> None:
        self._items: Iterator[np.ndarray] = iter(tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {INPUT_NAME: item}

    def rewind(self) -> None:  # part of CalibrationDataReader's interface in newer ORT
        return None


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Sequence[np.ndarray]) -> None:
    """Static int8 (QDQ, uint8 activations and per-channel uint8 weights) calibrated on real images.

    Why U8U8 and not ONNX Runtime's default U8S8: on x86 CPUs with AVX2 but without VNNI, the
    U8S8 kernels multiply-add pairs with VPMADDUBSW into int16, which saturates. The same model
    then answers differently per CPU (measured on an AVX2-only EPYC: 61% top-1 agreement with
    fp32, against 78% for the same graph computed without saturation; the coffee photo fell from
    espresso 0.95 to 0.41). Signed activations do not help (MLAS shifts them to uint8), and 7-bit
    weights (reduce_range) cost too much accuracy (86% against 95% on confidently classified
    views). U8U8 has no saturating path on any CPU ONNX Runtime supports. The price, measured on
    that x86 machine, is speed: its QDQ graph is not fused into int8 kernels there. The README's
    "int8" section has the figures and the command.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs one INFO line per rescaled bias to the root logger
    biases = _CountBiasWarnings()
    root.addFilter(biases)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(int8_path),
                Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QUInt8,
            )
    finally:
        root.removeFilter(biases)
        root.setLevel(level)
    if biases.count:
        log.info("quantizer: %d conv biases did not fit int32 at their scale and were clipped", biases.count)


class _CountBiasWarnings(logging.Filter):
    """Counts the quantizer's per-layer 'bias exceeds the range of a int32' warnings and keeps them
    out of the log: one line with the count says the same. The agreement measured on held-out
    views (default_model.int8_agreement) is what tells whether it matters."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "exceeds the range of a int32" in record.getMessage():
            self.count += 1
            return False
        return True


FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
VARIANTS = {"fp32": FP32_FILE, "int8": INT8_FILE}
EXPORT_TOLERANCE = 1e-3
"""Largest logit difference allowed between torch and the exported fp32 graph."""
EXPORT_CHECKED = 8
"""Calibration inputs the export check runs through both (variety matters, not count)."""

Measure = Callable[[Callable[[str], LoadedModel]], dict[str, Any]]
"""Extra card metrics, from the staged package loaded as a variant (``"fp32"`` or ``"int8"``)."""


def write_package(
    out_dir: Path,
    network: Any,
    labels: list[str],
    spec: InputSpec,
    calibration: Sequence[np.ndarray],
    card: dict[str, Any],
    measure: Measure | None = None,
) -> ModelCard:
    """Write ``network`` (a torch module in eval mode) as a package at ``out_dir``, replacing it.

    ``card`` holds the fields only the caller knows (name, version, architecture, training);
    this function adds the input, classes, variants, creation time and the export check to its
    metrics. TrainingError when the exported graph disagrees with torch.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    try:
        export_onnx(network, staging / FP32_FILE, spec.size)
        quantize_int8(staging / FP32_FILE, staging / INT8_FILE, calibration)
        (staging / LABELS_FILE).write_text(json.dumps(labels))
        checked = list(calibration[:: max(1, len(calibration) // EXPORT_CHECKED)][:EXPORT_CHECKED])
        difference = float(np.abs(torch_logits(network, checked) - onnx_logits(staging / FP32_FILE, checked)).max())
        if difference > EXPORT_TOLERANCE:
            raise TrainingError(f"the ONNX export disagrees with torch by {difference} (at most {EXPORT_TOLERANCE})")
        fields = {
            **card,
            "input": spec.model_dump(),
            "num_classes": len(labels),
            "variants": VARIANTS,
            "created": utc_timestamp(),
            "metrics": {**card.get("metrics", {}), "fp32_max_abs_logit_diff_vs_torch": difference},
        }
        written = write_card(staging, fields)
        if measure is not None:
            fields["metrics"].update(measure(lambda variant: load_model(staging, variant)))
            written = write_card(staging, fields)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written
