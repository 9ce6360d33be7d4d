"""Configuration pieces shared by the components, and how raw configuration is validated.

Every model forbids unknown keys and documents each field, so that a typo in a Greengrass
deployment's configuration merge is REJECTED with a message naming the key, instead of
being ignored on a device nobody is looking at. Keys are accepted in snake_case (flags,
files) and camelCase (Greengrass recipes, which by convention use camelCase).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from fieldlens_core.errors import ConfigurationError

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
DEFAULT_SERVICE_NAME = "beverage-classifier"  # the seed's v1 connector service name


def default_inference_socket() -> Path:
    """A socket path in a directory only this user can enter: ``$XDG_RUNTIME_DIR/fieldlens/``, else
    ``<temp dir>/fieldlens-<uid>/``. Never the shared temp dir itself, where any local user could
    take the name first and receive every camera frame. On a core the recipes use the
    InferenceService's work path instead."""
    return private_socket("inference")


def private_socket(name: str) -> Path:
    """``<name>.sock`` in this user's private socket directory (see default_inference_socket)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "fieldlens" if runtime else Path(tempfile.gettempdir()) / f"fieldlens-{os.getuid()}"
    return folder / f"{name}.sock"


def default_thing_name() -> str:
    """The nucleus sets AWS_IOT_THING_NAME for every component; off a device, the host name."""
    return os.environ.get("AWS_IOT_THING_NAME") or socket.gethostname()


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, both key spellings accepted."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, validate_default=True
    )


class ComponentSettings(StrictModel):
    """What every component's configuration has."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", title="Log level", description="Python logging level."
    )


class BusSettings(ComponentSettings):
    """What a component that talks MQTT has besides: where its messages go on a Greengrass core."""

    bus_scope: Literal["iot_core", "local"] = Field(
        default="iot_core",
        title="Bus scope",
        description="On Greengrass: IoT Core topics (the console's MQTT test page) or local pub/sub.",
    )


class BrokerConfig(StrictModel):
    """Where an off-device component finds MQTT: a local broker or AWS IoT Core with X.509."""

    url: str = Field(
        default=DEFAULT_BROKER_URL,
        title="Broker URL",
        description="mqtt://HOST:PORT for plain TCP, mqtts://HOST:PORT for TLS (AWS IoT Core: port 8883).",
    )
    client_id: str | None = Field(
        default=None, title="Client id", description="MQTT client id; AWS IoT policies often pin it to the thing name."
    )
    ca_file: Path | None = Field(default=None, title="CA file", description="CA bundle for TLS (AmazonRootCA1.pem).")
    cert_file: Path | None = Field(default=None, title="Certificate", description="Device X.509 certificate (PEM).")
    key_file: Path | None = Field(default=None, title="Private key", description="Device private key (PEM).")
    keepalive_s: int = Field(default=30, ge=5, le=1200, title="Keep-alive", description="MQTT keep-alive, seconds.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, title="Connect timeout", description="How long to wait for CONNACK."
    )
    max_packet_bytes: int = Field(
        default=132 * 1024,
        ge=1024,
        le=268_435_455,
        title="Maximum packet size",
        description="MQTT 5: the broker never sends us a packet larger than this (it drops it), so a flood of "
        "huge payloads costs no memory here. AWS IoT Core's own limit is 128 KiB of payload.",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto",
        title="MQTT version",
        description="auto: MQTT 5, or 3.1.1 when the broker refuses 5 (the demo's embedded broker). Only MQTT 5 "
        "carries a request's response topic and correlation data, and flags every retained publish.",
    )

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ValueError(f"url {self.url!r} must look like mqtt://HOST:PORT or mqtts://HOST:PORT")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or ""

    @property
    def port(self) -> int:
        parsed = urlparse(self.url)
        return parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"


class CameraConfig(StrictModel):
    """Which image source the classifier captures from."""

    source: Literal["picamera2", "folder", "test-pattern"] = Field(
        default="test-pattern",
        title="Source",
        description="picamera2 on a Raspberry Pi; folder cycles through images in `folder`; test-pattern draws one.",
    )
    folder: Path | None = Field(default=None, title="Folder", description="Images to cycle through (source=folder).")
    folder_fps: float | None = Field(
        default=None,
        gt=0,
        le=120,
        title="Folder as video",
        description="source=folder: play the images as a video at this rate (name order): a capture gets the frame "
        "of that moment, frames nobody captured in time are skipped, as with a real camera. Null: each capture "
        "takes the next image.",
    )
    folder_repeat: bool = Field(
        default=True,
        title="Repeat",
        description="source=folder: start over after the last image; false: captures fail once it was shown.",
    )
    width: int = Field(default=400, ge=32, le=4056, title="Width", description="Capture width in pixels.")
    height: int = Field(default=400, ge=32, le=3040, title="Height", description="Capture height in pixels.")
    jpeg_quality: int = Field(default=90, ge=10, le=100, title="JPEG quality", description="Encoder quality.")
    model_input_size: int | None = Field(
        default=None,
        ge=32,
        le=1024,
        title="Model input size",
        description="picamera2: also stream a low-resolution image this wide (the model's resize size, 256 for "
        "the default model; the height keeps the main stream's aspect), scaled by the image signal processor "
        "instead of the CPU; inference gets it, the main stream is what is kept. Null: inference decodes the main "
        "image.",
    )

    @model_validator(mode="after")
    def _folder_needed(self) -> CameraConfig:
        if self.source == "folder" and self.folder is None:
            raise ValueError("source 'folder' needs `folder`")
        return self


class InferenceClientConfig(StrictModel):
    """How a component reaches the local inference service."""

    service_name: str = Field(
        default=DEFAULT_SERVICE_NAME, title="Service name", description="Name the inference service serves."
    )
    socket_path: Path = Field(
        default_factory=default_inference_socket,
        title="Socket",
        description="Unix socket of the inference service (default: $XDG_RUNTIME_DIR/fieldlens/inference.sock, "
        "else <tmp>/fieldlens-<uid>/inference.sock).",
    )
    peer_uid: int | None = Field(
        default=None,
        ge=0,
        title="Service user id",
        description="The user the inference service must run as (checked with SO_PEERCRED before a frame is "
        "sent); default: this process's own user.",
    )
    timeout_s: float = Field(
        default=5.0, gt=0, le=120, title="Timeout", description="Give up on one inference call after this long."
    )


M = TypeVar("M", bound=BaseModel)


def validate_config(model: type[M], raw: dict[str, Any]) -> M:
    """Validate raw configuration, or raise ConfigurationError listing every problem by key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid {model.__name__}: {problems}") from None


def snake_case(key: str) -> str:
    """``defaultTopK`` -> ``default_top_k``, ``s3Prefix`` -> ``s3_prefix`` (digits stay with their word)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``X`` or ``X | None``), or None for plain values, lists and dicts."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def merge_config(model: type[BaseModel], *layers: dict[str, Any]) -> dict[str, Any]:
    """Merge configuration layers, later ones winning, with ``model``'s keys in snake_case.

    Greengrass configuration is camelCase and flags are snake_case; without normalising, the
    same setting spelled both ways would be two keys and one of them an "unknown" key. Only
    keys that name a field of the schema are normalised: values are data, so a label such as
    ``"Egyptian cat"`` in ``classQuota.classes`` stays exactly as written. A key the schema
    does not know is kept as given, so that validation names it as the user wrote it.
    """
    fields = model.model_fields
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            snake = snake_case(key)
            name = snake if key not in fields and snake in fields else key
            nested = _nested_model(fields[name].annotation) if name in fields else None
            if nested is not None and isinstance(value, dict):
                previous = merged.get(name)
                merged[name] = merge_config(nested, *([previous] if isinstance(previous, dict) else []), value)
            else:
                merged[name] = value
    return merged


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON configuration file (the off-device equivalent of a component's configuration)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read configuration {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"configuration {path} must be a JSON object")
    return document
