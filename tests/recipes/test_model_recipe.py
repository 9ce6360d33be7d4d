"""fieldlens.Model's lifecycle run as written: the artifact `fieldlens build` makes, unpacked as Greengrass
unpacks it, the recipe's Startup step run by a shell with its recipe variables substituted.

A step that exits non-zero fails the component before the inference service starts on the new
model, so the deployment's ROLLBACK failure handling puts the previous model back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fieldlens_core.model_package import REFERENCE_FILE
from fieldlens_infra.build import model_zip
from tests.helpers.tiny_model import make_tiny_package, recard, tiny_onnx

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "fieldlens.Model.yaml"


def lifecycle() -> dict[str, Any]:
    manifests = yaml.safe_load(RECIPE.read_text())["Manifests"]
    steps: dict[str, Any] = manifests[0]["Lifecycle"]
    assert all(m["Lifecycle"] == steps for m in manifests)  # the same on aarch64 and amd64
    return steps


def substitute(text: str, work: Path, artifacts: Path) -> str:
    done = text.replace("{work:path}", str(work)).replace("{artifacts:decompressedPath}", str(artifacts))
    assert "{" not in done, f"a recipe variable the test does not know: {done}"
    return done


@pytest.fixture
def device(tmp_path: Path) -> tuple[Path, Path]:
    """(work path, decompressed artifacts path) of a device that ran the Install step.

    The Install step's pip needs the network; the venv made here is the same one without it: a
    real venv that sees this environment's third-party libraries (the pinned versions), and not
    the fieldlens checkout, so only the code shipped in the artifact can run.
    """
    work, artifacts = tmp_path / "work", tmp_path / "artifacts"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], check=True)
    site = next((work / "venv/lib").glob("python*/site-packages"))
    (site / "dev-libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    make_tiny_package(tmp_path / "model", version="1.3.0", int8=True)
    data, _ = model_zip(tmp_path / "model")
    (artifacts / "fieldlens-model").mkdir(parents=True)
    (tmp_path / "fieldlens-model.zip").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "fieldlens-model.zip") as archive:
        archive.extractall(artifacts / "fieldlens-model")
    return work, artifacts


def run_startup(work: Path, artifacts: Path) -> subprocess.CompletedProcess[str]:
    step = lifecycle()["Startup"]
    env = {k: substitute(v, work, artifacts) for k, v in step.get("Setenv", {}).items()}
    return subprocess.run(
        ["sh", "-c", substitute(step["Script"], work, artifacts)],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_install_makes_the_venv_from_the_shipped_pinned_requirements(device: tuple[Path, Path]) -> None:
    install = lifecycle()["Install"]["Script"]
    assert "--system-site-packages" in install and "{work:path}/venv" in install
    _, artifacts = device
    requirements = (artifacts / "fieldlens-model/check/requirements.txt").read_text().split()
    assert sorted(r.split("==")[0] for r in requirements) == ["numpy", "onnxruntime", "pillow", "pydantic"]
    assert all("==" in r for r in requirements)
    assert substitute(install, *device).split("-r ")[1].strip() == str(
        artifacts / "fieldlens-model/check/requirements.txt"
    )


Tamper = Callable[[Path], object]


def replace_graph(package: Path) -> None:
    tiny_onnx(package / "model.onnx", swap=True)


def replace_graph_and_rehash(package: Path) -> None:
    tiny_onnx(package / "model.int8.onnx", swap=True)
    recard(package)


def wrong_label_count(package: Path) -> None:
    (package / "labels.json").write_text(json.dumps(["red", "green", "blue", "purple"]))
    recard(package, num_classes=4)


def wrong_input_size(package: Path) -> None:
    recard(package, input={"size": 16, "resize": 16, "mean": [0, 0, 0], "std": [255, 255, 255]})


def disagreeing_reference(package: Path) -> None:
    reference = json.loads((package / REFERENCE_FILE).read_text())
    reference["expected"]["fp32"]["label"] = "green"
    (package / REFERENCE_FILE).write_text(json.dumps(reference))
    recard(package)


@pytest.mark.slow
def test_a_good_package_passes_the_startup_step(device: tuple[Path, Path]) -> None:
    done = run_startup(*device)
    assert done.returncode == 0, done.stderr
    assert "model tiny-colour 1.3.0 passed its checks" in done.stderr
    assert "model.int8.onnx passes" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (replace_graph, "model.onnx fails its sha256 check"),
        (replace_graph_and_rehash, "model.int8.onnx answers the reference image 'blue'"),
        (wrong_label_count, "model.onnx gives 3 classes but the card says 4"),
        (wrong_input_size, "model.onnx takes Nx3x32x32 images but the card's input is 16 px"),
        (disagreeing_reference, "model.onnx answers the reference image 'red' at 0."),
    ],
    ids=["tampered-graph", "tampered-graph-rehashed", "label-count", "input-size", "reference-answer"],
)
def test_a_tampered_package_fails_the_startup_step_with_the_reason(
    device: tuple[Path, Path], tamper: Tamper, reason: str
) -> None:
    work, artifacts = device
    tamper(artifacts / "fieldlens-model")
    done = run_startup(work, artifacts)
    assert done.returncode != 0
    assert reason in done.stderr, done.stderr
    if tamper is disagreeing_reference:
        assert "the package expects 'green'" in done.stderr
    assert "Traceback" not in done.stderr  # one line a person reads in the component's log
