"""`fieldlens deploy`'s plan, printed before it is sent, against botocore's Stubber (moto has no greengrassv2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from fieldlens_cli.greengrass_commands import built_versions, deploy_plan, parse_merges
from fieldlens_core.errors import InvalidInputError, NotFoundError

TARGET = "arn:aws:iot:eu-west-1:123456789012:thinggroup/coops"
RUNNING = {
    "fieldlens.Model": {"componentVersion": "1.3.0"},
    "com.example.Feeder": {"componentVersion": "2.0.0"},
}


def stubbed() -> tuple[Any, Stubber]:
    client = boto3.client("greengrassv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response(
        "list_deployments", {"deployments": [{"deploymentId": "d-0"}]}, {"targetArn": TARGET, "historyFilter": ANY}
    )
    stub.add_response("get_deployment", {"deploymentId": "d-0", "components": RUNNING}, {"deploymentId": "d-0"})
    return client, stub


def test_a_dry_run_prints_the_change_and_sends_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    client, stub = stubbed()
    with stub:  # no create_deployment is queued: sending one would fail the test
        assert deploy_plan(client, TARGET, {"fieldlens.Model": "1.4.0"}, {}, dry_run=True) == 0
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"deployment to {TARGET}:",
        "  fieldlens.Model: 1.3.0 -> 1.4.0",
        "  kept as deployed: com.example.Feeder",
        "dry run: nothing was sent",
    ]


def test_the_real_run_prints_the_same_change_then_sends_it(capsys: pytest.CaptureFixture[str]) -> None:
    client, stub = stubbed()
    stub.add_response(
        "create_deployment",
        {"deploymentId": "d-1"},
        {
            "targetArn": TARGET,
            "deploymentName": "fieldlens",
            "components": {**RUNNING, "fieldlens.Model": {"componentVersion": "1.4.0"}},
            "deploymentPolicies": ANY,
            "iotJobConfiguration": ANY,
        },
    )
    with stub:
        assert deploy_plan(client, TARGET, {"fieldlens.Model": "1.4.0"}, {}, dry_run=False) == 0
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out.splitlines()
    assert "  fieldlens.Model: 1.3.0 -> 1.4.0" in out and out[-1] == "deployment d-1 created"


def test_merges_and_builds_are_checked_before_any_client_exists(tmp_path: Path) -> None:
    assert parse_merges(['fieldlens.Classifier={"name": "hens"}']) == {"fieldlens.Classifier": {"name": "hens"}}
    for bad in ("fieldlens.Classifier={name}", "=", "fieldlens.Classifier=3"):
        with pytest.raises(InvalidInputError):
            parse_merges([bad])
    with pytest.raises(NotFoundError, match="no build at"):
        built_versions(tmp_path / "nope")
