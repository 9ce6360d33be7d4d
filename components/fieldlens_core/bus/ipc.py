"""The bus over Greengrass IPC (``GreengrassCoreIPCClientV2``).

``scope="iot_core"`` reaches AWS IoT Core through the MQTT proxy (the IoT console's test
page publishes there); ``scope="local"`` uses the core device's local publish/subscribe.
The client is passed in, so that tests inject a fake and only ``main.py`` connects.
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
)

from fieldlens_core.bus import MessageHandler

log = logging.getLogger(__name__)

Scope = Literal["iot_core", "local"]


class IpcBus:
    def __init__(self, client: Any, scope: Scope = "iot_core") -> None:
        self._client = client
        self._scope = scope
        self._operations: list[Any] = []
        self._lock = threading.Lock()
        self._stopped = False

    def publish(self, topic: str, payload: bytes) -> None:
        if self._scope == "iot_core":
            self._client.publish_to_iot_core(topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload)
        else:
            message = PublishMessage(binary_message=BinaryMessage(message=payload))
            self._client.publish_to_topic(topic=topic, publish_message=message)

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        if self._scope == "iot_core":

            def on_iot_core(event: IoTCoreMessage) -> None:
                message = event.message
                _deliver(handler, message.topic_name, message.payload)

            _, operation = self._client.subscribe_to_iot_core(
                topic_name=topic,
                qos=QOS.AT_LEAST_ONCE,
                on_stream_event=on_iot_core,
                on_stream_error=_log_stream_error,
            )
        else:

            def on_local(event: SubscriptionResponseMessage) -> None:
                if event.binary_message is not None:
                    context = event.binary_message.context
                    _deliver(handler, context.topic if context else topic, event.binary_message.message)
                elif event.json_message is not None:
                    context = event.json_message.context
                    body = json.dumps(event.json_message.message).encode()
                    _deliver(handler, context.topic if context else topic, body)

            _, operation = self._client.subscribe_to_topic(
                topic=topic, on_stream_event=on_local, on_stream_error=_log_stream_error
            )
        with self._lock:
            self._operations.append(operation)

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


def _deliver(handler: MessageHandler, topic: str, payload: bytes | None) -> None:
    try:
        handler(topic, payload or b"")
    except Exception:  # never let a handler bug close the IPC stream
        log.exception("handler for %s failed", topic)


def _log_stream_error(error: Exception) -> bool:
    log.error("IPC stream error: %s", error)
    return False  # keep the stream open
