"""A component's ``accessControl``, evaluated as the nucleus evaluates it (its AuthorizationHandler and WildcardTrie).

What the nucleus does, and so what a recipe has to get right:

- A component's policies live in its own configuration, ``accessControl.<service>.<policy id>``,
  each with ``operations`` and ``resources``; the principal is the component itself. An operation
  (or ``*``) and a matching resource in one policy of the destination service allow the call.
- ``*`` in a resource is a glob (any characters, ``/`` included), for every service.
- MQTT wildcards count only for ``aws.greengrass.ipc.mqttproxy`` (IoT Core topics): ``#`` as the
  last level (``a/#`` also matches ``a``) and ``+`` as a whole level. For local publish/subscribe
  (``aws.greengrass.ipc.pubsub``) they are plain characters: ``/response/#`` there allows only the
  topic named ``/response/#``.
- ``${*}``, ``${$}`` and ``${?}`` stand for the character itself; a bare ``?`` makes the resource
  invalid, and the nucleus drops it.
- Recipe variables in the configuration (``{iot:thingName}``) are replaced only when the nucleus
  runs with ``interpolateComponentConfiguration: true``; it is false unless configured. Otherwise
  the braces are part of the resource, and match only themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
PUB_SUB = "aws.greengrass.ipc.pubsub"
ANY = "*"

_ESCAPE = re.compile(r"\$\{([*$?])\}")


def resource_matches(pattern: str, resource: str, mqtt_style: bool) -> bool:
    """Whether a policy's resource ``pattern`` allows ``resource`` (a topic, or a topic filter being subscribed)."""
    return _compile(pattern, mqtt_style).fullmatch(resource) is not None


def _compile(pattern: str, mqtt_style: bool) -> re.Pattern[str]:
    if pattern == ANY or (mqtt_style and pattern == "#"):
        return re.compile(".*", re.DOTALL)
    parts: list[str] = []
    at = 0
    while at < len(pattern):
        escaped = _ESCAPE.match(pattern, at)
        if escaped:
            parts.append(re.escape(escaped.group(1)))
            at = escaped.end()
            continue
        char = pattern[at]
        level_start = at == 0 or pattern[at - 1] == "/"
        level_end = at == len(pattern) - 1 or pattern[at + 1] == "/"
        if char == "*":
            parts.append(".*")
        elif mqtt_style and char == "#" and at == len(pattern) - 1 and level_start:
            parts[-1:] = ["(?:/.*)?"]  # the '/' before it, and the level, are both optional: a/# matches a
        elif mqtt_style and char == "+" and level_start and level_end:
            parts.append("[^/]*")
        else:
            parts.append(re.escape(char))
        at += 1
    return re.compile("".join(parts), re.DOTALL)


def valid_resource(pattern: str) -> bool:
    """The nucleus refuses a policy resource that is empty or has a '?' not written as ``${?}``."""
    return bool(pattern) and "?" not in _ESCAPE.sub("", pattern)


def policies(configuration: dict[str, Any], service: str) -> Iterator[dict[str, Any]]:
    control = configuration.get("accessControl")
    if not isinstance(control, dict):
        return
    entries = control.get(service)
    if not isinstance(entries, dict):
        return
    for policy in entries.values():
        if isinstance(policy, dict):
            yield policy


def is_authorized(configuration: dict[str, Any], service: str, operation: str, resource: str) -> bool:
    """What the nucleus decides for a call by the component whose configuration this is."""
    mqtt_style = service == MQTT_PROXY
    for policy in policies(configuration, service):
        operations = policy.get("operations") or []
        if operation not in operations and ANY not in operations:
            continue
        resources = [r for r in policy.get("resources") or [] if isinstance(r, str)]
        if not all(valid_resource(r) for r in resources):
            continue  # the nucleus drops the whole policy's permission
        if any(resource_matches(r, resource, mqtt_style) for r in resources):
            return True
    return False


def denial(component: str, service: str, operation: str, resource: str) -> str:
    """The AuthorizationException's text (pubsub returns it to the caller; mqttproxy only logs it)."""
    return f"Principal {component} is not authorized to perform {service}:{operation} on resource {resource}"
