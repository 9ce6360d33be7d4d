"""An MQTT broker inside this process (amqtt), for the one-command demo: nothing to install.

amqtt speaks MQTT 3.1.1 only: our clients ask for MQTT 5 first, are refused at once, and use
3.1.1 (fieldlens_core.bus.mqtt). It runs its own asyncio loop on a background thread and
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


class _QuietMqtt5Probe(logging.Filter):
    """amqtt logs two warnings each time a client asks for MQTT 5, which every fieldlens client
    does first; the demo would print them for every component. Other amqtt warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Invalid connection from") or message.endswith("): 5"))


logging.getLogger("amqtt.broker").addFilter(_QuietMqtt5Probe())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def start_broker() -> None:
            self._broker = Broker(config)
            await self._broker.start()

        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(start_broker())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise RuntimeError(f"embedded broker could not start on {self.url}: {failure[0]}")
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout=10)
            except Exception:
                log.debug("embedded broker shutdown failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
