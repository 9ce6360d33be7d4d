"""Test stand-in for ``pykms``, which only Raspberry Pi OS ships (its DRM/KMS bindings).

picamera2 imports it for its DRM preview window at import time; the tests never open a preview,
so names that exist and fail when used are all that is needed. The PyPI package named ``kms`` is
unrelated and is not installed.
"""

from __future__ import annotations

from typing import Any


class _Unavailable:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("pykms test stand-in: no DRM/KMS display in the test root")


Card = ResourceManager = DumbFramebuffer = DmabufFramebuffer = AtomicReq = _Unavailable


class _FormatNames:
    """picamera2 reads format names off ``PixelFormat`` at import time, never uses them without a Card."""

    def __getattr__(self, name: str) -> str:
        return name


PixelFormat = _FormatNames()


class PlaneType:
    Primary = Overlay = Cursor = 0
