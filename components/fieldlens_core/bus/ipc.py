"""The bus over Greengrass IPC (``GreengrassCoreIPCClientV2``).

``scope="iot_core"`` reaches AWS IoT Core through the MQTT proxy (the IoT console's test
page publishes there); ``scope="local"`` uses the core device's local publish/subscribe.
The client is passed in, so that tests inject a fake and only ``main.py`` connects.

The nucleus speaks MQTT 5 to IoT Core: a message's retain flag, response topic and
correlation data reach us in ``MQTTMessage``, and ``publish_to_iot_core`` sends correlation
data back. Local pub/sub carries none of them.

An operation the component's accessControl does not allow raises ``UnauthorizedError``;
it becomes :class:`BusAuthorizationError`, whose message names the policy entry to add.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Literal

from awsiot.greengrasscoreipc.model import (
    QOS,
    BinaryMessage,
    IoTCoreMessage,
    PublishMessage,
    SubscriptionResponseMessage,
    UnauthorizedError,
)

from fieldlens_core.bus import Message, MessageHandler
from fieldlens_core.errors import BusAuthorizationError

log = logging.getLogger(__name__)

Scope = Literal["iot_core", "local"]

# The accessControl service and operation each IPC call needs, for the error that names them.
_POLICY = {
    ("iot_core", "subscribe"): ("aws.greengrass.ipc.mqttproxy", "aws.greengrass#SubscribeToIoTCore"),
    ("iot_core", "publish"): ("aws.greengrass.ipc.mqttproxy", "aws.greengrass#PublishToIoTCore"),
    ("local", "subscribe"): ("aws.greengrass.ipc.pubsub", "aws.greengrass#SubscribeToTopic"),
    ("local", "publish"): ("aws.greengrass.ipc.pubsub", "aws.greengrass#PublishToTopic"),
}


def _unauthorised(scope: Scope, action: Literal["subscribe", "publish"], topic: str) -> BusAuthorizationError:
    service, operation = _POLICY[(scope, action)]
    return BusAuthorizationError(
        f"not authorised to {action} to {topic!r}: add {topic!r} to the resources of a policy allowing "
        f"{operation} under accessControl.{service} in this component's configuration (recipe or deployment)"
    )


class IpcBus:
    def __init__(self, client: Any, scope: Scope = "iot_core") -> None:
        self._client = client
        self._scope = scope
        self._operations: list[Any] = []
        self._lock = threading.Lock()
        self._stopped = False

    def publish(self, topic: str, payload: bytes, correlation_data: bytes | None = None) -> None:
        try:
            if self._scope == "iot_core":
                self._client.publish_to_iot_core(
                    topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload, correlation_data=correlation_data
                )
            else:
                message = PublishMessage(binary_message=BinaryMessage(message=payload))
                self._client.publish_to_topic(topic=topic, publish_message=message)
        except UnauthorizedError:
            raise _unauthorised(self._scope, "publish", topic) from None

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        try:
            operation = self._subscribe(topic, handler)
        except UnauthorizedError:
            raise _unauthorised(self._scope, "subscribe", topic) from None
        with self._lock:
            self._operations.append(operation)

    def _subscribe(self, topic: str, handler: MessageHandler) -> Any:
        if self._scope == "iot_core":

            def on_iot_core(event: IoTCoreMessage) -> None:
                message = event.message
                correlation = message.correlation_data
                _deliver(
                    handler,
                    Message(
                        topic=message.topic_name,
                        payload=message.payload or b"",
                        retained=bool(message.retain),
                        response_topic=message.response_topic,
                        correlation_data=correlation.encode() if isinstance(correlation, str) else correlation,
                    ),
                )

            _, operation = self._client.subscribe_to_iot_core(
                topic_name=topic,
                qos=QOS.AT_LEAST_ONCE,
                on_stream_event=on_iot_core,
                on_stream_error=_log_stream_error,
            )
            return operation

        def on_local(event: SubscriptionResponseMessage) -> None:
            if event.binary_message is not None:
                context = event.binary_message.context
                payload = event.binary_message.message or b""
            elif event.json_message is not None:
                context = event.json_message.context
                payload = json.dumps(event.json_message.message).encode()
            else:
                return
            _deliver(handler, Message(topic=context.topic if context and context.topic else topic, payload=payload))

        _, operation = self._client.subscribe_to_topic(
            topic=topic, on_stream_event=on_local, on_stream_error=_log_stream_error
        )
        return operation

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            operations, self._operations = self._operations, []
        for operation in operations:
            try:
                operation.close()
            except Exception:  # closing is best effort: the nucleus may already be gone
                log.debug("closing an IPC stream failed", exc_info=True)


def _deliver(handler: MessageHandler, message: Message) -> None:
    try:
        handler(message)
    except Exception:  # never let a handler bug close the IPC stream
        log.exception("handler for %s failed", message.topic)


def _log_stream_error(error: Exception) -> bool:
    log.error("IPC stream error: %s", error)
    return False  # keep the stream open
