"""The test nucleus: the IPC services fieldlens uses, behind the nucleus's authorisation, with AWS IoT Core beside it.

Each operation answers as the nucleus's agent for it does (MqttProxyIPCAgent,
PubSubIPCEventStreamAgent, ConfigStoreIPCEventStreamAgent, LifecycleIPCEventStreamAgent),
errors and their messages included, so a component meets here what it meets on a core:

- IoT Core publish/subscribe (``aws.greengrass.ipc.mqttproxy``), authorised against the calling
  component's ``accessControl`` with MQTT wildcards; an unauthorised call is ``UnauthorizedError``
  ("Not Authorized"). :class:`IotCore` stands in for the cloud broker behind the core's
  connection: what components publish lands there and reaches every matching subscription,
  the core's own included, and a test publishes there as the IoT console would.
- local publish/subscribe (``aws.greengrass.ipc.pubsub``), authorised without MQTT wildcards.
- the configuration store: GetConfiguration, UpdateConfiguration, SubscribeToConfigurationUpdate
  (one event per changed key, keyed by its path) and the validation round trip of a deployment
  (:meth:`TestNucleus.propose`): SubscribeToValidateConfigurationUpdates, then
  SendConfigurationValidityReport, ACCEPTED or REJECTED with its message.
- UpdateState, recorded.

Configuration operations need no policy, as on a core.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldlens_core.bus import topic_matches
from tests.helpers.nucleus import access
from tests.helpers.nucleus.server import Call, IpcError, IpcServer, Operation, Stream

log = logging.getLogger(__name__)

G = "aws.greengrass#"
PUBLISH_TO_IOT_CORE, SUBSCRIBE_TO_IOT_CORE = G + "PublishToIoTCore", G + "SubscribeToIoTCore"
PUBLISH_TO_TOPIC, SUBSCRIBE_TO_TOPIC = G + "PublishToTopic", G + "SubscribeToTopic"
QOS = {"0": "AT_MOST_ONCE", "1": "AT_LEAST_ONCE"}
VALIDATION_TIMEOUT_S = 60.0  # what `fieldlens deploy` asks for (configurationValidationPolicy.timeoutInSeconds)


@dataclass(frozen=True)
class MqttMessage:
    """One message on AWS IoT Core, with the MQTT 5 properties the nucleus carries."""

    topic: str
    payload: bytes
    qos: str = "1"
    retain: bool = False
    correlation_data: bytes | None = None
    response_topic: str | None = None
    content_type: str | None = None
    payload_format: str | None = None
    message_expiry_interval_seconds: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    source: str = "cloud"  # the component that published it, or "cloud" for a test playing the console


def _b64decode(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise IpcError("InvalidArgumentsError", f"{what} is not base64") from None


class Messages:
    """Messages as they pass, kept in order, with a wait for the one a test expects."""

    def __init__(self) -> None:
        self._messages: list[MqttMessage] = []
        self._condition = threading.Condition()

    def add(self, message: MqttMessage) -> None:
        with self._condition:
            self._messages.append(message)
            self._condition.notify_all()

    def __iter__(self) -> Iterator[MqttMessage]:
        with self._condition:
            return iter(list(self._messages))

    def wait_for(
        self, topic: str, predicate: Callable[[MqttMessage], bool] = lambda m: True, timeout_s: float = 30.0
    ) -> MqttMessage:
        """The first message on ``topic`` (from anyone, at any time so far or within ``timeout_s``) that satisfies
        ``predicate``."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                for message in self._messages:
                    if message.topic == topic and predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self._messages})
                    raise AssertionError(f"nothing matching on {topic} within {timeout_s}s; topics seen: {seen}")
                self._condition.wait(left)


class IotCore:
    """AWS IoT Core as the core device's MQTT connection sees it (test-only: the cloud broker)."""

    def __init__(self) -> None:
        self.published = Messages()  # every message that reached IoT Core, in order
        self._subscriptions: list[tuple[str, Stream]] = []
        self._lock = threading.Lock()

    def subscribe(self, topic_filter: str, stream: Stream) -> None:
        with self._lock:
            self._subscriptions.append((topic_filter, stream))

        def unsubscribe() -> None:
            with self._lock:
                self._subscriptions = [(f, s) for f, s in self._subscriptions if s is not stream]

        stream.on_close.append(unsubscribe)

    def subscribers(self, topic: str) -> list[str]:
        """The components whose subscriptions would receive ``topic`` now."""
        with self._lock:
            return [s.component for f, s in self._subscriptions if topic_matches(f, topic)]

    def publish(self, message: MqttMessage) -> int:
        """Deliver to every matching subscription; returns how many there were."""
        with self._lock:
            targets = [s for f, s in self._subscriptions if topic_matches(f, message.topic)]
        self.published.add(message)
        body: dict[str, Any] = {
            "topicName": message.topic,
            "payload": base64.b64encode(message.payload).decode(),
            "retain": message.retain,
            "payloadFormat": message.payload_format or "BYTES",
        }
        optional = {
            "correlationData": base64.b64encode(message.correlation_data).decode()
            if message.correlation_data is not None
            else None,
            "responseTopic": message.response_topic,
            "contentType": message.content_type,
            "messageExpiryIntervalSeconds": message.message_expiry_interval_seconds,
            "userProperties": [{"key": k, "value": v} for k, v in message.user_properties] or None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return sum(stream.send_event("IoTCoreMessage", {"message": body}) for stream in targets)

    def send(self, topic: str, payload: bytes, **properties: Any) -> int:
        """A message from the cloud (the IoT console's test client), to the core's subscriptions."""
        return self.publish(MqttMessage(topic, payload, **properties))

    def wait_for(
        self, topic: str, predicate: Callable[[MqttMessage], bool] = lambda m: True, timeout_s: float = 30.0
    ) -> MqttMessage:
        return self.published.wait_for(topic, predicate, timeout_s)


@dataclass
class ComponentRecord:
    name: str
    token: str
    configuration: dict[str, Any]
    reported_states: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ValidityReport:
    status: str
    message: str | None


@dataclass(frozen=True)
class DeploymentResult:
    """What a deployment's status would say for one component's configuration change."""

    status: str  # SUCCEEDED, or FAILED_NO_STATE_CHANGE as the nucleus reports a refused configuration
    message: str
    report: ValidityReport | None  # the component's own answer, when it validated


def changed_paths(old: Any, new: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The key paths of every value that differs (leaves, and keys added or removed), as the nucleus notifies them."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                yield (*prefix, key)
            else:
                yield from changed_paths(old[key], new[key], (*prefix, key))
    elif old != new:
        yield prefix


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A deployment's MERGE: maps merge key by key, anything else (lists, null) replaces."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class TestNucleus:
    """The IPC services on ``socket_path``, the components' configurations, and IoT Core."""

    __test__ = False  # not a pytest test class

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.iot_core = IotCore()
        self.calls: list[tuple[str, str]] = []  # (component, operation) of every request served
        self.local_published = Messages()  # every message on local pub/sub (payloads of JSON messages as JSON)
        self._components: dict[str, ComponentRecord] = {}
        self._local: list[tuple[str, str, Stream]] = []  # (topic filter, receive mode, stream)
        self._config_watchers: list[tuple[str, tuple[str, ...], Stream]] = []
        self._validators: dict[str, Stream] = {}
        self._pending: dict[tuple[str, str], Future[ValidityReport]] = {}
        self._lock = threading.RLock()
        operations = {
            PUBLISH_TO_IOT_CORE: Operation(self._publish_to_iot_core),
            SUBSCRIBE_TO_IOT_CORE: Operation(self._subscribe_to_iot_core, streaming=True),
            PUBLISH_TO_TOPIC: Operation(self._publish_to_topic),
            SUBSCRIBE_TO_TOPIC: Operation(self._subscribe_to_topic, streaming=True),
            G + "GetConfiguration": Operation(self._get_configuration),
            G + "UpdateConfiguration": Operation(self._update_configuration),
            G + "SubscribeToConfigurationUpdate": Operation(self._subscribe_to_configuration_update, streaming=True),
            G + "SubscribeToValidateConfigurationUpdates": Operation(self._subscribe_to_validation, streaming=True),
            G + "SendConfigurationValidityReport": Operation(self._send_validity_report),
            G + "UpdateState": Operation(self._update_state),
        }
        self.server = IpcServer(socket_path, {k: self._recorded(k, v) for k, v in operations.items()}, self._token)

    def _recorded(self, name: str, operation: Operation) -> Operation:
        def handler(call: Call) -> dict[str, Any]:
            with self._lock:
                self.calls.append((call.component, name))
                return operation.handler(call)

        return Operation(handler, operation.streaming)

    def start(self) -> TestNucleus:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> TestNucleus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The nucleus's side: components, their tokens and configurations, deployments.

    def add_component(self, name: str, configuration: dict[str, Any]) -> str:
        """Register a component with its configuration; returns the SVCUID its processes get."""
        with self._lock:
            record = ComponentRecord(name, secrets.token_urlsafe(24), copy.deepcopy(configuration))
            self._components[name] = record
            return record.token

    def _token(self, token: str) -> str | None:
        with self._lock:
            return next((c.name for c in self._components.values() if secrets.compare_digest(c.token, token)), None)

    def configuration(self, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._components[name].configuration)

    def reported_states(self, name: str) -> list[str]:
        with self._lock:
            return list(self._components[name].reported_states)

    def propose(self, name: str, proposed: dict[str, Any], timeout_s: float = VALIDATION_TIMEOUT_S) -> DeploymentResult:
        """A deployment that changes ``name``'s configuration to ``proposed``, as DynamicComponentConfigurationValidator
        runs it: the component validates it over IPC if it subscribed to, then it is applied, or not."""
        deployment_id = str(uuid.uuid4())
        with self._lock:
            current = self._components[name].configuration
            if proposed == current:
                return DeploymentResult("SUCCEEDED", "no configuration change", None)
            validator = self._validators.get(name)
            report: Future[ValidityReport] = Future()
            if validator is not None:
                self._pending[(name, deployment_id)] = report
        if validator is not None:
            event = {"configuration": copy.deepcopy(proposed), "deploymentId": deployment_id}
            validator.send_event("ValidateConfigurationUpdateEvents", {"validateConfigurationUpdateEvent": event})
            try:
                answer = report.result(timeout=timeout_s)
            except FutureTimeout:
                return DeploymentResult(
                    "FAILED_NO_STATE_CHANGE",
                    "Error while waiting for validation report for one or more components: "
                    f"no report within {timeout_s}s",
                    None,
                )
            finally:
                with self._lock:
                    self._pending.pop((name, deployment_id), None)
            if answer.status == "REJECTED":
                message = (
                    "Components reported that their to-be-deployed configuration is invalid "
                    f"{{ name = {name}, message = {answer.message} }}"
                )
                return DeploymentResult("FAILED_NO_STATE_CHANGE", message, answer)
        else:
            answer = None
        self._apply(name, proposed)
        return DeploymentResult("SUCCEEDED", "configuration applied", answer)

    def _apply(self, name: str, new: dict[str, Any]) -> None:
        with self._lock:
            record = self._components[name]
            old, record.configuration = record.configuration, copy.deepcopy(new)
            watchers = [(path, stream) for watched, path, stream in self._config_watchers if watched == name]
        for changed in changed_paths(old, new):
            for path, stream in watchers:
                if changed[: len(path)] == path:
                    event = {"componentName": name, "keyPath": list(changed)}
                    stream.send_event("ConfigurationUpdateEvents", {"configurationUpdateEvent": event})

    def publish_local(self, topic: str, payload: bytes, source: str = "test") -> int:
        """A message on local pub/sub from another component (``source``); returns how many subscriptions got it."""
        self.local_published.add(MqttMessage(topic, payload, source=source))
        return self._deliver_local(topic, source, {"binaryMessage": self._binary(topic, payload)})

    # The IPC operations.

    def _configuration_of(self, component: str) -> dict[str, Any]:
        return self._components[component].configuration

    def _authorise(self, call: Call, service: str, topic: str, denied: str | None = None) -> None:
        if not access.is_authorized(self._configuration_of(call.component), service, call.operation, topic):
            reason = access.denial(call.component, service, call.operation, topic)
            log.info("%s: %s", "Not Authorized" if denied else "UnauthorizedError", reason)
            raise IpcError("UnauthorizedError", denied or reason)

    @staticmethod
    def _qos(request: dict[str, Any]) -> str:
        qos = request.get("qos")
        if qos is None:
            raise IpcError("InvalidArgumentsError", "QoS is required")
        if qos not in QOS:
            raise IpcError("InvalidArgumentsError", f"Invalid QoS value: {qos}")
        return str(qos)

    @staticmethod
    def _topic(request: dict[str, Any], key: str, missing: str) -> str:
        topic = request.get(key)
        if not isinstance(topic, str):
            raise IpcError("InvalidArgumentsError", missing)
        return topic

    def _publish_to_iot_core(self, call: Call) -> dict[str, Any]:
        request = call.request
        topic = self._topic(request, "topicName", "Topic is required")
        self._authorise(call, access.MQTT_PROXY, topic, denied="Not Authorized")
        if request.get("payload") is None:
            raise IpcError("InvalidArgumentsError", "Payload is required")
        payload = _b64decode(request["payload"], "payload")
        qos = self._qos(request)
        correlation = request.get("correlationData")
        properties = request.get("userProperties") or []
        self.iot_core.publish(
            MqttMessage(
                topic,
                payload,
                qos,
                bool(request.get("retain")),
                _b64decode(correlation, "correlationData") if correlation is not None else None,
                request.get("responseTopic"),
                request.get("contentType"),
                request.get("payloadFormat"),
                request.get("messageExpiryIntervalSeconds"),
                tuple((p.get("key", ""), p.get("value", "")) for p in properties),
                call.component,
            )
        )
        return {}

    def _subscribe_to_iot_core(self, call: Call) -> dict[str, Any]:
        topic = self._topic(call.request, "topicName", "Topic is required")
        self._authorise(call, access.MQTT_PROXY, topic, denied="Not Authorized")
        self._qos(call.request)
        assert call.stream is not None
        self.iot_core.subscribe(topic, call.stream)
        return {}

    @staticmethod
    def _binary(topic: str, payload: bytes) -> dict[str, Any]:
        return {"message": base64.b64encode(payload).decode(), "context": {"topic": topic}}

    def _deliver_local(self, topic: str, source: str, message: dict[str, Any]) -> int:
        with self._lock:
            targets = [
                stream
                for topic_filter, mode, stream in self._local
                if topic_matches(topic_filter, topic)
                and not (mode == "RECEIVE_MESSAGES_FROM_OTHERS" and stream.component == source)
            ]
        return sum(stream.send_event("SubscriptionResponseMessage", message) for stream in targets)

    def _publish_to_topic(self, call: Call) -> dict[str, Any]:
        topic = call.request.get("topic")
        if not isinstance(topic, str):
            raise IpcError("InvalidArgumentsError", "Publish topic must not be null")
        self._authorise(call, access.PUB_SUB, topic)
        if any(w in topic for w in "+#*"):
            raise IpcError("InvalidArgumentsError", "Publish topic must not contain a wildcard.")
        published = call.request.get("publishMessage") or {}
        if "binaryMessage" in published:
            payload = _b64decode((published["binaryMessage"] or {}).get("message", ""), "binaryMessage.message")
            message = {"binaryMessage": self._binary(topic, payload)}
        elif "jsonMessage" in published:
            body = (published["jsonMessage"] or {}).get("message")
            payload = json.dumps(body).encode()
            message = {"jsonMessage": {"message": body, "context": {"topic": topic}}}
        else:
            raise IpcError("InvalidArgumentsError", "publishMessage needs a jsonMessage or a binaryMessage")
        self.local_published.add(MqttMessage(topic, payload, source=call.component))
        self._deliver_local(topic, call.component, message)
        return {}

    def _subscribe_to_topic(self, call: Call) -> dict[str, Any]:
        topic = call.request.get("topic")
        self._authorise(call, access.PUB_SUB, str(topic))
        if not topic or not isinstance(topic, str):
            raise IpcError("InvalidArgumentsError", "Subscribe topic must not be empty")
        mode = call.request.get("receiveMode") or (
            "RECEIVE_MESSAGES_FROM_OTHERS" if any(w in topic for w in "+#") else "RECEIVE_ALL_MESSAGES"
        )
        stream = call.stream
        assert stream is not None
        self._local.append((topic, mode, stream))

        def unsubscribe() -> None:
            with self._lock:
                self._local = [entry for entry in self._local if entry[2] is not stream]

        stream.on_close.append(unsubscribe)
        return {}

    def _target(self, call: Call) -> ComponentRecord:
        name = call.request.get("componentName") or call.component
        record = self._components.get(name)
        if record is None:
            raise IpcError("ResourceNotFoundError", "Key not found")
        return record

    @staticmethod
    def _find(configuration: dict[str, Any], key_path: list[str]) -> Any:
        node: Any = configuration
        for key in key_path:
            if not isinstance(node, dict) or key not in node:
                raise IpcError("ResourceNotFoundError", "Key not found")
            node = node[key]
        return node

    def _get_configuration(self, call: Call) -> dict[str, Any]:
        record = self._target(call)
        key_path = call.request.get("keyPath") or []
        node = self._find(record.configuration, key_path)
        value = node if isinstance(node, dict) else {key_path[-1]: node}
        return {"componentName": record.name, "value": copy.deepcopy(value)}

    def _update_configuration(self, call: Call) -> dict[str, Any]:
        request = call.request
        if request.get("timestamp") is None:
            raise IpcError("InvalidArgumentsError", "Timestamp is required")
        value = request.get("valueToMerge")
        if value is None:
            raise IpcError("InvalidArgumentsError", "ValueToMerge is required")
        key_path = list(request.get("keyPath") or [])
        if (not key_path and isinstance(value, dict) and "accessControl" in value) or key_path[:1] == ["accessControl"]:
            raise IpcError("InvalidArgumentsError", "Config update is not allowed for following fields [accessControl]")
        record = self._components[call.component]
        update: Any = value
        for key in reversed(key_path):
            update = {key: update}
        if not isinstance(update, dict):
            raise IpcError("InvalidArgumentsError", "valueToMerge must be an object at the top level")
        self._apply(call.component, merge(record.configuration, update))
        return {}

    def _subscribe_to_configuration_update(self, call: Call) -> dict[str, Any]:
        record = self._target(call)
        key_path = tuple(call.request.get("keyPath") or [])
        self._find(record.configuration, list(key_path))
        stream = call.stream
        assert stream is not None
        self._config_watchers.append((record.name, key_path, stream))

        def unsubscribe() -> None:
            with self._lock:
                self._config_watchers = [w for w in self._config_watchers if w[2] is not stream]

        stream.on_close.append(unsubscribe)
        return {}

    def _subscribe_to_validation(self, call: Call) -> dict[str, Any]:
        stream = call.stream
        assert stream is not None
        self._validators.setdefault(call.component, stream)  # computeIfAbsent: the first one stays

        def unsubscribe() -> None:
            with self._lock:
                if self._validators.get(call.component) is stream:
                    del self._validators[call.component]

        stream.on_close.append(unsubscribe)
        return {}

    def _send_validity_report(self, call: Call) -> dict[str, Any]:
        report = call.request.get("configurationValidityReport") or {}
        deployment_id = report.get("deploymentId")
        if deployment_id is None:
            raise IpcError(
                "InvalidArgumentsError",
                "Cannot accept configuration validity report, the deployment ID provided was null",
            )
        pending = self._pending.pop((call.component, deployment_id), None)
        if pending is None:
            raise IpcError("InvalidArgumentsError", "Validation request either timed out or was never made")
        pending.set_result(ValidityReport(str(report.get("status")), report.get("message")))
        return {}

    def _update_state(self, call: Call) -> dict[str, Any]:
        state = call.request.get("state")
        if state not in ("RUNNING", "ERRORED"):
            raise IpcError("InvalidArgumentsError", f"state must be RUNNING or ERRORED, not {state!r}")
        self._components[call.component].reported_states.append(state)
        return {}

    def validating(self, name: str) -> bool:
        """Whether ``name`` subscribed to validate its configuration updates."""
        with self._lock:
            return name in self._validators
