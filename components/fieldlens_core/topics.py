"""Topic names of the classify contract (README, "Topics and payloads").

The defaults are the seed blog's, so that a user who followed it finds the same topics in
the AWS IoT console. The bare pair (``/request/classify`` -> ``/response/prediction``) is
the user's own words: a fleet-wide request that every device answers, each naming its thing.
"""

from __future__ import annotations

import re
import unicodedata

from fieldlens_core.errors import InvalidInputError

DEFAULT_NAME = "beverage_container"
FLEET_REQUEST_TOPIC = "/request/classify"
FLEET_RESPONSE_TOPIC = "/response/prediction"
REQUEST_PREFIX = FLEET_REQUEST_TOPIC + "/"
RESPONSE_PREFIX = FLEET_RESPONSE_TOPIC + "/"

# Continuous mode (README, "Continuous mode"): commands, their answers, events, frames.
CONTINUOUS_REQUEST_TOPIC = "/request/continuous"
CONTINUOUS_RESPONSE_TOPIC = "/response/continuous"
EVENT_PREFIX = "/event/classification/"
FRAME_PREFIX = "/event/frame/"
IMAGE_EVENT_PREFIX = "/event/image/"

# Status (`fieldlens status`, README "Topics and payloads"): what a device's components report.
STATUS_REQUEST_TOPIC = "/request/status"
STATUS_RESPONSE_TOPIC = "/response/status"
UPLOAD_STATUS_PREFIX = "/status/field-data/"

# A name becomes one topic level: no separators, no wildcards.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_TOPIC_BYTES = 256  # AWS IoT Core's limit on a topic name


class TopicNameError(InvalidInputError, ValueError):
    """A name that cannot stand as a topic level: invalid input on the command line (exit 2), and a
    ValueError to pydantic, so configuration validation reports it by key."""


def validate_name(name: str) -> str:
    """Return ``name`` if it can stand as one topic level, else raise TopicNameError."""
    if not _NAME_PATTERN.match(name):
        raise TopicNameError(f"name {name!r} must be 1-64 characters of letters, digits, '_', '-' or '.'")
    return name


def request_topic(name: str | None) -> str:
    """``/request/classify/<name>``, or the fleet-wide ``/request/classify`` without a name."""
    return FLEET_REQUEST_TOPIC if name is None else REQUEST_PREFIX + validate_name(name)


def response_topic(name: str | None) -> str:
    """``/response/prediction/<name>``, or the fleet-wide ``/response/prediction`` without a name."""
    return FLEET_RESPONSE_TOPIC if name is None else RESPONSE_PREFIX + validate_name(name)


def continuous_request_topic(name: str | None) -> str:
    """``/request/continuous/<name>``, or the fleet-wide ``/request/continuous``."""
    return CONTINUOUS_REQUEST_TOPIC if name is None else f"{CONTINUOUS_REQUEST_TOPIC}/{validate_name(name)}"


def continuous_response_topic(name: str | None) -> str:
    """``/response/continuous/<name>``, or the fleet-wide ``/response/continuous``."""
    return CONTINUOUS_RESPONSE_TOPIC if name is None else f"{CONTINUOUS_RESPONSE_TOPIC}/{validate_name(name)}"


def status_request_topic(name: str | None) -> str:
    """``/request/status/<name>``, or the fleet-wide ``/request/status``."""
    return STATUS_REQUEST_TOPIC if name is None else f"{STATUS_REQUEST_TOPIC}/{validate_name(name)}"


def status_response_topic(name: str | None) -> str:
    """``/response/status/<name>``, or the fleet-wide ``/response/status``."""
    return STATUS_RESPONSE_TOPIC if name is None else f"{STATUS_RESPONSE_TOPIC}/{validate_name(name)}"


def upload_status_topic(thing: str) -> str:
    """``/status/field-data/<thing>``: the uploader's default status topic (a thing name may hold ``:``,
    which a ``name`` may not, so it is checked as one topic level, not as a name)."""
    if "/" in thing:
        raise ValueError(f"thing name {thing!r} must not hold '/'")
    return validate_publish_topic(UPLOAD_STATUS_PREFIX + thing)


def event_topic(name: str) -> str:
    """``/event/classification/<name>``: an object's start and end events."""
    return EVENT_PREFIX + validate_name(name)


def frame_topic(name: str) -> str:
    """``/event/frame/<name>``: per-frame predictions, when asked for."""
    return FRAME_PREFIX + validate_name(name)


def image_event_topic(name: str) -> str:
    """``/event/image/<name>``: an image a response named as kept that could not be written."""
    return IMAGE_EVENT_PREFIX + validate_name(name)


MAX_TOPIC_SLASHES = 7  # AWS IoT Core refuses a topic with more forward slashes


def _forbidden_character(char: str) -> bool:
    """Characters brokers refuse in a topic (MQTT 5, 1.5.4): controls, non-characters, lone surrogates.

    mosquitto treats a topic holding one as a malformed packet and drops the connection; paho
    then re-sends the queued publish after every reconnect, so one such topic would keep the
    client off the broker for good.
    """
    code = ord(char)
    return (
        unicodedata.category(char) in ("Cc", "Cs")
        or 0xFDD0 <= code <= 0xFDEF
        or (code & 0xFFFE) == 0xFFFE  # U+xFFFE and U+xFFFF of every plane
    )


def validate_publish_topic(topic: str) -> str:
    """Return ``topic`` if every broker fieldlens talks to accepts a publish to it, else raise ValueError.

    MQTT's rules (UTF-8, no wildcard, no NUL, no control characters or non-characters) and AWS
    IoT Core's (at most 256 bytes and 7 slashes), and two of our own: no empty, ``.`` or ``..``
    level, which would let a topic look like a path somewhere it is not.
    """
    if not topic:
        raise ValueError("topic must not be empty")
    bad = next((c for c in topic if c in "+#" or _forbidden_character(c)), None)
    if bad is not None:
        raise ValueError(f"topic holds a character no broker accepts there: {bad!r}")
    if len(topic.encode("utf-8", errors="replace")) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is longer than {MAX_TOPIC_BYTES} bytes")
    if topic.count("/") > MAX_TOPIC_SLASHES:
        raise ValueError(f"topic has more than {MAX_TOPIC_SLASHES} '/' (AWS IoT Core's limit)")
    levels = topic.split("/")
    if any(level in ("", ".", "..") for level in levels[1:]) or levels[0] in (".", ".."):
        raise ValueError("topic has an empty, '.' or '..' level")
    return topic
