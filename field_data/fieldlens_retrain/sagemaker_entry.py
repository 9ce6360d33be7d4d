"""The training job's entry point inside AWS's PyTorch framework image (`sagemaker_program`).

SageMaker puts each input channel under /opt/ml/input/data: ``training`` (the manifest, and the
images that were local files, by sha256) and, for a manifest built in the bucket, ``field`` (the
images the ManifestFile lists, copied from where the devices put them); the manifest's paths are
relative to that directory. It uploads whatever is in /opt/ml/model as model.tar.gz when the
script exits: here, a complete model package.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from fieldlens_retrain.dataset import Manifest
from fieldlens_retrain.embeddings import EmbeddingCache
from fieldlens_retrain.train import TrainSettings, retrain


def job_manifest(training_channel: Path) -> Manifest:
    """The channel's manifest with each path made absolute: relative to the input data directory
    (the training channel's parent), where every channel is."""
    data = training_channel.parent
    manifest = Manifest.model_validate_json((training_channel / "manifest.json").read_bytes())
    return manifest.model_copy(
        update={"entries": [e.model_copy(update={"path": str(data / e.path)}) for e in manifest.entries]}
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO)  # the job's log in CloudWatch
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fine_tune", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--name", default="fieldlens-classifier")
    args, _ = parser.parse_known_args()
    channel = Path(os.environ.get("SM_CHANNEL_TRAINING", "/opt/ml/input/data/training"))
    model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    manifest = job_manifest(channel)
    work = Path("/tmp/fieldlens-work")
    result = retrain(
        manifest,
        work,
        EmbeddingCache(work / "cache"),
        None,
        args.name,
        TrainSettings(args.epochs, seed=args.seed, fine_tune=args.fine_tune),
    )
    for path in result.package_dir.iterdir():
        shutil.copy2(path, model_dir / path.name)
    logging.info("package written: %s", json.dumps({"version": result.card.version, "timings_s": result.timings_s}))


if __name__ == "__main__":
    main()
