"""The Greengrass recipes: valid against the public recipe schema, consistent with the components' config models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.status import status_routes
from fieldlens_core import topics
from fieldlens_inference.config import InferenceServiceConfig
from fieldlens_uploader.config import UploaderConfig
from tests.helpers.nucleus import access

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "greengrass" / "recipe_schema.json"
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
MODELS: dict[str, type[BaseModel]] = {
    "fieldlens.Classifier": ClassifierConfig,
    "fieldlens.InferenceService": InferenceServiceConfig,
    "fieldlens.Uploader": UploaderConfig,
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


SERVICES = {"iot_core": access.MQTT_PROXY, "local": access.PUB_SUB}
OPERATIONS = {
    ("iot_core", "subscribe"): "aws.greengrass#SubscribeToIoTCore",
    ("iot_core", "publish"): "aws.greengrass#PublishToIoTCore",
    ("local", "subscribe"): "aws.greengrass#SubscribeToTopic",
    ("local", "publish"): "aws.greengrass#PublishToTopic",
}
THING = "coop-7"  # the nucleus sees the thing's own name in a topic; it never replaces one in accessControl


def authorised(name: str, scope: str, action: str, topic: str) -> bool:
    """What the nucleus decides (MQTT wildcards for IoT Core only), as the test nucleus evaluates it."""
    return access.is_authorized(default_configuration(name), SERVICES[scope], OPERATIONS[(scope, action)], topic)


@pytest.mark.parametrize("name", ["fieldlens.Classifier", "fieldlens.Uploader"])
def test_access_control_names_exact_topics_and_wildcards_only_for_replies_and_the_things_status(name: str) -> None:
    prefix = default_configuration("fieldlens.Classifier")["replyTopicPrefix"]
    wildcards = {
        access.MQTT_PROXY: {prefix + "#", "/status/field-data/+"},
        access.PUB_SUB: {prefix + "*", "/status/field-data/*"},
    }
    for service, policies in access_control(name).items():
        assert service in SERVICES.values()
        for policy in policies.values():
            assert policy["resources"] and "*" not in policy["resources"]
            for resource in policy["resources"]:
                assert not set("+#*{") & set(resource) or resource in wildcards[service], resource
            assert all(op.startswith("aws.greengrass#") for op in policy["operations"])


CLASSIFIER_OPTIONS = [{}, {"fleetTopics": False}, {"busScope": "local"}, {"busScope": "local", "fleetTopics": False}]


@pytest.mark.parametrize("options", CLASSIFIER_OPTIONS, ids=lambda o: json.dumps(o) if o else "defaults")
def test_every_topic_the_classifier_uses_is_authorised_and_nothing_wider(options: dict[str, Any]) -> None:
    """Derived from the configuration model, as the component derives them at run time."""
    raw = {k: v for k, v in default_configuration("fieldlens.Classifier").items() if k != "accessControl"}
    config = ClassifierConfig.model_validate({**raw, **options})
    scope = config.bus_scope
    for request_topic, response_topic in config.routes.items():
        assert authorised("fieldlens.Classifier", scope, "subscribe", request_topic), request_topic
        assert authorised("fieldlens.Classifier", scope, "publish", response_topic), response_topic
    for reply in ("console/42", "a/b/c", "prediction/other-device"):
        assert authorised("fieldlens.Classifier", scope, "publish", config.reply_topic_prefix + reply)
    for outside in ("/elsewhere", "/request/classify/beverage_container", "/status/x", "response/no-slash"):
        assert not authorised("fieldlens.Classifier", scope, "publish", outside), outside
    assert not authorised("fieldlens.Classifier", scope, "subscribe", "/request/classify/another-name")
    for command_topic, answer_topic in config.continuous_routes.items():
        assert authorised("fieldlens.Classifier", scope, "subscribe", command_topic), command_topic
        assert authorised("fieldlens.Classifier", scope, "publish", answer_topic), answer_topic
    for stream in (
        topics.event_topic(config.name),
        topics.frame_topic(config.name),
        topics.image_event_topic(config.name),
    ):
        assert authorised("fieldlens.Classifier", scope, "publish", stream), stream
    assert not authorised("fieldlens.Classifier", scope, "publish", "/event/classification/another-name")
    for request_topic, answer_topic in status_routes(config).items():
        assert authorised("fieldlens.Classifier", scope, "subscribe", request_topic), request_topic
        assert authorised("fieldlens.Classifier", scope, "publish", answer_topic), answer_topic
    assert not authorised("fieldlens.Classifier", scope, "subscribe", "/request/status/another-name")
    uploads = UploaderConfig(thing_name=THING).effective_status_topic  # what the classifier relays
    assert uploads == topics.upload_status_topic(THING)
    assert authorised("fieldlens.Classifier", scope, "subscribe", uploads)
    assert scope == "local" or not authorised("fieldlens.Classifier", scope, "subscribe", uploads + "/deeper")


@pytest.mark.parametrize("scope", ["iot_core", "local"])
def test_the_uploaders_status_topic_is_authorised_in_either_scope(scope: str) -> None:
    status = UploaderConfig(thing_name=THING).effective_status_topic
    assert authorised("fieldlens.Uploader", scope, "publish", status)
    assert not authorised("fieldlens.Uploader", scope, "publish", "/status/elsewhere/" + THING)


def default_configuration(name: str) -> dict[str, Any]:
    configuration: dict[str, Any] = load(ROOT / "recipes" / f"{name}.yaml")["ComponentConfiguration"][
        "DefaultConfiguration"
    ]
    return configuration


def test_dependencies_that_make_a_new_model_reach_the_service() -> None:
    service = load(ROOT / "recipes" / "fieldlens.InferenceService.yaml")
    assert service["ComponentDependencies"]["fieldlens.Model"]["DependencyType"] == "HARD"
    run = service["Manifests"][0]["Lifecycle"]["Run"]
    assert "{fieldlens.Model:artifacts:decompressedPath}/fieldlens-model" in run
    uploader = load(ROOT / "recipes" / "fieldlens.Uploader.yaml")
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
        "fieldlens.Uploader": "fieldlens_uploader",
    }[name]
    assert f"-m {module}.main" in lifecycle["Run"]
