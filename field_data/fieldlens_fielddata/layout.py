"""Names of field data: image ids, and keys in the bucket (README, "How they reach S3").

Locally, :class:`fieldlens_fielddata.directory.FieldDataDir` places them. In the bucket::

    <prefix>/<thing>/<yyyy>/<mm>/<dd>/<image_id>.jpg   and   <image_id>.json

Keys derive from the image id alone, so an upload repeated after a crash writes the same
keys again: never a second copy.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

DEFAULT_S3_PREFIX = "field-data"
IMAGE_SUFFIX = ".jpg"
SIDECAR_SUFFIX = ".json"
RECEIPT_SUFFIX = ".uploaded"


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


IMAGE_ID = re.compile(r"[0-9]{8}T[0-9]{9}Z-[0-9A-Za-z]{1,64}")


def is_image_id(name: str) -> bool:
    """True for a name :func:`new_image_id` could have made: safe to join onto a directory."""
    return IMAGE_ID.fullmatch(name) is not None and image_time(name) is not None


def date_path(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y/%m/%d}"


def s3_key(prefix: str, thing: str, when: datetime, image_id: str, suffix: str = IMAGE_SUFFIX) -> str:
    parts = [p for p in (prefix.strip("/"), thing, date_path(when), image_id + suffix) if p]
    return "/".join(parts)
