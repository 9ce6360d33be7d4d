"""Configuration of the classifier component."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fieldlens_classifier.smoothing import SmoothingSettings
from fieldlens_core import topics
from fieldlens_core.config import BusSettings, CameraConfig, InferenceClientConfig, StrictModel, default_thing_name
from fieldlens_core.messages import DEFAULT_MAX_PAYLOAD_BYTES, MAX_FPS, MIN_FPS, SettingInEffect
from fieldlens_core.model_package import OperatingPoint
from fieldlens_fielddata.directory import DEFAULT_S3_PREFIX
from fieldlens_fielddata.sampling.config import SamplingConfig

SAMPLING_TOP_K = 10  # predictions asked of the service per frame: entropy needs the spread
DEFAULT_MIN_CONFIDENCE = 0.5
"""Continuous mode's event threshold for a model whose card has no operating point."""


class ContinuousConfig(StrictModel):
    """Continuous mode: classify a stream of frames, smooth them, publish one start and one end
    event per object (README, "Continuous mode")."""

    enabled: bool = Field(
        default=False,
        title="Enabled",
        description="Run the capture loop; a configuration update or a command on /request/continuous starts "
        "and stops it live.",
    )
    fps: float | None = Field(
        default=5.0,
        ge=MIN_FPS,
        le=MAX_FPS,
        strict=True,
        title="Frames per second",
        description="The capture rate; null: as fast as inference allows. Frames inference is too slow for are "
        "dropped (counted), never queued.",
    )
    window_frames: int = Field(
        default=3, ge=1, le=300, title="Window", description="Frames the smoothing window holds."
    )
    window_s: float | None = Field(
        default=None, gt=0, le=600, title="Window span", description="Frames older than this leave the window too."
    )
    aggregate: Literal["mean", "vote"] = Field(
        default="mean",
        title="Aggregate",
        description="mean: of the frames' probability vectors; vote: the majority of their top-1 labels.",
    )
    hold_frames: int = Field(
        default=2,
        ge=1,
        le=300,
        title="Hold",
        description="A label starts (or ends) an event only after leading the window this many frames in a row.",
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        title="Confidence",
        description="The window's aggregate a label needs to start an event; null: the served model's own event "
        "threshold (its card's operating point), 0.5 for a model without one.",
    )
    blank_labels: list[str] = Field(
        default_factory=lambda: ["blank"],
        title="Blank labels",
        description="Labels meaning nothing is in view: they end an event and are never reported as one.",
    )
    publish_frames: bool = Field(
        default=False,
        title="Publish frames",
        description="Also publish each frame's predictions on /event/frame/<name> (rate-limited).",
    )
    max_frame_messages_per_s: float = Field(
        default=1.0, gt=0, le=30, title="Frame message rate", description="Most frame messages a second."
    )
    top_k: int = Field(default=3, ge=1, le=100, title="Top k", description="Predictions in a frame message.")

    def min_confidence_for(self, point: OperatingPoint | None) -> SettingInEffect:
        """The event threshold in effect: configured, else the model's own, else DEFAULT_MIN_CONFIDENCE."""
        if self.min_confidence is not None:
            return SettingInEffect(value=self.min_confidence, source="configuration")
        if point is not None:
            return SettingInEffect(value=point.event_threshold, source="model")
        return SettingInEffect(value=DEFAULT_MIN_CONFIDENCE, source="default")

    def smoothing(self, point: OperatingPoint | None = None) -> SmoothingSettings:
        """The smoother's settings for a model with operating point ``point`` (None: it has none)."""
        return SmoothingSettings(
            window_frames=self.window_frames,
            window_s=self.window_s,
            aggregate=self.aggregate,
            hold_frames=self.hold_frames,
            min_confidence=self.min_confidence_for(point).value,
            blank_labels=frozenset(self.blank_labels),
            class_groups=point.groups_by_label() if point is not None else {},
        )


class ClassifierConfig(BusSettings):
    name: str = Field(
        default=topics.DEFAULT_NAME,
        title="Name",
        description="Last level of the topics: /request/classify/<name> and /response/prediction/<name>.",
    )
    request_topic: str | None = Field(
        default=None, title="Request topic", description="Overrides /request/classify/<name>."
    )
    response_topic: str | None = Field(
        default=None, title="Response topic", description="Overrides /response/prediction/<name>."
    )
    fleet_topics: bool = Field(
        default=True,
        title="Fleet topics",
        description="Also answer fleet-wide requests: /request/classify is answered on /response/prediction by "
        "every device that has this on, each response naming its thing.",
    )
    reply_topic_prefix: str = Field(
        default="/response/",
        title="Reply topic prefix",
        description="A request's reply_topic (or MQTT 5 response topic) must start with this; stops requests "
        "steering output anywhere. {thing} stands for the thing name: /response/reply/{thing}/ matches the "
        "CloudFormation template's IoT policy. The recipe's accessControl allows publishing under it (<prefix>#).",
    )
    thing_name: str = Field(
        default_factory=default_thing_name, title="Thing name", description="Reported in responses and S3 keys."
    )
    camera: CameraConfig = Field(default_factory=CameraConfig, title="Camera", description="Image source.")
    inference: InferenceClientConfig = Field(
        default_factory=InferenceClientConfig, title="Inference", description="The local inference service."
    )
    field_data_dir: Path = Field(
        default=Path("fieldlens-data/field-images"),
        title="Field-data directory",
        description="Where kept images and their sidecars are written.",
    )
    sync_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        title="Field-data sync interval",
        description="Kept images are fsynced in a group this often, off the request path; 0 fsyncs each one "
        "inline (slower, and much slower on SD cards). A power cut can lose at most this interval.",
    )
    s3_prefix: str = Field(
        default=DEFAULT_S3_PREFIX,
        title="S3 prefix",
        description="Key prefix of kept images in the bucket: <prefix>/<thing>/<yyyy>/<mm>/<dd>/<id>.jpg. Written "
        "into each sidecar and reported in the response; the uploader ships to exactly that key.",
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig,
        title="Sampling policy",
        description="Which images to keep: strategies, per-class quota, caps (a request's save: true keeps within "
        "saveCaps; past them the policy decides).",
    )
    max_field_bytes: int | None = Field(
        default=1 << 30,
        ge=1 << 20,
        title="Field-data byte cap",
        description="Kept images and sidecars never take more than this; null for no cap.",
    )
    max_field_images: int | None = Field(
        default=20_000, ge=1, title="Field-data image cap", description="Most images kept; null for no cap."
    )
    default_top_k: int = Field(default=5, ge=1, le=100, title="Top k", description="Predictions per response.")
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES,
        ge=64,
        le=1 << 20,
        title="Max payload",
        description="Larger requests get PAYLOAD_TOO_LARGE.",
    )
    max_wait_ms: int = Field(
        default=5000,
        ge=10,
        le=600_000,
        title="Wait budget",
        description="A request whose expected wait (the requests ahead of it times the measured time between "
        "answers) is longer than this gets BUSY at once, naming the wait; within it, a burst is queued.",
    )
    queue_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        title="Queue size",
        description="Most requests waiting beyond those being worked on, whatever the budget: bounds memory "
        "under a burst of any size.",
    )
    continuous: ContinuousConfig = Field(
        default_factory=ContinuousConfig,
        title="Continuous mode",
        description="A capture loop with windowed smoothing and events; off by default.",
    )
    workers: int = Field(
        default=4,
        ge=1,
        le=16,
        title="Workers",
        description="Requests processed at once; more than one lets capture, keeping and inference overlap.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return topics.validate_name(value)

    @model_validator(mode="after")
    def _topics(self) -> ClassifierConfig:
        for topic in (self.request_topic, self.response_topic):
            if topic is not None:
                topics.validate_publish_topic(topic)
        return self

    @property
    def effective_request_topic(self) -> str:
        return self.request_topic or topics.request_topic(self.name)

    @property
    def effective_response_topic(self) -> str:
        return self.response_topic or topics.response_topic(self.name)

    @property
    def effective_reply_topic_prefix(self) -> str:
        return self.reply_topic_prefix.replace("{thing}", self.thing_name)

    @property
    def routes(self) -> dict[str, str]:
        """Each topic the classifier subscribes to -> where it answers a request from there by default."""
        routes = {self.effective_request_topic: self.effective_response_topic}
        if self.fleet_topics:
            routes.setdefault(topics.FLEET_REQUEST_TOPIC, topics.FLEET_RESPONSE_TOPIC)
        return routes

    @property
    def continuous_routes(self) -> dict[str, str]:
        """Each continuous-command topic -> where its commands are answered by default."""
        routes = {topics.continuous_request_topic(self.name): topics.continuous_response_topic(self.name)}
        if self.fleet_topics:
            routes[topics.CONTINUOUS_REQUEST_TOPIC] = topics.CONTINUOUS_RESPONSE_TOPIC
        return routes


# Fields that a live configuration update may change without a restart.
HOT_FIELDS = (
    "continuous",
    "max_wait_ms",
    "sampling",
    "default_top_k",
    "max_payload_bytes",
    "reply_topic_prefix",
    "log_level",
)
