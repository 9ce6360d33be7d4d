"""A Greengrass v1 Lambda handler (also runs under the v2 Lambda launcher) around the unchanged classifier.

For users still on Greengrass v1, or on v2's Lambda launcher: the group's subscription
routes ``/request/classify/<name>`` to this function, which answers through
``greengrasssdk.client('iot-data')`` exactly as the v2 component does. Configuration is the
classifier's, as JSON in the FIELDLENS_CONFIG environment variable. Run it pinned
(long-lived), so the camera and the inference client stay open between requests.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from fieldlens_classifier.build import build_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_classifier.service import Classifier
from fieldlens_core.bus import Message, MessageHandler
from fieldlens_core.config import validate_config
from fieldlens_core.messages import ClassifyResponse

log = logging.getLogger(__name__)


class IotDataBus:
    """The bus over greengrasssdk's iot-data client. v1 routes messages by subscription, not by subscribe()."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def publish(self, topic: str, payload: bytes, correlation_data: bytes | None = None) -> None:
        self._client.publish(topic=topic, queueFullPolicy="AllOrException", payload=payload)

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        log.debug("v1 delivers %s through the group's subscriptions, not subscribe()", topic)

    def stop(self) -> None:
        return None


def build_v1_classifier(client: Any, config: ClassifierConfig) -> Classifier:
    """The component's classifier, answering through the v1 iot-data client (pinned: never closed)."""
    classifier, _ = build_classifier(config, IotDataBus(client))
    return classifier


_classifier: Classifier | None = None


def classifier() -> Classifier:
    """Built on the first invocation: greengrasssdk's clients exist only inside the v1 runtime."""
    global _classifier
    if _classifier is None:
        import greengrasssdk

        config = validate_config(ClassifierConfig, json.loads(os.environ.get("FIELDLENS_CONFIG", "{}")))
        _classifier = build_v1_classifier(greengrasssdk.client("iot-data"), config)
    return _classifier


def function_handler(event: Any, context: Any, target: Classifier | None = None) -> dict[str, Any]:
    """The Lambda entry point: the event is the request's JSON (or nothing).

    v1 delivers the subscription's topic in ``context.client_context.custom["subject"]``; the
    response goes to the topic paired with it (the fleet pair or the named one).
    """
    payload = b"" if event in (None, "", {}) else json.dumps(event).encode() if not isinstance(event, bytes) else event
    active = target or classifier()
    custom = getattr(getattr(context, "client_context", None), "custom", None)
    subject = custom.get("subject") if isinstance(custom, dict) else None
    topic = subject if isinstance(subject, str) else active.config.effective_request_topic
    response: ClassifyResponse | None = active.answer(Message(topic, payload))
    answer: dict[str, Any] = json.loads(response.to_payload()) if response is not None else {}
    return answer
