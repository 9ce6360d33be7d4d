"""Collects classify responses from a bus and lets a test wait for them without sleeping."""

from __future__ import annotations

import json
import threading
from typing import Any

from fieldlens_core.bus import Message


class ResponseCollector:
    def __init__(self) -> None:
        self.responses: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self.messages: list[Message] = []
        self.condition = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self.condition:
            self.responses.append(json.loads(message.payload))
            self.topics.append(message.topic)
            self.messages.append(message)
            self.condition.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        with self.condition:
            if not self.condition.wait_for(lambda: len(self.responses) >= count, timeout_s):
                raise AssertionError(f"expected {count} responses, got {len(self.responses)}: {self.responses}")
            return list(self.responses)
