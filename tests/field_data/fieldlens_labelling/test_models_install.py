"""The page's Install runs the same package checks as `model install` and the device (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_core.model_install import install_package
from fieldlens_labelling.models import DeskError, DeskPaths, ModelDesk
from tests.helpers.tiny_model import make_tiny_package, recard


def desk_with_candidate(tmp_path: Path, version: str) -> ModelDesk:
    make_tiny_package(tmp_path / "base")
    install_package(tmp_path / "base", tmp_path / "model")
    make_tiny_package(tmp_path / "models" / version, version=version, swap=True)
    report = tmp_path / "models/reports" / version / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"version": version, "published": True}))
    return ModelDesk(DeskPaths(tmp_path / "field", tmp_path / "model", tmp_path / "models", tmp_path / "cache"))


def test_a_candidate_that_passes_its_checks_becomes_current(tmp_path: Path) -> None:
    desk = desk_with_candidate(tmp_path, "1.1.0")
    assert desk.install("1.1.0") == {"name": "tiny-colour", "version": "1.1.0"}
    assert desk.current() == {"name": "tiny-colour", "version": "1.1.0"}


def test_a_candidate_the_service_could_not_serve_is_refused_with_the_reason(tmp_path: Path) -> None:
    desk = desk_with_candidate(tmp_path, "1.1.0")
    recard(tmp_path / "models/1.1.0", input={"size": 16, "resize": 16, "mean": [0, 0, 0], "std": [255, 255, 255]})
    with pytest.raises(DeskError, match=r"1.1.0 is not installed: .*card's input is 16 px.*current model stays"):
        desk.install("1.1.0")
    assert desk.current() == {"name": "tiny-colour", "version": "1.0.0"}
