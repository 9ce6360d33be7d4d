"""The GDK CLI configuration per component, and the custom build it runs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from fieldlens_cli.main import main
from tests.helpers.tiny_model import make_tiny_package

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "greengrass" / "gdk_config_schema.json"
CONFIGS = sorted((ROOT / "recipes" / "gdk").glob("*/gdk-config.json"))


def test_every_recipe_has_a_gdk_config() -> None:
    assert sorted(p.parent.name for p in CONFIGS) == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_gdk_configs_validate_against_the_gdk_schema(path: Path) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is not here (a clone without ../shared): the GDK schema comes from there")
    import jsonschema

    document = json.loads(path.read_text())
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert list(document["component"]) == [path.parent.name]


@pytest.mark.parametrize("component", ["fieldlens.Classifier", "fieldlens.Model"])
def test_the_custom_build_writes_the_gdk_layout(component: str, tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "model")
    out = tmp_path / "greengrass-build"
    assert main(["build", "--gdk-component", component, "--out", str(out), "--model", str(tmp_path / "model")]) == 0
    recipe = yaml.safe_load((out / "recipes" / "recipe.yaml").read_text())
    assert recipe["ComponentName"] == component and recipe["ComponentVersion"] == "{COMPONENT_VERSION}"
    (artifact,) = (out / "artifacts" / component / "NEXT_PATCH").iterdir()
    assert artifact.name in recipe["Manifests"][0]["Artifacts"][0]["URI"]
    assert zipfile.ZipFile(artifact).namelist()
    assert main(["build", "--gdk-component", "fieldlens.Nothing", "--out", str(out)]) == 2  # invalid input
