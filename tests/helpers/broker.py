"""Debian's mosquitto on 127.0.0.1 for the tests that need a real broker (the product's own launcher)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fieldlens_cli import brokers


class Mosquitto(brokers.Mosquitto):
    def __init__(self, workdir: Path) -> None:
        if brokers.mosquitto_binary() is None:
            message = "mosquitto is not installed: run `make test` (it installs Debian's mosquitto)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        super().__init__(workdir)

    def publish(self, topic: str, *args: str) -> None:
        """Publish with Debian's own client, `mosquitto_pub -q 1 -t TOPIC ARGS…` (what a user types)."""
        command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-t", topic, *args]
        subprocess.run(command, check=True, timeout=10)
