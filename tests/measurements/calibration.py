"""Calibration of the retrain's head: ECE before and after temperature scaling, and the operating point.

    .venv/bin/python -m tests.measurements.calibration [--cache DIR]

The retrain's head (fieldlens_retrain.train: the blend at the share it chooses) trained on Debian's
dataset-fashion-mnist as few_labels.py builds it (field: the 300 studio photos plus k field photos a
class; studio: k studio photos a class), then calibrated as a retrain calibrates it
(fieldlens_retrain.calibration.operating_point) on a validation half of the held-out photos, and
measured on that half (what the card reports) and on the other half, which the fit never saw.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from fieldlens_retrain.calibration import ece_floor, expected_calibration_error, operating_point, softmax
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.train import DEFAULT_SETTINGS, head_module, linear_share_for, prototypes, train_head
from tests.measurements.few_labels import labelled_sets

PER_CLASS = (10, 30, 60)
SEEDS = (0, 1, 2)


def measure(features: np.ndarray, targets: np.ndarray, held: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    flat, repeated = features.reshape(-1, features.shape[-1]), np.repeat(targets, features.shape[1])
    weight, bias = train_head(flat, repeated, 10, DEFAULT_SETTINGS)
    share, _ = linear_share_for(features, targets, 10, DEFAULT_SETTINGS)
    head = head_module(weight, bias, prototypes(flat, repeated, 10), DEFAULT_SETTINGS.prototype_scale, share)
    with torch.no_grad():
        outputs = head(torch.from_numpy(np.ascontiguousarray(held[:, 0]))).numpy()
    val, test = np.arange(len(truth)) % 2 == 0, np.arange(len(truth)) % 2 == 1
    fitted = operating_point(outputs[val], truth[val], "measurement")
    assert fitted is not None
    temperature, point = fitted
    assert point.calibration is not None
    return {
        "accuracy": float((outputs[test].argmax(1) == truth[test]).mean()),
        "T": temperature,
        "val_before": point.calibration.ece_before,
        "val_after": point.calibration.ece_after,
        "val_cross": point.calibration.ece_after_cross_fitted or float("nan"),
        "test_before": expected_calibration_error(softmax(outputs[test]), truth[test]),
        "test_after": expected_calibration_error(softmax(outputs[test], temperature), truth[test]),
        "floor": point.calibration.ece_floor or float("nan"),
        "test_floor": ece_floor(softmax(outputs[test], temperature)),
        "threshold": point.event_threshold,
        "high": point.confidence_band.high,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path("fieldlens-data/few-labels-cache"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = labelled_sets(EmbeddingCache(args.cache))
    base, base_y, field, field_y, test, test_y, sets = (
        data.base,
        data.base_y,
        data.field,
        data.field_y,
        data.test,
        data.test_y,
        data.sets,
    )
    print("| set | per class | accuracy | T | ECE val before | after | cross-fitted | floor | ECE test before | after "
          "| floor | event threshold | band high |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k in PER_CLASS:
        for set_name in ("field", "studio"):
            for seed in SEEDS:
                pick = np.random.default_rng(seed)
                if set_name == "field":
                    chosen = np.concatenate([pick.choice(np.flatnonzero(field_y == c), k, False) for c in range(10)])
                    features = np.concatenate([field[chosen], base])
                    targets = np.concatenate([field_y[chosen], base_y])
                    r = measure(features, targets, test, test_y)
                else:
                    pool_x, pool_y = sets["studio-pool"]
                    chosen = np.concatenate([pick.choice(np.flatnonzero(pool_y == c), k, False) for c in range(10)])
                    r = measure(pool_x[chosen], pool_y[chosen], *sets["studio-held"])
                print(
                    f"| {set_name} | {k} (seed {seed}) | {r['accuracy']:.1%} | {r['T']:.3g} | {r['val_before']:.3f} | "
                    f"{r['val_after']:.3f} | {r['val_cross']:.3f} | {r['floor']:.3f} | {r['test_before']:.3f} | "
                    f"{r['test_after']:.3f} | {r['test_floor']:.3f} | "
                    f"{r['threshold']:g} | {r['high']:g} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
