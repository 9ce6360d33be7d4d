"""The classify request and response payloads (README, "Topics and payloads").

Requests are validated strictly: a field of the wrong type or an unknown field is a
BAD_REQUEST that names the field, because a silently ignored typo (``topk``) would look
like the device ignoring the user. Two payloads a first-time user sends are valid requests:
an empty one, and the AWS IoT console's default test message, ``{"message": "Hello from AWS
IoT console"}`` (``message`` is a free-text note, echoed in the response). Responses always
carry a ``request_id``, generated when the request had none or could not be read.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

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


class ClassifyRequest(BaseModel):
    """A classify request. Every field is optional: an empty payload is a valid request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Annotated[str, Field(min_length=1, max_length=REQUEST_ID_MAX)] = Field(
        default_factory=new_request_id,
        description="Echoed in the response so a caller can match it; generated when absent.",
    )
    top_k: StrictInt | None = Field(
        default=None, ge=1, le=100, description="How many predictions to return (default: the component's)."
    )
    save: StrictBool = Field(default=False, description="Keep this image whatever the sampling policy says.")
    reply_topic: str | None = Field(
        default=None, description="Publish the response here instead of the component's response topic."
    )
    message: Annotated[str, Field(max_length=MESSAGE_MAX)] | None = Field(
        default=None,
        description="A free-text note, echoed in the response. The AWS IoT console's test page sends "
        '{"message": "Hello from AWS IoT console"} by default.',
    )

    @field_validator("request_id", "message")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be printable text")
        return value

    @field_validator("reply_topic")
    @classmethod
    def _publishable(cls, value: str | None) -> str | None:
        return None if value is None else validate_publish_topic(value)


REQUEST_FIELDS = tuple(ClassifyRequest.model_fields)


def parse_request(payload: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ClassifyRequest:
    """Validate a raw MQTT payload into a request, or raise a FieldlensError with a clear message."""
    if len(payload) > max_bytes:
        raise PayloadTooLargeError(f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    if not payload.strip():
        return ClassifyRequest()
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError(f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("payload is nested too deeply to be a request") from None
    if not isinstance(document, dict):
        raise BadRequestError(f"payload must be a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - set(REQUEST_FIELDS))
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(REQUEST_FIELDS)}")
    try:
        return ClassifyRequest.model_validate(document)
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


def response_from_payload(payload: bytes) -> dict[str, Any]:
    """Decode a response for a caller (CLI, tests); raises ValueError when it is not a response."""
    document = json.loads(payload)
    if not isinstance(document, dict) or "request_id" not in document:
        raise ValueError("not a classify response")
    return document
