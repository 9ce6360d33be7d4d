"""The classifier: request in, capture -> infer -> keep, structured response out.

The bus handler only validates and enqueues (it runs on the transport's thread); a bounded
queue and a few workers do the work, and a full queue answers BUSY at once instead of
letting requests pile up on a small device. Every request gets exactly one response, on
the topic paired with the one it came in on (``routes``), or on its ``reply_topic`` / MQTT 5
response topic when that passes the prefix guard (routing.py), with its MQTT 5 correlation
data echoed.

What is kept is the keeper's to decide and write (keeping.py): the same keeper, built in build.py,
keeps continuous mode's frames, and the commands that start and stop that loop are answered
beside this path (commands.py), not on it.

A message flagged retained is never a request: a retained request would run again at every
restart and reconnect, each time capturing, uploading and answering once more.

A kept image is written after its response is published: the response names the image and its
S3 key (both fixed when the store reserves room for it), and the write (a millisecond or two,
more on an SD card) no longer delays the answer. A write that then fails is logged and published
on /event/image/<name> (ImageNotKept), so the caller who was told ``kept: true`` can find out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fieldlens_classifier.admission import Admission, Decision
from fieldlens_classifier.config import HOT_FIELDS, SAMPLING_TOP_K, ClassifierConfig
from fieldlens_classifier.continuous import ContinuousLoop
from fieldlens_classifier.frame import ClassifiedFrame, RequestContext
from fieldlens_classifier.keeping import FieldKeeper
from fieldlens_classifier.routing import Reply, paired_reply, reply_for
from fieldlens_classifier.status import Counters
from fieldlens_core import topics
from fieldlens_core.bus import Bus, Message
from fieldlens_core.camera import Camera
from fieldlens_core.errors import ErrorCode, FieldlensError
from fieldlens_core.inference.client import Inference
from fieldlens_core.messages import (
    ClassifyRequest,
    ClassifyResponse,
    ImageInfo,
    ImageNotKept,
    Timing,
    new_request_id,
    parse_request,
    salvage_request_id,
    utc_timestamp,
)
from fieldlens_fielddata.store import Reservation

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0  # Greengrass's default shutdown timeout is 15 s


@dataclass(frozen=True)
class _Job:
    request: ClassifyRequest
    reply: Reply
    received: float  # perf_counter() when the message arrived
    admitted_at: float  # Decision.at: the admission's clock when it was admitted


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Classifier:
    """One request's path (admitted, captured, classified, kept, answered) on a pool of workers;
    and the life of what it was built with: the keeper's policy and the continuous loop follow its
    configuration, and the loop stops with it."""

    def __init__(
        self,
        config: ClassifierConfig,
        bus: Bus,
        camera: Camera,
        inference: Inference,
        keeper: FieldKeeper,
        continuous: ContinuousLoop,
    ) -> None:
        self._config = config
        self._bus = bus
        self._camera = camera
        self._inference = inference
        self._keeper = keeper
        self._continuous = continuous
        self._queue: queue.Queue[_Job | None] = queue.Queue()  # bounded by admission, not by size
        self._admission = Admission(config.max_wait_ms / 1000, config.queue_size + config.workers, config.workers)
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self.counters = Counters()
        """Every classify response, counted as it is published (`fieldlens status`)."""
        self.on_start: list[Callable[[], None]] = []
        """Run at the end of start(): what build.py starts with the classifier (continuous-mode
        commands, the status responder)."""

    @property
    def config(self) -> ClassifierConfig:
        return self._config

    def start(self) -> None:
        for index in range(self._config.workers):
            worker = threading.Thread(target=self._work, name=f"classify-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        for request_topic, response_topic in self._config.routes.items():
            self._bus.subscribe(request_topic, self.on_message)
            log.info("listening on %s, answering on %s", request_topic, response_topic)
        if self._config.continuous.enabled:
            self._continuous.start()
        for started in self.on_start:
            started()

    @property
    def continuous(self) -> ContinuousLoop:
        return self._continuous

    @property
    def stopping(self) -> bool:
        """stop() has begun: later requests and commands are answered BUSY."""
        return self._stopping

    @property
    def admission(self) -> Admission:
        return self._admission

    def queued(self) -> int:
        """Admitted requests that no worker has taken yet (the stop markers are not requests)."""
        return min(self._queue.qsize(), self._admission.held)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Finish the requests already queued, then stop the workers; later requests get BUSY.

        Bounded in time: requests still queued at the deadline are answered BUSY (a hung camera
        or inference service must not make SIGTERM hang; Greengrass would kill us uncleanly).
        """
        self._stopping = True
        deadline = time.monotonic() + timeout_s
        self._continuous.close(timeout_s / 2)  # its last frame, then the end event of what is in view
        for _ in self._workers:
            self._queue.put_nowait(None)  # after every request already admitted
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(worker.is_alive() for worker in self._workers):
            self._refuse_queued()  # the deadline passed: what is still waiting is answered BUSY
        self._workers.clear()

    def _refuse_queued(self) -> None:
        """Answer BUSY to every request still queued (stop markers stay queued)."""
        markers = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                markers += 1
                continue
            self._admission.withdrawn()
            self._publish(self._failure(job.request, ErrorCode.BUSY, "the classifier is shutting down"), job.reply)
        for _ in range(markers):
            self._queue.put_nowait(None)

    def update_config(self, new: ClassifierConfig) -> None:
        """Apply a live configuration update: hot fields now, the rest after a restart."""
        old = self._config
        changed = {k for k in type(new).model_fields if getattr(new, k) != getattr(old, k)}
        later = sorted(changed - set(HOT_FIELDS))
        if later:
            log.warning("configuration of %s takes effect after a restart", ", ".join(later))
        self._config = old.model_copy(update={k: getattr(new, k) for k in changed & set(HOT_FIELDS)})
        if "sampling" in changed:
            self._keeper.reconfigure(self._config.sampling)
        if "max_wait_ms" in changed:
            self._admission.budget_s = self._config.max_wait_ms / 1000
        if "continuous" in changed:
            self._continuous.reconfigure(self._config.continuous)
        logging.getLogger().setLevel(self._config.log_level)

    def on_message(self, message: Message) -> None:
        received = time.perf_counter()
        admitted = self._admit(message)
        if admitted is None:
            return
        if isinstance(admitted[0], ClassifyResponse):
            self._publish(*admitted)  # never to a reply topic the request was refused for
            return
        request, reply = admitted
        decision = Decision(False, "the classifier is shutting down") if self._stopping else self._admission.admit()
        if decision.admitted:
            self._queue.put_nowait(_Job(request, reply, received, decision.at))
            return
        log.info("rejected request %s: %s", request.request_id, decision.reason)
        self._publish(self._failure(request, ErrorCode.BUSY, decision.reason), reply)

    def answer(self, message: Message) -> ClassifyResponse | None:
        """Handle one request on the caller's thread and publish its response (the v1 Lambda path)."""
        received = time.perf_counter()
        admitted = self._admit(message)
        if admitted is None:
            return None
        if isinstance(admitted[0], ClassifyResponse):
            self._publish(*admitted)
            return admitted[0]
        request, reply = admitted
        response, pending = self._process(request, received)
        self._publish(response, reply)
        self._write(pending, request.request_id)
        return response

    def _admit(self, message: Message) -> tuple[ClassifyRequest, Reply] | tuple[ClassifyResponse, Reply] | None:
        """The validated request and where to answer it; the error response it gets instead; or None
        for a message that is not a request at all (a retained one)."""
        if message.retained:
            log.warning(
                "ignored a retained message on %s (%d bytes): retained messages are never requests; "
                "publish requests without the retain flag",
                message.topic,
                len(message.payload),
            )
            return None
        config = self._config
        default = paired_reply(message, config.routes, config.effective_response_topic)
        try:
            request = parse_request(message.payload, config.max_payload_bytes)
            return request, reply_for(message, request.reply_topic, default, config)
        except FieldlensError as exc:
            request_id = salvage_request_id(message.payload) if exc.code == ErrorCode.BAD_REQUEST else new_request_id()
            log.info("rejected request %s: %s %s", request_id, exc.code, exc.message)
            return ClassifyResponse.failure(request_id, config.thing_name, exc.code, exc.message), default

    def _process(self, request: ClassifyRequest, received: float) -> tuple[ClassifyResponse, Reservation | None]:
        """Capture, classify and reserve room for one image: the response, and the image to write
        once it is published. Never raises: failures become error responses.

        That promise is what keeps a worker alive whatever a request does (a reply the service
        should never have sent, a bug in keeping): each job ends in exactly one response.
        """
        try:
            return self._classify(request, received)
        except FieldlensError as exc:
            log.warning("request %s failed: %s", request.request_id, exc)
            return self._failure(request, exc.code, exc.message), None
        except Exception as exc:
            log.exception("request %s failed unexpectedly", request.request_id)
            return self._failure(request, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"), None

    def _failure(self, request: ClassifyRequest, code: ErrorCode, message: str) -> ClassifyResponse:
        return ClassifyResponse.failure(request.request_id, self._config.thing_name, code, message, request.message)

    def _classify(self, request: ClassifyRequest, started: float) -> tuple[ClassifyResponse, Reservation | None]:
        config = self._config
        taken = datetime.now(UTC)
        frame = self._camera.capture()
        captured = time.perf_counter()
        top_k = request.top_k or config.default_top_k
        result = self._inference.classify(frame.for_inference, "image/jpeg", max(top_k, SAMPLING_TOP_K))
        inferred = time.perf_counter()
        classified = ClassifiedFrame(frame, result, taken, RequestContext(request.request_id, request.save))
        image, pending = self._keeper.reserve(classified)
        finished = time.perf_counter()
        response = ClassifyResponse(
            request_id=request.request_id,
            thing=config.thing_name,
            timestamp=utc_timestamp(taken),
            predictions=result.predictions[:top_k],
            model=result.model,
            image=image,
            timing_ms=Timing(
                capture=_ms(captured - started), inference=_ms(inferred - captured), total=_ms(finished - started)
            ),
            message=request.message,
        )
        return response, pending

    def _write(self, pending: Reservation | None, request_id: str) -> None:
        """Write an image whose response is out; a failure is logged and published (ImageNotKept)."""
        if pending is None:
            return
        try:
            reason = self._keeper.write(pending)
        except Exception as exc:  # a bug, which must not end a worker
            log.exception("writing image %s failed unexpectedly", pending.kept.image_id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
        if reason is None:
            return
        image = ImageInfo(id=pending.kept.image_id, kept=False, reason=reason)
        event = ImageNotKept(request_id=request_id, thing=self._config.thing_name, image=image)
        try:
            self._bus.publish(topics.image_event_topic(self._config.name), event.to_payload())
        except Exception:
            log.exception("could not report that image %s was not kept", pending.kept.image_id)

    def _publish(self, response: ClassifyResponse, reply: Reply) -> None:
        self.counters.record(response)
        try:
            self._bus.publish(reply.topic, response.to_payload(), reply.correlation_data)
        except Exception:  # the bus logs its own reason; a lost response must not kill a worker
            log.exception("could not publish the response to %s", response.request_id)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            started = self._admission.start(job.admitted_at)
            if not started.admitted:  # no longer answerable within maxWaitMs: BUSY now, not an answer late
                log.info("gave up on request %s: %s", job.request.request_id, started.reason)
                self._publish(self._failure(job.request, ErrorCode.BUSY, started.reason), job.reply)
                continue
            response, pending = self._process(job.request, job.received)
            self._publish(response, job.reply)  # none of the three raises
            self._write(pending, job.request.request_id)
            self._admission.finished(started.at)
