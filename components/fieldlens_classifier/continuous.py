"""Continuous mode: capture -> classify -> keep -> smooth -> events, on one thread of its own.

One thread captures and settles (keeps, smooths, announces) the frames, in the order they were
captured. At ``fps`` one frame is in flight: the loop waits for the next tick; when inference is
slower than the rate, the ticks it missed are counted as ``dropped`` and the loop takes the next
frame at once (a camera that streams, picamera2, hands over its newest frame). Without ``fps`` it
runs as fast as inference allows, with up to FRAMES_IN_FLIGHT frames at the inference service at
once, so that the service runs them side by side (fieldlens_inference/lanes.py) while the loop
settles the one before: on the bench's 2-vCPU Xeon 59-61% of pure inference against 46-49% with
one (components/fieldlens_bench/README.md, "Continuous mode").

Classify requests keep working meanwhile, on the classifier's workers: each captures a fresh
frame of its own, so its answer is of the moment it was asked and never waits for the loop.

Every frame goes past the sampling policy (as a request's would). Around each event the loop
keeps, within the save caps, the frame where the model hesitated most (``event_role:
boundary``: the most useful to label) and, when the event ends, its best frame (``best``,
named by the end event's ``image``); both sidecars carry the event id.

The thread lives as long as the classifier; ``start`` and ``stop`` only flip its state, so a
command or a configuration update answers at once and can never leave two loops running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from fieldlens_classifier.config import SAMPLING_TOP_K, ContinuousConfig
from fieldlens_classifier.frame import ClassifiedFrame, EventContext, EventRole
from fieldlens_classifier.keeping import FieldKeeper
from fieldlens_classifier.operating_point import OperatingPoints, no_operating_point
from fieldlens_classifier.smoothing import FrameResult, Smoother, Transition
from fieldlens_core.camera import Camera, Frame
from fieldlens_core.errors import FieldlensError
from fieldlens_core.inference.client import Inference, InferenceResult
from fieldlens_core.messages import (
    ClassificationEvent,
    ContinuousStatus,
    FramePrediction,
    ImageInfo,
    SettingInEffect,
    utc_timestamp,
)

log = logging.getLogger(__name__)

ERROR_BACKOFF_S = 1.0  # a camera or inference service that fails is asked again this often
RATE_WINDOW = 20  # frames the measured rate is taken over
FRAMES_IN_FLIGHT = 3
"""Frames being classified at once without ``fps``. Measured on the 2-vCPU Xeon (bench, 15 s runs):
1: 46-49%, 2: 48-50% (the second request often finds the service alone and runs on both cores,
beside the next decode), 3: 59%, 4: 59-61% of pure inference."""


@dataclass(frozen=True)
class _InFlight:
    """A captured frame whose classification is on its way."""

    started: float  # the loop's clock when its capture began
    wall: datetime
    frame: Frame
    answer: Future[InferenceResult]


@dataclass
class _State:
    """What one run of the loop carries from frame to frame."""

    smoother: Smoother
    model: str | None = None  # the sha256 of the model whose operating point the smoother has
    recent: dict[int, _Seen] = field(default_factory=dict)  # the frames the window can still name
    best: _Seen | None = None  # the best frame of the event in view
    last_frame_message: float = float("-inf")


@dataclass
class _Seen:
    """A classified frame of this run, and what the keeper kept it as: kept twice only as an
    event's best frame kept before the event started (see ``_best_image``)."""

    frame: ClassifiedFrame
    kept: ImageInfo | None = None
    kept_for: str | None = None  # the event the kept copy's sidecar names


class ContinuousLoop:
    def __init__(
        self,
        settings: ContinuousConfig,
        thing: str,
        camera: Camera,
        inference: Inference,
        keeper: FieldKeeper,
        publish: Callable[[str, bytes], None],
        event_topic: str,
        frame_topic: str,
        clock: Callable[[], float] = time.monotonic,
        operating_points: OperatingPoints = no_operating_point,
    ) -> None:
        self._settings = settings
        self._operating_points = operating_points
        self._min_confidence: SettingInEffect | None = None  # for the model of the latest frame
        self._class_groups: list[str] = []
        self._thing = thing
        self._camera = camera
        self._inference = inference
        self._keeper = keeper
        self._publish = publish
        self._event_topic = event_topic
        self._frame_topic = frame_topic
        self._clock = clock
        self._wake = threading.Condition()
        self._active = False
        self._closing = False
        self._fps: float | None = settings.fps
        self._rate_changed = False
        self._stopped_by: str | None = None
        self._thread: threading.Thread | None = None
        self._reset_counters()

    # -- control: called on the bus's or the configuration's thread; never blocks on a frame --

    def start(self, fps: float | None = None) -> None:
        """Run (again) at ``fps`` (0: as fast as inference allows), else at the configured rate; a
        running loop takes the new rate."""
        with self._wake:
            if not self._active:
                self._reset_counters()
            self._fps = (fps or None) if fps is not None else self._settings.fps
            self._active = True
            self._stopped_by = None
            self._rate_changed = True  # a loop waiting out the old rate's tick takes the new one now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="continuous", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        log.info("continuous mode on at %s", f"{self._fps} fps" if self._fps else "the rate inference allows")

    def stop(self) -> None:
        """Stop after the frame in hand; the event in view gets its end event."""
        with self._wake:
            was_active, self._active = self._active, False
            self._wake.notify_all()
        if was_active:
            log.info("continuous mode off")

    def reconfigure(self, settings: ContinuousConfig) -> None:
        """A configuration update: new smoothing applies from the next start; ``enabled`` starts or stops."""
        with self._wake:
            self._settings = settings
        if settings.enabled:
            self.start()
        else:
            self.stop()

    def close(self, timeout_s: float) -> None:
        """End the thread (the classifier is stopping), within ``timeout_s``."""
        with self._wake:
            self._active, self._closing = False, True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._active

    def status(self) -> ContinuousStatus:
        with self._wake:
            times = list(self._times)
            measured = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
            return ContinuousStatus(
                running=self._active,
                fps=self._fps,
                frames=self._frames,
                dropped=self._dropped,
                events=self._events,
                in_view=self._in_view,
                measured_fps=round(measured, 2) if measured is not None else None,
                failing=self._failing,
                stopped_by=self._stopped_by,
                min_confidence=self._min_confidence,
                class_groups=self._class_groups,
            )

    # -- the loop --------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self._started_at = ""  # when the event in view started (its first frame's capture)
        self._failures = 0  # frames failed in a row
        self._frames = self._dropped = self._events = 0
        self._in_view: str | None = None
        self._failing: str | None = None
        self._times: deque[float] = deque(maxlen=RATE_WINDOW)

    def _run(self) -> None:
        """The thread: a run of frames per start. A bug in a run never ends the thread silently:
        the loop is reported stopped, with the reason, in its status (and the log), and the next
        start runs it again."""
        while True:
            with self._wake:
                while not self._active and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                settings = self._settings
            try:
                self._stream(Smoother(settings.smoothing()), settings)
            except Exception as exc:
                log.exception("continuous mode stopped by an internal error")
                with self._wake:
                    self._active = False
                    self._stopped_by = f"internal error: {type(exc).__name__}: {exc}"

    def _stream(self, smoother: Smoother, settings: ContinuousConfig) -> None:
        """Frames until stopped; then the event in view ends."""
        state = _State(smoother)
        top_k = max(settings.top_k, SAMPLING_TOP_K)
        index, due = 0, self._clock()
        in_flight: deque[_InFlight] = deque()
        with ThreadPoolExecutor(FRAMES_IN_FLIGHT, thread_name_prefix="continuous-classify") as pool:
            while self._active or in_flight:  # after a stop, what was captured is still settled
                failed: FieldlensError | None = None
                while self._active and len(in_flight) < self._frames_in_flight():
                    started, wall = self._clock(), datetime.now(UTC)
                    try:
                        frame = self._camera.capture()
                    except FieldlensError as exc:
                        failed = exc
                        break
                    answer = pool.submit(self._inference.classify, frame.for_inference, "image/jpeg", top_k)
                    in_flight.append(_InFlight(started, wall, frame, answer))
                if not in_flight:
                    if failed is not None:  # the camera: its frames in flight were settled first
                        self._failed(failed)
                        due = self._clock()
                    continue
                taken = in_flight.popleft()
                try:
                    result = taken.answer.result()
                except FieldlensError as exc:
                    self._failed(exc)
                    due = self._clock()
                    continue
                classified = ClassifiedFrame(taken.frame, result, taken.wall, EventContext())
                self._settle(index, taken.started, classified, state, settings)
                index += 1
                due = self._next_due(due, self._clock())
        for transition in smoother.flush(self._clock(), index - 1):
            self._announce(transition, state.recent, state.best)
        with self._wake:
            self._in_view = None

    def _frames_in_flight(self) -> int:
        with self._wake:
            return 1 if self._fps else FRAMES_IN_FLIGHT

    def _failed(self, exc: FieldlensError) -> None:
        """A frame failed (camera or inference): say so now and then, and wait before the next."""
        self._failures += 1
        with self._wake:
            self._failing = exc.message
        if self._failures == 1 or self._failures % 100 == 0:
            log.warning("continuous mode: frame failed (%d in a row): %s", self._failures, exc)
        self._pause(ERROR_BACKOFF_S)

    def _settle(
        self, index: int, started: float, frame: ClassifiedFrame, state: _State, settings: ContinuousConfig
    ) -> None:
        """A classified frame: smooth, keep, announce, count."""
        self._failures = 0
        if frame.model.sha256 != state.model:  # the first frame, or a reloaded model: its own thresholds
            state.model = frame.model.sha256
            point = self._operating_points(frame.model)
            state.smoother.settings = settings.smoothing(point)
            with self._wake:
                self._min_confidence = settings.min_confidence_for(point)
                self._class_groups = sorted(point.class_groups) if point is not None else []
        transitions = state.smoother.push(FrameResult(index, started, frame.predictions))
        event = state.smoother.event
        if event is not None:  # taken while the event was in view: its sidecar names the event
            frame = replace(frame, context=EventContext(event.event_id))
        seen = _Seen(frame)
        state.recent[index] = seen
        state.recent.pop(index - settings.window_frames - settings.hold_frames, None)
        info = self._keeper.keep(frame)
        if info.kept:
            seen.kept, seen.kept_for = info, event.event_id if event is not None else None
        for transition in transitions:
            if transition.type == "start" and transition.event.best is not None:
                state.best = state.recent.get(transition.event.best.index)
            self._announce(transition, state.recent, state.best)
        if event is not None and event.best is not None and event.best.index == index:
            state.best = seen
        now = self._clock()
        if settings.publish_frames and now - state.last_frame_message >= 1 / settings.max_frame_messages_per_s:
            state.last_frame_message = now
            self._publish_frame(index, seen, settings.top_k, event.event_id if event else None)
        with self._wake:
            self._frames += 1
            self._failing = None
            self._times.append(now)
            self._in_view = event.label if event else None

    def _next_due(self, due: float, now: float) -> float:
        """Wait for the next tick at ``fps``; the ticks a slow frame overran are dropped (counted).
        A new rate (a start while running) counts from now, also in the middle of a wait."""
        with self._wake:
            fps, changed, self._rate_changed = self._fps, self._rate_changed, False
        if not fps:
            return now
        period = 1 / fps
        due = now + period if changed else due + period
        if now < due:
            self._pause(due - now)
            with self._wake:
                if self._rate_changed:  # woken by a new rate: its first frame now
                    return self._clock()
            return due
        missed = int((now - due) // period)
        with self._wake:
            self._dropped += missed
        return due + missed * period  # already due: the next frame is taken at once

    def _pause(self, seconds: float) -> None:
        """Sleep until the next frame is due, or until stopped (a stop never waits out a pause)."""
        with self._wake:
            if self._active:
                self._wake.wait(seconds)

    def _announce(self, transition: Transition, recent: dict[int, _Seen], best: _Seen | None) -> None:
        """Publish an event; keep the frame where the model hesitated most around it and, at the
        end, the event's best frame (a frame the sampling policy kept already is not kept again)."""
        event = transition.event
        hesitant = min(recent.values(), key=lambda seen: seen.frame.predictions[0].confidence, default=None)
        if hesitant is not None and hesitant.kept is None:
            self._keep_for(hesitant, event.event_id, "boundary", f"event {transition.type}")
        image = None
        if transition.type == "end" and best is not None:
            image = self._best_image(best, event.event_id)
        latest = recent[max(recent)] if recent else best
        if latest is None:
            return  # no frame was ever classified: there is no event
        if transition.type == "start":
            first = recent.get(event.first_frame, latest)
            self._started_at = utc_timestamp(first.frame.captured)
            with self._wake:
                self._events += 1
        last = recent.get(event.last_frame) if event.last_frame is not None else None
        message = ClassificationEvent(
            event_id=event.event_id,
            type=transition.type,
            label=event.label,
            confidence=round(event.confidence, 4),
            frames=event.frames,
            started=self._started_at,
            ended=utc_timestamp((last or latest).frame.captured) if transition.type == "end" else None,
            thing=self._thing,
            model=latest.frame.model,
            image=image,
        )
        try:
            self._publish(self._event_topic, message.to_payload())
        except Exception:  # the bus logs its reason; the loop goes on
            log.exception("could not publish the %s event of %s", transition.type, event.event_id)

    def _keep_for(self, seen: _Seen, event_id: str, role: EventRole, reason: str) -> ImageInfo:
        """Keep ``seen`` for the event, within the save caps; what was kept (or why not)."""
        info = self._keeper.keep(replace(seen.frame, context=EventContext(event_id, role, reason)))
        if info.kept:
            seen.kept, seen.kept_for = info, event_id
        return info

    def _best_image(self, best: _Seen, event_id: str) -> ImageInfo:
        """The end event's image: its best frame, kept with the event's id in the sidecar. A frame
        the policy kept while the event was in view has it and is not kept again; one kept before
        the event started (its first frames, led for ``holdFrames`` before the start) has none, so it
        is kept again for the event: otherwise the end names an image nothing ties to the event.
        Past the save caps, the copy kept earlier is named."""
        if best.kept is not None and best.kept_for == event_id:
            return best.kept
        earlier = best.kept
        info = self._keep_for(best, event_id, "best", "event best frame")
        return info if info.kept or earlier is None else earlier

    def _publish_frame(self, index: int, seen: _Seen, top_k: int, event_id: str | None) -> None:
        message = FramePrediction(
            thing=self._thing,
            timestamp=utc_timestamp(seen.frame.captured),
            frame=index,
            predictions=seen.frame.predictions[:top_k],
            model=seen.frame.model,
            event_id=event_id,
        )
        try:
            self._publish(self._frame_topic, message.to_payload())
        except Exception:
            log.exception("could not publish frame %d", index)
