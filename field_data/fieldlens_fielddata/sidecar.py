"""The sidecar: what the device knew about a kept image, and what people later said of it.

One JSON file beside each image (``<image_id>.json``), written last so that its presence
means the pair is complete. Devices write it; the labelling step rewrites it (label fields
and ``revision`` only); the uploader ships it unchanged next to the image; the dataset
builder reads it. This model is the only definition of its fields.

Versions:

- 1 (no ``schema_version``): the first devices. ``saved`` was not written: a pair was kept
  on request when its ``reason`` was ``"request: save"``.
- 2: ``schema_version``, ``saved``, ``revision``, and the labelling fields ``labelled_at``,
  ``labeller`` and ``excluded``.

Unknown fields are kept (``extra="allow"``), so a labelling tool of this version rewriting
a sidecar a newer device wrote loses nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fieldlens_core.errors import FieldlensError
from fieldlens_core.messages import Prediction

SCHEMA_VERSION = 2
SAVE_REASON = "request: save"
LabelSource = Literal["import", "human"]
"""Who gave a label: imported from a labels file, or typed by a person on the labelling page."""


class SidecarError(FieldlensError, ValueError):
    """A sidecar that is not JSON, or not a sidecar of any known version."""


class StaleSidecarError(FieldlensError, ValueError):
    """A label written against a revision of the sidecar that someone else has since replaced."""


class ModelRef(BaseModel):
    """The model that made the prediction (the service's ModelInfo; lenient: older devices wrote less)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    version: str | None = None
    sha256: str | None = None


class Observation(BaseModel):
    """What the classifier knows when it decides to keep an image: the part a device writes."""

    model_config = ConfigDict(extra="allow")
    request_id: str | None = Field(default=None, description="The classify request that captured it.")
    timestamp: str | None = Field(default=None, description="When it was captured, RFC 3339 UTC.")
    prediction: str | None = Field(default=None, description="The model's top-1 label.")
    confidence: float = Field(default=0.0, ge=0.0, le=1.0, description="The top-1 probability.")
    predictions: list[Prediction] = Field(default_factory=list, description="The ranked predictions.")
    model: ModelRef | None = Field(default=None, description="The model that predicted.")
    capture: dict[str, Any] = Field(default_factory=dict, description="What the camera said of the frame.")
    reason: str = Field(default="", description="Why it was kept: the sampling strategy or the request.")
    event_id: str | None = Field(default=None, description="The continuous-mode event the frame belongs to.")
    event_role: Literal["best", "boundary"] | None = Field(
        default=None,
        description="best: the event's best frame (its end event names it); boundary: where the event started or "
        "ended, the model hesitating (the labelling page shows these first in its uncertain order).",
    )


class Sidecar(Observation):
    """A complete sidecar: the observation, where the pair goes, and its label."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="The sidecar format's version.")
    image_id: str = Field(description="The image's id: the file stem, sortable by capture time.")
    thing: str = Field(description="The device that kept it.")
    s3_key: str = Field(description="The image's key in the bucket; the sidecar's is the same with .json.")
    score: float = Field(default=0.0, description="How useful the sampling policy judged it (eviction order).")
    saved: bool = Field(default=False, description="Kept because a request asked for it.")
    revision: int = Field(default=0, ge=0, description="Bumped on each rewrite: what a label write checks against.")
    label: str | None = Field(default=None, description="The true class, once someone gave it.")
    label_source: str | None = Field(default=None, description="import | human; anything else is not trusted.")
    labelled_at: str | None = Field(default=None, description="When the label was given, RFC 3339 UTC.")
    labeller: str | None = Field(default=None, description="Who gave it.")
    excluded: bool = Field(default=False, description="A person marked it unusable: it is never trained on.")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "schema_version" in data:
            return data
        upgraded = {**data, "schema_version": SCHEMA_VERSION}  # version 1
        upgraded.setdefault("saved", data.get("reason") == SAVE_REASON)
        return upgraded

    @model_validator(mode="after")
    def _check(self) -> Sidecar:
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is newer than this fieldlens ({SCHEMA_VERSION})")
        return self

    @property
    def trusted_label(self) -> str | None:
        """The label, if the labelling step wrote it (a device can put anything in its sidecars)."""
        if self.excluded or self.label_source not in ("import", "human"):
            return None
        return self.label or None

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def decode(cls, body: bytes, where: str) -> Sidecar:
        """Parse a sidecar; SidecarError naming ``where`` and the reason."""
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            if exc.errors()[0]["type"] == "json_invalid":
                raise SidecarError(f"sidecar {where} is not JSON: {exc.errors()[0]['msg']}") from None
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
            raise SidecarError(f"sidecar {where} is not valid: {problems}") from None
