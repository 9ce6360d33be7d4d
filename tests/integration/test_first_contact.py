"""A new user's first minutes, with clients nobody here wrote, against the real mosquitto.

The classifier runs in process on the real MqttBus with the tiny model's inference server;
the requests come from mosquitto_pub/mosquitto_sub and from the AWS IoT Device SDK v2's own
MQTT 5 client (awscrt.mqtt5).
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import Mosquitto
from tests.helpers.device import Device
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.broker

REQUESTS = "/request/classify/beverage_container"


def test_the_consoles_first_message_on_the_users_own_topics(device: Device, mosquitto: Mosquitto) -> None:
    """`mosquitto_sub -t /response/prediction` sees the answer to the console's default payload on /request/classify."""
    # stdbuf: mosquitto_sub's stdout is block-buffered into a pipe; -W: it gives up by itself
    command = ["stdbuf", "-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p", str(mosquitto.port)]
    watcher = subprocess.Popen(
        [*command, "-t", "/response/prediction", "-C", "1", "-W", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        for line in watcher.stdout:  # -d prints the SUBACK: from then on nothing is missed
            if "SUBACK" in line:
                break
        mosquitto.publish("/request/classify", "-m", '{"message": "Hello from AWS IoT console"}')
        out, _ = watcher.communicate(timeout=15)
    finally:
        watcher.kill()
    response = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert response["message"] == "Hello from AWS IoT console" and response["thing"] == "coop-7"
    assert response["predictions"][0]["label"] == "red"


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_a_retained_request_never_runs_live_at_a_reconnect_or_when_cleared(
    device: Device, mosquitto: Mosquitto, version: str
) -> None:
    mosquitto.publish(REQUESTS, "-V", version, "-r", "-m", '{"request_id": "retained"}')
    mosquitto.publish(REQUESTS, "-m", '{"request_id": "fresh-1"}')
    assert device.answered("fresh-1") == ["fresh-1"]
    device.restart()  # a new connection and subscription: the broker still holds the retained request
    mosquitto.publish(REQUESTS, "-m", '{"request_id": "fresh-2"}')
    assert device.answered("fresh-2") == ["fresh-1", "fresh-2"]
    mosquitto.publish(REQUESTS, "-V", version, "-r", "-n")  # the user clears it
    mosquitto.publish(REQUESTS, "-m", '{"request_id": "fresh-3"}')
    assert device.answered("fresh-3") == ["fresh-1", "fresh-2", "fresh-3"]
    pairs = device.config.field_data_dir.rglob
    wait_until(lambda: len(list(pairs("*.json"))) >= 3, 10, "three pairs kept")  # written after the answers
    assert len(list(pairs("*.jpg"))) == 3  # one capture per real request


def test_over_mqtt_3_1_1_a_retained_replay_at_subscription_does_not_run(
    mosquitto: Mosquitto, tiny_server: Path, tmp_path: Path
) -> None:
    mosquitto.publish(REQUESTS, "-r", "-m", '{"request_id": "held"}')
    rig = Device(mosquitto, tiny_server, tmp_path, protocol="3.1.1")
    try:
        assert not rig.bus.mqtt5
        mosquitto.publish(REQUESTS, "-m", '{"request_id": "fresh"}')
        assert rig.answered("fresh") == ["fresh"]
    finally:
        rig.close()
        mosquitto.publish(REQUESTS, "-r", "-n")


def test_the_device_sdks_mqtt5_client_gets_its_answer_on_its_response_topic(
    device: Device, mosquitto: Mosquitto
) -> None:
    from awscrt import mqtt5

    received: list[Any] = []
    arrived, connected = threading.Event(), threading.Event()

    def on_publish(data: Any) -> None:
        received.append(data.publish_packet)
        arrived.set()

    client = mqtt5.Client(
        mqtt5.ClientOptions(
            host_name="127.0.0.1",
            port=mosquitto.port,
            connect_options=mqtt5.ConnectPacket(client_id="device-sdk-requester"),
            on_publish_callback_fn=on_publish,
            on_lifecycle_event_connection_success_fn=lambda data: connected.set(),
        )
    )
    client.start()
    try:
        assert connected.wait(10)
        subscription = mqtt5.Subscription(topic_filter="/response/console/42", qos=mqtt5.QoS.AT_LEAST_ONCE)
        client.subscribe(mqtt5.SubscribePacket(subscriptions=[subscription])).result(10)
        request = mqtt5.PublishPacket(
            topic=REQUESTS,
            payload=b'{"top_k": 2}',
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            response_topic="/response/console/42",
            correlation_data=b"\x01corr",
        )
        client.publish(request).result(10)
        assert arrived.wait(15)
    finally:
        client.stop()
    answer = received[0]
    assert answer.topic == "/response/console/42" and answer.correlation_data_bytes == b"\x01corr"
    assert json.loads(answer.payload)["predictions"][0]["label"] == "red"
    assert device.bus.mqtt5
