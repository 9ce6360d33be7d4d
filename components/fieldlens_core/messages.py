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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

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
    model_config = ConfigDict(extra="forbid")

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


class ContinuousCommand(BaseModel):
    """A command on /request/continuous[/<name>]. Every field is optional: an empty payload, or the
    AWS IoT console's default test message, asks for the status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId = Field(
        default_factory=new_request_id, description="Echoed in the response; generated when absent."
    )
    action: Literal["start", "stop", "status"] = Field(default="status", description="What to do.")
    fps: float | None = Field(
        default=None, gt=0, le=60, description="With start: frames per second (default: the configuration's)."
    )
    reply_topic: ReplyTopic | None = Field(default=None, description="Publish the response here instead.")
    message: Note | None = Field(default=None, description="A free-text note, echoed in the response.")


class ContinuousStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    running: bool
    fps: float | None = Field(description="The rate asked for; null: as fast as inference allows.")
    frames: int = Field(description="Frames classified since the loop started.")
    dropped: int = Field(description="Frames the rate asked for that inference was too slow to take.")
    events: int = Field(description="Events started since the loop started.")
    in_view: str | None = Field(default=None, description="The label of the event in progress.")
    measured_fps: float | None = Field(default=None, description="Frames per second over the last few seconds.")
    failing: str | None = Field(default=None, description="Why frames fail, while they do (camera, inference).")


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
