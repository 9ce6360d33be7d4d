"""Which classified frames are kept, and keeping them: one keeper for the request path and continuous mode.

Both paths put every frame past the same sampling policy, so that its caps count every image the
device keeps, whichever path took it; and both file into the same store, whose "not kept" lines
are throttled together (a full disk refuses every frame of continuous mode and every request).

Keeping is two steps, because a request's response names its image before the image is written:
:meth:`FieldKeeper.reserve` decides and takes room in the store (the image's id, path and S3 key
are fixed then), :meth:`FieldKeeper.write` writes it. Continuous mode, where nobody waits on the
write, does both at once (:meth:`FieldKeeper.keep`). None of them raises for storage: a full or
failing disk is the image's ``reason``.
"""

from __future__ import annotations

import logging
import threading
import time

from fieldlens_classifier.frame import ClassifiedFrame, EventContext, RequestContext
from fieldlens_classifier.operating_point import OperatingPoints, no_operating_point
from fieldlens_core.messages import ImageInfo, utc_timestamp
from fieldlens_fielddata.directory import new_image_id
from fieldlens_fielddata.sampling.config import SamplingConfig
from fieldlens_fielddata.sampling.policy import SamplingPolicy
from fieldlens_fielddata.sidecar import ModelRef, Observation
from fieldlens_fielddata.store import FieldStore, Reservation, StoreFullError

log = logging.getLogger(__name__)

NOT_KEPT_LOG_INTERVAL_S = 60.0


class FieldKeeper:
    def __init__(
        self, sampling: SamplingConfig, store: FieldStore, operating_points: OperatingPoints = no_operating_point
    ) -> None:
        """``operating_points``: the served model's, whose confidence band an unconfigured band uses."""
        self._store = store
        self._operating_points = operating_points
        self._policy = self._new_policy(sampling)
        self._not_kept_lock = threading.Lock()
        self._not_kept_logged_at, self._not_kept_count = float("-inf"), 0

    def reconfigure(self, sampling: SamplingConfig) -> None:
        """A new sampling configuration (a live update): its caps count what the store kept already."""
        self._policy = self._new_policy(sampling)

    def reserve(self, frame: ClassifiedFrame) -> tuple[ImageInfo, Reservation | None]:
        """The image as a response names it, and the store's room for it if it is to be kept (a save,
        or an event's own frame: the policy decides how it is kept, see SamplingPolicy.decide); writes
        nothing, never raises for storage."""
        context = frame.context
        image_id = new_image_id(frame.captured)
        point = self._operating_points(frame.model)
        band = point.confidence_band if point is not None else None
        verdict = self._policy.decide(frame.predictions, saved=context.save, band=band)
        if not verdict.keep:
            return ImageInfo(id=image_id, kept=False, reason=verdict.reason), None
        event = context if isinstance(context, EventContext) else EventContext()
        top = frame.predictions[0]
        observation = Observation(
            request_id=context.request_id if isinstance(context, RequestContext) else None,
            timestamp=utc_timestamp(frame.captured),
            prediction=top.label,
            confidence=top.confidence,
            predictions=frame.predictions,
            model=ModelRef(**frame.model.model_dump()),
            capture=frame.frame.metadata,
            reason=event.reason or verdict.reason,
            event_id=event.event_id,
            event_role=event.role,
        )
        try:
            pending = self._store.reserve(
                image_id, frame.captured, frame.frame.jpeg, observation, verdict.score, saved=verdict.saved
            )
        except StoreFullError as exc:
            self._not_kept(logging.WARNING, image_id, exc)
            return ImageInfo(id=image_id, kept=False, reason=f"disk cap: {exc}"), None
        except OSError as exc:  # the store could not look for room: the prediction still goes out
            self._not_kept(logging.ERROR, image_id, exc)
            return ImageInfo(id=image_id, kept=False, reason=_storage_failed(exc)), None
        kept = pending.kept
        image = ImageInfo(
            id=image_id, kept=True, reason=observation.reason, path=str(kept.image_path), s3_key=kept.s3_key
        )
        return image, pending

    def write(self, pending: Reservation) -> str | None:
        """Write a reserved image; why it was not kept when the disk refused it (logged), else None."""
        try:
            self._store.write(pending)
        except OSError as exc:  # disk full, read-only card
            self._not_kept(logging.ERROR, pending.kept.image_id, exc)
            return _storage_failed(exc)
        return None

    def keep(self, frame: ClassifiedFrame) -> ImageInfo:
        """Reserve and write at once (continuous mode: nobody waits on the write)."""
        image, pending = self.reserve(frame)
        if pending is None:
            return image
        failed = self.write(pending)
        return image if failed is None else ImageInfo(id=image.id, kept=False, reason=failed)

    def _not_kept(self, level: int, image_id: str, exc: OSError) -> None:
        """Logged at ``level`` once a minute at most: a full store or disk refuses every frame of
        continuous mode, and a line per frame would bury everything else in the log."""
        with self._not_kept_lock:
            now = time.monotonic()
            self._not_kept_count += 1
            count, loud = self._not_kept_count, now - self._not_kept_logged_at >= NOT_KEPT_LOG_INTERVAL_S
            if loud:
                self._not_kept_logged_at, self._not_kept_count = now, 0
        log.log(level if loud else logging.DEBUG, "not keeping image %s (%d not kept since the last report): %s",
                image_id, count, exc)  # fmt: skip

    def _new_policy(self, sampling: SamplingConfig) -> SamplingPolicy:
        kept = [when.timestamp() for when in self._store.kept_times()]
        saved = [when.timestamp() for when in self._store.kept_times(saved=True)]
        return SamplingPolicy(sampling, already_kept=kept, already_saved=saved)


def _storage_failed(exc: OSError) -> str:
    return f"storage failed: {exc.strerror or exc}"
