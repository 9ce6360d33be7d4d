"""A Raspberry Pi camera through picamera2 (libcamera).

picamera2 is imported lazily, on the first capture: it only exists on Raspberry Pi OS (from
apt, with its libcamera bindings) and cannot import elsewhere. Until a capture succeeds the
camera is retried on every request, so a camera plugged in later is picked up without a
restart, and a missing one gives CAMERA_UNAVAILABLE with the fix in the message.

With ``lores_width`` the camera runs a video configuration with two streams: ``main`` (the
image kept and answered for) and ``lores`` at the model's input size, scaled by the image
signal processor, so the CPU never decodes and resizes a full frame for inference. Lores is
asked for as YUV420 (Pi 4 and older give lores only in a YUV format), but libcamera may settle
on another layout: its virtual camera, for one, gives NV12 (interleaved chroma), and decoding
that as YUV420's separate planes garbles the colours without any error. So the format and size
``configure`` settled on are read back and the array is decoded by them. The stream is asked for
in sYCC (BT.601, full range: the JPEG colour space the main image and the model's training
images use), which is what the decoder assumes; a camera that settles on another colour space is
logged. The RGB result goes to inference as a small JPEG. Every request is released before
capture returns, whatever happens: a request held is a buffer the camera cannot reuse.
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
    """The lores stream's size: ``width`` wide, the main stream's aspect, both even (4:2:0 needs it)."""
    height = round(width * main[1] / main[0] / 2) * 2
    return width - width % 2, max(2, height)


# The 4:2:0 layouts picamera2 returns as one (height * 3/2, row) uint8 array, by libcamera's name:
# planar (the U plane, then V, each at half width and half height) or semi-planar (one plane of
# interleaved chroma pairs); the second of each pair swaps U and V.
PLANAR = {"YUV420": False, "YVU420": True}
SEMI_PLANAR = {"NV12": False, "NV21": True}
LORES_FORMATS = (*PLANAR, *SEMI_PLANAR)


def yuv420_to_rgb(array: Any, size: tuple[int, int], pixel_format: str = "YUV420") -> Any:
    """A picamera2 4:2:0 array in ``pixel_format`` (one of LORES_FORMATS) as an RGB array.

    Rows may be padded past ``width`` (picamera2 keeps the stride for planar formats): a planar
    chroma plane's rows are half the array's row, two of them per array row.
    """
    import numpy as np

    width, height = size
    half = (height // 2, width // 2)
    y = array[:height, :width].astype(np.float32)
    if pixel_format in SEMI_PLANAR:
        pairs = array[height : height + height // 2, :width].reshape(*half, 2)
        u, v, swapped = pairs[..., 0], pairs[..., 1], SEMI_PLANAR[pixel_format]
    elif pixel_format in PLANAR:
        stride = array.shape[1]
        chroma = array.reshape(-1)[stride * height :]
        plane = (height // 2) * (stride // 2)
        u, v = (chroma[i * plane : (i + 1) * plane].reshape(height // 2, stride // 2)[:, : half[1]] for i in (0, 1))
        swapped = PLANAR[pixel_format]
    else:
        raise ValueError(f"{pixel_format} is not a 4:2:0 format fieldlens decodes ({', '.join(LORES_FORMATS)})")
    if swapped:
        u, v = v, u
    u, v = ((plane.astype(np.float32) - 128).repeat(2, axis=0).repeat(2, axis=1) for plane in (u, v))
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def is_sycc(colour_space: Any) -> bool:
    """Whether libcamera's ColorSpace is full-range BT.601 (sYCC), the one the decoder assumes."""
    return str(getattr(colour_space, "ycbcrEncoding", "")).endswith("Rec601") and str(
        getattr(colour_space, "range", "")
    ).endswith("Full")


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
        # What configure settled on for lores, read back at each open: (format, size).
        self._lores_settled: tuple[str, tuple[int, int]] | None = None
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
        camera: Any = None
        try:
            camera = module.Picamera2()
            main = {"size": self._size, "format": "RGB888"}
            if self._lores is None:
                camera.configure(camera.create_still_configuration(main=main))
            else:
                sycc = importlib.import_module("libcamera").ColorSpace.Sycc()  # picamera2 brings libcamera
                lores = {"size": self._lores, "format": "YUV420"}
                camera.configure(camera.create_video_configuration(main=main, lores=lores, colour_space=sycc))
                self._lores_settled = self._read_back_lores(camera.camera_configuration())
            camera.options["quality"] = self._quality
            camera.start()
        except Exception as exc:  # libcamera raises many types; all mean "no usable camera"
            if camera is not None:
                self._close_camera(camera)  # a camera left open stays busy for the next try
            raise CameraUnavailableError(f"camera could not be opened: {exc}") from None
        lores_text = ""
        if self._lores_settled is not None:
            pixel_format, (width, height) = self._lores_settled
            lores_text = f", lores {width}x{height} {pixel_format} for inference"
        log.info("picamera2 camera open at %dx%d%s", *self._size, lores_text)
        return camera

    @staticmethod
    def _read_back_lores(settled: dict[str, Any]) -> tuple[str, tuple[int, int]]:
        """The lores format and size libcamera settled on; one the decoder cannot read fails the open."""
        lores = settled["lores"]
        pixel_format, size = str(lores["format"]), (int(lores["size"][0]), int(lores["size"][1]))
        if pixel_format not in LORES_FORMATS:
            raise ValueError(f"the lores stream came out as {pixel_format}, not one of {', '.join(LORES_FORMATS)}")
        colour_space = settled.get("colour_space")
        if colour_space is not None and not is_sycc(colour_space):
            log.warning("lores reports colour space %s; it is decoded as sYCC (full-range BT.601)", colour_space)
        return pixel_format, size

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
        if lores is None or self._lores_settled is None:
            return None
        from PIL import Image

        pixel_format, size = self._lores_settled
        output = io.BytesIO()
        Image.fromarray(yuv420_to_rgb(lores, size, pixel_format)).save(output, format="JPEG", quality=95)
        return output.getvalue()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._camera is not None:
            self._close_camera(self._camera)
            self._camera = None

    @staticmethod
    def _close_camera(camera: Any) -> None:
        try:
            camera.stop()
            camera.close()
        except Exception:
            log.debug("closing picamera2 failed", exc_info=True)
