"""A Raspberry Pi camera through picamera2 (libcamera).

picamera2 is imported lazily, on the first capture: it only exists on Raspberry Pi OS (from
apt, with its libcamera bindings) and cannot import elsewhere. Until a capture succeeds the
camera is retried on every request, so a camera plugged in later is picked up without a
restart, and a missing one gives CAMERA_UNAVAILABLE with the fix in the message.
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


class Picamera2Camera:
    def __init__(self, width: int, height: int, jpeg_quality: int = 90, module: ModuleType | None = None) -> None:
        self._size = (width, height)
        self._quality = jpeg_quality
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
            camera.configure(camera.create_still_configuration(main={"size": self._size, "format": "RGB888"}))
            camera.options["quality"] = self._quality
            camera.start()
        except Exception as exc:  # libcamera raises many types; all mean "no usable camera"
            raise CameraUnavailableError(f"camera could not be opened: {exc}") from None
        log.info("picamera2 camera open at %dx%d", *self._size)
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
                finally:
                    request.release()
            except Exception as exc:
                self._close_locked()  # reopen on the next capture
                raise CameraUnavailableError(f"camera capture failed: {exc}") from None
        metadata: dict[str, Any] = {"source": "picamera2", "width": self._size[0], "height": self._size[1]}
        metadata.update({k: sensor[k] for k in METADATA_KEYS if isinstance(sensor.get(k), int | float)})
        return Frame(buffer.getvalue(), metadata)

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
