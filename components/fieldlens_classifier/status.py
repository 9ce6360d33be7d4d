"""The classifier's status: a request on /request/status[/<name>], an answer on /response/status[/<name>]
(README, "Topics and payloads"; `fieldlens status`).

Greengrass's way of asking a component how it is: a request on a topic and an answer on its pair,
so the AWS IoT console's MQTT test client works as well as the CLI, and a fleet-wide request is
answered by every device, each answer naming its thing. An answer holds what the components
report: the model the inference service serves (its ``ping``), the classifier's admission (in
flight, queued, the wait it expects), its responses counted by outcome and the last error,
continuous mode, and the uploader's latest figures.

The uploader's figures are relayed, not asked for: the uploader already publishes them on
/status/field-data/<thing> every ``statusIntervalS``, and the classifier keeps the latest it heard
and says how long ago. The two other ways were each worse. A retained status: the Bus has no
retain flag, the MQTT bus subscribes with retain handling 2 (a fieldlens subscriber is never sent
a stored message), Greengrass's local pub/sub keeps none, and a retained status outlives its
device, so a dead device's last figures would read as current. The uploader answering the
request itself: it does not know the classifier's ``name``, so with the recipes' exact topics it
could answer only the fleet-wide request, never a named one.

Requests are validated on the transport's thread and answered on the responder's own (a ping is a
socket round trip). The ping is bounded by ``PING_WAIT_S``, so that a hung inference service still
gets an answer that says so, well within the CLI's 3 s.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fieldlens_classifier.operating_point import in_effect, point_of
from fieldlens_core import topics
from fieldlens_core.bus import Bus, Message
from fieldlens_core.errors import BusyError, ErrorCode, FieldlensError
from fieldlens_core.messages import (
    ClassifyResponse,
    ErrorInfo,
    InferenceStatus,
    LastError,
    ModelInfo,
    OperatingPointStatus,
    QueueStatus,
    RequestCounts,
    ServedModel,
    StatusRequest,
    StatusResponse,
    UploadReport,
    new_request_id,
    parse_payload,
    salvage_request_id,
    utc_timestamp,
)

if TYPE_CHECKING:
    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_classifier.service import Classifier

log = logging.getLogger(__name__)

PING_WAIT_S = 1.0
MAX_PENDING = 8  # status requests waiting for an answer; more are answered BUSY at once
STOP_TIMEOUT_S = 2.0


class Counters:
    """Classify responses counted as they are published: by outcome, by error code, and the last error.

    The classifier calls :meth:`record` from every thread that publishes (its workers, the transport's
    for refusals); the status reads a consistent :meth:`snapshot`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answered = 0
        self._errors: Counter[str] = Counter()
        self._last: LastError | None = None

    def record(self, response: ClassifyResponse) -> None:
        error = response.error
        last = None
        if error is not None:
            last = LastError(
                code=error.code, message=error.message, request_id=response.request_id, at=response.timestamp
            )
        with self._lock:
            self._answered += 1
            if last is not None:
                self._errors[last.code.value] += 1
                self._last = last

    def snapshot(self) -> tuple[RequestCounts, LastError | None]:
        with self._lock:
            errors = dict(sorted(self._errors.items()))
            answered, last = self._answered, self._last
        counts = RequestCounts(
            answered=answered,
            predictions=answered - sum(errors.values()),
            busy=errors.get(ErrorCode.BUSY.value, 0),
            errors=errors,
        )
        return counts, last


def status_routes(config: ClassifierConfig) -> dict[str, str]:
    """Each status-request topic -> the topic its answers go to: the name's pair, and the fleet-wide
    pair when ``fleetTopics`` is on (as for classify requests and continuous-mode commands)."""
    routes = {topics.status_request_topic(config.name): topics.status_response_topic(config.name)}
    if config.fleet_topics:
        routes[topics.STATUS_REQUEST_TOPIC] = topics.STATUS_RESPONSE_TOPIC
    return routes


@dataclass(frozen=True)
class _Asked:
    request: StatusRequest
    topic: str
    correlation_data: bytes | None


class StatusResponder:
    """Answers status requests for one classifier; ``ping`` is the inference client's."""

    def __init__(
        self,
        classifier: Classifier,
        bus: Bus,
        ping: Callable[[], dict[str, Any]],
        ping_wait_s: float = PING_WAIT_S,
    ) -> None:
        self._classifier = classifier
        self._bus = bus
        self._ping = ping
        self._ping_wait_s = ping_wait_s
        self._routes = status_routes(classifier.config)  # name and fleetTopics change only with a restart
        self._pending: queue.Queue[_Asked | None] = queue.Queue(MAX_PENDING)
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-ping")
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._upload: tuple[UploadReport, float] | None = None  # and when it was heard (monotonic)
        self._started_at: str | None = None
        self._stopping = False

    @property
    def routes(self) -> dict[str, str]:
        return dict(self._routes)

    def start(self) -> None:
        self._started_at = utc_timestamp()
        self._thread = threading.Thread(target=self._work, name="status", daemon=True)
        self._thread.start()
        for request_topic, response_topic in self._routes.items():
            self._bus.subscribe(request_topic, self.on_request)
            log.info("status requests on %s, answered on %s", request_topic, response_topic)
        thing = self._classifier.config.thing_name
        try:
            upload_topic = topics.upload_status_topic(thing)
        except ValueError as exc:
            log.warning("status will not relay the uploader's figures: %s", exc)
            return
        self._bus.subscribe(upload_topic, self.on_upload_status)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop answering: what is still waiting gets BUSY, later requests too."""
        self._stopping = True
        try:
            self._pending.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("the status worker did not drain its requests within %ss", timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pinger.shutdown(wait=False, cancel_futures=True)

    def on_request(self, message: Message) -> None:
        """A status request, on the transport's thread: validated here, answered on the worker's."""
        if message.retained:
            log.warning("ignored a retained message on %s: retained messages are never requests", message.topic)
            return
        config = self._classifier.config
        topic = self._routes.get(message.topic, topics.status_response_topic(config.name))
        try:
            request = parse_payload(message.payload, StatusRequest, config.max_payload_bytes)
        except FieldlensError as exc:
            request_id = salvage_request_id(message.payload) if exc.code == ErrorCode.BAD_REQUEST else new_request_id()
            log.info("rejected status request %s: %s %s", request_id, exc.code, exc.message)
            self._publish(self._refusal(request_id, None, exc), topic, message.correlation_data)
            return
        asked = _Asked(request, topic, message.correlation_data)
        if self._stopping:
            self._refuse(asked, BusyError("the classifier is shutting down"))
            return
        try:
            self._pending.put_nowait(asked)
        except queue.Full:
            self._refuse(asked, BusyError(f"{MAX_PENDING} status requests are waiting already; ask again"))

    def on_upload_status(self, message: Message) -> None:
        """The uploader's status: kept, with when it was heard, for the next answers."""
        try:
            report = UploadReport.model_validate_json(message.payload)
        except ValidationError as exc:
            log.warning("ignored an unreadable uploader status on %s: %s", message.topic, exc.errors()[0]["msg"])
            return
        with self._lock:
            self._upload = (report, time.monotonic())

    def status(self, request: StatusRequest) -> StatusResponse:
        """The answer to ``request``, from what each part reports now."""
        inference, operating = self._inference_status()  # first: it may take up to the ping wait, the rest is instant
        classifier = self._classifier
        config = classifier.config
        admission = classifier.admission
        held, queued = admission.held, classifier.queued()
        waiting = QueueStatus(
            workers=config.workers,
            in_flight=max(0, held - queued),
            queued=queued,
            max_held=admission.max_held,
            expected_wait_ms=round(admission.expected_wait_s(held) * 1000, 1),
            max_wait_ms=config.max_wait_ms,
        )
        counts, last = classifier.counters.snapshot()
        return StatusResponse(
            request_id=request.request_id,
            thing=config.thing_name,
            name=config.name,
            started=self._started_at,
            inference=inference,
            queue=waiting,
            requests=counts,
            last_error=last,
            continuous=classifier.continuous.status(),
            operating_point=operating,
            uploads=self._uploads(),
            message=request.message,
        )

    def _inference_status(self) -> tuple[InferenceStatus, OperatingPointStatus | None]:
        """The ping's answer, and the thresholds in effect for the model it names (None: no model known)."""
        try:
            reply = self._pinger.submit(self._ping).result(timeout=self._ping_wait_s)
        except TimeoutError:
            message = f"the inference service did not answer a ping within {self._ping_wait_s:g} s"
            return InferenceStatus(error=ErrorInfo(code=ErrorCode.INFERENCE_TIMEOUT, message=message)), None
        except FieldlensError as exc:  # not running, timed out, no model
            return InferenceStatus(error=ErrorInfo(code=exc.code, message=exc.message)), None
        except Exception as exc:  # a bug: the answer says so rather than not coming
            log.exception("pinging the inference service failed unexpectedly")
            message = f"{type(exc).__name__}: {exc}"
            return InferenceStatus(error=ErrorInfo(code=ErrorCode.INTERNAL_ERROR, message=message)), None
        model = reply.get("model")
        try:
            if not isinstance(model, dict):
                raise ValueError("no model in the reply")
            served = ServedModel.model_validate(
                {
                    **model,
                    "variant": reply.get("variant"),
                    "variant_reason": reply.get("variant_reason"),
                    "services": reply.get("services", []),
                }
            )
        except (ValueError, ValidationError) as exc:  # ValidationError is a ValueError; named for the reader
            message = f"malformed ping reply from the inference service: {exc}"
            return InferenceStatus(error=ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message=message)), None
        info = ModelInfo(name=served.name, version=served.version, sha256=served.sha256)
        return InferenceStatus(model=served), in_effect(self._classifier.config, point_of(reply), info)

    def _uploads(self) -> UploadReport | None:
        with self._lock:
            heard = self._upload
        if heard is None:
            return None
        report, at = heard
        return report.model_copy(update={"heard_s_ago": round(time.monotonic() - at, 1)})

    def _work(self) -> None:
        while True:
            asked = self._pending.get()
            if asked is None:
                return
            if self._stopping:
                self._refuse(asked, BusyError("the classifier is shutting down"))
                continue
            try:
                response = self.status(asked.request)
            except Exception as exc:  # a bug must not end the worker, nor leave the asker waiting
                log.exception("status request %s failed unexpectedly", asked.request.request_id)
                error = FieldlensError(f"{type(exc).__name__}: {exc}")
                response = self._refusal(asked.request.request_id, asked.request.message, error)
            self._publish(response, asked.topic, asked.correlation_data)

    def _refuse(self, asked: _Asked, exc: FieldlensError) -> None:
        log.info("refused status request %s: %s", asked.request.request_id, exc.message)
        response = self._refusal(asked.request.request_id, asked.request.message, exc)
        self._publish(response, asked.topic, asked.correlation_data)

    def _refusal(self, request_id: str, note: str | None, exc: FieldlensError) -> StatusResponse:
        config = self._classifier.config
        error = ErrorInfo(code=exc.code, message=exc.message)
        return StatusResponse(
            request_id=request_id, thing=config.thing_name, name=config.name, message=note, error=error
        )

    def _publish(self, response: StatusResponse, topic: str, correlation_data: bytes | None) -> None:
        try:
            self._bus.publish(topic, response.to_payload(), correlation_data)
        except Exception:  # the bus logs its own reason; a lost answer must not end the worker
            log.exception("could not publish the status answer to %s", response.request_id)
