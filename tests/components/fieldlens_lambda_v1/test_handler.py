"""The v1 Lambda handler with an injected iot-data client, over the real inference server (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fieldlens_lambda_v1.handler import build_v1_classifier, function_handler

from fieldlens_classifier.config import ClassifierConfig
from tests.helpers.images import solid_jpeg


class FakeIotData:
    """greengrasssdk.client('iot-data') as the v1 runtime provides it: publish(topic=, queueFullPolicy=, payload=)."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, **kwargs: Any) -> None:
        self.published.append(kwargs)


def test_requests_are_answered_through_greengrasssdk(tmp_path: Path, tiny_server: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
    config = ClassifierConfig.model_validate(
        {
            "thingName": "v1-core",
            "camera": {"source": "folder", "folder": str(photos)},
            "inference": {"serviceName": "tiny", "socketPath": str(tiny_server)},
            "fieldDataDir": str(tmp_path / "field"),
        }
    )
    client = FakeIotData()
    target = build_v1_classifier(client, config)

    answer = function_handler({"request_id": "v1", "top_k": 1}, None, target)
    assert answer["request_id"] == "v1" and answer["predictions"][0]["label"] == "red"
    assert client.published[-1]["topic"] == "/response/prediction/beverage_container"
    assert client.published[-1]["queueFullPolicy"] == "AllOrException"
    assert json.loads(client.published[-1]["payload"]) == answer

    assert "predictions" in function_handler({}, None, target)  # an empty request
    bad = function_handler({"top_k": "two"}, None, target)
    assert bad["error"]["code"] == "BAD_REQUEST" and json.loads(client.published[-1]["payload"])["error"]


def test_greengrasssdk_imports_off_device() -> None:
    import greengrasssdk  # the v1 SDK imports here; its clients need the v1 runtime

    assert hasattr(greengrasssdk, "client")
