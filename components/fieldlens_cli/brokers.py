"""The local MQTT brokers the demo, the bench and the tests start: one launcher each.

- :class:`EmbeddedBroker`: amqtt inside this process, for the one-command demo (nothing to
  install). amqtt speaks MQTT 3.1.1 only: our clients ask for MQTT 5 first, get no answer
  to a bare CONNECT, and use 3.1.1 (fieldlens_core.bus.mqtt). It runs its own asyncio loop
  on a background thread.
- :class:`Mosquitto`: Debian's mosquitto as a child process, for the bench and the tests
  (the broker people deploy, MQTT 5).

Both listen on 127.0.0.1 only, on a free port unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fieldlens_core.errors import FieldlensError

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


class BrokerUnavailableError(FieldlensError, RuntimeError):
    """mosquitto is not installed, or did not start."""


def mosquitto_binary() -> str | None:
    """Debian installs it in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """mosquitto on a free loopback port, configured in ``workdir``, logging warnings there."""

    def __init__(self, workdir: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerUnavailableError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        config = workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            # No max_packet_size here on purpose: like AWS IoT Core's 128 KiB, a broker's limit refuses
            # publishers; the limit that matters is the one fieldlens clients announce (BrokerConfig.max_packet_bytes).
            "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self._log: IO[str] = self.log_path.open("w")
        self._process = subprocess.Popen([binary, "-c", str(config)], stderr=self._log, stdout=self._log)
        deadline = time.monotonic() + 10
        while not _accepting(self.port):  # readiness: the port accepts connections
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailableError(f"mosquitto did not start: see {self.log_path}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def version(self) -> str:
        result = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (result.stdout or result.stderr).splitlines()
        return first[0].split("version")[-1].strip() if first else "?"

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._log.close()


@contextlib.contextmanager
def local_broker(workdir: Path, port: int | None = None, prefer_mosquitto: bool = True) -> Iterator[tuple[str, str]]:
    """(url, description) of mosquitto when installed and preferred, else of the embedded broker."""
    if prefer_mosquitto and mosquitto_binary() is not None and port is None:
        mosquitto = Mosquitto(workdir)
        try:
            yield mosquitto.url, f"mosquitto {mosquitto.version()}"
        finally:
            mosquitto.stop()
        return
    with EmbeddedBroker(port=port) as embedded:
        yield embedded.url, "amqtt (embedded" + ("; mosquitto is not installed)" if prefer_mosquitto else ")")
