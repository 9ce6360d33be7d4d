"""The explicit registry of camera sources: configuration name -> implementation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from fieldlens_core.camera import Camera
from fieldlens_core.camera.folder import IMAGE_SUFFIXES, FolderCamera, folder_images
from fieldlens_core.camera.picamera2_source import Picamera2Camera
from fieldlens_core.camera.test_pattern import TestPatternCamera
from fieldlens_core.config import CameraConfig
from fieldlens_core.errors import ConfigurationError

log = logging.getLogger(__name__)


def _folder(config: CameraConfig) -> Camera:
    assert config.folder is not None  # CameraConfig guarantees it for source=folder
    return FolderCamera(config.folder, config.jpeg_quality, fps=config.folder_fps, repeat=config.folder_repeat)


CAMERA_SOURCES: dict[str, Callable[[CameraConfig], Camera]] = {
    "picamera2": lambda c: Picamera2Camera(c.width, c.height, c.jpeg_quality, lores_width=c.model_input_size),
    "folder": _folder,
    "test-pattern": lambda c: TestPatternCamera(c.width, c.height, c.jpeg_quality),
}


def build_camera(config: CameraConfig) -> Camera:
    return CAMERA_SOURCES[config.source](config)


def parse_camera_flag(flag: str) -> dict[str, str]:
    """``folder:DIR`` | ``test-pattern`` | ``picamera2`` -> CameraConfig fields.

    A flag is typed by a person at a terminal, so a folder that is not there is refused here, before
    anything starts; from a configuration file (a deployment) a missing folder is each capture's
    CAMERA_UNAVAILABLE instead, as a missing camera is, since the folder may be mounted later.
    A folder with no images yet is accepted (photos may be dropped in while it runs), with a warning:
    until then every request answers CAMERA_UNAVAILABLE.
    """
    source, _, argument = flag.partition(":")
    if source not in CAMERA_SOURCES:
        raise ConfigurationError(
            f"camera {flag!r} is not a camera", "Give one of: folder:DIR, test-pattern, picamera2 (on a Raspberry Pi)"
        )
    if source == "folder" and not (argument and Path(argument).is_dir()):
        problem = "names no folder" if not argument else f"names {argument!r}, which is not a folder"
        raise ConfigurationError(
            f"camera {flag!r} {problem}", "Give a folder of JPEG or PNG images: --camera folder:DIR"
        )
    if source == "folder" and not folder_images(Path(argument)):
        log.warning(
            "camera folder %s has no images yet (%s): each request answers CAMERA_UNAVAILABLE until some are added",
            argument,
            ", ".join(sorted(IMAGE_SUFFIXES)),
        )
    return {"source": source, "folder": argument} if argument else {"source": source}
