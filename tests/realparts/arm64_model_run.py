"""Runs inside the arm64 root (see arm64_root.py), as the CPU that QEMU_CPU names: the device's model
check on a package, then its graphs on the given views. Writes what it found for the test.

    python arm64_model_run.py PACKAGE VIEWS.npy FP32_VIEWS OUT_DIR

OUT_DIR gets ``int8.npy`` (the logits of every view), ``fp32.npy`` (of the first FP32_VIEWS: fp32
is 4-8 times slower than int8 under emulation, and a few views show its rounding) and
``result.json`` (the machine, what :func:`~fieldlens_core.int8_kernels.int8_kernels` says of it,
the reference answers the check accepted, and the seconds per view under emulation, which say
nothing about a Pi).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fieldlens_core.int8_kernels import int8_kernels
from fieldlens_core.model_check import check_package, top_two


def main(argv: list[str]) -> int:
    package, views_file, fp32_views, out = Path(argv[0]), Path(argv[1]), int(argv[2]), Path(argv[3])
    views = np.load(views_file)
    counts = {"fp32": fp32_views, "int8": len(views)}
    # What the fieldlens.Model component's Startup runs on a device: every graph, hashes, the known answer.
    checked = check_package(package, require_reference=True, threads=1)
    seconds: dict[str, float] = {}
    reference: dict[str, object] = {}
    image = (checked.directory / checked.reference.image).read_bytes() if checked.reference else b""
    for variant, model in checked.models.items():
        started = time.perf_counter()
        logits = model.logits([view[None] for view in views[: counts[variant]]], batch=8)
        seconds[variant] = round((time.perf_counter() - started) / counts[variant], 3)
        np.save(out / f"{variant}.npy", logits)
        if checked.reference:
            label, confidence, _ = top_two(model, image, checked.reference.content_type)
            reference[variant] = {"label": label, "confidence": confidence}
    kernels = int8_kernels()
    result = {
        "machine": platform.machine(),
        "int8_exact": kernels.exact,
        "int8_reason": kernels.reason,
        "reference": reference,
        "seconds_per_view": seconds,
    }
    (out / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
