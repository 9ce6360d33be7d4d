"""A camera that draws a test pattern: colour bars with a moving marker and a frame counter.

For a device with no camera yet, and for tests that need a real, changing JPEG.
"""

from __future__ import annotations

import io
import threading

from PIL import Image, ImageDraw

from fieldlens_core.camera import Frame

_BARS = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 255)]


class TestPatternCamera:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, width: int = 400, height: int = 400, jpeg_quality: int = 90) -> None:
        self._width = width
        self._height = height
        self._quality = jpeg_quality
        self._frame = 0
        self._lock = threading.Lock()

    def capture(self) -> Frame:
        with self._lock:
            self._frame += 1
            number = self._frame
        image = Image.new("RGB", (self._width, self._height))
        draw = ImageDraw.Draw(image)
        bar = self._width / len(_BARS)
        for index, colour in enumerate(_BARS):
            draw.rectangle([index * bar, 0, (index + 1) * bar, self._height], fill=colour)
        size = max(8, self._width // 8)
        x = (number * 7) % max(1, self._width - size)
        draw.rectangle([x, self._height // 2, x + size, self._height // 2 + size], fill=(0, 0, 0))
        draw.text((4, 4), f"fieldlens test pattern #{number}", fill=(0, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self._quality)
        return Frame(
            buffer.getvalue(),
            {"source": "test-pattern", "frame": number, "width": self._width, "height": self._height},
        )

    def close(self) -> None:
        return None
