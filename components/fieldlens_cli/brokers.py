"""The local MQTT brokers the demo, the bench and the tests start: one launcher each.

- :class:`Mosquitto`: Debian's mosquitto as a child process (the broker people deploy, MQTT 5),
  for the bench, the tests, and the demo when it is installed.
- :class:`EmbeddedBroker`: amqtt inside this process, for the demo where mosquitto is not
  installed (nothing to install). amqtt speaks MQTT 3.1.1 only: our clients ask for MQTT 5
  first, get no answer to a bare CONNECT, and use 3.1.1 (fieldlens_core.bus.mqtt); an MQTT 5
  client that does not fall back (``mosquitto_pub -V 5``) waits for its keepalive and fails, so
  the demo says so when it starts (:data:`EMBEDDED_LIMIT`). It runs its own asyncio loop on a
  background thread.

Both listen on 127.0.0.1 only, on a free port unless told otherwise, with SO_REUSEADDR on the
listening socket (asyncio's default for amqtt; mosquitto sets it itself), as servers do: a broker
stopped a moment ago leaves its accepted connections in TIME_WAIT on its port, and its next run
must be able to listen there again. :func:`port_is_free` probes the same way, so it agrees with
the broker: TIME_WAIT is free, a listening process is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fieldlens_core.errors import FieldlensError, InUseError

log = logging.getLogger(__name__)

EMBEDDED_LIMIT = (
    "The embedded broker (amqtt) speaks MQTT 3.1.1 only: use `mosquitto_pub -V 311` (its default), "
    "or install Debian's mosquitto (apt-get install mosquitto) and the demo runs on it, MQTT 5 included."
)
"""The one line the demo prints when it runs on amqtt: an MQTT 5 client gets no CONNACK from it,
only a timeout ("Error: Unknown error." from mosquitto_pub), so the limit is said up front."""

_CLIENT_NOISE = (
    "Invalid connection from",
    "Invalid protocol from",
    "No data from",
    "Failed to initialize client session",
    "Error while handling client session",
    "Can't read first packet as CONNECT",
    "Unhandled exception in reader coro",
    "Unhandled exception:",
    "Remote info could not be retrieved",
    "Broker startup failed",  # EmbeddedBroker.start raises its own one-line error for it
)
"""amqtt's messages about one client's connection: every fieldlens client's MQTT 5 probe, a client
that goes away mid-handshake, a port probe that connects and closes. They say nothing about the
demo, so they are shown at DEBUG only."""


class _OneLineAmqttLog(logging.Handler):
    """The ``amqtt`` loggers' only handler (they do not propagate): drops the per-client noise
    (:data:`_CLIENT_NOISE`) unless DEBUG is on, and passes anything else on to the root logger's
    handlers as one line, its traceback folded into ``ExcType: message``. Without it the demo's
    terminal collects amqtt tracebacks for clients that merely disconnected."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if any(marker in message for marker in _CLIENT_NOISE) and not logging.getLogger("amqtt").isEnabledFor(
                logging.DEBUG
            ):
                return
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                message = f"{message}: {type(exc).__name__}: {exc}"
            line = logging.makeLogRecord(record.__dict__)
            line.msg, line.args, line.exc_info, line.exc_text, line.stack_info = (
                " ".join(message.split()),
                None,
                None,
                None,
                None,
            )
            logging.getLogger().handle(line)
        except Exception:
            self.handleError(record)


def quiet_amqtt_logging() -> None:
    """Route amqtt's loggers (and the state machine library it logs through) via
    :class:`_OneLineAmqttLog`, at WARNING; idempotent."""
    amqtt = logging.getLogger("amqtt")
    if not any(isinstance(handler, _OneLineAmqttLog) for handler in amqtt.handlers):
        amqtt.addHandler(_OneLineAmqttLog())
    amqtt.propagate = False
    for name in ("amqtt", "transitions"):
        if logging.getLogger(name).level in (logging.NOTSET, logging.INFO, logging.DEBUG):
            logging.getLogger(name).setLevel(logging.WARNING)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The embedded broker's loop reports what a connection task left unhandled here, not as the
    default handler's traceback on stderr: a client's socket gone (amqtt closes it a second time,
    ``OSError: [Errno 107]``) at DEBUG, anything else as one warning line."""
    exc = context.get("exception")
    text = str(context.get("message", "unhandled error"))
    if exc is None or isinstance(exc, OSError):
        log.debug("embedded broker: %s: %r", text, exc)
        return
    log.warning("embedded broker: %s: %s: %s", text, type(exc).__name__, exc)
    log.debug("embedded broker: traceback", exc_info=exc)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a broker could listen on ``host:port`` now. The probe binds with SO_REUSEADDR, as the
    brokers do, so sockets in TIME_WAIT from a run a moment ago do not count as "in use"; Linux
    still refuses the bind while any process listens on the port (on this address or on all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def preferred_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when a broker can listen there, else any free port (the caller says which it got)."""
    return preferred if port_is_free(preferred, host) else free_port(host)


class BrokerUnavailableError(FieldlensError, RuntimeError):
    """mosquitto is not installed, or did not start."""


def _port_in_use(host: str, port: int) -> InUseError:
    return InUseError(
        f"another program listens on {host}:{port}",
        hint=f"Stop it (`ss -ltnp 'sport = :{port}'` names it), or choose another port",
    )


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_loop_exception)
        self._broker: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Listen, or raise InUseError (the port is taken) or BrokerUnavailableError (anything else)."""
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

        quiet_amqtt_logging()
        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join(timeout=10)
            self._thread = None
            self._loop.close()
            cause = _root_cause(failure[0])
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise _port_in_use(self.host, self.port) from failure[0]
            raise BrokerUnavailableError(f"the embedded broker could not start on {self.url}: {cause}") from failure[0]
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


def _root_cause(exc: BaseException) -> BaseException:
    """amqtt wraps the listener's OSError in BrokerError (twice); the OSError says what happened."""
    for _ in range(10):  # a chain is a few links; the bound keeps a cycle from looping
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def mosquitto_binary() -> str | None:
    """Debian installs it in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def accepting(port: int) -> bool:
    """Something listens on 127.0.0.1:``port`` (a broker's readiness)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """mosquitto on a loopback port (free, unless ``port`` is given), configured in ``workdir``,
    logging warnings there."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerUnavailableError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        if port is not None and not port_is_free(port):
            # checked first: readiness below is "the port accepts", which another listener would fake
            raise _port_in_use("127.0.0.1", port)
        self.binary = binary
        self.port = port or free_port()
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
        while not accepting(self.port):  # readiness: the port accepts connections
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailableError(f"mosquitto did not start on {self.url}: {self._last_log_line()}")
            time.sleep(0.02)

    def _last_log_line(self) -> str:
        """What mosquitto said last (its log may sit in a directory removed right after)."""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"no message; see {self.log_path}"

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


def uses_mosquitto(prefer_mosquitto: bool) -> bool:
    """Whether :func:`local_broker` starts mosquitto (MQTT 5) rather than the embedded amqtt (3.1.1)."""
    return prefer_mosquitto and mosquitto_binary() is not None


@contextlib.contextmanager
def local_broker(workdir: Path, port: int | None = None, prefer_mosquitto: bool = True) -> Iterator[tuple[str, str]]:
    """(url, description) of mosquitto when installed and preferred, else of the embedded broker;
    on ``port`` when given (InUseError when something listens there), else on a free one."""
    if uses_mosquitto(prefer_mosquitto):
        mosquitto = Mosquitto(workdir, port)
        try:
            yield mosquitto.url, f"mosquitto {mosquitto.version()}"
        finally:
            mosquitto.stop()
        return
    with EmbeddedBroker(port=port) as embedded:
        yield embedded.url, "amqtt (embedded" + ("; mosquitto is not installed)" if prefer_mosquitto else ")")
