"""What partial fine-tuning costs a retrain: `fieldlens bench`'s cold retrain set, by fine_tune setting.

    .venv/bin/python -m tests.measurements.retrain_time [--images-per-class 100]

The bench's cold set (Fashion-MNIST t10k photos under field conditions, 100 a class, seed 7/11),
retrained through fieldlens_retrain.pipeline.run_retrain as `fieldlens retrain` does:

1. cold, empty cache, ``fine_tune="never"``: today's retrain plus the activations the embedding
   pass now writes beside the embeddings (one backbone pass for both);
2. the same embedding pass into an empty cache that keeps no activations (EmbeddingCache
   ``activations=False``): today's embedding, to tell the activations' share of 1.;
3. warm (nothing new to embed), ``never``, ``auto`` and ``always``: each stage's seconds;
4. warm, ``auto`` with a gain no fine-tuning reaches: what the choice costs when it says no.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from fieldlens_core.model_package import load_package
from fieldlens_retrain.dataset import build_manifest, write_manifest
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.gate import GateRules
from fieldlens_retrain.pipeline import run_retrain
from fieldlens_retrain.train import DEFAULT_SETTINGS
from fieldlens_samples import fashion
from fieldlens_samples.scenario import Split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images-per-class", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(7)
    test = Split.load("t10k")
    first = fashion.pick(test.labels, args.images_per_class, rng)
    with tempfile.TemporaryDirectory(prefix="fl-fine-tune-time-") as scratch:
        work = Path(scratch)
        truth = fashion.write_field(work / "photos", test.images, test.labels, first, seed=11)
        for name, label in truth.items():
            (work / "labelled" / label).mkdir(parents=True, exist_ok=True)
            (work / "labelled" / label / name).write_bytes((work / "photos" / name).read_bytes())
        manifest = build_manifest(None, {}, work / "labelled", None)
        manifest.entries = [e.model_copy(update={"source": "field"}) for e in manifest.entries]
        manifest.sha256 = manifest.digest()
        write_manifest(manifest, work / "m.json")
        rows = []
        runs = (("cold", "never", 0.01), ("warm", "never", 0.01), ("warm", "auto", 0.01), ("warm", "always", 0.01))
        for label, fine_tune, gain in (*runs, ("warm, not chosen (min gain 100 points)", "auto", 1.0)):
            settings = dataclasses.replace(DEFAULT_SETTINGS, fine_tune=fine_tune, fine_tune_min_gain=gain)  # type: ignore[arg-type]
            started = time.perf_counter()
            report = run_retrain(
                work / "m.json", work / "models", None, work / "cache", GateRules(force=True), settings=settings
            )
            seconds = time.perf_counter() - started
            metrics = load_package(report.package or Path()).card.metrics
            rows.append(
                {
                    "run": f"{label}, fine_tune {fine_tune}",
                    "seconds": round(seconds, 1),
                    "embedded": report.embedded,
                    "accuracy": report.candidate["accuracy"],
                    "int8_agreement": metrics.get("int8_top1_agreement_on_validation"),
                    "fine_tune": metrics.get("fine_tune"),
                    "stages": {k: round(v, 1) for k, v in report.timings_s.items()},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        plain = EmbeddingCache(work / "plain-cache", activations=False)
        items = [(hashlib.sha256(Path(e.path).read_bytes()).hexdigest(), Path(e.path)) for e in manifest.entries]
        started = time.perf_counter()
        plain.embed(items, progress=False)
        print(
            json.dumps(
                {"run": "embedding only, no activations kept", "seconds": round(time.perf_counter() - started, 1)}
            )
        )


if __name__ == "__main__":
    main()
