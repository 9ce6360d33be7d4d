"""One way to write a model package: export, quantize, label, check against torch, card, publish.

Both the embedded default model and every retrained candidate go through :func:`write_package`,
so a package always has the same files, the same checks and the same card fields. The package
is assembled in a staging directory beside ``out_dir`` and renamed into place: a crash leaves
the old package (or none), never half of a new one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_core.errors import TrainingError
from fieldlens_core.loaded_model import LoadedModel, load_model
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model_package import LABELS_FILE, InputSpec, ModelCard, write_card
from fieldlens_retrain.onnx_export import export_onnx, onnx_logits, quantize_int8, torch_logits

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
