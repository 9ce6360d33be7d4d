"""The camera interface: ``capture()`` returns JPEG bytes and capture metadata.

Implementations, one per file: picamera2 (a Raspberry Pi camera), an image folder, and a
test pattern. :func:`fieldlens_core.camera.registry.build_camera` picks one from
configuration. A camera opens lazily and raises CameraUnavailableError on each failed
capture, so a device whose camera is unplugged keeps answering with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Frame:
    jpeg: bytes  # the image kept and answered for
    metadata: dict[str, Any] = field(default_factory=dict)
    # What inference should see, when the camera made it: picamera2's lores stream, already scaled
    # to the model's input by the image signal processor (None: inference decodes ``jpeg``).
    model_input: bytes | None = None

    @property
    def for_inference(self) -> bytes:
        return self.model_input or self.jpeg


class Camera(Protocol):
    def capture(self) -> Frame:
        """One frame as JPEG; raises CameraUnavailableError when there is none to be had."""

    def close(self) -> None:
        """Release the device; safe to call twice."""
