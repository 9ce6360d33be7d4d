"""Names and places of field data, locally and in the bucket (README, "How they reach S3").

Locally::

    <root>/<yyyy>/<mm>/<dd>/<image_id>.jpg        the image
    <root>/<yyyy>/<mm>/<dd>/<image_id>.json       its sidecar: present = the pair is complete
    <root>/<yyyy>/<mm>/<dd>/<image_id>.uploaded   the upload receipt: present = in the bucket
    <root>/quarantine/                            pairs the uploader could not read

In the bucket::

    <prefix>/<thing>/<yyyy>/<mm>/<dd>/<image_id>.jpg   and   <image_id>.json

Keys derive from the image id alone, so an upload repeated after a crash writes the same
keys again: never a second copy.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

IMAGE_SUFFIX = ".jpg"
SIDECAR_SUFFIX = ".json"
RECEIPT_SUFFIX = ".uploaded"
QUARANTINE_DIR = "quarantine"


def new_image_id(when: datetime) -> str:
    """Sortable by time and unique across restarts: ``20261122T221530123Z-1a2b3c4d``."""
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%S}{when.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def image_time(image_id: str) -> datetime | None:
    """The capture time encoded in an image id; None for a name that is not one of ours."""
    stamp = image_id[:19]  # YYYYmmddTHHMMSSfffZ
    if len(stamp) != 19 or stamp[8] != "T" or stamp[18] != "Z" or not (stamp[:8] + stamp[9:18]).isdigit():
        return None
    try:
        return datetime(
            int(stamp[0:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[9:11]),
            int(stamp[11:13]),
            int(stamp[13:15]),
            int(stamp[15:18]) * 1000,
            tzinfo=UTC,
        )
    except ValueError:
        return None


def date_path(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y/%m/%d}"


def s3_key(prefix: str, thing: str, when: datetime, image_id: str, suffix: str = IMAGE_SUFFIX) -> str:
    parts = [p for p in (prefix.strip("/"), thing, date_path(when), image_id + suffix) if p]
    return "/".join(parts)


def pair_paths(root: Path, image_id: str, when: datetime) -> tuple[Path, Path, Path]:
    """(image, sidecar, receipt) of one image id."""
    base = root / date_path(when) / image_id
    return base.with_suffix(IMAGE_SUFFIX), base.with_suffix(SIDECAR_SUFFIX), base.with_suffix(RECEIPT_SUFFIX)
