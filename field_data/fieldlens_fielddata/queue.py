"""The upload queue is the store's directory itself: every complete pair without a receipt.

That makes the queue durable by construction (what the classifier kept is what is queued,
across crashes and restarts) and needs no second copy of anything. Items come out oldest
first, a bounded chunk at a time, one day directory in memory at most, so memory does not
grow with the length of the queue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fieldlens_fielddata.layout import IMAGE_SUFFIX, QUARANTINE_DIR, RECEIPT_SUFFIX, SIDECAR_SUFFIX, image_time


@dataclass(frozen=True)
class PendingPair:
    image_id: str
    when: datetime
    image_path: Path
    sidecar_path: Path

    @property
    def receipt_path(self) -> Path:
        return self.image_path.with_suffix(RECEIPT_SUFFIX)


def _sorted_subdirs(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir() and e.name != QUARANTINE_DIR)
    except FileNotFoundError:
        return []


def day_directories(root: Path) -> Iterator[Path]:
    """<root>/<yyyy>/<mm>/<dd>, oldest first."""
    for year in _sorted_subdirs(root):
        for month in _sorted_subdirs(year):
            yield from _sorted_subdirs(month)


def pending_in(day: Path) -> Iterator[PendingPair]:
    try:
        with os.scandir(day) as entries:
            names = {e.name for e in entries}
    except FileNotFoundError:
        return
    for name in sorted(names):
        if not name.endswith(SIDECAR_SUFFIX):
            continue
        image_id = name[: -len(SIDECAR_SUFFIX)]
        when = image_time(image_id)
        if when is None or image_id + RECEIPT_SUFFIX in names:
            continue
        yield PendingPair(image_id, when, day / (image_id + IMAGE_SUFFIX), day / name)


def pending(root: Path) -> Iterator[PendingPair]:
    """Every queued pair, oldest first (lazily)."""
    for day in day_directories(root):
        yield from pending_in(day)


def take(root: Path, limit: int) -> list[PendingPair]:
    chunk = []
    for item in pending(root):
        chunk.append(item)
        if len(chunk) >= limit:
            break
    return chunk


@dataclass(frozen=True)
class QueueStats:
    queued: int
    queued_bytes: int
    oldest: datetime | None


def queue_stats(root: Path) -> QueueStats:
    count, size, oldest = 0, 0, None
    for item in pending(root):
        count += 1
        oldest = oldest or item.when
        for path in (item.image_path, item.sidecar_path):
            with contextlib.suppress(FileNotFoundError):
                size += path.stat().st_size
    return QueueStats(count, size, oldest)
