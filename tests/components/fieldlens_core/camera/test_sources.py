from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from fieldlens_core.camera import JPEG_MAGIC
from fieldlens_core.camera.folder import FolderCamera
from fieldlens_core.camera.registry import build_camera, parse_camera_flag
from fieldlens_core.camera.test_pattern import TestPatternCamera
from fieldlens_core.config import CameraConfig
from fieldlens_core.errors import CameraUnavailableError, ConfigurationError
from tests.helpers.images import solid_jpeg, solid_png
from tests.helpers.video import write_video


def test_test_pattern_gives_real_changing_jpegs_of_the_configured_size() -> None:
    camera = TestPatternCamera(120, 80)
    first, second = camera.capture(), camera.capture()
    assert first.jpeg.startswith(JPEG_MAGIC) and first.jpeg != second.jpeg
    assert Image.open(io.BytesIO(first.jpeg)).size == (120, 80)
    assert (first.metadata["frame"], second.metadata["frame"]) == (1, 2)


def test_folder_cycles_in_name_order_and_passes_jpegs_through(tmp_path: Path) -> None:
    (tmp_path / "b.jpg").write_bytes(solid_jpeg((0, 255, 0)))
    (tmp_path / "a.jpg").write_bytes(solid_jpeg((255, 0, 0)))
    (tmp_path / "notes.txt").write_text("not an image")
    camera = FolderCamera(tmp_path)
    names = [camera.capture().metadata["file"] for _ in range(3)]
    assert names == ["a.jpg", "b.jpg", "a.jpg"]
    assert FolderCamera(tmp_path).capture().jpeg == (tmp_path / "a.jpg").read_bytes()


def test_folder_converts_other_formats_to_jpeg(tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(solid_png((0, 0, 255)))
    frame = FolderCamera(tmp_path).capture()
    assert frame.jpeg.startswith(JPEG_MAGIC)
    assert (frame.metadata["width"], frame.metadata["height"]) == (40, 40)


@pytest.mark.parametrize("setup", ["empty", "missing", "corrupt"])
def test_folder_problems_are_camera_unavailable(tmp_path: Path, setup: str) -> None:
    folder = tmp_path / "images"
    if setup != "missing":
        folder.mkdir()
    if setup == "corrupt":
        (folder / "broken.jpg").write_bytes(JPEG_MAGIC + b"garbage")
    with pytest.raises(CameraUnavailableError):
        FolderCamera(folder).capture()


def test_registry_builds_each_source(tmp_path: Path) -> None:
    assert isinstance(build_camera(CameraConfig(source="test-pattern")), TestPatternCamera)
    assert isinstance(build_camera(CameraConfig(source="folder", folder=tmp_path)), FolderCamera)
    assert parse_camera_flag(f"folder:{tmp_path}") == {"source": "folder", "folder": str(tmp_path)}
    assert parse_camera_flag("picamera2") == {"source": "picamera2"}
    with pytest.raises(ConfigurationError, match="'webcam' is not a camera") as refused:
        parse_camera_flag("webcam")
    assert "folder:DIR, test-pattern, picamera2" in refused.value.one_line()


def test_a_folder_plays_as_a_video_on_its_own_clock(tmp_path: Path) -> None:
    """A consumer slower than the video skips frames; without repeat, the video ends."""
    frames = write_video(tmp_path / "video", ["blank", "hen", "egg", "fox", "blank"])
    now = [100.0]
    camera = FolderCamera(frames, fps=10, repeat=False, clock=lambda: now[0])
    shown = []
    for moment in (100.0, 100.05, 100.25, 100.42):
        now[0] = moment
        shown.append(camera.capture().metadata["frame"])
    assert shown == [0, 0, 2, 4]  # the video started at the first capture
    now[0] = 100.5
    with pytest.raises(CameraUnavailableError, match="has ended"):
        camera.capture()
    looping = FolderCamera(frames, fps=10, clock=lambda: now[0])
    assert looping.capture().metadata["frame"] == 0
    now[0] = 101.2  # 0.7 s after its first capture
    frame = looping.capture()
    assert frame.metadata["frame"] == 7 and frame.metadata["file"] == "00002.jpg"


def test_a_folder_without_a_rate_gives_each_image_once_then_ends(tmp_path: Path) -> None:
    frames = write_video(tmp_path / "video", ["hen", "egg"])
    camera = FolderCamera(frames, repeat=False)
    assert [camera.capture().metadata["file"] for _ in range(2)] == ["00000.jpg", "00001.jpg"]
    with pytest.raises(CameraUnavailableError):
        camera.capture()


@pytest.mark.parametrize("flag", ["folder", "folder:", "folder:{tmp}/missing", "folder:{tmp}/a-file.jpg"])
def test_a_camera_flag_naming_no_folder_is_refused_before_anything_starts(tmp_path: Path, flag: str) -> None:
    (tmp_path / "a-file.jpg").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="folder") as refused:
        parse_camera_flag(flag.format(tmp=tmp_path))
    assert "--camera folder:DIR" in refused.value.one_line()


def test_a_camera_flag_naming_an_empty_folder_starts_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Photos may be dropped in while it runs, so it starts; until then every request fails, so it says so."""
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="fieldlens_core.camera.registry"):
        assert parse_camera_flag(f"folder:{tmp_path}") == {"source": "folder", "folder": str(tmp_path)}
    assert "has no images yet" in caplog.text and "CAMERA_UNAVAILABLE" in caplog.text
    caplog.clear()
    write_video(tmp_path / "photos", ["hen"])
    with caplog.at_level(logging.WARNING, logger="fieldlens_core.camera.registry"):
        parse_camera_flag(f"folder:{tmp_path / 'photos'}")
    assert caplog.text == ""
