"""A Raspberry Pi camera through picamera2 (libcamera).

picamera2 is imported lazily, on the first capture: it only exists on Raspberry Pi OS (from
apt, with its libcamera bindings) and cannot import elsewhere. Until a capture succeeds the
camera is retried on every request, so a camera plugged in later is picked up without a
restart, and a missing one gives CAMERA_UNAVAILABLE with the fix in the message.

With ``lores_width`` the camera runs a video configuration with two streams: ``main`` (the
image kept and answered for) and ``lores`` at the model's input size, scaled by the image
signal processor, so the CPU never decodes and resizes a full frame for inference. Pi 4 and
older give lores only as YUV420; it is converted to RGB here (BT.601, full range, as libcamera's
JPEG-style colour space) and handed to inference as a small JPEG. Every request is released
before capture returns, whatever happens: a request held is a buffer the camera cannot reuse.
"""

from __future__ import annotations

import importlib
import io
import logging
import threading
from types import ModuleType
from typing import Any

from fieldlens_core.camera import Frame
from fieldlens_core.errors import CameraUnavailableError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "picamera2 is not importable. On Raspberry Pi OS (64-bit): `sudo apt install -y python3-picamera2`, "
    "and create the component's venv with --system-site-packages so it sees the apt package; "
    "check the camera with `rpicam-hello --list-cameras`."
)

# Capture metadata worth keeping beside the image (all plain numbers in libcamera's metadata).
METADATA_KEYS = (
    "ExposureTime",
    "AnalogueGain",
    "DigitalGain",
    "Lux",
    "ColourTemperature",
    "FocusFoM",
    "SensorTimestamp",
)


def lores_size(main: tuple[int, int], width: int) -> tuple[int, int]:
    """The lores stream's size: ``width`` wide, the main stream's aspect, both even (YUV420 needs it)."""
    height = round(width * main[1] / main[0] / 2) * 2
    return width - width % 2, max(2, height)


def yuv420_to_rgb(array: Any, size: tuple[int, int]) -> Any:
    """picamera2's YUV420 array (height * 3/2 rows of ``width``: Y, then U and V at half
    resolution, two half-width rows per row) as an RGB array."""
    import numpy as np

    width, height = size
    y = array[:height, :width].astype(np.float32)
    quarter = height // 4
    u = array[height : height + quarter, :width].reshape(height // 2, width // 2).astype(np.float32) - 128
    v = array[height + quarter : height + 2 * quarter, :width].reshape(height // 2, width // 2).astype(np.float32) - 128
    u, v = (plane.repeat(2, axis=0).repeat(2, axis=1) for plane in (u, v))
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


class Picamera2Camera:
    def __init__(
        self,
        width: int,
        height: int,
        jpeg_quality: int = 90,
        module: ModuleType | None = None,
        lores_width: int | None = None,
    ) -> None:
        self._size = (width, height)
        self._quality = jpeg_quality
        self._lores = lores_size(self._size, lores_width) if lores_width else None
        self._module = module
        self._camera: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        module: Any = self._module
        if module is None:
            try:
                module = importlib.import_module("picamera2")
            except ImportError as exc:
                raise CameraUnavailableError(f"{INSTALL_HINT} ({exc})") from None
        try:
            camera = module.Picamera2()
            main = {"size": self._size, "format": "RGB888"}
            if self._lores is None:
                camera.configure(camera.create_still_configuration(main=main))
            else:
                lores = {"size": self._lores, "format": "YUV420"}
                camera.configure(camera.create_video_configuration(main=main, lores=lores))
            camera.options["quality"] = self._quality
            camera.start()
        except Exception as exc:  # libcamera raises many types; all mean "no usable camera"
            raise CameraUnavailableError(f"camera could not be opened: {exc}") from None
        lores_text = f", lores {self._lores[0]}x{self._lores[1]} for inference" if self._lores else ""
        log.info("picamera2 camera open at %dx%d%s", *self._size, lores_text)
        return camera

    def capture(self) -> Frame:
        with self._lock:
            if self._camera is None:
                self._camera = self._open()
            try:
                request = self._camera.capture_request()
                try:
                    buffer = io.BytesIO()
                    request.save("main", buffer, format="jpeg")
                    sensor = request.get_metadata()
                    lores = request.make_array("lores") if self._lores is not None else None
                finally:
                    request.release()
            except Exception as exc:
                self._close_locked()  # reopen on the next capture
                raise CameraUnavailableError(f"camera capture failed: {exc}") from None
        metadata: dict[str, Any] = {"source": "picamera2", "width": self._size[0], "height": self._size[1]}
        metadata.update({k: sensor[k] for k in METADATA_KEYS if isinstance(sensor.get(k), int | float)})
        return Frame(buffer.getvalue(), metadata, self._model_input(lores))

    def _model_input(self, lores: Any) -> bytes | None:
        if lores is None or self._lores is None:
            return None
        from PIL import Image

        output = io.BytesIO()
        Image.fromarray(yuv420_to_rgb(lores, self._lores)).save(output, format="JPEG", quality=95)
        return output.getvalue()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            except Exception:
                log.debug("closing picamera2 failed", exc_info=True)
            self._camera = None
