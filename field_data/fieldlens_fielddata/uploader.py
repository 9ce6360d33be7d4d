"""Ships queued field images to the bucket: at least once per attempt, exactly one object per key.

Per pair: the image, then the sidecar (so a sidecar in the bucket means its image is there
too), then the local receipt (or, by configuration, the local pair is deleted). The key is
the one the sidecar names: the store computed it once when it kept the pair, and the
classify response reported it. A pair re-sent after a crash between upload and receipt
overwrites the same two keys with the same bytes: never a duplicate object.

A pair whose sidecar cannot be read or names a key that is not this device's and this
pair's, whose image is missing, or that S3 refuses for itself alone (a 4xx such as bad
metadata or a bad digest) is moved to ``<root>/quarantine/`` with a log line that says why;
it is not retried and never blocks the queue. A transient failure (throttling, 5xx, no
network), or one that says the destination itself is wrong (access denied, no such bucket,
expired credentials), ends the drain: everything not uploaded stays queued for the next
attempt, after a backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fieldlens_core.messages import utc_timestamp
from fieldlens_fielddata.destination import Destination
from fieldlens_fielddata.directory import IMAGE_SUFFIX, SIDECAR_SUFFIX, FieldDataDir, Pair, date_path
from fieldlens_fielddata.retry import is_pair_specific, is_transient
from fieldlens_fielddata.sidecar import Sidecar, SidecarError

log = logging.getLogger(__name__)


class Outcome(Enum):
    UPLOADED = "uploaded"
    QUARANTINED = "quarantined"
    FAILED = "failed"


@dataclass
class DrainReport:
    uploaded: int = 0
    quarantined: int = 0
    failed: int = 0
    bytes: int = 0
    error: str | None = None  # a drain: the failure that ended it early; the totals: the latest failure

    @property
    def outage(self) -> bool:
        return self.error is not None

    def add(self, done: DrainReport) -> None:
        self.uploaded += done.uploaded
        self.quarantined += done.quarantined
        self.failed += done.failed
        self.bytes += done.bytes
        self.error = done.error or self.error


def _metadata(sidecar: Sidecar, sha256_hex: str) -> dict[str, str]:
    """S3 user metadata is ASCII: labels and ids are percent-encoded."""
    values = {
        "thing": sidecar.thing,
        "prediction": sidecar.prediction,
        "confidence": sidecar.confidence,
        "model-version": sidecar.model.version if sidecar.model else None,
        "request-id": sidecar.request_id,
        "sha256": sha256_hex,
    }
    return {k: quote(str(v), safe="") for k, v in values.items() if v is not None}


def checked_key(sidecar: Sidecar, pair: Pair) -> str:
    """The key the sidecar names (the one the device's response reported), if it is this pair's:
    ``<prefix>/<thing>/<yyyy>/<mm>/<dd>/<image_id>.jpg`` with the sidecar's thing. SidecarError
    otherwise. Which things' keys a device may write is the bucket policy's to say (the
    CloudFormation template scopes it to the thing's own name)."""
    tail = f"/{sidecar.thing}/{date_path(pair.when)}/{pair.image_id}{IMAGE_SUFFIX}"
    key = sidecar.s3_key
    if not ("/" + key).endswith(tail) or key.startswith("/") or ".." in key.split("/"):
        raise SidecarError(f"its s3_key {key!r} is not <prefix>{tail}")
    return key


class Uploader:
    def __init__(
        self,
        root: Path,
        destination: Destination,
        thing: str,
        delete_after_upload: bool = False,
        concurrency: int = 8,
        chunk: int = 64,
    ) -> None:
        self.directory = FieldDataDir(root)
        self.root = self.directory.root
        self.destination = destination
        self.thing = thing
        self.delete_after_upload = delete_after_upload
        self.chunk = max(chunk, concurrency)
        self.totals = DrainReport()  # since start, for the status topic
        self._totals_lock = threading.Lock()
        self._receipt_trouble = False  # receipts could not be written lately (see _settle)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def drain(self, progress: Callable[[DrainReport], None] | None = None) -> DrainReport:
        """Upload everything queued, oldest first; stop early at the first transient failure."""
        report = DrainReport()
        while True:
            chunk = self.directory.take(self.chunk)
            if not chunk:
                return report
            done = DrainReport()
            for pair, (outcome, size, error) in zip(chunk, self._pool.map(self._ship, chunk), strict=True):
                if outcome is Outcome.UPLOADED:
                    done.uploaded += 1
                    done.bytes += size
                elif outcome is Outcome.QUARANTINED:
                    done.quarantined += 1
                else:
                    done.failed += 1
                    done.error = done.error or f"{pair.image_id}: {error}"
            report.add(done)
            with self._totals_lock:
                self.totals.add(done)
            if progress is not None:
                progress(report)
            if report.outage:
                return report

    def _ship(self, pair: Pair) -> tuple[Outcome, int, str | None]:
        try:
            sidecar_bytes = pair.sidecar_path.read_bytes()
            sidecar = Sidecar.decode(sidecar_bytes, str(pair.sidecar_path))
            image_key = checked_key(sidecar, pair)
            image = pair.image_path.read_bytes()
        except FileNotFoundError as exc:
            if not pair.sidecar_path.exists():
                return Outcome.UPLOADED, 0, None  # evicted or deleted meanwhile: nothing to ship
            self._quarantine(pair, f"its image is missing ({exc.filename})")
            return Outcome.QUARANTINED, 0, None
        except (SidecarError, OSError) as exc:
            self._quarantine(pair, str(exc))
            return Outcome.QUARANTINED, 0, None
        sidecar_key = image_key.removesuffix(IMAGE_SUFFIX) + SIDECAR_SUFFIX
        metadata = _metadata(sidecar, hashlib.sha256(image).hexdigest())
        try:
            self.destination.put(image_key, image, "image/jpeg", metadata)
            self.destination.put(sidecar_key, sidecar_bytes, "application/json", metadata)
        except Exception as exc:
            if is_pair_specific(exc):  # S3 refuses this pair alone: set it aside, go on with the rest
                self._quarantine(pair, f"S3 refused it: {type(exc).__name__}: {exc}")
                return Outcome.QUARANTINED, 0, None
            kind = "transient" if is_transient(exc) else "permanent"
            log.debug("upload of %s failed (%s): %s", pair.image_id, kind, exc)
            return Outcome.FAILED, 0, f"{type(exc).__name__}: {exc}"
        self._settle(pair, image_key)
        return Outcome.UPLOADED, len(image) + len(sidecar_bytes), None

    def _settle(self, pair: Pair, image_key: str) -> None:
        """Record that the pair is in the bucket: its receipt, or (delete_after_upload) its removal.

        A receipt that cannot be written (a full disk, above all) must not leave the pair queued:
        it would be shipped again on every drain, and the store, which evicts uploaded pairs first,
        could never evict it, so the disk would stay full. The pair is in the bucket, so it is
        removed locally instead, which is what eviction would do first; nothing is lost. Logged
        once per run of full-disk trouble, not once per pair.
        """
        if self.delete_after_upload:
            self.directory.remove(pair)
            return
        receipt = {
            "destination": self.destination.description,
            "key": image_key,
            "uploaded_at": utc_timestamp(),
        }
        try:
            self.directory.mark_uploaded(pair, json.dumps(receipt).encode())
        except OSError as exc:
            self.directory.remove(pair)  # unlinking needs no room
            with self._totals_lock:
                first, self._receipt_trouble = not self._receipt_trouble, True
            if first:
                log.error(
                    "cannot write upload receipts (%s): removing uploaded pairs locally instead, starting with %s; "
                    "they are in %s",
                    exc.strerror or exc,
                    pair.image_id,
                    self.destination.description,
                )
            return
        if self._receipt_trouble:
            with self._totals_lock:
                self._receipt_trouble = False
            log.info("upload receipts are written again")

    def _quarantine(self, pair: Pair, reason: str) -> None:
        target = self.directory.quarantine(pair)
        log.error("quarantining %s: %s; moved to %s", pair.image_id, reason, target)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """What the status topic carries: queue length and age, totals, destination."""
        stats = self.directory.queue_stats()
        moment = now if now is not None else time.time()
        with self._totals_lock:
            return {
                "thing": self.thing,
                "destination": self.destination.description,
                "queued": stats.queued,
                "queued_bytes": stats.queued_bytes,
                "oldest_age_s": round(moment - stats.oldest.timestamp(), 1) if stats.oldest else None,
                "uploaded": self.totals.uploaded,
                "uploaded_bytes": self.totals.bytes,
                "quarantined": self.totals.quarantined,
                "failed": self.totals.failed,
                "last_error": self.totals.error,
                "timestamp": utc_timestamp(datetime.fromtimestamp(moment, UTC)),
            }
