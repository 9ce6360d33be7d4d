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

A first connection that fails says why in one error with a hint: an untrusted broker
certificate (--ca), a broker that wants a client certificate or refuses ours (--cert, --key:
exit 4), a TLS port spoken to in plain MQTT. A broker that refuses a client certificate
does so after the TLS handshake, by closing the connection; paho reports only "unspecified
error" then, so the reason is read from paho's own error log line, up to the first CONNACK.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fieldlens_core.bus import Message, MessageHandler, topic_matches
from fieldlens_core.config import BrokerConfig
from fieldlens_core.errors import ExitCode, FieldlensError, InvalidInputError
from fieldlens_core.topics import validate_publish_topic

log = logging.getLogger(__name__)

QOS = 1
UNSUPPORTED_PROTOCOL = "Unsupported protocol version"


class BusConnectionError(FieldlensError, ConnectionError):
    """The broker could not be reached, refused the connection, or did not acknowledge in time."""

    exit_code = ExitCode.CANNOT_CONNECT


class BusNotAuthorisedError(BusConnectionError):
    """The broker refused who we are: no client certificate, one it does not trust, or credentials
    its CONNACK refuses (AWS IoT Core: a policy that does not allow this client id)."""

    exit_code = ExitCode.NOT_AUTHORISED


TRUST_HINT = (
    "Give with --ca the CA that signed the broker's certificate (AmazonRootCA1.pem for AWS IoT Core), "
    "and a host the certificate names"
)
CLIENT_CERT_HINT = "Give the device certificate and its private key with --cert and --key"
REFUSED_CERT_HINT = (
    "The broker does not accept the certificate given with --cert: use one signed by a CA it trusts "
    "(AWS IoT Core: a registered, active device certificate)"
)
CLOSED_HINT = (
    "It does not accept the certificate given with --cert (signed by a CA it does not trust; AWS IoT Core: not "
    "registered and active), or its policy does not allow iot:Connect for this client id (--client-id THING_NAME)"
)
TLS_PORT_HINT = "A TLS port (8883) takes mqtts:// with --ca, --cert and --key; mqtt:// is for a plain one (1883)"
CERT_REFUSALS = ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED")
CONNACK_REFUSALS = ("Not authorized", "Bad user name or password", "Banned")


def _pump(client: mqtt.Client, done: threading.Event, timeout_s: float) -> None:
    """Run paho's network loop in this thread until ``done`` is set, the connection is lost, or the time is up.

    Only for the first connection: paho's own thread (loop_start) reconnects after a failure and
    sleeps in whole seconds between tries, so a refused first connection would cost a second
    to stop; here a refusal ends the wait at once. The thread starts once the broker accepts us.
    """
    deadline = time.monotonic() + timeout_s
    while not done.is_set() and (remaining := deadline - time.monotonic()) > 0:
        if client.loop(min(remaining, 0.05)) != mqtt.MQTT_ERR_SUCCESS:
            return


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
        self._closed_early = False  # the broker closed the first connection before its CONNACK
        self._paho_error: str | None = None  # paho's last error line before the first CONNACK
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
        client.on_log = self._on_log  # until the first CONNACK only: paho formats every line for it
        client.max_queued_messages_set(10_000)
        self._configure_tls(client)
        return client

    def _configure_tls(self, client: mqtt.Client) -> None:
        """TLS for mqtts://; InvalidInputError when a file is missing, not PEM, or a key not the certificate's."""
        if self._config.tls:
            try:
                client.tls_set(
                    ca_certs=str(self._config.ca_file) if self._config.ca_file else None,
                    certfile=str(self._config.cert_file) if self._config.cert_file else None,
                    keyfile=str(self._config.key_file) if self._config.key_file else None,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                files = ", ".join(
                    f"{flag} {path}"
                    for flag, path in (
                        ("--ca", self._config.ca_file),
                        ("--cert", self._config.cert_file),
                        ("--key", self._config.key_file),
                    )
                    if path
                )
                raise InvalidInputError(
                    f"cannot use the TLS files ({files}): {getattr(exc, 'strerror', None) or exc}",
                    "Each must be a readable PEM file, and the key the certificate's own",
                ) from None

    def connect(self) -> MqttBus:
        """Connect and wait for the broker's CONNACK; raise BusConnectionError otherwise.

        With ``protocol: auto``, a bare MQTT 5 CONNECT (no properties) asks first whether the
        broker speaks 5: a 3.1.1-only broker answers "unsupported protocol version" at once. The
        real connection follows, with the Maximum Packet Size property where 5 is spoken (the
        demo's amqtt broker does not answer a version 5 CONNECT that carries properties at all,
        so the property cannot be sent on the question).
        """
        deadline = time.monotonic() + self._config.connect_timeout_s  # the question and the connection together
        if self._config.protocol == "auto" and not self._speaks_mqtt5():
            log.info("MQTT broker at %s does not speak MQTT 5; using 3.1.1", self._config.url)
            self.protocol = mqtt.MQTTv311
            self._client = self._new_client()
        self._connect_once(max(0.0, deadline - time.monotonic()))
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
        probe.on_disconnect = lambda *_: answered.set()  # closed unanswered: the real connect says why
        self._configure_tls(probe)
        try:
            probe.connect(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        except OSError:
            return True  # unreachable: the real connect says so
        _pump(probe, answered, self._config.connect_timeout_s)
        probe.disconnect()  # no network thread: written and closed at once
        return not (refused and refused[0])

    def _connect_once(self, timeout_s: float) -> None:
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
            raise self._unreachable(exc) from None
        _pump(self._client, self._connected, timeout_s)
        if not self._connected.is_set() or self._connect_error or self._closed_early:
            refusal = self._refusal()  # first: our own disconnect would look like the broker's close
            self._client.disconnect()
            raise refusal
        self._client.loop_start()  # from here on paho's thread keeps the connection, and reconnects

    def _unreachable(self, exc: OSError) -> BusConnectionError:
        """The error for a connection that failed before MQTT began: TCP, DNS, or the TLS handshake."""
        url = self._config.url
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or exc.reason
            return BusConnectionError(
                f"the certificate of the MQTT broker at {url} is not trusted: {reason}", TRUST_HINT
            )
        if isinstance(exc, ssl.SSLError):
            return BusConnectionError(f"TLS with the MQTT broker at {url} failed: {exc.reason or exc}", TLS_PORT_HINT)
        if isinstance(exc, ConnectionRefusedError):
            return BusConnectionError(
                f"cannot reach MQTT broker at {url}: connection refused",
                "Is a broker listening there? `fieldlens demo` starts one; mosquitto listens on 1883 by default",
            )
        if isinstance(exc, socket.gaierror):
            return BusConnectionError(f"cannot reach MQTT broker at {url}: unknown host", "Check the host in the URL")
        return BusConnectionError(f"cannot reach MQTT broker at {url}: {exc}")

    def _refusal(self) -> BusConnectionError:
        """The error for a first connection that got no CONNACK, a refusing one, or a closed socket."""
        url, config = self._config.url, self._config
        if self._connect_error is not None:
            if self._connect_error in CONNACK_REFUSALS:
                return BusNotAuthorisedError(
                    f"MQTT broker at {url} refused us: {self._connect_error}",
                    "Check --cert, --key and --client-id, and what the broker allows this client",
                )
            return BusConnectionError(f"MQTT broker at {url} did not accept us: {self._connect_error}")
        if not self._closed_early:
            return BusConnectionError(
                f"MQTT broker at {url} did not accept us: no CONNACK within {config.connect_timeout_s:g}s",
                "Is it an MQTT broker, and is the port the right one? --timeout waits longer",
            )
        detail = self._paho_error or ""
        said = f" ({detail.rpartition('] ')[2].split(' (_ssl')[0]})" if "[SSL" in detail else ""
        if "CERTIFICATE_REQUIRED" in detail or (config.tls and config.cert_file is None):
            return BusNotAuthorisedError(f"MQTT broker at {url} wants a client certificate{said}", CLIENT_CERT_HINT)
        if any(alert in detail for alert in CERT_REFUSALS):
            return BusNotAuthorisedError(f"MQTT broker at {url} refused our certificate{said}", REFUSED_CERT_HINT)
        if config.tls:
            return BusNotAuthorisedError(f"MQTT broker at {url} closed the connection before accepting us", CLOSED_HINT)
        return BusConnectionError(f"MQTT broker at {url} closed the connection before accepting us", TLS_PORT_HINT)

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
        client.on_log = None
        if self.on_connection_change is not None:
            self.on_connection_change(True)
        log.info("connected to MQTT broker %s (MQTT %s)", self._config.url, "5" if self.mqtt5 else "3.1.1")
        with self._lock:
            topics = [topic for topic, _ in self._subscriptions]
        for topic in topics:  # after a reconnect (clean session), subscribe again
            self._send_subscribe(client, topic)
        self._connected.set()

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, line: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._paho_error = line

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._stopped:
            return
        if not self._ever_connected:
            self._closed_early = True
            self._connected.set()  # wake connect(), which says why
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
