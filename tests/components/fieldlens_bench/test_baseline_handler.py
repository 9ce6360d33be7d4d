"""The bench's hand-rolled reference handler answers like a classifier would, through a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fieldlens_bench.baseline_handler import REQUESTS, RESPONSES, Handler
from fieldlens_cli.brokers import Mosquitto
from fieldlens_cli.requester import Requester
from fieldlens_cli.stack import connect
from fieldlens_core.model import load_model
from tests.helpers.images import solid_jpeg


def test_its_preprocessing_agrees_with_the_model_object(tiny_package: Path, tmp_path: Path) -> None:
    """Hand-rolled, but not different: the same tensor up to resampling, the same answer."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(solid_jpeg((20, 30, 220), (120, 90)))
    handler = Handler(tiny_package, tmp_path / "photos")
    ours = load_model(tiny_package, "fp32").classify(solid_jpeg((20, 30, 220), (120, 90)), 3, "image/jpeg")
    answer = json.loads(handler.answer(b'{"request_id": "r1"}'))
    assert answer["request_id"] == "r1"
    assert [p["label"] for p in answer["predictions"]] == [p.label for p in ours.predictions]
    assert answer["predictions"][0]["label"] == "blue"
    for theirs, mine in zip(answer["predictions"], ours.predictions, strict=True):
        assert abs(theirs["confidence"] - mine.confidence) < 0.01


def test_it_answers_over_mqtt_once_it_says_ready(tiny_package: Path, tmp_path: Path, mosquitto: Mosquitto) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "red.jpg").write_bytes(solid_jpeg((230, 20, 20)))
    command = [sys.executable, "-m", "fieldlens_bench.baseline_handler", "--broker", mosquitto.url]
    handler = subprocess.Popen(
        [*command, "--model-dir", str(tiny_package), "--photos", str(photos)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert handler.stdout is not None and "ready" in handler.stdout.readline()
        bus = connect(mosquitto.url, "test-baseline")
        try:
            response = Requester(bus, REQUESTS, RESPONSES).request(b'{"request_id": "q-1"}', 10)
        finally:
            bus.stop()
    finally:
        handler.terminate()
        handler.wait(10)
    assert response is not None and response["request_id"] == "q-1"
    assert response["predictions"][0]["label"] == "red" and 0.5 < response["predictions"][0]["confidence"] <= 1
