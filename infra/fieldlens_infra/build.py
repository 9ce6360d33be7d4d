"""`fieldlens build`: one zip per component (its packages, the shared core, pinned requirements) and rendered recipes.

Laid out as the GDK CLI lays out its output::

    greengrass-build/artifacts/<component>/<version>/<artifact>.zip
    greengrass-build/recipes/<component>-<version>.yaml

Recipes in ``recipes/`` carry the GDK placeholders ``{COMPONENT_VERSION}``, ``BUCKET_NAME``,
``COMPONENT_NAME`` and ``COMPONENT_VERSION``; rendering replaces them. Requirements are pinned
to the versions installed where the build runs, so every device installs what was tested.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model_check import check_package
from fieldlens_core.model_package import CARD_FILE

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
MODEL_COMPONENT = "fieldlens.Model"


@dataclass(frozen=True)
class ComponentSource:
    artifact: str
    packages: tuple[str, ...]
    requirements: tuple[str, ...]


COMPONENTS: dict[str, ComponentSource] = {
    "fieldlens.InferenceService": ComponentSource(
        "fieldlens-inference",
        ("fieldlens_core", "fieldlens_inference"),
        ("numpy", "pillow", "onnxruntime", "pydantic", "awsiotsdk"),
    ),
    "fieldlens.Classifier": ComponentSource(
        "fieldlens-classifier",
        ("fieldlens_core", "fieldlens_classifier", "fieldlens_fielddata"),
        ("pillow", "pydantic", "paho-mqtt", "awsiotsdk"),
    ),
    "fieldlens.Uploader": ComponentSource(
        "fieldlens-uploader",
        ("fieldlens_core", "fieldlens_fielddata", "fieldlens_uploader"),
        ("boto3", "pydantic", "paho-mqtt", "awsiotsdk", "pillow"),
    ),
}


MODEL_CHECK = ComponentSource("check", ("fieldlens_core",), ("numpy", "pillow", "onnxruntime", "pydantic"))
"""What the fieldlens.Model component's Startup step runs (``python -m fieldlens_core.model_check``):
the core, and exactly the libraries the check imports, pinned as the inference service's are."""
MODEL_CHECK_DIR = "check"
"""Where MODEL_CHECK lies inside fieldlens-model.zip, beside the package's files."""


def pinned(requirements: tuple[str, ...]) -> str:
    return "".join(f"{name}=={importlib.metadata.version(name)}\n" for name in requirements)


def add_sources(archive: zipfile.ZipFile, source: ComponentSource, prefix: str = "") -> None:
    """``source``'s packages (their .py files) and its pinned requirements.txt, under ``prefix``."""
    for package in source.packages:
        root = Path(importlib.import_module(package).__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            archive.write(path, f"{prefix}{package}/{path.relative_to(root).as_posix()}", zipfile.ZIP_DEFLATED)
    archive.writestr(f"{prefix}requirements.txt", pinned(source.requirements), zipfile.ZIP_DEFLATED)


def component_zip(source: ComponentSource) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        add_sources(archive, source)
    return buffer.getvalue()


def model_zip(model_dir: Path) -> tuple[bytes, str]:
    """fieldlens-model.zip: the package, checked first as each device will, and the check; and the version.

    The package's files lie at the top (the inference service's model directory); the check's
    code and requirements under ``check/``, for the component's own lifecycle (see
    recipes/fieldlens.Model.yaml). A package without a known answer is refused here: the
    device's check needs one.
    """
    checked = check_package(model_dir, require_reference=True)  # every file that ships, every variant
    if MODEL_CHECK_DIR in checked.card.files:
        raise ModelPackageError(f"a package file may not be named {MODEL_CHECK_DIR!r}: the check ships there")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # ONNX does not compress
        for name in [*checked.card.files, CARD_FILE]:
            archive.write(checked.directory / name, name)
        add_sources(archive, MODEL_CHECK, f"{MODEL_CHECK_DIR}/")
    return buffer.getvalue(), checked.card.version


def render(recipe_text: str, name: str, version: str, bucket: str) -> str:
    return (
        recipe_text.replace("{COMPONENT_VERSION}", version)
        .replace("COMPONENT_NAME", name)
        .replace("COMPONENT_VERSION", version)
        .replace("BUCKET_NAME", bucket)
    )


def recipe_path(name: str) -> Path:
    return RECIPES_DIR / f"{name}.yaml"


def build(out: Path, version: str, bucket: str, model_dir: Path | None) -> dict[str, str]:
    """Build every component (and the model component when ``model_dir`` is given); name -> version."""
    built = {}
    artifacts: dict[str, tuple[str, bytes, str]] = {
        name: (source.artifact, component_zip(source), version) for name, source in COMPONENTS.items()
    }
    if model_dir is not None:
        data, model_version = model_zip(model_dir)
        artifacts[MODEL_COMPONENT] = ("fieldlens-model", data, model_version)
    for name, (artifact, data, component_version) in artifacts.items():
        target = out / "artifacts" / name / component_version
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{artifact}.zip").write_bytes(data)
        rendered = render(recipe_path(name).read_text(), name, component_version, bucket)
        yaml.safe_load(rendered)  # a rendering that broke the YAML fails here, not on a device
        (out / "recipes").mkdir(parents=True, exist_ok=True)
        (out / "recipes" / f"{name}-{component_version}.yaml").write_text(rendered)
        built[name] = component_version
    return built
