"""The message bus interface: publish, subscribe, stop.

Components talk to MQTT only through a :class:`Bus`. On a Greengrass core that is IPC
(:mod:`fieldlens_core.bus.ipc`); off a device it is paho-mqtt to any broker
(:mod:`fieldlens_core.bus.mqtt`); tests may use the in-memory transport
(:mod:`fieldlens_core.bus.memory`) instead of patching anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """One delivered message, with what MQTT says about it beyond topic and payload.

    ``retained`` is set when the broker flags the message as retained: over MQTT 3.1.1 only
    for a replay at (re)subscription, over MQTT 5 (retain-as-published) for every retained
    publish. ``response_topic`` and ``correlation_data`` are MQTT 5's request/response
    properties (None over 3.1.1 and local pub/sub, which cannot carry them).
    """

    topic: str
    payload: bytes
    retained: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None


MessageHandler = Callable[[Message], None]
"""Called with each delivered message. Runs on the transport's thread: keep it short."""


class Bus(Protocol):
    def publish(self, topic: str, payload: bytes, correlation_data: bytes | None = None) -> None:
        """Send ``payload`` to ``topic`` at least once (QoS 1 where the transport has QoS).

        ``correlation_data`` goes out as the MQTT 5 property where the transport carries it.
        """

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        """Deliver messages on ``topic`` (wildcards allowed) to ``handler``; returns once subscribed."""

    def stop(self) -> None:
        """Stop delivering and release the connection; safe to call twice."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching with ``+`` and ``#`` (MQTT 3.1.1, section 4.7)."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)
