"""`fieldlens status`: against the real mosquitto with classifier stacks built as the component builds
them (and a real uploader), and --thing-group against botocore's Stubber (moto has no greengrassv2)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from fieldlens_classifier.build import build_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_cli import main as cli
from fieldlens_cli.stack import connect
from fieldlens_cli.status_command import ask, core_device_lines, core_devices, thing_group_region
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig
from fieldlens_core.errors import ExitCode, InvalidInputError, NotFoundError, TimedOutError
from fieldlens_fielddata.destination import LocalDirectoryDestination
from fieldlens_fielddata.retry import Backoff
from fieldlens_fielddata.uploader import Uploader
from fieldlens_uploader.service import UploaderService
from tests.helpers.broker import Mosquitto
from tests.helpers.waiting import wait_until

NAME = "hens"


class Device:
    """One thing's classifier (with its status responder) and uploader, each on its own connection."""

    def __init__(self, mosquitto: Mosquitto, socket_path: Path, root: Path, thing: str) -> None:
        config = ClassifierConfig.model_validate(
            {
                "name": NAME,
                "thing_name": thing,
                "field_data_dir": root / "field",
                "camera": {"source": "test-pattern", "width": 64, "height": 64},
                "inference": {"service_name": "tiny", "socket_path": socket_path},
            }
        )
        self.bus = MqttBus(BrokerConfig(url=mosquitto.url), f"classifier-{thing}").connect()
        self.classifier, self._closing = build_classifier(config, self.bus)
        self.classifier.start()
        self.uploader_bus = MqttBus(BrokerConfig(url=mosquitto.url), f"uploader-{thing}").connect()
        uploader = Uploader(config.field_data_dir, LocalDirectoryDestination(root / "bucket"), thing)
        self.uploader = UploaderService(uploader, Backoff(), self.uploader_bus, f"/status/field-data/{thing}", 2, 30)

    def close(self) -> None:
        self.uploader.stop()
        self.uploader_bus.stop()
        for close in self._closing:
            close()
        self.bus.stop()


@pytest.fixture
def devices(mosquitto: Mosquitto, tiny_server: Path, tmp_path: Path) -> Iterator[Callable[[str], Device]]:
    started: list[Device] = []

    def start(thing: str) -> Device:
        started.append(Device(mosquitto, tiny_server, tmp_path / thing, thing))
        return started[-1]

    yield start
    for device in started:
        device.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["status", *argv])
    return code, capsys.readouterr().out


@pytest.mark.broker
def test_the_table_shows_what_each_part_reports(
    devices: Callable[[str], Device], mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    device = devices("coop-7")
    device.uploader.publish_status()
    client = connect(mosquitto.url, "test")
    try:  # the uploader's figures reach the classifier over the broker, a moment after they are published
        wait_until(lambda: "uploads" in ask(client, NAME, 5, expect=1)[0], what="the uploader's figures relayed")
    finally:
        client.stop()
    code, out = run(capsys, "--broker", mosquitto.url, "--name", NAME, "--expect", "1", "--timeout", "10")
    assert code == ExitCode.OK
    lines = out.splitlines()
    assert lines[0].startswith("coop-7  name hens  answered ")
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "tiny-colour 1.0.0 fp32 (sha256 " in rows["model"] and "services tiny)" in rows["model"]
    assert rows["model"].endswith("services tiny): auto: the package has no int8 graph")  # which graph, and why
    assert "0 answered: 0 predictions, 0 refused BUSY, 0 other errors" in rows["requests"]
    assert "0 in flight, 0 queued (4 workers, at most 1004 held)" in rows["queue"]
    assert "none since the start" in out and "off" in rows["continuous"]
    # the tiny model's card has no operating point: each threshold says it is the built-in default
    assert rows["thresholds"].endswith("event 0.5 (default), band low 0.6 (default), band high 0.9 (default)")
    assert "0 queued (0 B), 0 uploaded (0 B), 0 failed, 0 quarantined; reported " in rows["uploads"]


@pytest.mark.broker
def test_json_gives_every_devices_raw_answer_in_thing_order(
    devices: Callable[[str], Device], mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    devices("coop-8")
    devices("coop-7")
    code, out = run(capsys, "--broker", mosquitto.url, "--name", NAME, "--expect", "2", "--timeout", "10", "--json")
    answers = json.loads(out)
    assert code == ExitCode.OK and [a["thing"] for a in answers] == ["coop-7", "coop-8"]
    assert len({a["request_id"] for a in answers}) == 1
    assert all(a["name"] == NAME and a["inference"]["model"]["variant"] == "fp32" for a in answers)
    # without --name: the fleet-wide pair, which both answer too
    code, out = run(capsys, "--broker", mosquitto.url, "--expect", "2", "--timeout", "10", "--json")
    assert code == ExitCode.OK and [a["thing"] for a in json.loads(out)] == ["coop-7", "coop-8"]


@pytest.mark.broker
def test_the_last_error_and_counts_after_requests(
    devices: Callable[[str], Device], mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    devices("coop-7")
    cli.main(["classify", "--broker", mosquitto.url, "--name", NAME, "--payload", '{"topk": 1}'])
    assert '"code": "BAD_REQUEST"' in capsys.readouterr().out
    code, out = run(capsys, "--broker", mosquitto.url, "--name", NAME, "--expect", "1", "--timeout", "10")
    assert code == ExitCode.OK
    assert "1 answered: 0 predictions, 0 refused BUSY, 1 other errors" in out
    assert "last error  BAD_REQUEST at " in out and "unknown field(s): topk" in out


@pytest.mark.broker
def test_no_answer_is_a_timeout_that_says_what_to_check(mosquitto: Mosquitto) -> None:
    args = cli.build_parser().parse_args(["status", "--broker", mosquitto.url, "--name", "nobody", "--timeout", "0.3"])
    with pytest.raises(TimedOutError) as raised:
        args.handler(args)
    assert raised.value.message == "no device answered on /response/status/nobody within 0.3 s"
    assert raised.value.hint is not None and "same --name and --broker" in raised.value.hint
    assert raised.value.exit_code == ExitCode.TIMED_OUT


@pytest.mark.parametrize(
    ("argv", "fragment"), [(["--timeout", "0"], "give a number of seconds above 0"), (["--name", "a/b"], "'a/b'")]
)
def test_bad_values_are_usage_errors_of_the_status_command(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["status", *argv])
    err = capsys.readouterr().err
    assert exited.value.code == ExitCode.INVALID_INPUT and err.startswith("usage: fieldlens status") and fragment in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--expect", "0"], "--expect 0 must be at least 1"),
        (["--thing-group", "fieldlens-devices"], "is not a thing group ARN"),
    ],
)
def test_bad_flags_are_invalid_input_before_anything_is_asked(argv: list[str], fragment: str) -> None:
    args = cli.build_parser().parse_args(["status", "--broker", "mqtt://127.0.0.1:9", *argv])  # nothing listens
    with pytest.raises(InvalidInputError) as raised:
        args.handler(args)
    assert fragment in raised.value.message and raised.value.exit_code == ExitCode.INVALID_INPUT


# -- --thing-group -------------------------------------------------------------------------------

GROUP = "arn:aws:iot:eu-west-1:123456789012:thinggroup/fieldlens-devices"
SEEN = datetime(2026, 11, 24, 3, 10, tzinfo=UTC)


@pytest.fixture
def greengrass() -> Iterator[tuple[Any, Stubber]]:
    client = botocore.session.get_session().create_client(
        "greengrassv2", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def device(name: str, status: str = "HEALTHY") -> dict[str, Any]:
    return {"coreDeviceThingName": name, "status": status, "lastStatusUpdateTimestamp": SEEN}


def deployment(name: str, state: str, reason: str | None = None) -> dict[str, Any]:
    listed: dict[str, Any] = {
        "deploymentId": f"id-{name}",
        "deploymentName": name,
        "iotJobId": f"job-{name}",
        "targetArn": GROUP,
        "coreDeviceExecutionStatus": state,
        "creationTimestamp": SEEN,
        "modifiedTimestamp": SEEN,
    }
    return listed | ({"reason": reason} if reason else {})


def test_every_page_of_devices_and_of_their_deployments_is_read(greengrass: tuple[Any, Stubber]) -> None:
    client, stubber = greengrass
    stubber.add_response(
        "list_core_devices",
        {"coreDevices": [device("coop-8", "UNHEALTHY")], "nextToken": "t1"},
        {"thingGroupArn": GROUP},
    )
    stubber.add_response(
        "list_core_devices", {"coreDevices": [device("coop-7")]}, {"thingGroupArn": GROUP, "nextToken": "t1"}
    )
    stubber.add_response(
        "list_effective_deployments",
        {
            "effectiveDeployments": [deployment("fieldlens-2", "FAILED", "component fieldlens.Classifier broke")],
            "nextToken": "d1",
        },
        {"coreDeviceThingName": "coop-8"},
    )
    stubber.add_response(
        "list_effective_deployments",
        {"effectiveDeployments": [deployment("fieldlens-1", "SUCCEEDED")]},
        {"coreDeviceThingName": "coop-8", "nextToken": "d1"},
    )
    stubber.add_response("list_effective_deployments", {"effectiveDeployments": []}, {"coreDeviceThingName": "coop-7"})

    devices = core_devices(client, GROUP)
    assert [d["coreDeviceThingName"] for d in devices] == ["coop-7", "coop-8"]
    assert [d["deploymentName"] for d in devices[1]["effectiveDeployments"]] == ["fieldlens-2", "fieldlens-1"]
    assert core_device_lines(devices) == [
        "coop-7  HEALTHY  last report 2026-11-24T03:10:00.000Z",
        "  deployment  none",
        "",
        "coop-8  UNHEALTHY  last report 2026-11-24T03:10:00.000Z",
        "  deployment  fieldlens-2 (id-fieldlens-2)  FAILED  modified 2026-11-24T03:10:00.000Z; "
        "component fieldlens.Classifier broke",
        "  deployment  fieldlens-1 (id-fieldlens-1)  SUCCEEDED  modified 2026-11-24T03:10:00.000Z",
    ]


def test_a_group_without_core_devices_is_not_found(greengrass: tuple[Any, Stubber]) -> None:
    client, stubber = greengrass
    stubber.add_response("list_core_devices", {"coreDevices": []}, {"thingGroupArn": GROUP})
    with pytest.raises(NotFoundError) as raised:
        core_devices(client, GROUP)
    assert raised.value.exit_code == ExitCode.NOT_FOUND and "--region" in (raised.value.hint or "")


def test_botocores_errors_propagate_for_main_to_translate(greengrass: tuple[Any, Stubber]) -> None:
    client, stubber = greengrass
    stubber.add_client_error("list_core_devices", "AccessDeniedException", "not allowed", 403)
    with pytest.raises(ClientError) as raised:
        core_devices(client, GROUP)
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"


def test_the_region_comes_from_the_arn() -> None:
    assert thing_group_region(GROUP) == "eu-west-1"
    assert thing_group_region("arn:aws-cn:iot:cn-north-1:123456789012:thinggroup/a:b_c-d") == "cn-north-1"
    for wrong in ("fieldlens-devices", GROUP.replace("thinggroup", "thing"), GROUP + "/x"):
        with pytest.raises(InvalidInputError):
            thing_group_region(wrong)
