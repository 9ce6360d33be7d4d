"""The CloudFormation template: cfn-lint clean, and created in moto with the settings it promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.status import status_routes
from fieldlens_core import topics
from fieldlens_core.messages import ClassificationEvent

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "cloudformation" / "fieldlens.yaml"


def test_cfn_lint_finds_no_error_or_warning() -> None:
    from cfnlint.api import lint_all

    problems = [p for p in lint_all(TEMPLATE.read_text()) if not p.rule.id.startswith("I")]  # I: informational
    assert [str(p) for p in problems] == []


def test_the_stack_creates_a_locked_down_bucket_and_the_roles(aws: None) -> None:
    iam: Any = boto3.client("iam")
    iam.create_role(
        RoleName="GreengrassV2TokenExchangeRole",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "credentials.iot.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    cloudformation: Any = boto3.client("cloudformation")
    cloudformation.create_stack(
        StackName="fieldlens",
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": "BucketName", "ParameterValue": "fieldlens-field-data-test"}],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName="fieldlens")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["BucketName"] == "fieldlens-field-data-test"
    s3: Any = boto3.client("s3")
    bucket = "fieldlens-field-data-test"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    attached = iam.list_attached_role_policies(RoleName="GreengrassV2TokenExchangeRole")["AttachedPolicies"]
    assert len(attached) == 1
    assert outputs["SageMakerRoleArn"].startswith("arn:aws:iam::")
    # moto's CloudFormation does not apply BucketPolicy, versioning, the public access block, the
    # lifecycle or the IoT policy: those are checked in the template below, and by cfn-lint above.
    iot = template()["Resources"]["CoreDeviceIotPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert all("${!iot:Connection.Thing.ThingName}" in r for r in iot[0]["Resource"])
    properties = template()["Resources"]["FieldDataBucket"]["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(properties["PublicAccessBlockConfiguration"].values())
    assert properties["LifecycleConfiguration"]["Rules"][0]["Transitions"][0]["StorageClass"] == "GLACIER_IR"
    deny = template()["Resources"]["FieldDataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def template() -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        return loader.construct_sequence(node)  # type: ignore[arg-type]

    for tag in ("!Ref", "!Sub", "!GetAtt"):
        Loader.add_constructor(tag, intrinsic)
    document: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=Loader)
    return document


def test_the_template_grants_no_wildcard_bucket_access() -> None:
    statements = template()["Resources"]["TokenExchangePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(r != "*" and "/*" in r for r in resources)


def allowed(statements: list[dict[str, Any]], action: str, resource: str, values: dict[str, str]) -> bool:
    """How IAM and AWS IoT read these statements: policy variables filled in, `*` a glob, no Deny here."""
    import fnmatch

    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if statement["Effect"] != "Allow" or action not in actions:
            continue
        patterns = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for pattern in patterns:
            text = pattern.get("Fn::Sub", pattern) if isinstance(pattern, dict) else pattern
            for name, value in values.items():
                text = text.replace("${" + name + "}", value)
            if fnmatch.fnmatchcase(resource, text):
                return True
    return False


IOT_POLICIES = ("CoreDeviceIotPolicy", "CoreDeviceStreamsIotPolicy")


def core_device_statements() -> list[dict[str, Any]]:
    """What a core device is allowed: its certificate's policy and its thing group's, together."""
    resources = template()["Resources"]
    return [s for name in IOT_POLICIES for s in resources[name]["Properties"]["PolicyDocument"]["Statement"]]


def test_each_device_may_act_only_as_itself() -> None:
    """Policies as data: coop-7 next to coop-70, with the template's defaults."""
    arn = "arn:aws:iot:eu-west-1:123456789012"
    values = {
        "AWS::Partition": "aws",
        "AWS::Region": "eu-west-1",
        "AWS::AccountId": "123456789012",
        "!iot:Connection.Thing.ThingName": "coop-7",
        "!credentials-iot:ThingName": "coop-7",
        "ClassifierName": "beverage_container",
        "ReplyTopicPrefix": "/response/reply/",
        "FieldDataBucket.Arn": "arn:aws:s3:::bucket",
        "FieldDataPrefix": "field-data",
    }
    iot = core_device_statements()
    assert allowed(iot, "iot:Connect", f"{arn}:client/coop-7", values)
    assert allowed(iot, "iot:Connect", f"{arn}:client/coop-7#2", values)
    assert not allowed(iot, "iot:Connect", f"{arn}:client/coop-70", values)
    for topic in ("/request/classify", "/request/classify/beverage_container"):
        assert allowed(iot, "iot:Subscribe", f"{arn}:topicfilter/{topic}", values)
        assert allowed(iot, "iot:Receive", f"{arn}:topic/{topic}", values)
    assert not allowed(iot, "iot:Subscribe", f"{arn}:topicfilter//request/classify/#", values)
    assert not allowed(iot, "iot:Receive", f"{arn}:topic//request/classify/other-group", values)
    for topic in ("/response/prediction", "/response/prediction/beverage_container", "/response/reply/coop-7/c/1"):
        assert allowed(iot, "iot:Publish", f"{arn}:topic/{topic}", values), topic
    for topic in ("/response/prediction/other-group", "/response/reply/coop-70/x", "/status/field-data/coop-70"):
        assert not allowed(iot, "iot:Publish", f"{arn}:topic/{topic}", values), topic
    config = ClassifierConfig(name="beverage_container", thing_name="coop-7")
    for command_topic, answer_topic in config.continuous_routes.items():
        assert allowed(iot, "iot:Subscribe", f"{arn}:topicfilter/{command_topic}", values), command_topic
        assert allowed(iot, "iot:Receive", f"{arn}:topic/{command_topic}", values), command_topic
        assert allowed(iot, "iot:Publish", f"{arn}:topic/{answer_topic}", values), answer_topic
    for stream in (
        topics.event_topic(config.name),
        topics.frame_topic(config.name),
        topics.image_event_topic(config.name),
    ):
        assert allowed(iot, "iot:Publish", f"{arn}:topic/{stream}", values), stream
    assert not allowed(iot, "iot:Publish", f"{arn}:topic//event/classification/other-group", values)
    for request_topic, answer_topic in status_routes(config).items():
        assert allowed(iot, "iot:Subscribe", f"{arn}:topicfilter/{request_topic}", values), request_topic
        assert allowed(iot, "iot:Receive", f"{arn}:topic/{request_topic}", values), request_topic
        assert allowed(iot, "iot:Publish", f"{arn}:topic/{answer_topic}", values), answer_topic
    assert not allowed(iot, "iot:Receive", f"{arn}:topic//request/status/other-group", values)
    assert not allowed(iot, "iot:Publish", f"{arn}:topic//response/status/other-group", values)
    uploads = topics.upload_status_topic("coop-7")  # the uploader's figures, which the classifier relays
    assert allowed(iot, "iot:Subscribe", f"{arn}:topicfilter/{uploads}", values)
    assert allowed(iot, "iot:Receive", f"{arn}:topic/{uploads}", values)
    for other in ("/status/field-data/coop-70", "/status/field-data/+"):
        assert not allowed(iot, "iot:Subscribe", f"{arn}:topicfilter/{other}", values), other
    role = template()["Resources"]["TokenExchangePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allowed(role, "s3:PutObject", "arn:aws:s3:::bucket/field-data/coop-7/2026/11/23/x.jpg", values)
    assert not allowed(role, "s3:PutObject", "arn:aws:s3:::bucket/field-data/coop-70/2026/11/23/x.jpg", values)


def test_events_reach_s3_by_thing_and_date_and_the_glue_table_matches_the_event_contract() -> None:
    """The rule reads the topic the classifier publishes events on; Firehose partitions by the
    event's own ``thing`` and the day; the table's columns are the event's fields (thing is a
    partition), so a field added to ClassificationEvent without a column fails here."""
    resources = template()["Resources"]
    sql = resources["EventsTopicRule"]["Properties"]["TopicRulePayload"]["Sql"]
    assert sql.replace("${ClassifierName}", "beverage_container") == (
        f"SELECT * FROM '{topics.event_topic('beverage_container')}'"
    )
    s3 = resources["EventsDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    assert s3["Prefix"] == "${EventsPrefix}/thing=!{partitionKeyFromQuery:thing}/date=!{timestamp:yyyy-MM-dd}/"
    extraction = s3["ProcessingConfiguration"]["Processors"][0]["Parameters"][0]
    assert extraction == {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{thing: .thing}"}
    table = resources["EventsTable"]["Properties"]["TableInput"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["thing", "date"]
    columns = [c["Name"] for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [name for name in ClassificationEvent.model_fields if name != "thing"]
    delivery = resources["EventsDeliveryRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    values = {"FieldDataBucket.Arn": "arn:aws:s3:::bucket", "EventsPrefix": "events/classification"}
    assert allowed(delivery, "s3:PutObject", "arn:aws:s3:::bucket/events/classification/thing=a/date=b/x", values)
    assert not allowed(delivery, "s3:PutObject", "arn:aws:s3:::bucket/field-data/a/x.jpg", values)


IOT_POLICY_MAX_CHARS = 2048  # CreatePolicy's limit on policyDocument, whitespace excluded


@pytest.mark.parametrize("policy", IOT_POLICIES)
def test_each_core_device_policy_fits_aws_iots_size_limit(policy: str) -> None:
    """What CreatePolicy receives: every !Sub filled in with the longest common values; moto and
    cfn-lint do not check this, a real stack creation would fail on it (one policy measured 3441)."""
    document = template()["Resources"][policy]["Properties"]["PolicyDocument"]
    text = json.dumps(document, separators=(",", ":"))
    for name, value in {
        "AWS::Partition": "aws",
        "AWS::Region": "ap-southeast-2",
        "AWS::AccountId": "123456789012",
        "ClassifierName": "beverage_container",
        "ReplyTopicPrefix": "/response/reply/",
    }.items():
        text = text.replace("${" + name + "}", value)
    text = text.replace("${!", "${")  # a literal policy variable
    assert len("".join(text.split())) <= IOT_POLICY_MAX_CHARS
