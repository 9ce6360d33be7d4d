"""Picamera2Camera against a stand-in picamera2 module (picamera2 cannot import off a Pi)."""

from __future__ import annotations

import io
import sys
import types
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.camera.picamera2_source import INSTALL_HINT, Picamera2Camera, lores_size
from fieldlens_core.errors import CameraUnavailableError


def yuv420_of(colour: tuple[int, int, int], width: int, height: int) -> Any:
    """A solid ``colour`` as a YUV420 array laid out like picamera2's (BT.601 full range)."""
    red, green, blue = colour
    y = 0.299 * red + 0.587 * green + 0.114 * blue
    u = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
    v = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
    array = np.empty((height * 3 // 2, width), dtype=np.uint8)
    array[:height] = round(y)
    array[height : height + height // 4] = round(u)
    array[height + height // 4 :] = round(v)
    return array


class StandInRequest:
    def __init__(self, camera: StandInPicamera2) -> None:
        self._camera = camera
        self.released = False

    def save(self, name: str, file_output: io.BytesIO, format: str | None = None) -> None:
        assert (name, format) == ("main", "jpeg")
        Image.new("RGB", self._camera.configured["main"]["size"], (200, 10, 10)).save(file_output, format="JPEG")

    def make_array(self, name: str) -> Any:
        """The lores stream as picamera2 gives it on a Pi 4: YUV420, (height * 3/2, width)."""
        assert name == "lores" and self._camera.configured["lores"]["format"] == "YUV420"
        width, height = self._camera.configured["lores"]["size"]
        return yuv420_of(self._camera.lores_colour, width, height)

    def get_metadata(self) -> dict[str, Any]:
        return {"ExposureTime": 10000, "AnalogueGain": 1.5, "Lux": 321.0, "SomethingOdd": [1, 2]}

    def release(self) -> None:
        self.released = True
        self._camera.released += 1


class StandInPicamera2:
    instances: list[StandInPicamera2] = []
    fail_open = False

    def __init__(self) -> None:
        if StandInPicamera2.fail_open:
            raise IndexError("list index out of range")  # what picamera2 raises with no camera attached
        self.options: dict[str, Any] = {}
        self.configured: dict[str, Any] = {}
        self.started = self.closed = False
        self.released = 0
        self.fail_capture = False
        self.lores_colour = (30, 160, 220)
        StandInPicamera2.instances.append(self)

    def create_still_configuration(self, main: dict[str, Any]) -> dict[str, Any]:
        return {"main": main}

    def create_video_configuration(self, main: dict[str, Any], lores: dict[str, Any]) -> dict[str, Any]:
        return {"main": main, "lores": lores, "video": True}

    def configure(self, config: dict[str, Any]) -> None:
        self.configured = config

    def start(self) -> None:
        self.started = True

    def capture_request(self) -> StandInRequest:
        if self.fail_capture:
            raise RuntimeError("camera frontend timeout")
        return StandInRequest(self)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def stand_in() -> types.ModuleType:
    StandInPicamera2.instances, StandInPicamera2.fail_open = [], False
    module = types.ModuleType("picamera2")
    module.Picamera2 = StandInPicamera2  # type: ignore[attr-defined]
    return module


def test_captures_a_jpeg_with_numeric_metadata(stand_in: types.ModuleType) -> None:
    camera = Picamera2Camera(320, 240, jpeg_quality=80, module=stand_in)
    frame = camera.capture()
    device = StandInPicamera2.instances[0]
    assert device.started and device.options["quality"] == 80 and device.released == 1
    assert Image.open(io.BytesIO(frame.jpeg)).size == (320, 240)
    assert frame.metadata == {
        "source": "picamera2",
        "width": 320,
        "height": 240,
        "ExposureTime": 10000,
        "AnalogueGain": 1.5,
        "Lux": 321.0,
    }
    camera.capture()
    assert len(StandInPicamera2.instances) == 1  # opened once


def test_no_camera_attached_is_camera_unavailable_and_retried(stand_in: types.ModuleType) -> None:
    StandInPicamera2.fail_open = True
    camera = Picamera2Camera(100, 100, module=stand_in)
    with pytest.raises(CameraUnavailableError, match="could not be opened"):
        camera.capture()
    StandInPicamera2.fail_open = False  # plugged in later
    assert camera.capture().jpeg


def test_a_failed_capture_closes_and_reopens_the_camera(stand_in: types.ModuleType) -> None:
    camera = Picamera2Camera(100, 100, module=stand_in)
    camera.capture()
    StandInPicamera2.instances[0].fail_capture = True
    with pytest.raises(CameraUnavailableError, match="capture failed"):
        camera.capture()
    assert StandInPicamera2.instances[0].closed
    camera.capture()
    assert len(StandInPicamera2.instances) == 2


def test_without_picamera2_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` raise ImportError
    with pytest.raises(CameraUnavailableError) as caught:
        Picamera2Camera(100, 100).capture()
    assert INSTALL_HINT in caught.value.message and "python3-picamera2" in caught.value.message


def test_a_lores_stream_at_the_model_size_goes_to_inference_and_main_is_kept(stand_in: types.ModuleType) -> None:
    camera = Picamera2Camera(640, 480, module=stand_in, lores_width=256)
    frame = camera.capture()
    device = StandInPicamera2.instances[0]
    assert device.configured["video"] and device.configured["lores"]["size"] == (256, 192) == lores_size(
        (640, 480), 256
    )
    assert device.released == 1  # the request went back, lores array and all
    assert Image.open(io.BytesIO(frame.jpeg)).size == (640, 480) and frame.for_inference == frame.model_input
    assert frame.model_input is not None
    small = Image.open(io.BytesIO(frame.model_input)).convert("RGB")
    assert small.size == (256, 192)
    centre = small.getpixel((128, 96))
    assert isinstance(centre, tuple)
    assert all(abs(got - want) <= 6 for got, want in zip(centre, device.lores_colour, strict=True)), centre


def test_without_lores_inference_decodes_the_main_image(stand_in: types.ModuleType) -> None:
    frame = Picamera2Camera(320, 240, module=stand_in).capture()
    assert frame.model_input is None and frame.for_inference == frame.jpeg
    assert "video" not in StandInPicamera2.instances[0].configured
