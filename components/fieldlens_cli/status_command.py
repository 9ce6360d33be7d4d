"""`fieldlens status`: what each device's components report, or a thing group's core devices.

Over MQTT (the default): one status request on /request/status/<name> (or, without --name, the
fleet-wide /request/status), and every answer that comes back within --timeout, one per thing
(README, "Topics and payloads"). Any number of devices may answer on one name, so the command
waits the whole --timeout unless --expect says how many to wait for. The same request works from
the AWS IoT console's MQTT test client.

With --thing-group: AWS IoT Greengrass's own view, from the cloud, of each core device of the
group: its status (HEALTHY or UNHEALTHY), when it last reported, and its effective deployments
and their states. The greengrassv2 client is built in the handler only; botocore's errors (no
credentials, no region, access denied) propagate to main(), which reports them.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from datetime import datetime
from typing import Any

from fieldlens_cli.arguments import Subcommands, broker_arguments, broker_config, positive_seconds
from fieldlens_cli.output import emit
from fieldlens_cli.stack import connect
from fieldlens_core import topics
from fieldlens_core.bus import Bus, Message
from fieldlens_core.errors import ExitCode, InvalidInputError, NotFoundError, TimedOutError
from fieldlens_core.messages import StatusRequest, new_request_id, utc_timestamp

DEFAULT_TIMEOUT_S = 3.0
THING_GROUP_ARN = re.compile(r"^arn:aws[a-z-]*:iot:(?P<region>[a-z0-9-]+):\d{12}:thinggroup/[A-Za-z0-9:_-]{1,128}$")
ARN_HINT = (
    "Pass the group's ARN, arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME; "
    "`aws iot describe-thing-group --thing-group-name NAME --query thingGroupArn` prints it"
)
DESCRIPTION = """\
Ask the devices over MQTT: one request on /request/status/NAME (without --name, the fleet-wide
/request/status), and every answer within --timeout, one per thing: the model served, the
classifier's queue and its answers by outcome, the last error, continuous mode, and the uploader's
latest figures. From the AWS IoT console: publish {} to /request/status/NAME, subscribe to
/response/status/NAME.

With --thing-group ARN, ask AWS IoT Greengrass instead: each core device of the group, its status
and last report, and its effective deployments and their states (AWS credentials needed)."""


def register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "status",
        help="what each device's components report (or a thing group's core devices and deployments)",
        description=DESCRIPTION,
    )
    broker_arguments(parser)
    for action in parser._actions:  # the shared --name speaks of classify topics
        if action.dest == "name":
            action.help = (
                "ask the devices configured with this name, /request/status/NAME -> /response/status/NAME "
                "(default: the fleet-wide pair /request/status -> /response/status, which every device answers)"
            )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for answers; every device that answers within it is shown (default %(default)s)",
    )
    parser.add_argument(
        "--expect",
        type=int,
        metavar="N",
        help="stop waiting once N devices have answered (default: wait the whole --timeout)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw answers as JSON")
    parser.add_argument(
        "--thing-group",
        metavar="ARN",
        help="ask AWS IoT Greengrass instead: each core device of this thing group, its status and deployments "
        "(default: ask the devices over MQTT)",
    )
    parser.add_argument("--region", help="with --thing-group: the AWS region (default: the ARN's)")
    parser.set_defaults(handler=status, log_level_default="WARNING")  # the table alone on the terminal


def status(args: argparse.Namespace) -> int:
    if args.thing_group is not None:
        return thing_group_status(args)
    if args.expect is not None and args.expect < 1:
        raise InvalidInputError(
            f"--expect {args.expect} must be at least 1", "Leave it out to wait the whole --timeout"
        )
    answered_on = topics.status_response_topic(args.name)  # --name was checked by argparse (topic_name)
    bus = connect(broker_config(args, connect_timeout_s=args.timeout), "status")  # unreachable: main() reports it
    try:
        answers = ask(bus, args.name, args.timeout, args.expect)
    finally:
        bus.stop()
    if not answers:
        raise TimedOutError(
            f"no device answered on {answered_on} within {args.timeout:g} s",
            f"Is `fieldlens serve` running with the same --name and --broker ({args.broker})? On a core, is "
            "fieldlens.Classifier deployed with that name and running (`fieldlens status --thing-group ARN`)?",
        )
    if args.json:
        emit(json.dumps(answers, indent=2))
    else:
        for line in device_lines(answers):
            emit(line)
    return ExitCode.ERROR_RESPONSE if any("error" in answer for answer in answers) else ExitCode.OK


def ask(
    bus: Bus, name: str | None, timeout_s: float, expect: int | None = None, request_id: str | None = None
) -> list[dict[str, Any]]:
    """Every device's answer to one status request, in thing order: all that came within
    ``timeout_s``, or the first ``expect`` of them. A thing's first answer counts (a second one
    is a QoS 1 duplicate); answers to other requests, and messages that are no answer, are not ours."""
    request_id = request_id or new_request_id()
    answers: dict[str, dict[str, Any]] = {}
    arrived = threading.Condition()

    def on_answer(message: Message) -> None:
        try:
            document = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(document, dict) or document.get("request_id") != request_id:
            return
        thing = document.get("thing")
        if isinstance(thing, str):
            with arrived:
                answers.setdefault(thing, document)
                arrived.notify_all()

    bus.subscribe(topics.status_response_topic(name), on_answer)  # returns once subscribed: no answer is missed
    bus.publish(topics.status_request_topic(name), StatusRequest(request_id=request_id).model_dump_json().encode())
    with arrived:
        arrived.wait_for(lambda: expect is not None and len(answers) >= expect, timeout_s)
        return [answers[thing] for thing in sorted(answers)]


# -- the table ----------------------------------------------------------------------------------


def device_lines(answers: list[dict[str, Any]]) -> list[str]:
    """Each device's answer as a few labelled lines, a blank line between devices."""
    lines: list[str] = []
    for answer in answers:
        if lines:
            lines.append("")
        lines += _device(answer)
    return lines


def _row(label: str, text: str) -> str:
    return f"  {label:<11} {text}"


def _device(answer: dict[str, Any]) -> list[str]:
    head = f"{answer.get('thing')}  name {answer.get('name')}  answered {answer.get('timestamp', '?')}"
    error = answer.get("error")
    if error:
        return [head, _row("error", f"{error.get('code')}: {error.get('message')}")]
    if answer.get("started"):
        head += f"  (status since {answer['started']})"
    lines = [head, _row("model", _model(answer.get("inference") or {}))]
    requests = answer.get("requests")
    if requests:
        others = sum(requests["errors"].values()) - requests["busy"]
        lines.append(
            _row(
                "requests",
                f"{requests['answered']} answered: {requests['predictions']} predictions, "
                f"{requests['busy']} refused BUSY, {others} other errors",
            )
        )
    queue = answer.get("queue")
    if queue:
        lines.append(
            _row(
                "queue",
                f"{queue['in_flight']} in flight, {queue['queued']} queued ({queue['workers']} workers, at most "
                f"{queue['max_held']} held); expected wait {queue['expected_wait_ms']:g} ms "
                f"of {queue['max_wait_ms']} ms",
            )
        )
    last = answer.get("last_error")
    lines.append(
        _row("last error", f"{last['code']} at {last['at']} (request {last['request_id']}): {last['message']}")
        if last
        else _row("last error", "none since the start")
    )
    if answer.get("operating_point"):
        lines.append(_row("thresholds", _operating_point(answer["operating_point"])))
    if answer.get("continuous"):
        lines.append(_row("continuous", _continuous(answer["continuous"])))
    lines += _uploads(answer.get("uploads"))
    return lines


def _operating_point(point: dict[str, Any]) -> str:
    """The thresholds in effect and where each comes from: a person tuning minConfidence needs to
    know whether the model's card or the configuration decided it."""

    def setting(name: str, key: str) -> str:
        return f"{name} {point[key]['value']:g} ({point[key]['source']})"

    groups = point.get("class_groups") or []
    text = ", ".join(
        (setting("event", "min_confidence"), setting("band low", "band_low"), setting("band high", "band_high"))
    )
    return text + (f"; class groups {', '.join(groups)}" if groups else "")


def _model(inference: dict[str, Any]) -> str:
    model = inference.get("model")
    if not model:
        error = inference.get("error") or {}
        return f"none: {error.get('code', 'UNKNOWN')}: {error.get('message', 'no answer from the inference service')}"
    variant = f" {model['variant']}" if model.get("variant") else ""
    services = ", ".join(model.get("services") or []) or "none"
    why = f": {model['variant_reason']}" if model.get("variant_reason") else ""
    return f"{model['name']} {model['version']}{variant} (sha256 {model['sha256'][:12]}, services {services}){why}"


def _continuous(continuous: dict[str, Any]) -> str:
    if not continuous.get("running"):
        return "off"
    rate = f"{continuous['fps']:g} fps" if continuous.get("fps") else "as fast as inference allows"
    if continuous.get("measured_fps") is not None:
        rate += f" (measured {continuous['measured_fps']:g})"
    text = (
        f"on at {rate}: {continuous['frames']} frames, {continuous['dropped']} dropped, {continuous['events']} events"
    )
    if continuous.get("in_view"):
        text += f"; in view: {continuous['in_view']}"
    if continuous.get("failing"):
        text += f"; failing: {continuous['failing']}"
    return text


def _uploads(uploads: dict[str, Any] | None) -> list[str]:
    if not uploads:
        return [_row("uploads", "no report from the uploader heard yet (it reports every statusIntervalS)")]
    oldest = f", oldest {uploads['oldest_age_s']:g} s" if uploads.get("oldest_age_s") is not None else ""
    text = (
        f"{uploads['queued']} queued ({_bytes(uploads['queued_bytes'])}{oldest}), {uploads['uploaded']} uploaded "
        f"({_bytes(uploads['uploaded_bytes'])}), {uploads['failed']} failed, {uploads['quarantined']} quarantined; "
        f"reported {uploads['timestamp']}"
    )
    if uploads.get("heard_s_ago") is not None:
        text += f", heard {uploads['heard_s_ago']:g} s before this answer"
    lines = [_row("uploads", text)]
    if uploads.get("last_error"):
        lines.append(_row("", f"last upload error: {uploads['last_error']}"))
    return lines


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


# -- --thing-group: Greengrass's view from the cloud ---------------------------------------------


def thing_group_status(args: argparse.Namespace) -> int:
    region = thing_group_region(args.thing_group)
    import boto3

    greengrass = boto3.client("greengrassv2", region_name=args.region or region)
    devices = core_devices(greengrass, args.thing_group)
    if args.json:
        emit(json.dumps({"thingGroupArn": args.thing_group, "coreDevices": devices}, indent=2, default=_json_value))
    else:
        for line in core_device_lines(devices):
            emit(line)
    return ExitCode.OK


def thing_group_region(arn: str) -> str:
    """The region a thing group ARN names; InvalidInputError when it is not one."""
    match = THING_GROUP_ARN.match(arn)
    if match is None:
        raise InvalidInputError(f"--thing-group {arn!r} is not a thing group ARN", ARN_HINT)
    return match.group("region")


def core_devices(greengrass: Any, thing_group_arn: str) -> list[dict[str, Any]]:
    """Each core device of the group as ListCoreDevices gives it, with its ``effectiveDeployments``
    from ListEffectiveDeployments, both paginated; in thing order. NotFoundError for a group with none."""
    devices: list[dict[str, Any]] = []
    for page in greengrass.get_paginator("list_core_devices").paginate(thingGroupArn=thing_group_arn):
        devices += page.get("coreDevices", [])
    if not devices:
        raise NotFoundError(
            f"thing group {thing_group_arn} has no Greengrass core device",
            "A core device is listed once its nucleus was installed into the group and has connected; check the "
            "ARN, and --region if the group is in another one",
        )
    for device in devices:
        deployments: list[dict[str, Any]] = []
        paginator = greengrass.get_paginator("list_effective_deployments")
        for page in paginator.paginate(coreDeviceThingName=device["coreDeviceThingName"]):
            deployments += page.get("effectiveDeployments", [])
        device["effectiveDeployments"] = deployments
    return sorted(devices, key=lambda d: str(d["coreDeviceThingName"]))


def core_device_lines(devices: list[dict[str, Any]]) -> list[str]:
    """A device per line, each of its deployments on its own line below it."""
    lines: list[str] = []
    for device in devices:
        if lines:
            lines.append("")
        reported = _when(device.get("lastStatusUpdateTimestamp"))
        lines.append(f"{device['coreDeviceThingName']}  {device.get('status', 'UNKNOWN')}  last report {reported}")
        deployments = device["effectiveDeployments"]
        if not deployments:
            lines.append(_row("deployment", "none"))
        for deployment in deployments:
            name = deployment.get("deploymentName") or "(unnamed)"
            text = (
                f"{name} ({deployment.get('deploymentId')})  {deployment.get('coreDeviceExecutionStatus')}  "
                f"modified {_when(deployment.get('modifiedTimestamp'))}"
            )
            if deployment.get("reason"):
                text += f"; {deployment['reason']}"
            lines.append(_row("deployment", text))
    return lines


def _when(value: Any) -> str:
    return utc_timestamp(value) if isinstance(value, datetime) else "never" if value is None else str(value)


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return utc_timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
