"""The classifier component itself, started as on a device with ``--camera picamera2``, in the
libcamera root (tests/realparts): real picamera2 on libcamera's virtual camera playing a photo of
an espresso, the real inference service with the real default model on the host (its socket in
the root), the real mosquitto, and `fieldlens classify` asking it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.server import InferenceSocketServer
from fieldlens_inference.service import InferenceService
from tests.components.fieldlens_core.camera.test_picamera2_libcamera import photos
from tests.helpers.broker import Mosquitto
from tests.realparts.libcamera_root import CLONE, build_root, in_root, why_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.broker]

MAIN, LORES = (640, 480), (256, 192)  # the default model's resize size, at the main stream's aspect


def ready(process: subprocess.Popen[str], timeout_s: float) -> bool:
    """Whether the component wrote its ready line before ``timeout_s`` (or exited first)."""
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "fieldlens-classifier ready":
                seen.set()
        seen.set()  # exited: wake the waiter, it checks the exit

    threading.Thread(target=read, daemon=True).start()
    return seen.wait(timeout_s) and process.poll() is None


def test_the_classifier_with_picamera2_answers_a_classify_request(
    mosquitto: Mosquitto, default_model: Path, tmp_path: Path
) -> None:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    coffee = photos()[1]  # scikit-image's coffee: an espresso, which the default model knows
    with in_root(build_root()) as work:
        work.add_package(CLONE / "components" / "fieldlens_classifier")
        work.add_package(CLONE / "field_data" / "fieldlens_fielddata")
        work.play_photos([coffee], [MAIN, LORES])
        socket = work.directory / "inference.sock"
        manager = ModelManager(default_model)
        manager.load_initial()
        server = InferenceSocketServer(socket, InferenceService(manager, {"beverage-classifier"}), max_body=1 << 22)
        server.start()
        config = work.directory / "classifier.json"
        field = work.directory / "field"
        camera = {"source": "picamera2", "width": MAIN[0], "height": MAIN[1], "modelInputSize": LORES[0]}
        inference = {"socketPath": work.inside(socket)}
        settings = {"thingName": "coop-7", "fieldDataDir": work.inside(field), "camera": camera, "inference": inference}
        config.write_text(json.dumps(settings))
        log = (tmp_path / "classifier.log").open("w")
        command = work.command("module", "fieldlens_classifier.main", "--config", work.inside(config))
        process = subprocess.Popen([*command, "--broker", mosquitto.url], stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert ready(process, 60), (tmp_path / "classifier.log").read_text()[-3000:]
            classify = [sys.executable, "-m", "fieldlens_cli.main", "classify", "--broker", mosquitto.url]
            asked = subprocess.run(
                [*classify, "--payload", '{"request_id": "pi-1", "top_k": 3}'],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
            log.close()
            server.stop()
        kept = sorted(field.rglob("*.jpg"))
        kept_size = Image.open(kept[0]).size if kept else None
    assert code == 0
    assert asked.returncode == 0, asked.stdout + asked.stderr
    response = json.loads(asked.stdout)
    assert response["request_id"] == "pi-1" and response["thing"] == "coop-7"
    assert response["predictions"][0]["label"] == "espresso", response["predictions"]
    assert kept_size in (None, MAIN)  # what the field store kept, if it kept it, is the main image
    text = (tmp_path / "classifier.log").read_text()
    assert f"picamera2 camera open at {MAIN[0]}x{MAIN[1]}, lores {LORES[0]}x{LORES[1]} NV12 for inference" in text
