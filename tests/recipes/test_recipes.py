"""The Greengrass recipes: valid against the public recipe schema, consistent with the components' config models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_inference.config import InferenceServiceConfig
from fieldlens_uploader.config import UploaderConfig

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "greengrass" / "recipe_schema.json"
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
MODELS: dict[str, type[BaseModel]] = {
    "fieldlens.Classifier": ClassifierConfig,
    "fieldlens.InferenceService": InferenceServiceConfig,
    "fieldlens.FieldDataUploader": UploaderConfig,
}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def lower_keys(value: Any) -> Any:
    """What the GDK CLI does before validating: every key lower-cased."""
    if isinstance(value, dict):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


def test_there_is_a_recipe_per_component() -> None:
    assert [p.stem for p in RECIPES] == sorted([*MODELS, "fieldlens.Model"])


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipes_validate_against_the_greengrass_schema(path: Path) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is not here (a clone without ../shared): the Greengrass recipe schema comes from there")
    import jsonschema

    jsonschema.validate(lower_keys(load(path)), json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_manifests_cover_aarch64_and_amd64_and_the_format_version(path: Path) -> None:
    recipe = load(path)
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    platforms = {(m["Platform"]["os"], m["Platform"]["architecture"]) for m in recipe["Manifests"]}
    assert platforms == {("linux", "aarch64"), ("linux", "amd64")}


@pytest.mark.parametrize("name", list(MODELS))
def test_default_configuration_is_a_valid_configuration(name: str) -> None:
    configuration = dict(load(ROOT / "recipes" / f"{name}.yaml")["ComponentConfiguration"]["DefaultConfiguration"])
    configuration.pop("accessControl", None)
    run = load(ROOT / "recipes" / f"{name}.yaml")["Manifests"][0]["Lifecycle"]["Run"]
    from_run = {"modelDir": "/from/the/run/step"} if "--model-dir" in run else {}  # the nucleus interpolates it
    MODELS[name].model_validate({**configuration, **from_run})  # extra="forbid": a typo in a recipe key fails here
    keys = set(configuration)
    documented = {f.alias or n for n, f in MODELS[name].model_fields.items()}
    assert keys <= documented | set(MODELS[name].model_fields)


def access_control(name: str) -> dict[str, Any]:
    recipe = load(ROOT / "recipes" / f"{name}.yaml")
    control: dict[str, Any] = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    return control


@pytest.mark.parametrize("name", ["fieldlens.Classifier", "fieldlens.FieldDataUploader"])
def test_access_control_names_exact_topics(name: str) -> None:
    for service, policies in access_control(name).items():
        assert service in ("aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub")
        for policy in policies.values():
            assert policy["resources"] and not any("*" in r or "#" in r or "+" in r for r in policy["resources"])
            assert all(op.startswith("aws.greengrass#") for op in policy["operations"])


def test_the_topics_granted_are_the_ones_the_components_use() -> None:
    classifier = ClassifierConfig.model_validate({"name": "beverage_container"})
    granted = {
        r
        for p in access_control("fieldlens.Classifier")["aws.greengrass.ipc.mqttproxy"].values()
        for r in p["resources"]
    }
    assert granted == {classifier.effective_request_topic, classifier.effective_response_topic}
    uploader = {
        r
        for p in access_control("fieldlens.FieldDataUploader")["aws.greengrass.ipc.mqttproxy"].values()
        for r in p["resources"]
    }
    assert uploader == {UploaderConfig(thing_name="{iot:thingName}").effective_status_topic}


def test_dependencies_that_make_a_new_model_reach_the_service() -> None:
    service = load(ROOT / "recipes" / "fieldlens.InferenceService.yaml")
    assert service["ComponentDependencies"]["fieldlens.Model"]["DependencyType"] == "HARD"
    run = service["Manifests"][0]["Lifecycle"]["Run"]
    assert "{fieldlens.Model:artifacts:decompressedPath}/fieldlens-model" in run
    uploader = load(ROOT / "recipes" / "fieldlens.FieldDataUploader.yaml")
    assert "aws.greengrass.TokenExchangeService" in uploader["ComponentDependencies"]


@pytest.mark.parametrize("name", list(MODELS))
def test_install_builds_a_venv_that_sees_apt_packages(name: str) -> None:
    lifecycle = load(ROOT / "recipes" / f"{name}.yaml")["Manifests"][0]["Lifecycle"]
    assert (
        "--system-site-packages" in lifecycle["Install"]["Script"]
        and "requirements.txt" in lifecycle["Install"]["Script"]
    )
    module = {
        "fieldlens.Classifier": "fieldlens_classifier",
        "fieldlens.InferenceService": "fieldlens_inference",
        "fieldlens.FieldDataUploader": "fieldlens_uploader",
    }[name]
    assert f"-m {module}.main" in lifecycle["Run"]
