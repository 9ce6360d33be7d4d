"""Where the classifier keeps field images: image + sidecar JSON, each written atomically.

Layout, locally and on S3 (DESIGN.md, "Field data on S3")::

    <root>/<yyyy>/<mm>/<dd>/<image_id>.jpg   and   <image_id>.json
    s3://<bucket>/<prefix>/<thing>/<yyyy>/<mm>/<dd>/<image_id>.jpg

The image is written first and the sidecar last: a sidecar's presence means the pair is
complete, so a crash between the two leaves an orphan image that readers skip, never a
sidecar that points at nothing.

Durability against power loss is a group commit: each file is renamed into place at once
(safe against a process crash) and a background thread fsyncs what was written, and the
directories, every ``sync_interval_s``. One fsync per image in the request path costs a
millisecond on an SSD and tens on an SD card; the price is that a power cut can lose the
images of the last interval (ext4's own commit interval is 5 s). ``sync_interval_s=0``
fsyncs inline instead.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fieldlens_core.atomic import atomic_write, fsync_directory, fsync_path

log = logging.getLogger(__name__)

IMAGE_SUFFIX = ".jpg"
SIDECAR_SUFFIX = ".json"


def new_image_id(when: datetime) -> str:
    """Sortable by time and unique across restarts: ``20261122T221530123Z-1a2b3c4d``."""
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%S}{when.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def date_path(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y/%m/%d}"


def s3_image_key(prefix: str, thing: str, when: datetime, image_id: str) -> str:
    parts = [p for p in (prefix.strip("/"), thing, date_path(when), image_id + IMAGE_SUFFIX) if p]
    return "/".join(parts)


@dataclass(frozen=True)
class KeptImage:
    image_id: str
    image_path: Path
    sidecar_path: Path
    s3_key: str


class GroupCommit:
    """Fsyncs the files and directories handed to it, once per interval, on its own thread."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._files: set[Path] = set()
        self._directories: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="field-store-sync", daemon=True)
        self._thread.start()

    def add(self, *files: Path) -> None:
        with self._lock:
            self._files.update(files)
            self._directories.update(f.parent for f in files)

    def flush(self) -> None:
        with self._lock:
            files, self._files = self._files, set()
            directories, self._directories = self._directories, set()
        for path in sorted(files):
            try:
                fsync_path(path)
            except FileNotFoundError:
                pass  # removed since (uploaded and deleted, evicted): nothing left to make durable
            except OSError as exc:
                log.error("could not fsync %s: %s", path, exc)
        for directory in sorted(directories):
            try:
                fsync_directory(directory)
            except OSError as exc:
                log.error("could not fsync directory %s: %s", directory, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()


class FieldStore:
    def __init__(self, root: Path, thing: str, s3_prefix: str = "field-data", sync_interval_s: float = 0.0) -> None:
        self.root = root.absolute()  # responses and sidecars carry absolute paths
        self.thing = thing
        self.s3_prefix = s3_prefix
        self._commit = GroupCommit(sync_interval_s) if sync_interval_s > 0 else None

    def plan(self, image_id: str, when: datetime) -> KeptImage:
        """Where an image will be kept, without writing anything."""
        directory = self.root / date_path(when)
        return KeptImage(
            image_id,
            directory / (image_id + IMAGE_SUFFIX),
            directory / (image_id + SIDECAR_SUFFIX),
            s3_image_key(self.s3_prefix, self.thing, when, image_id),
        )

    def keep(self, image_id: str, when: datetime, jpeg: bytes, sidecar: dict[str, Any]) -> KeptImage:
        """Write the image, then its sidecar; raises OSError (disk full, read-only) with nothing half-written."""
        kept = self.plan(image_id, when)
        kept.image_path.parent.mkdir(parents=True, exist_ok=True)
        inline = self._commit is None
        atomic_write(kept.image_path, jpeg, durable=inline, sync_directory=False)
        document = {**sidecar, "image_id": image_id, "s3_key": kept.s3_key, "thing": self.thing}
        try:
            atomic_write(kept.sidecar_path, json.dumps(document, separators=(",", ":")).encode(), durable=inline)
        except BaseException:
            kept.image_path.unlink(missing_ok=True)  # no orphan image when the pair cannot be completed
            raise
        if self._commit is not None:
            self._commit.add(kept.image_path, kept.sidecar_path)
        return kept

    def close(self) -> None:
        """Make everything kept so far durable; call on shutdown."""
        if self._commit is not None:
            self._commit.close()
