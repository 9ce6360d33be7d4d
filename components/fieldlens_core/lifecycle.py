"""Process plumbing shared by the components' ``main.py``: logging, readiness, shutdown."""

from __future__ import annotations

import logging
import signal
import sys
import threading

READY_WORD = "ready"


class EscapingFormatter(logging.Formatter):
    """One record, one line: control characters in a message are written as escapes (``\\n``, ``\\x00``).

    Messages carry text from requests (unknown key names, topics, ids). Escaping it here, once,
    where every line is formatted, means a key holding ``\\n2026-... ERROR ...`` cannot forge a
    log line, and no call site has to remember to escape. Tracebacks keep their line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_untrusted(record.message)
        return super().formatMessage(record)


def escape_untrusted(text: str) -> str:
    """``text`` with every non-printable character (newlines, NUL, other controls) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr, which Greengrass writes to the component's log file."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def announce_ready(component: str) -> None:
    """Write one ``<component> ready`` line on stdout: the start-up handshake `fieldlens serve` waits for.

    It is a protocol line, not a log line, so it goes to stdout and nowhere else.
    """
    sys.stdout.write(f"{component} {READY_WORD}\n")
    sys.stdout.flush()


CONNECTED_WORD, DISCONNECTED_WORD = "connected", "disconnected"


def announce_connection(component: str, up: bool) -> None:
    """``<component> connected|disconnected`` on stdout, like the ready line: `fieldlens serve` stops a
    component that stays disconnected (alive is not enough: it would answer nothing)."""
    sys.stdout.write(f"{component} {CONNECTED_WORD if up else DISCONNECTED_WORD}\n")
    sys.stdout.flush()


def watch_connection(bus: object, component: str) -> None:
    """Announce the bus's connection changes, where the bus reports them (MQTT does; IPC is the nucleus's)."""
    if hasattr(bus, "on_connection_change"):
        bus.on_connection_change = lambda up: announce_connection(component, up)


def wait_for_termination() -> int:
    """Block until SIGINT or SIGTERM; return the signal number. Call from the main thread."""
    received = threading.Event()
    number = [0]

    def handler(signum: int, frame: object) -> None:
        number[0] = signum
        received.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    received.wait()
    return number[0]


def startup_failure(logger: logging.Logger, exc: Exception) -> int:
    """Log why a component cannot start as one line, no traceback, and return its exit code.

    Greengrass restarts a component that exits non-zero and marks it BROKEN after three
    tries; each try should leave one readable line in the component's log, not a traceback.
    """
    from fieldlens_core.errors import ExitCode, FieldlensError

    if isinstance(exc, FieldlensError):
        code = exc.exit_code
    elif isinstance(exc, ConnectionError):
        code = ExitCode.CANNOT_CONNECT
    else:
        code = ExitCode.FAILED
    logger.error("cannot start (exit %d): %s", code, exc.one_line() if isinstance(exc, FieldlensError) else exc)
    return code
