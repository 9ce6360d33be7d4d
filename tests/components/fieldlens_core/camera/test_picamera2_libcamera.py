"""Picamera2Camera on the real picamera2 and real libcamera (0.7.1's virtual camera playing
scikit-image's sample photos), in a Debian trixie root entered by chroot (tests/realparts).

The stand-in module of test_picamera2_source.py answers as the adapter expects; this is where
the adapter meets what libcamera actually configures: lores asked for as YUV420 comes as NV12.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.camera.picamera2_source import lores_size, yuv420_to_rgb
from tests.realparts.libcamera_root import HERE, build_root, in_root, why_unavailable
from tests.realparts.picamera2_captures import LORES_WIDTH, MAIN

pytestmark = pytest.mark.slow  # builds the root once per machine (about a minute); then ~2 s

LORES = lores_size(MAIN, LORES_WIDTH)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CAPTURES = ("capture-0", "capture-1", "capture-2", "after-close")
# Mean absolute difference (0-255) between images of one scene; lores decoded right gives 2-5,
# NV12 decoded as YUV420's planes (the adapter before it read the settled format) 20-45.
SAME_SCENE = 10


def photos() -> list[Image.Image]:
    """The sample photos at the main stream's size, cropped to its aspect. Even sizes matter:
    libcamera 0.7.1's virtual camera corrupts its heap on a JPEG of odd height (rocket's 427)."""
    import skimage.data

    result = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        width, height = image.size
        crop_height = min(height, width * MAIN[1] // MAIN[0])
        crop_width = crop_height * MAIN[0] // MAIN[1]
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        result.append(image.crop((left, top, left + crop_width, top + crop_height)).resize(MAIN))
    return result


def pixels(image: Image.Image | bytes | Path, size: tuple[int, int] | None = None) -> Any:
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, Path):
        image = Image.open(image)
    image = image.convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def difference(first: Any, second: Any) -> float:
    return float(np.abs(first - second).mean())


@dataclass(frozen=True)
class Captured:
    out: Path  # what picamera2_captures.py wrote
    photos: list[Image.Image]
    stderr: str

    def log(self) -> str:
        return (self.out / "log.txt").read_text()

    def nearest_photo(self, image: Path) -> tuple[int, float]:
        """Which played photo ``image`` shows, and how far it is from it."""
        got = pixels(image, MAIN)
        distances = [difference(got, pixels(photo)) for photo in self.photos]
        return int(np.argmin(distances)), min(distances)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Captured:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    played = photos()
    with in_root(build_root()) as work:
        work.play_photos(played, [MAIN, LORES])
        script = work.add(HERE / "picamera2_captures.py")
        out = work.directory / "out"
        out.mkdir()
        result = work.run("path", script, work.inside(out))
        kept = tmp_path_factory.mktemp("picamera2-libcamera") / "out"
        shutil.copytree(out, kept)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return Captured(kept, played, result.stderr)


def test_main_stream_shows_the_photos_the_virtual_camera_plays(captured: Captured) -> None:
    for name in CAPTURES:
        image = captured.out / f"{name}.jpg"
        assert Image.open(image).size == MAIN
        index, distance = captured.nearest_photo(image)
        assert distance < SAME_SCENE, (name, PHOTOS[index], distance)


def test_lores_comes_as_nv12_and_the_adapter_reads_that_back(captured: Captured) -> None:
    assert json.loads((captured.out / "raw-lores.json").read_text()) == {"format": "NV12", "size": list(LORES)}
    assert f"lores {LORES[0]}x{LORES[1]} NV12 for inference" in captured.log()


def test_the_model_input_from_lores_matches_the_main_image(captured: Captured) -> None:
    distances = {}
    for name in CAPTURES:
        model_input = captured.out / f"{name}.model.jpg"
        assert Image.open(model_input).size == LORES
        distances[name] = difference(pixels(model_input), pixels(captured.out / f"{name}.jpg", LORES))
    assert max(distances.values()) < SAME_SCENE, distances


def test_nv12_decoded_as_yuv420_planes_would_garble_the_model_input(captured: Captured) -> None:
    raw = np.load(captured.out / "raw-lores.npy")
    main = pixels(captured.out / "raw-main.jpg", LORES)
    right = difference(yuv420_to_rgb(raw, LORES, "NV12").astype(np.float32), main)
    wrong = difference(yuv420_to_rgb(raw, LORES, "YUV420").astype(np.float32), main)
    assert right < SAME_SCENE < wrong, (right, wrong)


def test_frame_metadata_comes_from_the_request(captured: Captured) -> None:
    for name in (*CAPTURES, "still"):
        metadata = json.loads((captured.out / f"{name}.json").read_text())
        assert metadata["source"] == "picamera2" and (metadata["width"], metadata["height"]) == MAIN
        assert isinstance(metadata["SensorTimestamp"], int) and metadata["SensorTimestamp"] > 0


def test_close_releases_the_camera_for_a_capture_after_it_and_for_another_camera(captured: Captured) -> None:
    assert "all captures done" in captured.log() and "Traceback" not in captured.stderr
    assert captured.log().count("picamera2 camera open at 640x480, lores") == 2  # reopened after close
    index, distance = captured.nearest_photo(captured.out / "still.jpg")
    assert distance < SAME_SCENE, (PHOTOS[index], distance)
    assert not (captured.out / "still.model.jpg").exists()  # no lores: inference decodes main
