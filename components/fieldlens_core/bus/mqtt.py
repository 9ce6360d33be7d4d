"""The bus over paho-mqtt, for any broker: Mosquitto, the demo's embedded broker, AWS IoT Core.

MQTT 3.1.1 (the embedded broker and AWS IoT Core both speak it), QoS 1, TLS with an X.509
client certificate for AWS IoT Core. TCP_NODELAY is set on the socket: without it Nagle
and delayed ACKs add about 40 ms to every request/response round trip.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldlens_core.bus import MessageHandler, topic_matches
from fieldlens_core.config import BrokerConfig

log = logging.getLogger(__name__)

QOS = 1


class BusConnectionError(ConnectionError):
    """The broker could not be reached, refused the connection, or did not acknowledge in time."""


class MqttBus:
    def __init__(self, config: BrokerConfig, client_id: str) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._subscriptions: list[tuple[str, MessageHandler]] = []
        self._pending_subacks: dict[int, threading.Event] = {}
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._stopped = False
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id or client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.max_queued_messages_set(10_000)
        if config.tls:
            self._client.tls_set(
                ca_certs=str(config.ca_file) if config.ca_file else None,
                certfile=str(config.cert_file) if config.cert_file else None,
                keyfile=str(config.key_file) if config.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )

    def connect(self) -> MqttBus:
        """Connect and wait for the broker's CONNACK; raise BusConnectionError otherwise."""
        try:
            self._client.connect(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        except OSError as exc:
            raise BusConnectionError(f"cannot reach MQTT broker at {self._config.url}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(self._config.connect_timeout_s):
            self._client.loop_stop()
            reason = self._connect_error or f"no CONNACK within {self._config.connect_timeout_s}s"
            raise BusConnectionError(f"MQTT broker at {self._config.url} did not accept us: {reason}")
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=QOS)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: paho queues it and sends it after the reconnect.
            raise BusConnectionError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        with self._lock:
            self._subscriptions.append((topic, handler))
        self._subscribe_and_wait(topic)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._client.disconnect()
        self._client.loop_stop()

    def _subscribe_and_wait(self, topic: str) -> None:
        acked = threading.Event()
        with self._lock:
            rc, mid = self._client.subscribe(topic, qos=QOS)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise BusConnectionError(f"subscribe to {topic} failed: {mqtt.error_string(rc)}")
            self._pending_subacks[mid] = acked
        if not acked.wait(self._config.connect_timeout_s):
            raise BusConnectionError(f"broker did not acknowledge the subscription to {topic}")

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # a websocket or a test double: nothing to tune
            log.debug("could not set TCP_NODELAY on %r", sock)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            log.error("MQTT connection refused: %s", reason)
            return
        log.info("connected to MQTT broker %s", self._config.url)
        with self._lock:
            topics = [topic for topic, _ in self._subscriptions]
        for topic in topics:  # after a reconnect (clean session), subscribe again
            client.subscribe(topic, qos=QOS)
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            event = self._pending_subacks.pop(mid, None)
        if event is not None:
            event.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            handlers = [h for f, h in self._subscriptions if topic_matches(f, message.topic)]
        for handler in handlers:
            try:
                handler(message.topic, bytes(message.payload))
            except Exception:  # a handler bug must not kill paho's network thread
                log.exception("handler for %s failed", message.topic)
