from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from fieldlens_core.bus.memory import InMemoryBus
from fieldlens_core.config import validate_config
from fieldlens_core.errors import ConfigurationError
from fieldlens_fielddata.destination import LocalDirectoryDestination
from fieldlens_fielddata.retry import Backoff
from fieldlens_fielddata.uploader import Uploader
from fieldlens_uploader.config import UploaderConfig
from fieldlens_uploader.service import UploaderService
from tests.helpers.field_data import keep_images


class Switchable(LocalDirectoryDestination):
    down = False

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str]) -> None:
        if self.down:
            raise ConnectionError("network unreachable")
        super().put(key, body, content_type, metadata)


def service(tmp_path: Path, destination: Any, bus: InMemoryBus) -> UploaderService:
    uploader = Uploader(tmp_path / "field", destination, "coop-1")
    return UploaderService(uploader, Backoff(1.0, 8.0, random.Random(0)), bus, "/status/field-data/coop-1", 2.0, 30.0)


def test_the_loop_backs_off_while_down_and_polls_again_once_it_drains(tmp_path: Path) -> None:
    keep_images(tmp_path / "field", 3)
    destination = Switchable(tmp_path / "bucket")
    destination.down = True
    loop = service(tmp_path, destination, InMemoryBus())
    delays = [loop.drain_once() for _ in range(5)]
    assert all(0 <= d <= b for d, b in zip(delays, [1, 2, 4, 8, 8], strict=True))
    destination.down = False
    assert loop.drain_once() == 2.0
    assert len(list((tmp_path / "bucket").rglob("*.jpg"))) == 3


def test_status_is_published_with_the_queue_and_the_destination(tmp_path: Path) -> None:
    keep_images(tmp_path / "field", 2)
    bus = InMemoryBus()
    loop = service(tmp_path, LocalDirectoryDestination(tmp_path / "bucket"), bus)
    loop.publish_status()
    topic, payload = bus.published[-1].topic, bus.published[-1].payload
    status = json.loads(payload)
    assert topic == "/status/field-data/coop-1"
    assert status["queued"] == 2 and status["uploaded"] == 0 and status["oldest_age_s"] > 0
    assert "no bucket configured" in status["destination"]
    loop.drain_once()
    loop.publish_status()
    assert json.loads(bus.published[-1].payload)["queued"] == 0


def test_configuration() -> None:
    config = UploaderConfig.model_validate({"thingName": "coop-9", "bucket": "b", "deleteAfterUpload": True})
    assert config.effective_status_topic == "/status/field-data/coop-9" and config.delete_after_upload
    with pytest.raises(ConfigurationError, match="kms_key_id"):
        validate_config(UploaderConfig, {"encryption": "aws:kms"})
