"""Picamera2Camera against a stand-in picamera2 module (picamera2 cannot import off a Pi)."""

from __future__ import annotations

import io
import sys
import types
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.camera.picamera2_source import (
    INSTALL_HINT,
    LORES_FORMATS,
    Picamera2Camera,
    lores_size,
    yuv420_to_rgb,
)
from fieldlens_core.errors import CameraUnavailableError


def yuv_planes(rgb: Any) -> tuple[Any, Any, Any]:
    """Y at full resolution, U and V averaged over 2x2 blocks (BT.601 full range, as sYCC)."""
    red, green, blue = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * red + 0.587 * green + 0.114 * blue
    u = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
    v = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
    height, width = y.shape
    u, v = (p.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) for p in (u, v))
    y, u, v = (np.clip(np.round(p), 0, 255).astype(np.uint8) for p in (y, u, v))
    return y, u, v


def pack(rgb: Any, pixel_format: str, stride: int | None = None) -> Any:
    """An RGB image as picamera2's array of a 4:2:0 ``pixel_format``: (height * 3/2, stride) for the
    planar ones, rows padded to ``stride``; (height * 3/2, width) for NV12/NV21, which picamera2 crops."""
    y, u, v = yuv_planes(rgb)
    height, width = y.shape
    if pixel_format in ("YVU420", "NV21"):
        u, v = v, u
    if pixel_format in ("NV12", "NV21"):
        chroma = np.stack([u, v], axis=-1).reshape(height // 2, width)
        return np.concatenate([y, chroma])
    stride = stride or width
    array = np.zeros((height * 3 // 2, stride), dtype=np.uint8)
    array[:height, :width] = y
    flat = array.reshape(-1)
    for index, plane in enumerate((u, v)):
        rows = np.zeros((height // 2, stride // 2), dtype=np.uint8)
        rows[:, : width // 2] = plane
        start = stride * height + index * rows.size
        flat[start : start + rows.size] = rows.reshape(-1)
    return array


def photo_like(width: int, height: int) -> Any:
    """Colour that changes across the frame (a gradient per channel plus a block pattern), so a
    decoder that reads chroma from the wrong place cannot land near it by chance."""
    rows, columns = np.mgrid[0:height, 0:width]
    red = 255 * columns / width
    green = 255 * rows / height
    blue = np.where((rows // 8 + columns // 8) % 2, 220, 40)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


class StandInColorSpace:
    def __init__(self, name: str, ycbcr: str, full: bool) -> None:
        self.name, self.ycbcrEncoding = name, f"YcbcrEncoding.{ycbcr}"
        self.range = "Range.Full" if full else "Range.Limited"

    def __str__(self) -> str:
        return self.name


SYCC = StandInColorSpace("sYCC", "Rec601", full=True)
REC709 = StandInColorSpace("Rec709", "Rec709", full=False)


class StandInRequest:
    def __init__(self, camera: StandInPicamera2) -> None:
        self._camera = camera
        self.released = False

    def save(self, name: str, file_output: io.BytesIO, format: str | None = None) -> None:
        assert (name, format) == ("main", "jpeg")
        Image.new("RGB", self._camera.configured["main"]["size"], (200, 10, 10)).save(file_output, format="JPEG")

    def make_array(self, name: str) -> Any:
        """The lores stream as picamera2 gives it, in the format and size configure settled on."""
        assert name == "lores"
        lores = self._camera.camera_configuration()["lores"]
        width, height = lores["size"]
        return pack(np.full((height, width, 3), self._camera.lores_colour, dtype=np.uint8), lores["format"])

    def get_metadata(self) -> dict[str, Any]:
        return {"ExposureTime": 10000, "AnalogueGain": 1.5, "Lux": 321.0, "SomethingOdd": [1, 2]}

    def release(self) -> None:
        self.released = True
        self._camera.released += 1


class StandInPicamera2:
    instances: list[StandInPicamera2] = []
    fail_open = False
    # What configure settles lores on, as a camera that adjusts the request does (empty: as asked),
    # and the colour space it reports (None: as asked).
    settle_lores: dict[str, Any] = {}
    settled_colour_space: Any = None

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

    def create_video_configuration(
        self, main: dict[str, Any], lores: dict[str, Any], colour_space: Any = None
    ) -> dict[str, Any]:
        return {"main": main, "lores": lores, "video": True, "colour_space": colour_space}

    def configure(self, config: dict[str, Any]) -> None:
        self.configured = config

    def camera_configuration(self) -> dict[str, Any]:
        settled = dict(self.configured)
        if "lores" in settled:
            settled["lores"] = {**settled["lores"], **self.settle_lores}
            settled["colour_space"] = self.settled_colour_space or settled["colour_space"]
        return settled

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
def stand_in(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    StandInPicamera2.instances, StandInPicamera2.fail_open = [], False
    StandInPicamera2.settle_lores, StandInPicamera2.settled_colour_space = {}, None
    module = types.ModuleType("picamera2")
    module.Picamera2 = StandInPicamera2  # type: ignore[attr-defined]
    libcamera = types.ModuleType("libcamera")  # where picamera2 is, its libcamera bindings are
    libcamera.ColorSpace = types.SimpleNamespace(Sycc=lambda: SYCC)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "libcamera", libcamera)
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


@pytest.mark.parametrize("pixel_format", LORES_FORMATS)
def test_each_4_2_0_layout_decodes_to_the_image_it_was_made_from(pixel_format: str) -> None:
    rgb = photo_like(64, 48)
    array = pack(rgb, pixel_format, stride=96)  # planar rows padded, as picamera2 keeps the stride
    decoded = yuv420_to_rgb(array, (64, 48), pixel_format)
    assert decoded.shape == (48, 64, 3)
    # Only chroma subsampling and rounding stand between them.
    assert np.abs(decoded.astype(np.int16) - rgb).mean() < 3


def test_nv12_decoded_as_yuv420_is_far_off_which_is_why_the_settled_format_is_read() -> None:
    rgb = photo_like(64, 48)
    wrong = yuv420_to_rgb(pack(rgb, "NV12"), (64, 48), "YUV420")
    assert np.abs(wrong.astype(np.int16) - rgb).mean() > 20


def test_a_format_outside_4_2_0_is_refused_by_the_decoder() -> None:
    with pytest.raises(ValueError, match="RGB888 is not a 4:2:0 format"):
        yuv420_to_rgb(np.zeros((6, 4), dtype=np.uint8), (4, 4), "RGB888")


def test_lores_is_decoded_in_the_format_and_size_configure_settled_on(
    stand_in: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fieldlens_core.camera.picamera2_source")
    StandInPicamera2.settle_lores = {"format": "NV12", "size": (320, 240)}  # as libcamera's virtual camera
    frame = Picamera2Camera(640, 480, module=stand_in, lores_width=256).capture()
    device = StandInPicamera2.instances[0]
    assert device.configured["lores"]["format"] == "YUV420"  # what was asked for, not what came
    assert frame.model_input is not None
    small = Image.open(io.BytesIO(frame.model_input)).convert("RGB")
    assert small.size == (320, 240)
    centre = small.getpixel((160, 120))
    assert isinstance(centre, tuple)
    assert all(abs(got - want) <= 6 for got, want in zip(centre, device.lores_colour, strict=True)), centre
    assert "lores 320x240 NV12 for inference" in caplog.text


def test_lores_is_asked_for_in_sycc_and_another_settled_colour_space_is_logged(
    stand_in: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    camera = Picamera2Camera(640, 480, module=stand_in, lores_width=256)
    camera.capture()
    assert StandInPicamera2.instances[0].configured["colour_space"] is SYCC
    assert "colour space" not in caplog.text
    camera.close()
    StandInPicamera2.settled_colour_space = REC709
    camera.capture()
    assert "lores reports colour space Rec709; it is decoded as sYCC" in caplog.text


def test_a_lores_format_the_decoder_cannot_read_fails_the_open_and_frees_the_camera(
    stand_in: types.ModuleType,
) -> None:
    StandInPicamera2.settle_lores = {"format": "XBGR8888"}
    with pytest.raises(CameraUnavailableError, match="lores stream came out as XBGR8888"):
        Picamera2Camera(640, 480, module=stand_in, lores_width=256).capture()
    assert StandInPicamera2.instances[0].closed  # not left holding the camera for the next try
