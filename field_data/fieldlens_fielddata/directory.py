"""The field-data directory: the one code that knows its layout, its names and keys, and its sidecars.

Locally::

    <root>/<yyyy>/<mm>/<dd>/<image_id>.jpg        the image
    <root>/<yyyy>/<mm>/<dd>/<image_id>.json       its sidecar: present = the pair is complete
    <root>/<yyyy>/<mm>/<dd>/<image_id>.uploaded   the upload receipt: present = in the bucket
    <root>/quarantine/                            pairs the uploader could not read

In the bucket (README, "How they reach S3")::

    <prefix>/<thing>/<yyyy>/<mm>/<dd>/<image_id>.jpg   and   <image_id>.json

Keys derive from the image id, the thing and the prefix alone, so an upload repeated after a
crash writes the same keys again: never a second copy.

An image id is unique by chance only, and not against a device that reuses another's (each can
write any key under its own prefix): where the images of several devices meet (a bucket's
mirror, ``<root>/<thing>/<yyyy>/...``), an image is :func:`image_key` ``<thing>/<image_id>``,
the thing being the mirror's directory (the prefix the device's role is scoped to), never the
``thing`` its sidecar claims.

The store writes new pairs, the uploader ships them, the labelling step and the dataset
builder read and label them: each through this class. Listing walks one day directory at a
time, oldest first, so memory does not grow with the number of images.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from fieldlens_core.atomic import TEMP_SUFFIX, atomic_write
from fieldlens_core.messages import utc_timestamp
from fieldlens_fielddata.sidecar import LabelSource, Sidecar, SidecarError, StaleSidecarError

DEFAULT_S3_PREFIX = "field-data"
IMAGE_SUFFIX = ".jpg"
SIDECAR_SUFFIX = ".json"
RECEIPT_SUFFIX = ".uploaded"

log = logging.getLogger(__name__)


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


def image_key(thing: str | None, image_id: str) -> str:
    """An image's identity on the labelling page, in labels files, label objects and datasets:
    ``<thing>/<image_id>`` below a bucket's mirror, the bare id in one device's own directory
    (which has no thing level, and no other device's images)."""
    return f"{thing}/{image_id}" if thing else image_id


def date_path(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y/%m/%d}"


def s3_key(prefix: str, thing: str, when: datetime, image_id: str, suffix: str = IMAGE_SUFFIX) -> str:
    parts = [p for p in (prefix.strip("/"), thing, date_path(when), image_id + suffix) if p]
    return "/".join(parts)


QUARANTINE_DIR = "quarantine"
LOCK_FILE = ".sidecars.lock"


class PairState(StrEnum):
    QUEUED = "queued"
    UPLOADED = "uploaded"


@dataclass(frozen=True)
class Pair:
    """One image and its sidecar (and, once shipped, its receipt)."""

    image_id: str
    when: datetime
    image_path: Path
    thing: str | None = None
    """The device whose directory of a bucket's mirror it is in (None in a device's own directory)."""

    @property
    def key(self) -> str:
        """Its identity where images of several devices meet (:func:`image_key`)."""
        return image_key(self.thing, self.image_id)

    @property
    def sidecar_path(self) -> Path:
        return self.image_path.with_suffix(SIDECAR_SUFFIX)

    @property
    def receipt_path(self) -> Path:
        return self.image_path.with_suffix(RECEIPT_SUFFIX)

    @property
    def state(self) -> PairState:
        return PairState.UPLOADED if self.receipt_path.exists() else PairState.QUEUED

    def size(self) -> int:
        """Bytes of image and sidecar; 0 for a file removed meanwhile."""
        total = 0
        for path in (self.image_path, self.sidecar_path):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total


@dataclass(frozen=True)
class QueueStats:
    queued: int
    queued_bytes: int
    oldest: datetime | None


def _sorted_subdirs(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir() and e.name != QUARANTINE_DIR)
    except FileNotFoundError:
        return []


def device_directories(root: Path) -> list[FieldDataDir]:
    """``root`` as one device's directory (``<yyyy>/...`` below it), or as a mirror of the bucket
    (``<thing>/<yyyy>/...`` below it, what ``dataset build --from s3://`` downloads): one per thing,
    which its pairs carry (:attr:`Pair.key`): the thing is where the device's role could write."""
    below = _sorted_subdirs(root)
    if not below or any(d.name.isdigit() for d in below):
        return [FieldDataDir(root)]
    return [FieldDataDir(d, thing=d.name) for d in below]


_reported: set[Path] = set()
_reported_lock = threading.Lock()


def _report_once(pair: Pair, why: str) -> None:
    with _reported_lock:
        if pair.sidecar_path in _reported:
            return
        _reported.add(pair.sidecar_path)
    log.warning("skipping %s: %s", pair.key, why)


class FieldDataDir:
    def __init__(self, root: Path, thing: str | None = None) -> None:
        """``thing``: the device this directory of a bucket's mirror holds (:func:`device_directories`)."""
        self.root = root.absolute()  # responses and sidecars carry absolute paths
        self.thing = thing

    # -- where things are --------------------------------------------------------------------
    def pair_for(self, image_id: str, when: datetime) -> Pair:
        """Where the pair of a new image goes (nothing is checked or written)."""
        return Pair(image_id, when, self.root / date_path(when) / (image_id + IMAGE_SUFFIX), self.thing)

    def find(self, image_id: str) -> Pair | None:
        """The complete pair of an image id, or None: also for anything that is not one of our ids,
        so a name from a request (``../x``, an absolute path) never reaches the filesystem."""
        when = image_time(image_id)
        if when is None or not is_image_id(image_id):
            return None
        pair = self.pair_for(image_id, when)
        return pair if pair.sidecar_path.exists() else None

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE_DIR

    # -- listing ------------------------------------------------------------------------------
    def day_directories(self) -> Iterator[Path]:
        """<root>/<yyyy>/<mm>/<dd>, oldest first."""
        for year in _sorted_subdirs(self.root):
            for month in _sorted_subdirs(year):
                yield from _sorted_subdirs(month)

    def _listing(self) -> Iterator[tuple[Path, set[str]]]:
        """(day directory, the names in it), oldest day first: one directory read per day."""
        for day in self.day_directories():
            try:
                with os.scandir(day) as entries:
                    names = {e.name for e in entries}
            except FileNotFoundError:
                continue
            yield day, names

    def _pairs_in(self, day: Path, names: set[str], include_uploaded: bool) -> Iterator[Pair]:
        """The pairs filed where their id says (a copy filed under another date, which a device can
        upload, would be a second image of the same key: find() and label() never reach it)."""
        for name in sorted(names):
            if not name.endswith(SIDECAR_SUFFIX):
                continue
            image_id = name[: -len(SIDECAR_SUFFIX)]
            when = image_time(image_id)
            if when is None or (not include_uploaded and image_id + RECEIPT_SUFFIX in names):
                continue
            pair = Pair(image_id, when, day / (image_id + IMAGE_SUFFIX), self.thing)
            if day != self.root / date_path(when):
                _report_once(pair, f"filed under {day.relative_to(self.root)}, not under its date")
                continue
            yield pair

    def pairs(self, include_uploaded: bool = True) -> Iterator[Pair]:
        """Every complete pair (its sidecar written), oldest first, lazily; not the quarantine."""
        for day, names in self._listing():
            yield from self._pairs_in(day, names, include_uploaded)

    def pending(self) -> Iterator[Pair]:
        """The upload queue: every complete pair without a receipt, oldest first."""
        return self.pairs(include_uploaded=False)

    def take(self, limit: int) -> list[Pair]:
        chunk = []
        for pair in self.pending():
            chunk.append(pair)
            if len(chunk) >= limit:
                break
        return chunk

    def queue_stats(self) -> QueueStats:
        count, size, oldest = 0, 0, None
        for pair in self.pending():
            count, size, oldest = count + 1, size + pair.size(), oldest or pair.when
        return QueueStats(count, size, oldest)

    def quarantined(self) -> list[Path]:
        try:
            return sorted(p for p in self.quarantine_dir.iterdir() if p.is_file())
        except FileNotFoundError:
            return []

    def recover(self) -> Iterator[Pair]:
        """What a crash left, cleaned up, then every complete pair: the store's start-up scan.

        Removes temporaries of interrupted writes and images whose sidecar was never written;
        never touches a file whose name is not one of ours.
        """
        for day, names in self._listing():
            for name in sorted(names):
                temporary = name.startswith(".") and name.endswith(TEMP_SUFFIX) and image_time(name[1:]) is not None
                stem = name.removesuffix(IMAGE_SUFFIX)
                orphan = stem != name and image_time(stem) is not None and stem + SIDECAR_SUFFIX not in names
                if temporary or orphan:  # an interrupted write, or a crash between image and sidecar
                    (day / name).unlink(missing_ok=True)
                    names.discard(name)
            for pair in self._pairs_in(day, names, include_uploaded=True):
                if pair.image_path.name in names:  # half-deleted pairs are the uploader's to quarantine or skip
                    yield pair

    # -- sidecars -----------------------------------------------------------------------------
    def read(self, pair: Pair) -> Sidecar:
        """The pair's sidecar; SidecarError when it is not one or cannot be read (a directory where the
        sidecar should be, no permission, an I/O error), FileNotFoundError when it is gone.

        Every reader of the directory handles SidecarError by skipping the pair (the uploader
        quarantines it): one unreadable sidecar must never stop a listing, a dataset or the page.
        """
        try:
            body = pair.sidecar_path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SidecarError(f"cannot read sidecar {pair.sidecar_path}: {exc.strerror or exc}") from None
        if image_time(pair.image_id) is None:
            raise SidecarError(f"{pair.image_id!r} is not a field image id")
        sidecar = Sidecar.decode(body, str(pair.sidecar_path))
        if sidecar.image_id != pair.image_id:
            raise SidecarError(f"sidecar {pair.sidecar_path} names another image ({sidecar.image_id!r})")
        return sidecar

    def read_all(self) -> Iterator[tuple[Pair, Sidecar | SidecarError]]:
        """Every pair with its sidecar, or the reason it cannot be read (the uploader quarantines those).

        Each unreadable sidecar is logged once per process, whichever reader meets it first, so a
        person learns of it without a line per listing."""
        for pair in self.pairs():
            try:
                yield pair, self.read(pair)
            except SidecarError as exc:
                _report_once(pair, f"{exc} (the uploader quarantines it)")
                yield pair, exc
            except FileNotFoundError:
                continue  # uploaded and deleted, or evicted, since the listing

    def write_new(self, pair: Pair, jpeg: bytes, sidecar: bytes, durable: bool) -> None:
        """Write the image, then its sidecar (``Sidecar.encode()``, which the caller has already
        sized), each atomically: no torn file and no orphan image."""
        pair.image_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(pair.image_path, jpeg, durable=durable, sync_directory=False)
        try:
            atomic_write(pair.sidecar_path, sidecar, durable=durable)
        except BaseException:
            pair.image_path.unlink(missing_ok=True)
            raise

    def label(
        self,
        image_id: str,
        label: str | None,
        source: LabelSource,
        labeller: str | None = None,
        expected_revision: int | None = None,
        excluded: bool = False,
    ) -> Sidecar:
        """Set (or, with None, clear) an image's label, or mark it ``excluded`` (unusable: never
        trained on); the rest of the sidecar is kept as written.

        Atomic (a crash leaves the old or the new sidecar) and serialised across processes by a
        lock file, so two writers never lose each other's label silently: with
        ``expected_revision`` a write against a sidecar someone replaced since is refused with
        StaleSidecarError. FileNotFoundError when the image is not (or no longer) here.
        """
        pair = self.find(image_id)
        if pair is None:
            raise FileNotFoundError(f"no field image {image_id!r} in {self.root}")
        with self._lock():
            current = self.read(pair)
            if expected_revision is not None and current.revision != expected_revision:
                raise StaleSidecarError(
                    f"{image_id} was changed since you loaded it (revision {current.revision}, you had "
                    f"{expected_revision}; its label is now {current.label!r}): reload and label it again"
                )
            given = label is not None or excluded
            labelled = current.model_copy(
                update={
                    "label": None if excluded else label,
                    "excluded": excluded,
                    "label_source": source if given else None,
                    "labelled_at": utc_timestamp() if given else None,
                    "labeller": labeller if given else None,
                    "revision": current.revision + 1,
                }
            )
            atomic_write(pair.sidecar_path, labelled.encode())
        return labelled

    # -- after upload -------------------------------------------------------------------------
    def mark_uploaded(self, pair: Pair, receipt: bytes) -> None:
        atomic_write(pair.receipt_path, receipt, durable=False)

    def remove(self, pair: Pair) -> None:
        for path in (pair.sidecar_path, pair.image_path, pair.receipt_path):  # sidecar first: leaves the queue
            path.unlink(missing_ok=True)

    def quarantine(self, pair: Pair) -> Path:
        """Move the pair aside, out of the queue and the listings; returns where it went."""
        self.quarantine_dir.mkdir(exist_ok=True)
        for path in (pair.sidecar_path, pair.image_path):
            if path.exists():
                os.replace(path, self.quarantine_dir / path.name)
        return self.quarantine_dir

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
