from __future__ import annotations

import threading

from fieldlens_cli.brokers import EmbeddedBroker
from fieldlens_cli.requester import Requester
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig


def test_the_embedded_broker_carries_mqtt_311_traffic_after_refusing_mqtt_5() -> None:
    with EmbeddedBroker() as broker:
        a = MqttBus(BrokerConfig(url=broker.url), "a").connect()
        b = MqttBus(BrokerConfig(url=broker.url), "b").connect()
        try:
            assert not a.mqtt5 and not b.mqtt5  # amqtt answers MQTT 5 with "unsupported protocol version"
            got = threading.Event()
            a.subscribe("/x/#", lambda message: got.set() if message.payload == b"hi" else None)
            b.publish("/x/y", b"hi")
            assert got.wait(5)
        finally:
            a.stop()
            b.stop()


def test_requester_matches_by_id_and_gives_anonymous_requests_the_first_unclaimed_response() -> None:
    from fieldlens_core.bus.memory import InMemoryBus

    bus = InMemoryBus()
    requester = Requester(bus, "/req", "/resp")
    sent: list[bytes] = []
    bus.subscribe("/req", lambda message: sent.append(message.payload))
    named = requester.send(b'{"request_id": "n1"}')
    anonymous = requester.send(b"{broken")
    bus.publish("/resp", b'{"request_id": "generated-by-device"}')
    bus.publish("/resp", b'{"request_id": "n1", "predictions": []}')
    assert named.wait(1) == {"request_id": "n1", "predictions": []}
    assert anonymous.wait(1) == {"request_id": "generated-by-device"}
    assert sent[1] == b"{broken"  # sent untouched


def test_asking_for_mqtt_5_from_a_3_1_1_broker_is_a_clear_error() -> None:
    import pytest

    from fieldlens_core.bus.mqtt import BusConnectionError

    # amqtt does not answer a version 5 CONNECT that carries properties: the timeout is the error
    with EmbeddedBroker() as broker, pytest.raises(BusConnectionError, match="did not accept us"):
        MqttBus(BrokerConfig(url=broker.url, protocol="5", connect_timeout_s=0.5), "strict").connect()
