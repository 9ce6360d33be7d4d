"""The local field-data store: image + sidecar pairs, written atomically, under a disk cap.

Writing: the image first and the sidecar last, each to a temporary name and renamed, so a
crash (kill -9 included) never leaves a torn file, and a sidecar's presence means its pair
is complete. An image without a sidecar is what a crash between the two renames leaves; the
next start removes it.

Durability against power loss is a group commit: files are renamed into place at once and
a background thread fsyncs what was written, and the directories, every ``sync_interval_s``.
One fsync per image in the request path costs a millisecond on an SSD and tens on an SD
card; the price is that a power cut can lose the images of the last interval (ext4's own
commit interval is 5 s). ``sync_interval_s=0`` fsyncs inline instead.

The disk cap (bytes and images) is never exceeded. When a new image does not fit, the store
evicts images already uploaded (oldest first, down to 90% of the cap so that this runs rarely).
An image not yet uploaded is never evicted for a newcomer of its own kind (sampled or saved):
sampled images cannot churn each other out, and a flood of ``save: true`` requests cannot
evict what others saved. Only a saved newcomer may evict not-yet-uploaded sampled images,
least useful first, and saves obey their own rate caps (the sampling policy's ``saveCaps``),
so a flood of them is bounded. If that does not make room, the newcomer is refused with
StoreFullError. The index is rebuilt from the directory at start-up, so caps and eviction
survive restarts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fieldlens_core.atomic import TEMP_SUFFIX, atomic_write, fsync_directory, fsync_path
from fieldlens_core.errors import FieldlensError
from fieldlens_fielddata.layout import (
    IMAGE_SUFFIX,
    QUARANTINE_DIR,
    RECEIPT_SUFFIX,
    SIDECAR_SUFFIX,
    image_time,
    pair_paths,
    s3_key,
)

log = logging.getLogger(__name__)

EVICT_TO = 0.9  # evict down to this fraction of a cap


class StoreFullError(FieldlensError, OSError):
    """The disk cap leaves no room for this image: everything kept is at least as useful."""


@dataclass(frozen=True)
class KeptImage:
    image_id: str
    image_path: Path
    sidecar_path: Path
    s3_key: str


@dataclass
class _Entry:
    image_id: str
    when: datetime
    size: int
    score: float
    saved: bool
    image_path: Path
    sidecar_path: Path
    receipt_path: Path

    def uploaded(self) -> bool:
        return self.receipt_path.exists()


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
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("could not fsync directory %s: %s", directory, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()


def read_sidecar(path: Path) -> dict[str, Any]:
    """A sidecar's JSON; ValueError (with the reason) when it is not a JSON object."""
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"sidecar {path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"sidecar {path} is not a JSON object")
    return document


class FieldStore:
    def __init__(
        self,
        root: Path,
        thing: str,
        s3_prefix: str = "field-data",
        sync_interval_s: float = 0.0,
        max_bytes: int | None = None,
        max_images: int | None = None,
    ) -> None:
        self.root = root.absolute()  # responses and sidecars carry absolute paths
        self.thing = thing
        self.s3_prefix = s3_prefix
        self.max_bytes = max_bytes
        self.max_images = max_images
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0
        self._commit = GroupCommit(sync_interval_s) if sync_interval_s > 0 else None
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan()

    # -- reading ---------------------------------------------------------------------------
    @property
    def image_count(self) -> int:
        return len(self._entries)

    @property
    def byte_count(self) -> int:
        return self._bytes

    def kept_times(self, saved: bool = False) -> list[datetime]:
        """When each kept image (sampled, or saved on request) was captured: seeds the caps after a restart."""
        with self._lock:
            return sorted(e.when for e in self._entries.values() if e.saved == saved)

    def plan(self, image_id: str, when: datetime) -> KeptImage:
        """Where an image will be kept, without writing anything."""
        image, sidecar, _ = pair_paths(self.root, image_id, when)
        return KeptImage(image_id, image, sidecar, s3_key(self.s3_prefix, self.thing, when, image_id))

    # -- writing ---------------------------------------------------------------------------
    def keep(
        self,
        image_id: str,
        when: datetime,
        jpeg: bytes,
        sidecar: dict[str, Any],
        score: float = 0.0,
        saved: bool = False,
    ) -> KeptImage:
        """Write the image, then its sidecar, within the cap (``saved``: a request asked for it).

        Raises StoreFullError when the cap leaves no room, OSError (disk full, read-only) with
        nothing half-written.
        """
        kept = self.plan(image_id, when)
        document = {
            **sidecar,
            "image_id": image_id,
            "s3_key": kept.s3_key,
            "thing": self.thing,
            "score": score,
            "saved": saved,
        }
        encoded = json.dumps(document, separators=(",", ":")).encode()
        size = len(jpeg) + len(encoded)
        with self._lock:
            self._make_room(size, saved)
            kept.image_path.parent.mkdir(parents=True, exist_ok=True)
            inline = self._commit is None
            atomic_write(kept.image_path, jpeg, durable=inline, sync_directory=False)
            try:
                atomic_write(kept.sidecar_path, encoded, durable=inline)
            except BaseException:
                kept.image_path.unlink(missing_ok=True)  # no orphan image when the pair cannot be completed
                raise
            receipt = kept.image_path.with_suffix(RECEIPT_SUFFIX)
            self._entries[image_id] = _Entry(
                image_id, when, size, score, saved, kept.image_path, kept.sidecar_path, receipt
            )
            self._bytes += size
        if self._commit is not None:
            self._commit.add(kept.image_path, kept.sidecar_path)
        return kept

    def close(self) -> None:
        """Make everything kept so far durable; call on shutdown."""
        if self._commit is not None:
            self._commit.close()

    # -- the cap ---------------------------------------------------------------------------
    def _over(self, extra_bytes: int, extra_images: int, fraction: float = 1.0) -> bool:
        too_many = self.max_images is not None and len(self._entries) + extra_images > self.max_images * fraction
        too_big = self.max_bytes is not None and self._bytes + extra_bytes > self.max_bytes * fraction
        return too_many or too_big

    def _make_room(self, size: int, saved: bool) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise StoreFullError(f"an image of {size} bytes is larger than the whole cap ({self.max_bytes} bytes)")
        if not self._over(size, 1):
            return
        self._refresh()  # the uploader may have uploaded or deleted pairs since we last looked
        if not self._over(size, 1):
            return
        uploaded = sorted((e for e in self._entries.values() if e.uploaded()), key=lambda e: e.when)
        pending = sorted(  # only a saved newcomer, and only sampled images (see the module docstring)
            (e for e in self._entries.values() if saved and not e.saved and not e.receipt_path.exists()),
            key=lambda e: (e.score, e.when),
        )
        for entry in uploaded:  # harmless to lose locally: go down to EVICT_TO so this runs rarely
            if not self._over(size, 1, EVICT_TO):
                break
            self._evict(entry, "uploaded")
        for entry in pending:  # costs data: only as much as the newcomer needs
            if not self._over(size, 1):
                break
            self._evict(entry, "not uploaded")
        if self._over(size, 1):
            raise StoreFullError(
                f"field-data cap reached ({len(self._entries)} images, {self._bytes} bytes) and no image that "
                "is not uploaded yet may make way for this one"
            )

    def _evict(self, entry: _Entry, state: str) -> None:
        for path in (entry.sidecar_path, entry.image_path, entry.receipt_path):  # sidecar first: leaves the queue
            path.unlink(missing_ok=True)
        self._entries.pop(entry.image_id, None)
        self._bytes -= entry.size
        log.info("evicted %s (%s, score %.3f) to stay under the cap", entry.image_id, state, entry.score)

    def _refresh(self) -> None:
        for entry in list(self._entries.values()):
            if not entry.sidecar_path.exists():  # deleted after upload, or by a person
                self._entries.pop(entry.image_id)
                self._bytes -= entry.size

    def _scan(self) -> None:
        """Rebuild the index from disk; remove temporaries and orphan images a crash left."""
        for directory, _, names in os.walk(self.root):
            folder = Path(directory)
            if QUARANTINE_DIR in folder.relative_to(self.root).parts:
                continue
            present = set(names)
            for name in names:
                path = folder / name
                if name.startswith(".") and name.endswith(TEMP_SUFFIX) and image_time(name[1:]) is not None:
                    path.unlink(missing_ok=True)  # a write a crash interrupted
                    continue
                stem = name.rsplit(".", 1)[0]
                if image_time(stem) is None:
                    continue  # not ours: never touch files the store did not write
                if name.endswith(IMAGE_SUFFIX) and stem + SIDECAR_SUFFIX not in present:
                    log.warning("removing %s: its sidecar was never written (a crash between the two)", path)
                    path.unlink(missing_ok=True)
                    continue
                if not name.endswith(SIDECAR_SUFFIX):
                    continue
                image_id = name[: -len(SIDECAR_SUFFIX)]
                when = image_time(image_id)
                image = folder / (image_id + IMAGE_SUFFIX)
                if when is None or not image.exists():
                    continue  # not ours, or half-deleted: the uploader quarantines or skips it
                try:
                    document = read_sidecar(path)
                    score = float(document.get("score", 0.0))
                    saved = document.get("saved") is True or document.get("reason") == "request: save"
                except (ValueError, OSError, TypeError):
                    score, saved = 0.0, False
                size = image.stat().st_size + path.stat().st_size
                receipt = folder / (image_id + RECEIPT_SUFFIX)
                self._entries[image_id] = _Entry(image_id, when, size, score, saved, image, path, receipt)
                self._bytes += size
        if self._entries:
            log.info("field-data store at %s: %d images, %d bytes", self.root, len(self._entries), self._bytes)
