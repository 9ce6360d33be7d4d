"""The payloads of the MQTT contract: classify requests and responses (README, "Topics and
payloads"), and continuous mode's commands, answers, events and frames ("Continuous mode").

Requests are validated strictly: a field of the wrong type or an unknown field is a
BAD_REQUEST that names the field, because a silently ignored typo (``topk``) would look
like the device ignoring the user. Two payloads a first-time user sends are valid requests:
an empty one, and the AWS IoT console's default test message, ``{"message": "Hello from AWS
IoT console"}`` (``message`` is a free-text note, echoed in the response). Responses always
carry a ``request_id``, generated when the request had none or could not be read. Every
request-like payload goes through :func:`parse_payload`, so the two kinds refuse alike.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from fieldlens_core.errors import BadRequestError, ErrorCode, PayloadTooLargeError
from fieldlens_core.topics import validate_publish_topic

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
REQUEST_ID_MAX = 128
MESSAGE_MAX = 256


def new_request_id() -> str:
    return uuid.uuid4().hex


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z`` suffix."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text")
    return value


RequestId = Annotated[str, Field(min_length=1, max_length=REQUEST_ID_MAX), AfterValidator(_printable)]
Note = Annotated[str, Field(max_length=MESSAGE_MAX), AfterValidator(_printable)]
ReplyTopic = Annotated[str, AfterValidator(validate_publish_topic)]


class ClassifyRequest(BaseModel):
    """A classify request. Every field is optional: an empty payload is a valid request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId = Field(
        default_factory=new_request_id,
        description="Echoed in the response so a caller can match it; generated when absent.",
    )
    top_k: StrictInt | None = Field(
        default=None, ge=1, le=100, description="How many predictions to return (default: the component's)."
    )
    save: StrictBool = Field(default=False, description="Keep this image whatever the sampling policy says.")
    reply_topic: ReplyTopic | None = Field(
        default=None, description="Publish the response here instead of the component's response topic."
    )
    message: Note | None = Field(
        default=None,
        description="A free-text note, echoed in the response. The AWS IoT console's test page sends "
        '{"message": "Hello from AWS IoT console"} by default.',
    )


def parse_request(payload: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ClassifyRequest:
    """Validate a raw MQTT payload into a request, or raise a FieldlensError with a clear message."""
    return parse_payload(payload, ClassifyRequest, max_bytes)


Request = TypeVar("Request", bound=BaseModel)


def parse_payload(payload: bytes, model: type[Request], max_bytes: int) -> Request:
    """A raw MQTT payload as ``model`` (an empty one is the model's defaults), or a FieldlensError
    naming what is wrong: size, JSON, type, an unknown field, a field's value."""
    if len(payload) > max_bytes:
        raise PayloadTooLargeError(f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    if not payload.strip():
        return model()
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError(f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("payload is nested too deeply to be a request") from None
    if not isinstance(document, dict):
        raise BadRequestError(f"payload must be a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - set(model.model_fields))
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(model.model_fields)}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadRequestError(f"invalid request: {problems}") from None


def salvage_request_id(payload: bytes) -> str:
    """The request's own id when a rejected payload still carries a usable one, else a new id."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return new_request_id()
    candidate = document.get("request_id") if isinstance(document, dict) else None
    if isinstance(candidate, str) and 0 < len(candidate) <= REQUEST_ID_MAX and candidate.isprintable():
        return candidate
    return new_request_id()


class Prediction(BaseModel):
    """One class and its probability: the one shape of a prediction, from the model (``model.top_k``)
    through the inference socket, the classifier, sampling, smoothing and the sidecar to the wire.
    Its uncertainty scores are :class:`fieldlens_core.uncertainty.Uncertainty`'s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    confidence: float = Field(ge=0.0, le=1.0)


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    sha256: str


class ImageInfo(BaseModel):
    """Where a field image was kept, and the S3 key it will have once uploaded."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kept: bool
    reason: str = Field(description="Why it was kept or not (policy, request, storage error).")
    path: str | None = None
    s3_key: str | None = None


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capture: float
    inference: float
    total: float


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str


class ClassifyResponse(BaseModel):
    """One message per request; either ``predictions`` or ``error`` is set, never both."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    thing: str
    timestamp: str = Field(default_factory=utc_timestamp)
    predictions: list[Prediction] | None = None
    model: ModelInfo | None = None
    image: ImageInfo | None = None
    timing_ms: Timing | None = None
    message: str | None = Field(default=None, description="The request's note, echoed.")
    error: ErrorInfo | None = None

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def failure(
        cls, request_id: str, thing: str, code: ErrorCode, message: str, note: str | None = None
    ) -> ClassifyResponse:
        return cls(request_id=request_id, thing=thing, message=note, error=ErrorInfo(code=code, message=message))


class ImageNotKept(BaseModel):
    """One message on /event/image/<name>: a response named its image as kept, and writing it then
    failed (responses go out before the image is written: README, "Speed")."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    thing: str
    timestamp: str = Field(default_factory=utc_timestamp)
    image: ImageInfo = Field(description="The image as the response named it, with kept false and the reason.")

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def response_from_payload(payload: bytes) -> dict[str, Any]:
    """Decode a response for a caller (CLI, tests); raises ValueError when it is not a response."""
    document = json.loads(payload)
    if not isinstance(document, dict) or "request_id" not in document:
        raise ValueError("not a classify response")
    return document


# -- continuous mode (README, "Continuous mode") ---------------------------------------------


MIN_FPS, MAX_FPS = 1 / 60, 60.0
"""Continuous mode's rate bounds, for commands and configuration alike: below one frame a minute a
wait is no longer a rate (1e-11 fps overflowed the loop's timer and killed its thread)."""


class ContinuousCommand(BaseModel):
    """A command on /request/continuous[/<name>]. Every field is optional: an empty payload, or the
    AWS IoT console's default test message, asks for the status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId = Field(
        default_factory=new_request_id, description="Echoed in the response; generated when absent."
    )
    action: Literal["start", "stop", "status"] = Field(default="status", description="What to do.")
    fps: float | None = Field(
        default=None,
        le=MAX_FPS,
        strict=True,  # "5" and true are not rates
        description="With start: frames per second, at least one frame a minute; 0: as fast as inference allows, "
        "as `fieldlens serve --fps 0` (default: the configuration's).",
    )
    reply_topic: ReplyTopic | None = Field(default=None, description="Publish the response here instead.")
    message: Note | None = Field(default=None, description="A free-text note, echoed in the response.")

    @field_validator("fps")
    @classmethod
    def _a_rate(cls, fps: float | None) -> float | None:
        if fps is not None and fps != 0 and fps < MIN_FPS:
            raise ValueError(
                f"fps must be 0 (as fast as inference allows) or from one frame a minute (1/60) to {MAX_FPS:g}"
            )
        return fps


SettingSource = Literal["configuration", "model", "default"]


class SettingInEffect(BaseModel):
    """A setting that defaults to the served model's own value: the value used now, and where from."""

    model_config = ConfigDict(extra="forbid")

    value: float
    source: SettingSource = Field(
        description="configuration: set there; model: the served model's operating point (its card); "
        "default: the built-in value, the model having none."
    )


class OperatingPointStatus(BaseModel):
    """The thresholds in effect for the served model (README, "Continuous mode": its operating point)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="The model they are for (name version); null: none known.")
    min_confidence: SettingInEffect = Field(description="Continuous mode's event threshold.")
    band_low: SettingInEffect = Field(description="The confidence_band sampling strategy's low.")
    band_high: SettingInEffect = Field(description="The confidence_band sampling strategy's high.")
    class_groups: list[str] = Field(
        default_factory=list, description="The model's class groups, summed by continuous mode (their names)."
    )


class ContinuousStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    running: bool
    fps: float | None = Field(description="The rate asked for; null: as fast as inference allows.")
    frames: int = Field(description="Frames classified since the loop started.")
    dropped: int = Field(description="Frames the rate asked for that inference was too slow to take.")
    events: int = Field(description="Events started since the loop started.")
    in_view: str | None = Field(default=None, description="The label of the event in progress.")
    measured_fps: float | None = Field(default=None, description="Frames per second over the last 20 frames settled.")
    failing: str | None = Field(default=None, description="Why frames fail, while they do (camera, inference).")
    stopped_by: str | None = Field(
        default=None, description="Why the loop stopped by itself (an internal error); null: it did not."
    )
    min_confidence: SettingInEffect | None = Field(
        default=None, description="The event threshold in effect for the latest frame's model; null before one."
    )
    class_groups: list[str] = Field(
        default_factory=list, description="That model's class groups, whose members' probabilities are summed."
    )


class ContinuousResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    thing: str
    timestamp: str = Field(default_factory=utc_timestamp)
    continuous: ContinuousStatus | None = None
    message: str | None = None
    error: ErrorInfo | None = None

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class ClassificationEvent(BaseModel):
    """One message on /event/classification/<name>: an object came into view, or left it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    type: Literal["start", "end"]
    label: str
    confidence: float = Field(
        description="The smoothing window's aggregate: at the start; at the end, its mean over the event."
    )
    frames: int = Field(description="Frames the label led the window, so far.")
    started: str
    ended: str | None = None
    thing: str
    model: ModelInfo
    image: ImageInfo | None = Field(default=None, description="end: the event's best frame, as kept.")

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class FramePrediction(BaseModel):
    """A frame's own predictions (only when asked for, and rate-limited)."""

    model_config = ConfigDict(extra="forbid")

    thing: str
    timestamp: str
    frame: int
    predictions: list[Prediction]
    model: ModelInfo
    event_id: str | None = None

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


# -- status (README, "Topics and payloads"; `fieldlens status`) ------------------------------


class StatusRequest(BaseModel):
    """A request on /request/status[/<name>]. Every field is optional: an empty payload, or the AWS IoT
    console's default test message, asks for the status. There is no ``reply_topic``: the answer goes
    to the paired /response/status topic, which is where `fieldlens status` and the console look."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId = Field(
        default_factory=new_request_id, description="Echoed in every device's answer; generated when absent."
    )
    message: Note | None = Field(default=None, description="A free-text note, echoed in the answer.")


class ServedModel(BaseModel):
    """The model the inference service serves, as its ping says."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    sha256: str
    variant: str | None = Field(default=None, description="fp32 or int8; null from a service too old to say.")
    variant_reason: str | None = Field(
        default=None, description="Why that graph is served (its CPU, a timing); null from a service too old to say."
    )
    services: list[str] = Field(default_factory=list, description="The service names it answers to.")


class InferenceStatus(BaseModel):
    """What the inference service answered to a ping: its model, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    model: ServedModel | None = None
    error: ErrorInfo | None = Field(default=None, description="Why the ping failed: down, hung, or no model.")


class QueueStatus(BaseModel):
    """The classifier's admission at the moment of the answer (README, "Speed": admission by time)."""

    model_config = ConfigDict(extra="forbid")

    workers: int
    in_flight: int = Field(description="Requests a worker is on.")
    queued: int = Field(description="Admitted requests waiting for a worker.")
    max_held: int = Field(description="The most held at once (queueSize + workers).")
    expected_wait_ms: float = Field(description="The wait admission expects for a request arriving now.")
    max_wait_ms: int = Field(description="Its budget (maxWaitMs): a longer expected wait is refused BUSY.")


class RequestCounts(BaseModel):
    """Classify responses since the classifier started, counted as they are published."""

    model_config = ConfigDict(extra="forbid")

    answered: int = Field(description="Every response: predictions and errors.")
    predictions: int
    busy: int = Field(description="Refused BUSY: over the wait budget, the most held, or shutting down.")
    errors: dict[str, int] = Field(description="Error responses by code, BUSY included.")


class LastError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    request_id: str
    at: str = Field(description="When it was answered (ISO 8601 UTC).")


class UploadReport(BaseModel):
    """The uploader's latest status from /status/field-data/<thing>, as the classifier last heard it.

    Fields the uploader adds later are dropped rather than refused: it is the uploader's message,
    relayed, and a newer uploader must not make the classifier's status unreadable."""

    model_config = ConfigDict(extra="ignore")

    thing: str
    destination: str
    queued: int
    queued_bytes: int
    oldest_age_s: float | None = None
    uploaded: int
    uploaded_bytes: int
    quarantined: int
    failed: int
    last_error: str | None = None
    timestamp: str = Field(description="When the uploader published it.")
    heard_s_ago: float | None = Field(
        default=None,
        description="Seconds between the classifier hearing it and answering (it reports every "
        "statusIntervalS, 30 s by default).",
    )


class StatusResponse(BaseModel):
    """One device's answer on /response/status[/<name>]; ``error`` instead of the figures when the
    request itself was refused."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    thing: str
    name: str
    timestamp: str = Field(default_factory=utc_timestamp)
    started: str | None = Field(default=None, description="When the classifier started answering status.")
    inference: InferenceStatus | None = None
    queue: QueueStatus | None = None
    requests: RequestCounts | None = None
    last_error: LastError | None = Field(default=None, description="Absent: no error response since the start.")
    continuous: ContinuousStatus | None = None
    operating_point: OperatingPointStatus | None = Field(
        default=None, description="The thresholds in effect for the served model, and where each comes from."
    )
    uploads: UploadReport | None = Field(default=None, description="Absent: no uploader report heard yet.")
    message: str | None = None
    error: ErrorInfo | None = None

    def to_payload(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
