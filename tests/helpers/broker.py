"""Starts Debian's mosquitto on 127.0.0.1 for the tests that need a real broker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fieldlens_cli.embedded_broker import free_port


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            message = "mosquitto is not installed: run `make test` (it installs Debian's mosquitto)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        config = workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            # No max_packet_size here on purpose: like AWS IoT Core's 128 KiB, a broker's limit refuses
            # publishers; the limit under test is the one fieldlens clients announce (BrokerConfig.max_packet_bytes).
            "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self._log = (workdir / "mosquitto.log").open("w")
        self._process = subprocess.Popen([binary, "-c", str(config)], stderr=self._log, stdout=self._log)
        deadline = time.monotonic() + 10
        while not _accepting(self.port):  # readiness: the port accepts connections
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: see {workdir / 'mosquitto.log'}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def publish(self, topic: str, *args: str) -> None:
        """Publish with Debian's own client, `mosquitto_pub -q 1 -t TOPIC ARGS…` (what a user types)."""
        command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-t", topic, *args]
        subprocess.run(command, check=True, timeout=10)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()
