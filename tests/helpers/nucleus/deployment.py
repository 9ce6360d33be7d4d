"""What a test deploys to the test core: ``fieldlens build``'s artifacts for a tiny model package,
and the line each service logs once it is ready (how a test knows its Run has started)."""

from __future__ import annotations

from pathlib import Path

from fieldlens_infra.build import build
from tests.helpers.tiny_model import make_tiny_package

READY = {
    "fieldlens.InferenceService": "fieldlens-inference ready",
    "fieldlens.Classifier": "fieldlens-classifier ready",
    "fieldlens.Uploader": "fieldlens-uploader ready",
}


def built_artifacts(work: Path) -> Path:
    """The recipes and artifacts `fieldlens build` writes, for the tiny colour model, under ``work``."""
    make_tiny_package(work / "model", version="1.0.0")
    build(work / "greengrass-build", "0.1.0", "fieldlens-test-bucket", work / "model")
    return work / "greengrass-build"
