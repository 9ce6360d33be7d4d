"""Fixtures of the tests that run the classifier against the real mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import Mosquitto
from tests.helpers.device import Device


@pytest.fixture
def device(mosquitto: Mosquitto, tiny_server: Path, tmp_path: Path) -> Iterator[Device]:
    rig = Device(mosquitto, tiny_server, tmp_path)
    yield rig
    rig.close()
