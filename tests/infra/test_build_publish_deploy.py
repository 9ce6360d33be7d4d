"""Build, publish (moto's S3, greengrassv2 through botocore's Stubber) and deploy (Stubber)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from fieldlens_core.errors import InvalidInputError
from fieldlens_infra.build import build
from fieldlens_infra.deploy import DEPLOYMENT_POLICIES, create_deployment, plan_deployment
from fieldlens_infra.publish import publish
from tests.helpers.tiny_model import make_tiny_package

BUCKET = "fieldlens-artifacts-test"


@pytest.fixture
def built(tmp_path: Path) -> Path:
    make_tiny_package(tmp_path / "model", version="1.3.0")
    versions = build(tmp_path / "greengrass-build", "0.2.0", BUCKET, tmp_path / "model")
    assert versions == {
        "fieldlens.InferenceService": "0.2.0",
        "fieldlens.Classifier": "0.2.0",
        "fieldlens.Uploader": "0.2.0",
        "fieldlens.Model": "1.3.0",
    }
    return tmp_path / "greengrass-build"


def test_artifacts_carry_their_packages_the_core_and_pinned_requirements(built: Path) -> None:
    with zipfile.ZipFile(built / "artifacts/fieldlens.Classifier/0.2.0/fieldlens-classifier.zip") as archive:
        names = set(archive.namelist())
        requirements = archive.read("requirements.txt").decode().split()
    assert {"fieldlens_classifier/main.py", "fieldlens_core/messages.py", "fieldlens_fielddata/store.py"} <= names
    assert not any(n.startswith("fieldlens_retrain") for n in names)  # a device never trains
    assert all("==" in r for r in requirements) and any(r.startswith("paho-mqtt==") for r in requirements)
    with zipfile.ZipFile(built / "artifacts/fieldlens.Model/1.3.0/fieldlens-model.zip") as archive:
        package = {n for n in archive.namelist() if not n.startswith("check/")}
        assert package == {"model.onnx", "labels.json", "model_card.json", "reference.png", "reference.json"}


def test_recipes_are_rendered_with_version_and_bucket(built: Path) -> None:
    recipe = yaml.safe_load((built / "recipes/fieldlens.Classifier-0.2.0.yaml").read_text())
    assert recipe["ComponentVersion"] == "0.2.0"
    uri = recipe["Manifests"][0]["Artifacts"][0]["URI"]
    assert uri == f"s3://{BUCKET}/fieldlens.Classifier/0.2.0/fieldlens-classifier.zip"
    uploader = yaml.safe_load((built / "recipes/fieldlens.Uploader-0.2.0.yaml").read_text())
    assert uploader["ComponentConfiguration"]["DefaultConfiguration"]["bucket"] == BUCKET


def test_publish_uploads_artifacts_and_creates_component_versions(built: Path, aws: None) -> None:
    s3: Any = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    greengrass: Any = boto3.client("greengrassv2", region_name="eu-west-1")
    with Stubber(greengrass) as stub:  # moto has no greengrassv2: the Stubber checks against the real API model
        for recipe in sorted((built / "recipes").glob("*.yaml")):
            name = yaml.safe_load(recipe.read_text())["ComponentName"]
            arn = f"arn:aws:greengrass:eu-west-1:123456789012:components:{name}:versions:1"
            stub.add_response(
                "create_component_version",
                {
                    "componentName": name,
                    "componentVersion": "1",
                    "arn": arn,
                    "creationTimestamp": "2026-11-22T00:00:00Z",
                    "status": {"componentState": "REQUESTED", "message": "requested", "errors": {}},
                },
                {"inlineRecipe": recipe.read_bytes()},
            )
        arns = publish(built, s3, greengrass, BUCKET)
        stub.assert_no_pending_responses()
    assert set(arns) == {
        "fieldlens.InferenceService",
        "fieldlens.Classifier",
        "fieldlens.Uploader",
        "fieldlens.Model",
    }
    head = s3.head_object(Bucket=BUCKET, Key="fieldlens.Model/1.3.0/fieldlens-model.zip")
    assert head["ServerSideEncryption"] == "AES256"


TARGET = "arn:aws:iot:eu-west-1:123456789012:thinggroup/coops"
RUNNING = {
    "fieldlens.Classifier": {"componentVersion": "0.1.0", "configurationUpdate": {"merge": '{"name": "hens"}'}},
    "fieldlens.Model": {"componentVersion": "1.3.0"},
    "com.example.Feeder": {"componentVersion": "2.0.0", "configurationUpdate": {"merge": '{"grams": 40}'}},
    "aws.greengrass.Nucleus": {"componentVersion": "2.14.0", "configurationUpdate": {"merge": '{"mqtt": {}}'}},
}


def stub_latest(stub: Stubber, components: dict[str, Any] | None) -> None:
    """The target's latest deployment (None: the target has none yet)."""
    stub.add_response(
        "list_deployments",
        {"deployments": [{"deploymentId": "d-0"}] if components is not None else []},
        {"targetArn": TARGET, "historyFilter": "LATEST_ONLY"},
    )
    if components is not None:
        stub.add_response("get_deployment", {"deploymentId": "d-0", "components": components}, {"deploymentId": "d-0"})


def greengrass_client() -> Any:
    return boto3.client("greengrassv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_deploy_sends_versions_configuration_merges_and_rollout_policies() -> None:
    greengrass = greengrass_client()
    merge = {"fieldlens.Classifier": {"name": "hens", "defaultTopK": 3}}
    with Stubber(greengrass) as stub:
        stub_latest(stub, None)
        stub.add_response(
            "create_deployment",
            {"deploymentId": "d-1", "iotJobId": "j-1", "iotJobArn": "arn:aws:iot:eu-west-1:123456789012:job/j-1"},
            {
                "targetArn": TARGET,
                "deploymentName": "fieldlens",
                "components": {
                    "fieldlens.Classifier": {
                        "componentVersion": "0.2.0",
                        "configurationUpdate": {"merge": json.dumps(merge["fieldlens.Classifier"])},
                    },
                    "fieldlens.Model": {"componentVersion": "1.3.0"},
                },
                "deploymentPolicies": DEPLOYMENT_POLICIES,
                "iotJobConfiguration": ANY,
            },
        )
        plan = plan_deployment(greengrass, TARGET, {"fieldlens.Classifier": "0.2.0", "fieldlens.Model": "1.3.0"}, merge)
        assert create_deployment(greengrass, plan) == "d-1"
        stub.assert_no_pending_responses()


def test_a_deploy_keeps_every_other_component_of_the_group_with_its_configuration() -> None:
    """A group deployment replaces the previous one whole: leaving the feeder out would remove it from every device."""
    greengrass = greengrass_client()
    with Stubber(greengrass) as stub:
        stub_latest(stub, RUNNING)
        plan = plan_deployment(
            greengrass,
            TARGET,
            {"fieldlens.Classifier": "0.2.0", "fieldlens.Model": "1.3.0"},
            {"fieldlens.Classifier": {"defaultTopK": 3}},
        )
        stub.assert_no_pending_responses()
    assert plan.components["com.example.Feeder"] == RUNNING["com.example.Feeder"]
    assert plan.components["aws.greengrass.Nucleus"] == RUNNING["aws.greengrass.Nucleus"]
    classifier = plan.components["fieldlens.Classifier"]
    assert classifier["componentVersion"] == "0.2.0"
    assert json.loads(classifier["configurationUpdate"]["merge"]) == {"name": "hens", "defaultTopK": 3}
    assert plan.kept == ["aws.greengrass.Nucleus", "com.example.Feeder"]
    assert '  fieldlens.Classifier: 0.1.0 -> 0.2.0, configuration merged: {"defaultTopK": 3}' in plan.lines()
    assert "  fieldlens.Model: 1.3.0 (unchanged)" in plan.lines()


def test_a_merge_for_a_component_not_deployed_is_refused_before_any_call() -> None:
    greengrass = greengrass_client()
    with Stubber(greengrass), pytest.raises(InvalidInputError, match="fieldlens.Clasifier"):  # no response queued
        plan_deployment(greengrass, TARGET, {"fieldlens.Classifier": "0.2.0"}, {"fieldlens.Clasifier": {"name": "x"}})


def test_a_retrained_model_is_published_and_deployed_keeping_the_other_components(tmp_path: Path, aws: None) -> None:
    from fieldlens_infra.publish import publish_model

    make_tiny_package(tmp_path / "model", version="1.4.0")
    s3: Any = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    greengrass: Any = boto3.client("greengrassv2", region_name="eu-west-1")
    target = "arn:aws:iot:eu-west-1:123456789012:thinggroup/coops"
    running = {
        "fieldlens.Classifier": {"componentVersion": "0.2.0", "configurationUpdate": {"merge": '{"name": "hens"}'}},
        "fieldlens.Model": {"componentVersion": "1.3.0"},
    }
    arn = "arn:aws:greengrass:eu-west-1:123456789012:components:fieldlens.Model:versions:1.4.0"
    with Stubber(greengrass) as stub:
        stub.add_response(
            "create_component_version",
            {
                "componentName": "fieldlens.Model",
                "componentVersion": "1.4.0",
                "arn": arn,
                "creationTimestamp": "2026-11-22T00:00:00Z",
                "status": {"componentState": "REQUESTED", "message": "requested", "errors": {}},
            },
            {"inlineRecipe": ANY},
        )
        stub.add_response(
            "list_deployments",
            {"deployments": [{"deploymentId": "d-0"}]},
            {"targetArn": target, "historyFilter": "LATEST_ONLY"},
        )
        stub.add_response("get_deployment", {"deploymentId": "d-0", "components": running}, {"deploymentId": "d-0"})
        stub.add_response(
            "create_deployment",
            {"deploymentId": "d-1"},
            {
                "targetArn": target,
                "deploymentName": "fieldlens",
                "deploymentPolicies": ANY,
                "iotJobConfiguration": ANY,
                "components": {**running, "fieldlens.Model": {"componentVersion": "1.4.0"}},
            },
        )
        version, published = publish_model(tmp_path / "model", s3, greengrass, BUCKET, tmp_path / "work")
        assert (version, published) == ("1.4.0", arn)
        assert create_deployment(greengrass, plan_deployment(greengrass, target, {"fieldlens.Model": version})) == "d-1"
        stub.assert_no_pending_responses()
    assert s3.head_object(Bucket=BUCKET, Key="fieldlens.Model/1.4.0/fieldlens-model.zip")["ContentLength"] > 0


def test_a_card_cannot_pack_a_file_from_outside_the_package(tmp_path: Path) -> None:
    """`fieldlens build` once packed /etc/hostname into the artifact under a ../../.. entry name."""
    from fieldlens_core.errors import ModelPackageError
    from fieldlens_infra.build import model_zip
    from tests.helpers.tiny_model import make_tiny_package

    make_tiny_package(tmp_path / "model")
    card_path = tmp_path / "model/model_card.json"
    card = json.loads(card_path.read_text())
    card["files"]["../../../../../../etc/hostname"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match="not a plain file name"):
        model_zip(tmp_path / "model")
