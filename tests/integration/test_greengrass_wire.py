"""The components on the Greengrass IPC wire: the real awsiotsdk client against the test nucleus.

Everything here runs in this process, in well under a second each: the framing itself, the
nucleus's authorisation rules, the IPC bus and the live configuration over the real client, and
the classifier and the uploader started on their recipes' own accessControl, so that a topic
missing from a recipe fails here as it would fail on a core.
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from awsiot.eventstreamrpc import StreamClosedError
from awsiot.greengrasscoreipc.model import InvalidArgumentsError

from fieldlens_classifier.build import build_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core.bootstrap import NUCLEUS_SOCKET_ENV, connect_nucleus, set_up_component
from fieldlens_core.bus import Message
from fieldlens_core.bus.ipc import IpcBus
from fieldlens_core.errors import BusAuthorizationError, ConfigurationError, NucleusConnectionError
from fieldlens_core.greengrass_config import GreengrassConfiguration
from fieldlens_uploader.config import UploaderConfig
from tests.helpers.images import solid_jpeg
from tests.helpers.nucleus import access, wire
from tests.helpers.nucleus.nucleus import G, MqttMessage, TestNucleus, merge
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
THING = "coop-7"


def recipe_configuration(name: str) -> dict[str, Any]:
    """A recipe's DefaultConfiguration as a deployment hands it to the nucleus (no interpolation: the default)."""
    recipe = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    configuration: dict[str, Any] = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    return configuration


@pytest.fixture
def nucleus(socket_dir: Path) -> Iterator[TestNucleus]:
    with TestNucleus(socket_dir / "ipc.socket") as running:
        yield running


@pytest.fixture
def component(nucleus: TestNucleus, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, dict[str, Any]], None]:
    """Make this process a component the nucleus started: its token and the environment a nucleus gives."""

    def become(name: str, configuration: dict[str, Any]) -> None:
        monkeypatch.setenv("SVCUID", nucleus.add_component(name, configuration))
        monkeypatch.setenv(NUCLEUS_SOCKET_ENV, str(nucleus.socket_path))
        monkeypatch.setenv("AWS_IOT_THING_NAME", THING)
        monkeypatch.setenv("AWS_REGION", "eu-west-1")

    return become


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """IPC clients to close at the end of the test (each holds a connection and an executor)."""
    opened: list[Any] = []
    yield opened
    for client in opened:
        client.close()


def policy(service: str, operations: list[str], resources: list[str]) -> dict[str, Any]:
    return {"accessControl": {service: {"test:1": {"operations": operations, "resources": resources}}}}


# The framing.


def test_a_message_survives_the_wire_with_every_header_type() -> None:
    headers = (
        wire.Header("t", wire.HeaderType.BOOL_TRUE, True),
        wire.Header("f", wire.HeaderType.BOOL_FALSE, False),
        wire.Header("b", wire.HeaderType.BYTE, -5),
        wire.Header("s16", wire.HeaderType.INT16, -300),
        wire.Header.int32("s32", 70000),
        wire.Header("s64", wire.HeaderType.INT64, 2**40),
        wire.Header("raw", wire.HeaderType.BYTE_BUF, b"\x00\xff"),
        wire.Header.string("str", "héllo"),
        wire.Header("ts", wire.HeaderType.TIMESTAMP, 1_700_000_000_000),
        wire.Header("id", wire.HeaderType.UUID, uuid.UUID(int=7)),
    )
    message = wire.Message(headers, b'{"a": 1}')
    assert wire.decode(wire.encode(message)) == message


@pytest.mark.parametrize("at", [0, 9, 20, -1], ids=["prelude-length", "prelude-crc", "headers", "message-crc"])
def test_a_corrupted_byte_is_refused(at: int) -> None:
    frame = bytearray(wire.encode(wire.rpc_message(wire.MessageType.PING, payload=b"ping")))
    frame[at] ^= 0x01
    with pytest.raises(wire.FramingError):
        wire.decode(bytes(frame))


# The nucleus's authorisation rules.


@pytest.mark.parametrize(
    ("pattern", "resource", "mqtt_style", "allowed"),
    [
        ("/a/b", "/a/b", True, True),
        ("/a/b", "/a/bc", True, False),
        ("/response/#", "/response/reply/x/y", True, True),
        ("/response/#", "/response", True, True),  # a/# also matches a
        ("/response/#", "/response/reply/x", False, False),  # local pub/sub: '#' is a character
        ("/response/#", "/response/#", False, True),
        ("/response/*", "/response/reply/x/y", False, True),  # '*' is a glob everywhere
        ("/status/field-data/+", "/status/field-data/coop-7", True, True),
        ("/status/field-data/+", "/status/field-data/coop-7/x", True, False),
        ("/status/field-data/+", "/status/field-data/coop-7", False, False),
        ("/a+/b", "/a+/b", True, True),  # '+' not a whole level: a character
        ("/a+/b", "/ax/b", True, False),
        ("/a/${*}", "/a/*", False, True),
        ("/a/${*}", "/a/b", False, False),
        ("*", "anything/at/all", False, True),
        ("/status/field-data/{iot:thingName}", "/status/field-data/coop-7", True, False),  # not interpolated
    ],
)
def test_resources_match_as_the_nucleus_matches_them(
    pattern: str, resource: str, mqtt_style: bool, allowed: bool
) -> None:
    assert access.resource_matches(pattern, resource, mqtt_style) is allowed


def test_a_policy_with_a_bare_question_mark_is_dropped() -> None:
    configuration = policy(access.PUB_SUB, [G + "PublishToTopic"], ["/a", "/b?"])
    assert not access.is_authorized(configuration, access.PUB_SUB, G + "PublishToTopic", "/a")


# Connecting, as a component does.


def test_the_component_connects_with_its_svcuid(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    component("fieldlens.Test", {"x": 1})
    clients.append(connect_nucleus())
    assert [(c.component, c.accepted) for c in nucleus.server.connections_seen] == [("fieldlens.Test", True)]
    assert clients[0].get_configuration(key_path=["x"]).value == {"x": 1}


def test_a_token_the_nucleus_did_not_hand_out_is_refused_in_one_line(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nucleus answers a CONNECT_ACK without CONNECTION_ACCEPTED and closes at once; the client sees
    AccessDeniedError or, when the close overtakes the answer, a closed socket. Both name the token."""
    component("fieldlens.Test", {})
    monkeypatch.setenv("SVCUID", "a-token-from-an-earlier-nucleus-run")
    for _ in range(10):
        with pytest.raises(NucleusConnectionError, match=r"refused this process's IPC token \(SVCUID\)"):
            connect_nucleus()
    assert [c.accepted for c in nucleus.server.connections_seen] == [False] * 10


def test_without_svcuid_the_process_was_not_started_by_a_nucleus(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    component("fieldlens.Test", {})
    monkeypatch.delenv("SVCUID")
    with pytest.raises(NucleusConnectionError, match="not started by the Greengrass nucleus"):
        connect_nucleus()


def test_an_operation_the_nucleus_does_not_serve_fails_that_call_only(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    component("fieldlens.Test", {"x": 1})
    client = connect_nucleus()
    clients.append(client)
    with pytest.raises(StreamClosedError):  # the nucleus's answer has no model type: the client sees the stream end
        client.list_components()
    assert client.get_configuration(key_path=[]).value == {"x": 1}  # the connection is still good


# The IPC bus over the wire.


def collect() -> tuple[list[Message], threading.Event, Callable[[Message], None]]:
    received: list[Message] = []
    arrived = threading.Event()

    def handler(message: Message) -> None:
        received.append(message)
        arrived.set()

    return received, arrived, handler


def test_iot_core_messages_keep_their_mqtt5_properties_both_ways(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    ops = [G + "SubscribeToIoTCore", G + "PublishToIoTCore"]
    component("fieldlens.Test", policy(access.MQTT_PROXY, ops, ["/request/x", "/response/#"]))
    client = connect_nucleus()
    clients.append(client)
    bus = IpcBus(client, "iot_core")
    received, arrived, handler = collect()
    bus.subscribe("/request/x", handler)
    nucleus.iot_core.send("/request/x", b'{"a": 1}', correlation_data=b"\x00corr", response_topic="/response/r")
    assert arrived.wait(10)
    message = received[0]
    assert (message.topic, message.payload, message.retained) == ("/request/x", b'{"a": 1}', False)
    assert (message.correlation_data, message.response_topic) == (b"\x00corr", "/response/r")
    bus.publish("/response/r", b"answer", correlation_data=b"\x00corr")
    out = nucleus.iot_core.wait_for("/response/r")
    assert (out.payload, out.correlation_data, out.qos, out.source) == (b"answer", b"\x00corr", "1", "fieldlens.Test")


def test_a_retained_message_arrives_flagged(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    component("fieldlens.Test", policy(access.MQTT_PROXY, [G + "SubscribeToIoTCore"], ["/request/x"]))
    client = connect_nucleus()
    clients.append(client)
    received, arrived, handler = collect()
    IpcBus(client, "iot_core").subscribe("/request/x", handler)
    nucleus.iot_core.publish(MqttMessage("/request/x", b"{}", retain=True))
    assert arrived.wait(10)
    assert received[0].retained


@pytest.mark.parametrize(
    ("scope", "action", "service", "operation"),
    [
        ("iot_core", "publish", access.MQTT_PROXY, "PublishToIoTCore"),
        ("iot_core", "subscribe", access.MQTT_PROXY, "SubscribeToIoTCore"),
        ("local", "publish", access.PUB_SUB, "PublishToTopic"),
        ("local", "subscribe", access.PUB_SUB, "SubscribeToTopic"),
    ],
)
def test_a_topic_outside_the_policy_is_refused_naming_what_to_add(
    nucleus: TestNucleus,
    component: Callable[[str, dict[str, Any]], None],
    clients: list[Any],
    scope: Any,
    action: str,
    service: str,
    operation: str,
) -> None:
    component("fieldlens.Test", policy(service, [G + operation], ["/allowed"]))
    client = connect_nucleus()
    clients.append(client)
    bus = IpcBus(client, scope)
    with pytest.raises(BusAuthorizationError) as refused:
        if action == "publish":
            bus.publish("/elsewhere", b"{}")
        else:
            bus.subscribe("/elsewhere", lambda message: None)
    assert f"add '/elsewhere' to the resources of a policy allowing aws.greengrass#{operation}" in str(refused.value)
    assert f"accessControl.{service}" in str(refused.value)
    if action == "publish":
        bus.publish("/allowed", b"{}")  # the same call, allowed
    else:
        bus.subscribe("/allowed", lambda message: None)


def test_local_messages_arrive_with_their_topic_and_answers_go_out_locally(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    ops = [G + "SubscribeToTopic", G + "PublishToTopic"]
    component("fieldlens.Test", policy(access.PUB_SUB, ops, ["/request/x", "/response/*"]))
    client = connect_nucleus()
    clients.append(client)
    bus = IpcBus(client, "local")
    received, arrived, handler = collect()
    bus.subscribe("/request/x", handler)
    assert nucleus.publish_local("/request/x", b'{"b": 2}', source="another.Component") == 1
    assert arrived.wait(10)
    assert (received[0].topic, received[0].payload) == ("/request/x", b'{"b": 2}')
    bus.publish("/response/reply/deep/topic", b"r")
    out = nucleus.local_published.wait_for("/response/reply/deep/topic")
    assert (out.payload, out.source) == (b"r", "fieldlens.Test")


def test_stopping_the_bus_ends_its_streams_at_the_nucleus(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    component("fieldlens.Test", policy(access.MQTT_PROXY, [G + "SubscribeToIoTCore"], ["/request/#"]))
    client = connect_nucleus()
    clients.append(client)
    bus = IpcBus(client, "iot_core")
    for topic in ("/request/a", "/request/b"):
        bus.subscribe(topic, lambda message: None)
    assert len(nucleus.server.open_streams("fieldlens.Test")) == 2
    bus.stop()
    wait_until(lambda: not nucleus.server.open_streams("fieldlens.Test"), 10, "the streams closed at the nucleus")
    assert nucleus.iot_core.subscribers("/request/a") == []


# The live configuration over the wire.


def test_configuration_is_read_validated_and_its_updates_validated_then_applied(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    configuration = {**recipe_configuration("fieldlens.Uploader"), "bucket": None}
    component("fieldlens.Uploader", configuration)
    client = connect_nucleus()
    clients.append(client)
    greengrass = GreengrassConfiguration(client, UploaderConfig, {"thing_name": THING})
    assert greengrass.load().status_interval_s == 30.0
    changes: list[UploaderConfig] = []
    changed = threading.Event()

    def on_change(new: UploaderConfig) -> None:
        changes.append(new)
        changed.set()

    greengrass.watch(on_change)
    wait_until(lambda: nucleus.validating("fieldlens.Uploader"), 10, "the validation subscription")

    refused = nucleus.propose("fieldlens.Uploader", {**configuration, "statusIntervalS": "often"}, timeout_s=10)
    assert refused.status == "FAILED_NO_STATE_CHANGE" and refused.report is not None
    reason = "status_interval_s: Input should be a valid number"
    assert refused.report.status == "REJECTED" and reason in str(refused.report.message)
    assert "name = fieldlens.Uploader" in refused.message and reason in refused.message
    assert nucleus.configuration("fieldlens.Uploader")["statusIntervalS"] == 30.0

    accepted = nucleus.propose("fieldlens.Uploader", {**configuration, "statusIntervalS": 5.0}, timeout_s=10)
    assert accepted.status == "SUCCEEDED" and accepted.report is not None and accepted.report.status == "ACCEPTED"
    assert changed.wait(10)
    assert [c.status_interval_s for c in changes] == [5.0]  # one changed key, one event, the new value
    greengrass.stop()
    wait_until(lambda: not nucleus.server.open_streams("fieldlens.Uploader"), 10, "the configuration streams closed")


def test_a_component_updates_its_own_configuration_but_never_its_access_control(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    component("fieldlens.Test", {"a": {"b": 1, "c": 1}, **policy(access.PUB_SUB, [G + "PublishToTopic"], ["/x"])})
    client = connect_nucleus()
    clients.append(client)
    events: list[list[str]] = []
    arrived = threading.Event()

    def on_update(event: Any) -> None:
        events.append(event.configuration_update_event.key_path)
        arrived.set()

    client.subscribe_to_configuration_update(key_path=["a"], on_stream_event=on_update)
    client.update_configuration(key_path=["a"], value_to_merge={"b": 2}, timestamp=datetime.now(UTC))
    assert arrived.wait(10)
    assert events == [["a", "b"]] and nucleus.configuration("fieldlens.Test")["a"] == {"b": 2, "c": 1}
    with pytest.raises(InvalidArgumentsError):
        client.update_configuration(key_path=[], value_to_merge={"accessControl": {}}, timestamp=datetime.now(UTC))
    assert nucleus.configuration("fieldlens.Test")["accessControl"] != {}


def test_a_configuration_the_model_refuses_stops_the_component_before_it_starts(
    nucleus: TestNucleus, component: Callable[[str, dict[str, Any]], None], clients: list[Any]
) -> None:
    component("fieldlens.Uploader", {**recipe_configuration("fieldlens.Uploader"), "concurency": 8})
    client = connect_nucleus()
    clients.append(client)
    with pytest.raises(ConfigurationError, match="concurency"):
        GreengrassConfiguration(client, UploaderConfig).load()


# The components on their recipes' own accessControl.


def classifier_configuration(tiny_server: Path, tmp_path: Path, **options: Any) -> dict[str, Any]:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    (photos / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
    deployed = {
        "camera": {"source": "folder", "folder": str(photos)},
        "fieldDataDir": str(tmp_path / "field"),
        "inference": {"serviceName": "tiny", "socketPath": str(tiny_server)},
        "workers": 1,
        **options,
    }
    return merge(recipe_configuration("fieldlens.Classifier"), deployed)  # as a deployment's merge does


@pytest.fixture
def start_classifier(clients: list[Any]) -> Iterator[Callable[[], Any]]:
    """Start the classifier as its main() does on a core (configuration and bus over IPC), in this process."""
    started: list[Any] = []

    def start() -> Any:
        flags = {"thing_name": THING}  # what the recipe's Run step passes
        setup = set_up_component(ClassifierConfig, flags, argparse.Namespace(), lambda config: "unused off a core")
        assert setup.greengrass is not None
        clients.append(setup.greengrass.client)
        classifier, closing = build_classifier(setup.config, setup.bus)
        started.append((closing, setup))
        classifier.start()
        setup.greengrass.watch(classifier.update_config)
        return classifier

    yield start
    for closing, setup in started:
        for close in closing:
            close()
        setup.bus.stop()
        setup.greengrass.stop()


@pytest.mark.parametrize("options", [{}, {"busScope": "local"}], ids=["iot_core", "local"])
def test_the_classifier_starts_on_its_recipes_access_control_and_answers(
    nucleus: TestNucleus,
    component: Callable[[str, dict[str, Any]], None],
    start_classifier: Callable[[], Any],
    tiny_server: Path,
    tmp_path: Path,
    options: dict[str, Any],
) -> None:
    component("fieldlens.Classifier", classifier_configuration(tiny_server, tmp_path, **options))
    start_classifier()
    request = json.dumps({"request_id": "wire-1", "top_k": 1, "reply_topic": "/response/reply/console/1"}).encode()
    if options.get("busScope") == "local":  # from another component on the core; no MQTT 5 properties locally
        assert nucleus.publish_local("/request/classify/beverage_container", request) == 1
        answer = nucleus.local_published.wait_for("/response/reply/console/1")
    else:
        assert nucleus.iot_core.send("/request/classify/beverage_container", request, correlation_data=b"c-1") == 1
        answer = nucleus.iot_core.wait_for("/response/reply/console/1")
        assert answer.correlation_data == b"c-1"
    body = json.loads(answer.payload)
    assert (body["request_id"], body["predictions"][0]["label"], answer.source) == (
        "wire-1",
        "red",
        "fieldlens.Classifier",
    )


def drop_resource(configuration: dict[str, Any], service: str, resource: str) -> dict[str, Any]:
    for entry in configuration["accessControl"][service].values():
        entry["resources"] = [r for r in entry["resources"] if r != resource]
    return configuration


@pytest.mark.parametrize(
    ("service", "topic", "options"),
    [
        (access.MQTT_PROXY, "/request/classify", {}),
        (access.MQTT_PROXY, "/request/status/beverage_container", {}),
        (access.PUB_SUB, "/request/continuous", {"busScope": "local"}),
    ],
)
def test_a_recipe_missing_a_topic_fails_the_start_naming_it(
    nucleus: TestNucleus,
    component: Callable[[str, dict[str, Any]], None],
    start_classifier: Callable[[], Any],
    tiny_server: Path,
    tmp_path: Path,
    service: str,
    topic: str,
    options: dict[str, Any],
) -> None:
    configuration = drop_resource(classifier_configuration(tiny_server, tmp_path, **options), service, topic)
    component("fieldlens.Classifier", configuration)
    with pytest.raises(BusAuthorizationError, match=f"not authorised to subscribe to '{topic}'"):
        start_classifier()


def test_the_classifier_relays_the_uploaders_status_on_their_recipes_access_control(
    nucleus: TestNucleus,
    component: Callable[[str, dict[str, Any]], None],
    start_classifier: Callable[[], Any],
    tiny_server: Path,
    tmp_path: Path,
    clients: list[Any],
) -> None:
    """The uploader publishes on /status/field-data/<thing>, the classifier subscribes to it: both on their
    recipes' policies, with the thing name the nucleus knows, not a placeholder it does not replace."""
    component("fieldlens.Uploader", recipe_configuration("fieldlens.Uploader"))
    uploader_client = connect_nucleus()
    clients.append(uploader_client)
    component("fieldlens.Classifier", classifier_configuration(tiny_server, tmp_path))
    start_classifier()
    report = {
        "thing": THING,
        "destination": "s3://bucket",
        "queued": 0,
        "queued_bytes": 0,
        "uploaded": 3,
        "uploaded_bytes": 300,
        "quarantined": 0,
        "failed": 0,
        "timestamp": "2026-11-24T03:10:00.000Z",
    }
    topic = UploaderConfig(thing_name=THING).effective_status_topic
    IpcBus(uploader_client, "iot_core").publish(topic, json.dumps(report).encode())  # what its status loop does
    asked = [0]

    def relayed() -> bool:
        asked[0] += 1
        request_id = f"status-{asked[0]}"
        nucleus.iot_core.send("/request/status/beverage_container", json.dumps({"request_id": request_id}).encode())
        answer = nucleus.iot_core.wait_for(
            "/response/status/beverage_container", lambda m: json.loads(m.payload)["request_id"] == request_id
        )
        uploads = json.loads(answer.payload).get("uploads")
        return uploads is not None and uploads["uploaded"] == 3

    wait_until(relayed, 10, "the uploader's figures in the classifier's status")
