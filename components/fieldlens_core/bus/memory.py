"""An in-process bus: the transport tests swap in instead of patching a client library."""

from __future__ import annotations

import threading

from fieldlens_core.bus import Message, MessageHandler, topic_matches


class InMemoryBus:
    """Delivers each publish synchronously, on the publisher's thread, to every matching subscriber.

    ``published`` records every message in order, so a test can assert on what a component
    sent without subscribing first. :meth:`deliver` hands subscribers a message with the
    properties a broker would set (a retained replay, an MQTT 5 response topic).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[tuple[str, MessageHandler]] = []
        self.published: list[Message] = []
        self.stopped = False

    def publish(self, topic: str, payload: bytes, correlation_data: bytes | None = None) -> None:
        self.deliver(Message(topic, payload, correlation_data=correlation_data))

    def deliver(self, message: Message) -> None:
        with self._lock:
            if self.stopped:
                raise RuntimeError("bus is stopped")
            self.published.append(message)
            handlers = [h for f, h in self._subscriptions if topic_matches(f, message.topic)]
        for handler in handlers:
            handler(message)

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        with self._lock:
            self._subscriptions.append((topic, handler))

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self._subscriptions.clear()
