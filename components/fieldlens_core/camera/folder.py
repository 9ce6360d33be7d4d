"""A camera that cycles through the images in a folder, in name order, or plays them as a video.

Without ``fps`` each capture takes the next image. With ``fps`` the folder is a video that
starts at the first capture and runs on its own clock: a capture gets the frame of that
moment, so a consumer slower than the video skips frames, as it would with a real camera.
Without ``repeat``, captures fail with CameraUnavailableError once the last image was shown
(the end of a scripted video).

JPEG files pass through untouched (no re-encoding, so what is kept is what was classified);
PNG and other formats Pillow reads are converted to JPEG.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fieldlens_core.camera import JPEG_MAGIC, Frame
from fieldlens_core.errors import CameraUnavailableError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def folder_images(folder: Path) -> list[Path]:
    """The images a folder camera shows from ``folder``, in name order (OSError if it cannot be read)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class FolderCamera:
    def __init__(
        self,
        folder: Path,
        jpeg_quality: int = 90,
        fps: float | None = None,
        repeat: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._folder = folder
        self._quality = jpeg_quality
        self._fps = fps
        self._repeat = repeat
        self._clock = clock
        self._started: float | None = None
        self._next = 0
        self._lock = threading.Lock()
        self._listing: tuple[int, list[Path]] = (-1, [])

    def _images(self) -> list[Path]:
        """The folder's images, listed again only when the folder changed (a user may drop photos in)."""
        try:
            modified = self._folder.stat().st_mtime_ns
            if modified != self._listing[0]:
                self._listing = (modified, folder_images(self._folder))
        except OSError as exc:
            raise CameraUnavailableError(f"image folder {self._folder} cannot be read: {exc}") from None
        return self._listing[1]

    def capture(self) -> Frame:
        images = self._images()
        if not images:
            raise CameraUnavailableError(f"image folder {self._folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        with self._lock:
            position = self._position()
            if position >= len(images) and not self._repeat:
                raise CameraUnavailableError(f"the video {self._folder} has ended ({len(images)} frames)")
            path = images[position % len(images)]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CameraUnavailableError(f"cannot read {path}: {exc}") from None
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if not data.startswith(JPEG_MAGIC):
                    buffer = io.BytesIO()
                    image.convert("RGB").save(buffer, format="JPEG", quality=self._quality)
                    data = buffer.getvalue()
        except (UnidentifiedImageError, OSError) as exc:
            raise CameraUnavailableError(f"{path} is not a readable image: {exc}") from None
        return Frame(data, {"source": "folder", "file": path.name, "frame": position, "width": width, "height": height})

    def _position(self) -> int:
        """The frame to show now (the lock is held)."""
        if self._fps is None:
            self._next += 1
            return self._next - 1
        now = self._clock()
        if self._started is None:
            self._started = now
        return int((now - self._started) * self._fps)

    def close(self) -> None:
        return None
