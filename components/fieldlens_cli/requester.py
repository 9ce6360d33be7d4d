"""Sends classify requests over a bus and matches responses to them by ``request_id``.

Used by `fieldlens classify`, the demo and the benchmark. A payload that is not a JSON
object (a deliberately malformed request) cannot carry an id; it is matched to the first
response whose id no pending request owns.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fieldlens_core.bus import Bus, Message
from fieldlens_core.messages import response_from_payload


@dataclass
class Pending:
    request_id: str | None
    sent_at: float = 0.0
    received_at: float = 0.0
    response: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def latency_ms(self) -> float:
        return (self.received_at - self.sent_at) * 1000

    def wait(self, timeout_s: float) -> dict[str, Any] | None:
        self.done.wait(timeout_s)
        return self.response


class Requester:
    def __init__(self, bus: Bus, request_topic: str, response_topic: str) -> None:
        self._bus = bus
        self._request_topic = request_topic
        self._response_topic = response_topic
        self._lock = threading.Lock()
        self._by_id: dict[str, Pending] = {}
        self._anonymous: list[Pending] = []
        self._subscribed: set[str] = set()

    def listen(self, topic: str | None = None) -> None:
        topic = topic or self._response_topic
        if topic not in self._subscribed:
            self._bus.subscribe(topic, self._on_response)
            self._subscribed.add(topic)

    def send(self, payload: bytes) -> Pending:
        """Publish one request; the payload gets a request_id when it is a JSON object without one."""
        request_id: str | None = None
        try:
            document = json.loads(payload) if payload.strip() else {}
        except ValueError:
            document = None
        if isinstance(document, dict):
            request_id = str(document.setdefault("request_id", uuid.uuid4().hex))
            self.listen(document.get("reply_topic"))
            payload = json.dumps(document).encode()
        else:
            self.listen()
        pending = Pending(request_id)
        with self._lock:
            if request_id is None:
                self._anonymous.append(pending)
            else:
                self._by_id[request_id] = pending
        pending.sent_at = time.perf_counter()
        self._bus.publish(self._request_topic, payload)
        return pending

    def request(self, payload: bytes, timeout_s: float) -> dict[str, Any] | None:
        return self.send(payload).wait(timeout_s)

    def _on_response(self, message: Message) -> None:
        received = time.perf_counter()
        try:
            response = response_from_payload(message.payload)
        except ValueError:
            return
        with self._lock:
            pending = self._by_id.pop(str(response["request_id"]), None)
            if pending is None and self._anonymous:
                pending = self._anonymous.pop(0)
        if pending is not None:
            pending.received_at = received
            pending.response = response
            pending.done.set()
