"""`fieldlens build`'s model artifact: the package checked as a device will check it, and the check itself."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from fieldlens_core.errors import ModelPackageError
from fieldlens_infra.build import build, model_zip
from tests.helpers.tiny_model import make_tiny_package, recard


def test_the_model_zip_carries_the_known_answer_and_the_code_that_checks_it(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "model", version="1.3.0", int8=True)
    data, version = model_zip(tmp_path / "model")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
        requirements = archive.read("check/requirements.txt").decode().split()
    assert version == "1.3.0"
    assert {"model.int8.onnx", "reference.png", "reference.json", "model_card.json"} <= names
    assert {"check/fieldlens_core/model_check.py", "check/fieldlens_core/model.py"} <= names
    assert {r.split("==")[0] for r in requirements} == {"numpy", "pillow", "onnxruntime", "pydantic"}


def test_a_package_without_a_known_answer_is_not_built(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "model", reference=False)
    with pytest.raises(ModelPackageError, match="no known answer") as refused:
        build(tmp_path / "out", "0.2.0", "bucket", tmp_path / "model")
    assert refused.value.hint and "Write the package again" in refused.value.hint


def test_a_package_a_device_would_refuse_is_not_built(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "model")
    recard(tmp_path / "model", input={"size": 16, "resize": 16, "mean": [0, 0, 0], "std": [255, 255, 255]})
    with pytest.raises(ModelPackageError, match="card's input is 16 px"):
        build(tmp_path / "out", "0.2.0", "bucket", tmp_path / "model")
    assert not (tmp_path / "out/artifacts/fieldlens.Model").exists()
