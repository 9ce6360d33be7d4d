"""Topic names of the classify contract (README, "Topics and payloads").

The defaults are the seed blog's, so that a user who followed it finds the same topics in
the AWS IoT console. The bare pair (``/request/classify`` -> ``/response/prediction``) is
the user's own words: a fleet-wide request that every device answers, each naming its thing.
"""

from __future__ import annotations

import re

DEFAULT_NAME = "beverage_container"
FLEET_REQUEST_TOPIC = "/request/classify"
FLEET_RESPONSE_TOPIC = "/response/prediction"
REQUEST_PREFIX = FLEET_REQUEST_TOPIC + "/"
RESPONSE_PREFIX = FLEET_RESPONSE_TOPIC + "/"

# A name becomes one topic level: no separators, no wildcards.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_TOPIC_BYTES = 256  # AWS IoT Core's limit on a topic name


def validate_name(name: str) -> str:
    """Return ``name`` if it can stand as one topic level, else raise ValueError."""
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r} must be 1-64 characters of letters, digits, '_', '-' or '.'")
    return name


def request_topic(name: str | None) -> str:
    """``/request/classify/<name>``, or the fleet-wide ``/request/classify`` without a name."""
    return FLEET_REQUEST_TOPIC if name is None else REQUEST_PREFIX + validate_name(name)


def response_topic(name: str | None) -> str:
    """``/response/prediction/<name>``, or the fleet-wide ``/response/prediction`` without a name."""
    return FLEET_RESPONSE_TOPIC if name is None else RESPONSE_PREFIX + validate_name(name)


def validate_publish_topic(topic: str) -> str:
    """Return ``topic`` if a message may be published to it (no wildcards, IoT Core length)."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"topic {topic!r} must be non-empty and hold no wildcard or NUL")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is longer than {MAX_TOPIC_BYTES} bytes")
    return topic
