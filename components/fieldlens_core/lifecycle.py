"""Process plumbing shared by the components' ``main.py``: logging, readiness, shutdown."""

from __future__ import annotations

import logging
import signal
import sys
import threading

READY_WORD = "ready"


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr, which Greengrass writes to the component's log file."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def announce_ready(component: str) -> None:
    """Write one ``<component> ready`` line on stdout: the start-up handshake `fieldlens serve` waits for.

    It is a protocol line, not a log line, so it goes to stdout and nowhere else.
    """
    sys.stdout.write(f"{component} {READY_WORD}\n")
    sys.stdout.flush()


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
