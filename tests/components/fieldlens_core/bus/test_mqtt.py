"""MqttBus against the real mosquitto that the test setup starts."""

from __future__ import annotations

import socket
import threading

import pytest

from fieldlens_cli.brokers import free_port
from fieldlens_core.bus import Message
from fieldlens_core.bus.mqtt import BusConnectionError, MqttBus
from fieldlens_core.config import BrokerConfig
from tests.helpers.broker import Mosquitto

pytestmark = pytest.mark.broker


def test_round_trip_through_the_broker_with_tcp_nodelay(mosquitto: Mosquitto) -> None:
    subscriber = MqttBus(BrokerConfig(url=mosquitto.url), "test-sub").connect()
    publisher = MqttBus(BrokerConfig(url=mosquitto.url), "test-pub").connect()
    try:
        got: list[tuple[str, bytes]] = []
        arrived = threading.Event()

        def on_message(message: Message) -> None:
            got.append((message.topic, message.payload))
            arrived.set()

        subscriber.subscribe("/bus-test/+", on_message)  # returns after the SUBACK
        publisher.publish("/bus-test/one", b"hello")
        assert arrived.wait(5)
        assert got == [("/bus-test/one", b"hello")]
        assert subscriber.mqtt5 and publisher.mqtt5  # mosquitto speaks MQTT 5
        sock = publisher._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        subscriber.stop()
        publisher.stop()


def test_a_broker_that_is_not_there_is_a_clear_error() -> None:
    config = BrokerConfig(url=f"mqtt://127.0.0.1:{free_port()}", connect_timeout_s=2)
    with pytest.raises(BusConnectionError, match="cannot reach MQTT broker"):
        MqttBus(config, "nobody").connect()
