"""The bus over paho-mqtt, for any broker: Mosquitto, the demo's embedded broker, AWS IoT Core.

MQTT 5 where the broker speaks it (Mosquitto, AWS IoT Core), so that a request's response
topic and correlation data arrive, and retained publishes are told apart from live ones;
MQTT 3.1.1 when the broker refuses version 5 (the demo's embedded amqtt broker) or when
the configuration asks for it. QoS 1, TLS with an X.509 client certificate for AWS IoT Core.
TCP_NODELAY is set on the socket: without it Nagle and delayed ACKs add about 40 ms to
every request/response round trip.

Under MQTT 5 the CONNECT announces a Maximum Packet Size (``max_packet_bytes``): the broker
drops a larger message instead of sending it, so a huge payload never reaches this process.
Over 3.1.1 there is no such property; the classifier's own size check refuses it after paho
has read it.

Subscriptions under MQTT 5 use retain-as-published (so a retained publish, and the empty
publish that clears one, arrive flagged) and retain handling 2 (the broker sends no stored
retained message when we subscribe): a retained request is never replayed at a reconnect.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fieldlens_core.bus import Message, MessageHandler, topic_matches
from fieldlens_core.config import BrokerConfig
from fieldlens_core.errors import EXIT_CANNOT_CONNECT, FieldlensError
from fieldlens_core.topics import validate_publish_topic

log = logging.getLogger(__name__)

QOS = 1
UNSUPPORTED_PROTOCOL = "Unsupported protocol version"


class BusConnectionError(FieldlensError, ConnectionError):
    """The broker could not be reached, refused the connection, or did not acknowledge in time."""

    exit_code = EXIT_CANNOT_CONNECT


class MqttBus:
    def __init__(self, config: BrokerConfig, client_id: str) -> None:
        self._config = config
        self._client_id = config.client_id or client_id
        self._lock = threading.Lock()
        self._subscriptions: list[tuple[str, MessageHandler]] = []
        self._pending_subacks: dict[int, threading.Event] = {}
        self._connected = threading.Event()
        self._ever_connected = False
        self.on_connection_change: Callable[[bool], None] | None = None
        """Called with True on every (re)connection and False on every loss, from paho's thread."""
        self._connect_error: str | None = None
        self._stopped = False
        self.protocol = mqtt.MQTTv311 if config.protocol == "3.1.1" else mqtt.MQTTv5
        self._client = self._new_client()

    @property
    def mqtt5(self) -> bool:
        return self.protocol == mqtt.MQTTv5

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=self.protocol,
            clean_session=None if self.mqtt5 else True,  # MQTT 5 sets clean_start in connect()
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._on_socket_open
        client.max_queued_messages_set(10_000)
        self._configure_tls(client)
        return client

    def _configure_tls(self, client: mqtt.Client) -> None:
        if self._config.tls:
            client.tls_set(
                ca_certs=str(self._config.ca_file) if self._config.ca_file else None,
                certfile=str(self._config.cert_file) if self._config.cert_file else None,
                keyfile=str(self._config.key_file) if self._config.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )

    def connect(self) -> MqttBus:
        """Connect and wait for the broker's CONNACK; raise BusConnectionError otherwise.

        With ``protocol: auto``, a bare MQTT 5 CONNECT (no properties) asks first whether the
        broker speaks 5: a 3.1.1-only broker answers "unsupported protocol version" at once. The
        real connection follows, with the Maximum Packet Size property where 5 is spoken (the
        demo's amqtt broker does not answer a version 5 CONNECT that carries properties at all,
        so the property cannot be sent on the question).
        """
        if self._config.protocol == "auto" and not self._speaks_mqtt5():
            log.info("MQTT broker at %s does not speak MQTT 5; using 3.1.1", self._config.url)
            self.protocol = mqtt.MQTTv311
            self._client = self._new_client()
        self._connect_once()
        return self

    def _speaks_mqtt5(self) -> bool:
        """False only when the broker refuses MQTT 5 itself; any other failure is the real connect's to report."""
        answered = threading.Event()
        refused: list[bool] = []

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            refused.append(reason.is_failure and str(reason) == UNSUPPORTED_PROTOCOL)
            client.disconnect()
            answered.set()

        # The real client id: AWS IoT Core's policy admits only the thing's own, and refuses others by
        # closing the connection, which would cost the whole connect timeout here at every start.
        probe = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5
        )
        probe.on_connect = on_connect
        self._configure_tls(probe)
        try:
            probe.connect(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        except OSError:
            return True  # unreachable: the real connect says so
        probe.loop_start()
        answered.wait(self._config.connect_timeout_s)
        probe.disconnect()
        probe.loop_stop()
        return not (refused and refused[0])

    def _connect_once(self) -> None:
        self._connected.clear()
        try:
            if self.mqtt5:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.MaximumPacketSize = self._config.max_packet_bytes
                self._client.connect(
                    self._config.host,
                    self._config.port,
                    keepalive=self._config.keepalive_s,
                    clean_start=True,
                    properties=properties,
                )
            else:
                self._client.connect(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        except OSError as exc:
            raise BusConnectionError(f"cannot reach MQTT broker at {self._config.url}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(self._config.connect_timeout_s) or self._connect_error:
            self._client.disconnect()  # first: it wakes the network loop, which loop_stop() then joins at once
            self._client.loop_stop()
            reason = self._connect_error or f"no CONNACK within {self._config.connect_timeout_s}s"
            raise BusConnectionError(f"MQTT broker at {self._config.url} did not accept us: {reason}")

    def publish(self, topic: str, payload: bytes, correlation_data: bytes | None = None) -> None:
        """Raises ValueError for a topic a broker would refuse, before paho queues anything: paho
        re-sends a queued QoS 1 publish after every reconnect, so a topic that makes the broker
        drop the connection would otherwise keep this client off the broker for good."""
        validate_publish_topic(topic)
        properties = None
        if self.mqtt5 and correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=QOS, properties=properties)
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

    def _send_subscribe(self, client: mqtt.Client, topic: str) -> tuple[int, int | None]:
        if self.mqtt5:
            options = SubscribeOptions(
                qos=QOS, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND
            )
            return client.subscribe(topic, options=options)
        return client.subscribe(topic, qos=QOS)

    def _subscribe_and_wait(self, topic: str) -> None:
        acked = threading.Event()
        with self._lock:
            rc, mid = self._send_subscribe(self._client, topic)
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
            if self._ever_connected:  # paho goes on retrying, as it should after a broker restart
                log.error("MQTT reconnection refused: %s", reason)
                return
            client.disconnect()  # the first connect failed: end the network loop now, not after its retry delay
            self._connected.set()  # wake connect(), which reads the error
            return
        self._ever_connected = True
        if self.on_connection_change is not None:
            self.on_connection_change(True)
        log.info("connected to MQTT broker %s (MQTT %s)", self._config.url, "5" if self.mqtt5 else "3.1.1")
        with self._lock:
            topics = [topic for topic, _ in self._subscriptions]
        for topic in topics:  # after a reconnect (clean session), subscribe again
            self._send_subscribe(client, topic)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._stopped or not self._ever_connected:
            return
        log.warning("lost the MQTT broker %s: %s (paho reconnects)", self._config.url, reason)
        if self.on_connection_change is not None:
            self.on_connection_change(False)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            event = self._pending_subacks.pop(mid, None)
        if event is not None:
            event.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation_data = getattr(properties, "CorrelationData", None)
        delivered = Message(
            topic=message.topic,
            payload=bytes(message.payload),
            retained=bool(message.retain),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=bytes(correlation_data) if isinstance(correlation_data, bytes | bytearray) else None,
        )
        with self._lock:
            handlers = [h for f, h in self._subscriptions if topic_matches(f, message.topic)]
        for handler in handlers:
            try:
                handler(delivered)
            except Exception:  # a handler bug must not kill paho's network thread
                log.exception("handler for %s failed", message.topic)
