"""The thumbnailer decodes what a device writes, within the inference service's pixel budget, and nothing else."""

from __future__ import annotations

import errno
import io
import logging
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import EpsImagePlugin, Image

from fieldlens_core.model import MAX_DECODED_PIXELS, MAX_PIXELS
from fieldlens_fielddata.directory import Pair
from fieldlens_labelling.thumbnails import (
    SIZE,
    NotADeviceImageError,
    OverPixelBudgetError,
    Thumbnails,
    UnreadableImageError,
)
from tests.helpers.images import solid_jpeg

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims ``width`` x ``height``: what a decoder
    would be asked to decode, without this test holding that many pixels."""
    body = bytearray(solid_jpeg((200, 30, 30), (16, 16)))
    at = body.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    body[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(body)


def png_claiming(width: int, height: int) -> bytes:
    """A few-byte PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def pair_of(tmp_path: Path, body: bytes) -> Pair:
    path = tmp_path / "field" / "20261120T080000000Z-abcd.jpg"  # the name a device gives it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return Pair("20261120T080000000Z-abcd", datetime(2026, 11, 20, 8, tzinfo=UTC), path)


def test_a_device_jpeg_gets_a_small_thumbnail_made_once(tmp_path: Path) -> None:
    thumbnails = Thumbnails(tmp_path / "cache")
    pair = pair_of(tmp_path, solid_jpeg((10, 200, 10), (640, 480)))
    made = thumbnails.get(pair)
    with Image.open(io.BytesIO(made)) as small:
        assert small.format == "JPEG" and max(small.size) == SIZE
    assert len(list((tmp_path / "cache").iterdir())) == 1 and thumbnails.get(pair) == made


def test_an_eps_file_named_jpg_never_reaches_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow would hand it to Ghostscript (an interpreter: an arbitrary-code surface where installed)."""
    calls: list[Any] = []

    def ghostscript(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise OSError("Ghostscript was started")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    with pytest.raises(NotADeviceImageError, match="not a JPEG"):
        Thumbnails(tmp_path / "cache").get(pair_of(tmp_path, EPS))
    assert calls == []


def test_a_196_mpx_png_is_refused_before_any_decoder_runs(tmp_path: Path) -> None:
    """A device writes no PNG; this one claims 14,000 x 14,000 (Pillow's own guard raised
    DecompressionBombError, which was no OSError: a bare 500)."""
    with pytest.raises(NotADeviceImageError, match="not a JPEG"):
        Thumbnails(tmp_path / "cache").get(pair_of(tmp_path, png_claiming(14_000, 14_000)))


@pytest.mark.parametrize(
    ("width", "height", "says"),
    [
        (14_000, 14_000, f"over the {MAX_PIXELS} pixels"),  # 196 Mpx: over twice Pillow's own limit too
        (8_000, 6_000, "8000x6000 pixels, over"),  # 48 Mpx: Pillow would decode it, inference would not
        (65_000, 300, f"over the {MAX_DECODED_PIXELS} that decode at once"),  # draft mode cannot scale a strip
    ],
)
def test_a_jpeg_over_the_inference_services_pixel_budget_is_refused(
    tmp_path: Path, width: int, height: int, says: str
) -> None:
    assert width * height > MAX_DECODED_PIXELS
    with pytest.raises(OverPixelBudgetError, match=says):
        Thumbnails(tmp_path / "cache").get(pair_of(tmp_path, jpeg_claiming(width, height)))
    assert not (tmp_path / "cache").exists()


def test_a_truncated_jpeg_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    whole = solid_jpeg((10, 10, 200), (640, 480))
    with pytest.raises(UnreadableImageError, match="cannot be read"):
        Thumbnails(tmp_path / "cache").get(pair_of(tmp_path, whole[: len(whole) // 3]))


def test_a_full_cache_disk_still_shows_the_thumbnail_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_room(path: Path, data: bytes, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("fieldlens_labelling.thumbnails.atomic_write", no_room)
    thumbnails = Thumbnails(tmp_path / "cache")
    pair = pair_of(tmp_path, solid_jpeg((10, 200, 10), (640, 480)))
    with caplog.at_level(logging.WARNING, "fieldlens_labelling.thumbnails"):
        first, second = thumbnails.get(pair), thumbnails.get(pair)
    assert first == second and first.startswith(b"\xff\xd8")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "No space left on device" in warned[0]
