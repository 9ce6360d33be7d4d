"""The classifier component itself, started as on a device with ``--camera picamera2``, in the
libcamera root (tests/realparts): real picamera2 on libcamera's virtual camera playing photos, the
real inference service with the real default model on the host (its socket in the root), the real
mosquitto. It answers `fieldlens classify` (an espresso in view) and, in continuous mode, watches a
scene in which an espresso gives way to a camera on a tripod, publishing one event per object."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig
from fieldlens_core.model_package import load_package
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.server import InferenceSocketServer
from fieldlens_inference.service import InferenceService
from tests.components.fieldlens_core.camera.test_picamera2_libcamera import difference, photos, pixels
from tests.helpers.broker import Mosquitto
from tests.helpers.collector import ResponseCollector
from tests.realparts.libcamera_root import CLONE, InRoot, build_root, in_root, why_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.broker]

MAIN, LORES = (640, 480), (256, 192)  # the default model's resize size, at the main stream's aspect
NAME = "beverage_container"  # the classifier's default name: its topics' last level
SERVICE = "beverage-classifier"  # the inference client's default service name
# The scene: the virtual camera paced as a 10 fps sensor shows each played photo for 0.4 s, so
# each object stays in view for COPIES of them (3.2 s), long beside the few frames smoothing
# needs at the loop's 5 fps; then the scene starts over.
SENSOR_FPS = 10.0
COPIES = 8
LOOP_FPS = 5.0


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


class RecordingService(InferenceService):
    """The real inference service, noting the size of each image it is sent: what the classifier
    feeds the model (the lores stream, or the main image decoded)."""

    def __init__(self, manager: ModelManager) -> None:
        super().__init__(manager, {SERVICE})
        self.sizes: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def model_info(self) -> dict[str, str]:
        """The model served, as the service names it in its answers."""
        return dict(self.handle({"op": "ping"}, b"")["model"])

    def handle(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        if header.get("op") == "classify":
            with self._lock:
                self.sizes.append(Image.open(io.BytesIO(body)).size)
        return super().handle(header, body)


@dataclass(frozen=True)
class Run:
    """The classifier running in the root, and what it ran against."""

    process: subprocess.Popen[str]
    service: RecordingService
    field: Path  # its field-data directory, on the host
    log: Path


@contextmanager
def classifier_in_root(
    work: InRoot, model: Path, tmp_path: Path, mosquitto: Mosquitto, settings: dict[str, Any], *flags: str
) -> Iterator[Run]:
    """The inference service on a socket in the root, then the classifier component in the root
    with ``settings`` as its --config and ``flags``, up to its ready line; SIGTERM on the way out."""
    work.add_package(CLONE / "components" / "fieldlens_classifier")
    work.add_package(CLONE / "field_data" / "fieldlens_fielddata")
    socket = work.directory / "inference.sock"
    manager = ModelManager(model)
    manager.load_initial()
    service = RecordingService(manager)
    server = InferenceSocketServer(socket, service, max_body=1 << 22)
    server.start()
    config = work.directory / "classifier.json"
    field = work.directory / "field"
    base = {"thingName": "coop-7", "fieldDataDir": work.inside(field), "inference": {"socketPath": work.inside(socket)}}
    config.write_text(json.dumps(base | settings))
    log_path = tmp_path / "classifier.log"
    command = work.command(
        "module", "fieldlens_classifier.main", "--config", work.inside(config), sensor_fps=SENSOR_FPS
    )
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*command, "--broker", mosquitto.url, *flags], stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            assert ready(process, 60), log_path.read_text()[-3000:]
            yield Run(process, service, field, log_path)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            server.stop()


def test_the_classifier_with_picamera2_answers_a_classify_request(
    mosquitto: Mosquitto, default_model: Path, tmp_path: Path
) -> None:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    coffee = photos()[1]  # scikit-image's coffee: an espresso, which the default model knows
    camera = {"source": "picamera2", "width": MAIN[0], "height": MAIN[1], "modelInputSize": LORES[0]}
    with in_root(build_root()) as work:
        work.play_photos([coffee], [MAIN, LORES])
        with classifier_in_root(work, default_model, tmp_path, mosquitto, {"camera": camera}) as run:
            classify = [sys.executable, "-m", "fieldlens_cli.main", "classify", "--broker", mosquitto.url]
            asked = subprocess.run(
                [*classify, "--payload", '{"request_id": "pi-1", "top_k": 3}'],
                capture_output=True,
                text=True,
                timeout=60,
            )
        kept = sorted(run.field.rglob("*.jpg"))
        kept_size = Image.open(kept[0]).size if kept else None
    assert run.process.returncode == 0
    assert asked.returncode == 0, asked.stdout + asked.stderr
    response = json.loads(asked.stdout)
    assert response["request_id"] == "pi-1" and response["thing"] == "coop-7"
    assert response["predictions"][0]["label"] == "espresso", response["predictions"]
    assert kept_size in (None, MAIN)  # what the field store kept, if it kept it, is the main image
    assert run.service.sizes and set(run.service.sizes) == {LORES}  # the model saw the lores stream
    text = run.log.read_text()
    assert f"picamera2 camera open at {MAIN[0]}x{MAIN[1]}, lores {LORES[0]}x{LORES[1]} NV12 for inference" in text


def sample_photo(name: str) -> Image.Image:
    """A scikit-image sample photo at the main stream's size, cropped to its aspect from the centre."""
    import skimage.data

    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    width, height = image.size
    crop_height = min(height, width * MAIN[1] // MAIN[0])
    crop_width = crop_height * MAIN[0] // MAIN[1]
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return image.crop((left, top, left + crop_width, top + crop_height)).resize(MAIN)


def top_label(manager: ModelManager, photo: Image.Image) -> str:
    """The default model's top-1 for ``photo`` as the lores stream shows it, asked on the host."""
    image = io.BytesIO()
    photo.resize(LORES, Image.Resampling.BILINEAR).save(image, format="JPEG", quality=95)
    answer = InferenceService(manager, {SERVICE}).handle({"op": "classify", "service": SERVICE}, image.getvalue())
    return str(answer["predictions"][0]["label"])


class Events(ResponseCollector):
    """The classification events as they arrive; waits with deadlines, never sleeps."""

    def wait(
        self, what: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60.0
    ) -> list[dict[str, Any]]:
        with self.condition:
            if not self.condition.wait_for(lambda: done(self.responses), timeout_s):
                raise AssertionError(f"{what} not seen within {timeout_s}s: {self.responses}")
            return list(self.responses)


def send(bus: MqttBus, answers: ResponseCollector, command: dict[str, Any]) -> dict[str, Any]:
    """A continuous-mode command on the bus, and its answer."""
    count = len(answers.responses)
    bus.publish(f"/request/continuous/{NAME}", json.dumps(command).encode())
    answer = answers.wait_for(count + 1, 30)[count]
    assert answer["request_id"] == command["request_id"], answer
    return answer


def nearest(image: Path, scene: Sequence[Image.Image]) -> tuple[int, float]:
    """Which of ``scene``'s photos ``image`` shows, and how far it is from it (mean absolute, 0-255)."""
    got = pixels(image, MAIN)
    distances = [difference(got, pixels(photo)) for photo in scene]
    return int(np.argmin(distances)), min(distances)


def test_the_classifier_with_picamera2_publishes_one_event_per_object_of_a_scene_in_continuous_mode(
    mosquitto: Mosquitto, default_model: Path, tmp_path: Path
) -> None:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    scene = [sample_photo("coffee"), sample_photo("camera")]  # an espresso, then a camera on a tripod
    manager = ModelManager(default_model)
    manager.load_initial()
    assert [top_label(manager, photo) for photo in scene] == ["espresso", "tripod"]  # for the model
    # continuous mode names an object by the model's class group where it has one (its card's
    # operating point: espresso is in the default model's "cup")
    point = load_package(default_model).card.operating_point
    groups = point.groups_by_label() if point else {}
    first, second = (groups.get(label, label) for label in ("espresso", "tripod"))
    events, answers = Events(), ResponseCollector()
    observer = MqttBus(BrokerConfig(url=mosquitto.url), "scene-observer").connect()
    observer.subscribe(f"/event/classification/{NAME}", events)
    observer.subscribe(f"/response/continuous/{NAME}", answers)
    settings = {"camera": {"width": MAIN[0], "height": MAIN[1], "modelInputSize": LORES[0]}}
    try:
        with in_root(build_root()) as work:
            # One playing of the scene: each object for COPIES photos, in order; the camera opens
            # at the loop's first frame and libcamera starts the folder over at configure.
            work.play_photos([photo for photo in scene for _ in range(COPIES)], [MAIN, LORES])
            flags = ("--camera", "picamera2")
            with classifier_in_root(work, default_model, tmp_path, mosquitto, settings, *flags) as run:
                started = send(observer, answers, {"request_id": "scene-on", "action": "start", "fps": LOOP_FPS})
                events.wait(
                    f"a start event for {second}",
                    lambda seen: any(e["type"] == "start" and e["label"] == second for e in seen),
                )
                stopped = send(observer, answers, {"request_id": "scene-off", "action": "stop"})
                seen = events.wait(  # the event in view when the loop stopped ends too
                    "an end for every start",
                    lambda seen: (
                        {e["event_id"] for e in seen if e["type"] == "start"}
                        <= {e["event_id"] for e in seen if e["type"] == "end"}
                    ),
                )
            best = {}
            for event in seen:
                if event["type"] == "end" and event["image"]["kept"]:
                    image = work.root / event["image"]["path"].lstrip("/")
                    sidecar = json.loads(image.with_suffix(".json").read_text())
                    best[event["event_id"]] = (nearest(image, scene), Image.open(image).size, sidecar)
    finally:
        observer.stop()
    assert run.process.returncode == 0, run.log.read_text()[-3000:]
    assert started["continuous"]["running"] is True and started["continuous"]["fps"] == LOOP_FPS, started
    status = stopped["continuous"]
    assert status["running"] is False and status["frames"] > 0 and status.get("failing") is None, stopped

    # The objects one after another, in the scene's order: the espresso's event first, then the
    # tripod's, each start followed by its own end before the next object starts.
    starts = [e for e in seen if e["type"] == "start"]
    assert [e["label"] for e in starts[:2]] == [first, second], [(e["type"], e["label"]) for e in seen]
    assert [(e["type"], e["label"]) for e in seen[:3]] == [("start", first), ("end", first), ("start", second)]
    assert seen[1]["event_id"] == seen[0]["event_id"] != seen[2]["event_id"]
    served = run.service.model_info()
    for event in seen:
        assert event["thing"] == "coop-7" and event["model"] == served, event
        ends = [e for e in seen if e["type"] == "end" and e["event_id"] == event["event_id"]]
        assert len(ends) == 1, seen  # exactly one end per event

    # Each end names its best frame: kept as the main image, showing the object, its sidecar naming
    # the event and holding the camera's frame metadata.
    for label, shown in ((first, 0), (second, 1)):
        end = next(e for e in seen if e["type"] == "end" and e["label"] == label)
        assert end["image"]["kept"] is True, end
        ((photo, distance), size, sidecar) = best[end["event_id"]]
        assert photo == shown and distance < 10 and size == MAIN, (label, photo, distance, size)
        assert (
            sidecar.get("event_id") == end["event_id"]
            and groups.get(sidecar["prediction"], sidecar["prediction"]) == label
        ), sidecar
        capture = sidecar["capture"]
        assert capture["source"] == "picamera2" and (capture["width"], capture["height"]) == MAIN, capture
        assert isinstance(capture["SensorTimestamp"], int) and capture["SensorTimestamp"] > 0, capture

    # The model saw the lores stream, decoded in the layout libcamera settled on.
    assert run.service.sizes and set(run.service.sizes) == {LORES}
    text = run.log.read_text()
    assert f"picamera2 camera open at {MAIN[0]}x{MAIN[1]}, lores {LORES[0]}x{LORES[1]} NV12 for inference" in text
