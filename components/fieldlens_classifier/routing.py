"""Where an answer goes: the topic paired with the one asked on, or the asker's own, if it passes the guard.

Every request and command gets its answer on the topic paired with the one it came in on
(``routes``, ``continuousRoutes``), or on its ``reply_topic`` / MQTT 5 response topic, with its
MQTT 5 correlation data echoed. An asker's own topic must be publishable, start with
``replyTopicPrefix``, and not be another device's response topic: over AWS IoT Core a publish the
IoT policy does not allow closes the connection, and a forged reply topic must not let one asker
answer in another device's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core import topics
from fieldlens_core.bus import Message
from fieldlens_core.errors import BadRequestError


@dataclass(frozen=True)
class Reply:
    """Where a response goes, and the MQTT 5 correlation data it carries back."""

    topic: str
    correlation_data: bytes | None = None


def paired_reply(message: Message, routes: dict[str, str], fallback: str) -> Reply:
    """The answer on the topic paired with the one ``message`` came in on (``fallback`` for no pair)."""
    return Reply(routes.get(message.topic, fallback), message.correlation_data)


def reply_for(message: Message, reply_topic: str | None, default: Reply, config: ClassifierConfig) -> Reply:
    """Where to answer: the payload's reply_topic, else the MQTT 5 response topic, else ``default``;
    a topic of the asker's that the guard refuses is a BadRequestError."""
    if reply_topic is not None:
        return Reply(checked_reply_topic(reply_topic, "reply_topic", config), message.correlation_data)
    if message.response_topic is not None:
        topic = checked_reply_topic(message.response_topic, "MQTT 5 response topic", config)
        return Reply(topic, message.correlation_data)
    return default


def checked_reply_topic(topic: str, source: str, config: ClassifierConfig) -> str:
    """A reply_topic or MQTT 5 response topic, if it is publishable and under the prefix."""
    prefix = config.effective_reply_topic_prefix
    try:
        topics.validate_publish_topic(topic)
    except ValueError as exc:
        raise BadRequestError(f"{source}: {exc}") from None
    if not topic.startswith(prefix):
        raise BadRequestError(f"{source} must start with {prefix!r}")
    own = {*config.routes.values(), *config.continuous_routes.values()}
    in_response_namespace = any(
        topic == answers or topic.startswith(answers + "/")
        for answers in (topics.FLEET_RESPONSE_TOPIC, topics.CONTINUOUS_RESPONSE_TOPIC, topics.STATUS_RESPONSE_TOPIC)
    )
    if in_response_namespace and topic not in own:
        raise BadRequestError(f"{source} may not be another device's response topic")
    return topic
