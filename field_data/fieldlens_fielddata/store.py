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

Keeping is two steps, :meth:`FieldStore.reserve` (room under the cap, the pair's names and S3
key fixed) and :meth:`FieldStore.write`, so that a classify response can name its image and go
out before the image is written (a millisecond or two off every answer; the classifier reports
a write that then fails on its own topic). :meth:`FieldStore.keep` does both at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fieldlens_core.atomic import fsync_directory, fsync_path
from fieldlens_core.errors import FieldlensError
from fieldlens_fielddata.directory import DEFAULT_S3_PREFIX, FieldDataDir, Pair, s3_key
from fieldlens_fielddata.sidecar import Observation, Sidecar, SidecarError

log = logging.getLogger(__name__)

EVICT_TO = 0.9  # evict down to this fraction of a cap
# A full store that found nothing to evict says so again without looking for this long: looking
# stats every kept pair (20,000 at the default cap), which cost 10 ms a frame in continuous mode.
FULL_RECHECK_S = 5.0


class StoreFullError(FieldlensError, OSError):
    """The disk cap leaves no room for this image: everything kept is at least as useful."""


@dataclass(frozen=True)
class KeptImage:
    image_id: str
    image_path: Path
    sidecar_path: Path
    s3_key: str


@dataclass(frozen=True)
class Reservation:
    """Room under the cap and the pair's names, held for one image whose bytes are not written yet."""

    kept: KeptImage
    pair: Pair
    jpeg: bytes
    sidecar: bytes


@dataclass
class _Entry:
    pair: Pair
    size: int
    score: float
    saved: bool
    written: bool = True  # False while reserved: not on disk yet, so neither evicted nor forgotten

    def uploaded(self) -> bool:
        return self.pair.receipt_path.exists()


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


class FieldStore:
    def __init__(
        self,
        root: Path,
        thing: str,
        s3_prefix: str = DEFAULT_S3_PREFIX,
        sync_interval_s: float = 0.0,
        max_bytes: int | None = None,
        max_images: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = FieldDataDir(root)
        self.root = self.directory.root
        self.thing = thing
        self.s3_prefix = s3_prefix
        self.max_bytes = max_bytes
        self.max_images = max_images
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0
        self._clock = clock
        self._full_until = {False: float("-inf"), True: float("-inf")}  # by `saved`: see FULL_RECHECK_S
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
            return sorted(e.pair.when for e in self._entries.values() if e.saved == saved)

    # -- writing ---------------------------------------------------------------------------
    def keep(
        self,
        image_id: str,
        when: datetime,
        jpeg: bytes,
        observation: Observation,
        score: float = 0.0,
        saved: bool = False,
    ) -> KeptImage:
        """Write the image, then its sidecar, within the cap (``saved``: a request asked for it).

        Raises StoreFullError when the cap leaves no room, OSError (disk full, read-only) with
        nothing half-written.
        """
        return self.write(self.reserve(image_id, when, jpeg, observation, score, saved))

    def reserve(
        self,
        image_id: str,
        when: datetime,
        jpeg: bytes,
        observation: Observation,
        score: float = 0.0,
        saved: bool = False,
    ) -> Reservation:
        """Make room for a pair and fix its names, writing nothing; StoreFullError when the cap
        leaves no room. The sidecar names the pair's S3 key, computed here once: the response
        reports it and the uploader ships to it."""
        pair = self.directory.pair_for(image_id, when)
        key = s3_key(self.s3_prefix, self.thing, when, image_id)
        sidecar = Sidecar(
            **observation.model_dump(), image_id=image_id, thing=self.thing, s3_key=key, score=score, saved=saved
        )
        encoded = sidecar.encode()
        size = len(jpeg) + len(encoded)
        with self._lock:
            self._make_room(size, saved)
            self._entries[image_id] = _Entry(pair, size, score, saved, written=False)
            self._bytes += size
        return Reservation(KeptImage(image_id, pair.image_path, pair.sidecar_path, key), pair, jpeg, encoded)

    def write(self, reservation: Reservation) -> KeptImage:
        """Write a reserved pair; if that fails (OSError: disk full, read-only), nothing is
        half-written and the room is given back."""
        pair = reservation.pair
        try:
            self.directory.write_new(pair, reservation.jpeg, reservation.sidecar, durable=self._commit is None)
        except BaseException:  # whatever failed, the reservation must not hold room for ever
            with self._lock:
                entry = self._entries.pop(pair.image_id, None)
                if entry is not None:
                    self._bytes -= entry.size
            raise
        with self._lock:
            entry = self._entries.get(pair.image_id)
            if entry is not None:
                entry.written = True
        if self._commit is not None:
            self._commit.add(pair.image_path, pair.sidecar_path)
        return reservation.kept

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
        if self._clock() < self._full_until[saved]:
            raise StoreFullError(self._full_message())
        self._refresh()  # the uploader may have uploaded or deleted pairs since we last looked
        if not self._over(size, 1):
            return
        written = [e for e in self._entries.values() if e.written]
        uploaded = sorted((e for e in written if e.uploaded()), key=lambda e: e.pair.when)
        pending = sorted(  # only a saved newcomer, and only sampled images (see the module docstring)
            (e for e in written if saved and not e.saved and not e.uploaded()),
            key=lambda e: (e.score, e.pair.when),
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
            self._full_until[saved] = self._clock() + FULL_RECHECK_S
            raise StoreFullError(self._full_message())

    def _full_message(self) -> str:
        return (
            f"field-data cap reached ({len(self._entries)} images, {self._bytes} bytes) and no image that is not "
            f"uploaded yet may make way for this one (looked again at most every {FULL_RECHECK_S:.0f} s)"
        )

    def _evict(self, entry: _Entry, state: str) -> None:
        self.directory.remove(entry.pair)
        self._entries.pop(entry.pair.image_id, None)
        self._bytes -= entry.size
        log.info("evicted %s (%s, score %.3f) to stay under the cap", entry.pair.image_id, state, entry.score)

    def _refresh(self) -> None:
        for entry in list(self._entries.values()):
            if entry.written and not entry.pair.sidecar_path.exists():  # deleted after upload, or by a person
                self._entries.pop(entry.pair.image_id)
                self._bytes -= entry.size

    def _scan(self) -> None:
        """Rebuild the index from disk (after the directory cleans up what a crash left)."""
        for pair in self.directory.recover():
            try:
                sidecar = self.directory.read(pair)
                score, saved = sidecar.score, sidecar.saved
            except (SidecarError, OSError):
                score, saved = 0.0, False  # the uploader quarantines it; until then it counts
            self._entries[pair.image_id] = _Entry(pair, pair.size(), score, saved)
            self._bytes += self._entries[pair.image_id].size
        if self._entries:
            log.info("field-data store at %s: %d images, %d bytes", self.root, len(self._entries), self._bytes)
