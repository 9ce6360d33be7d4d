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
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, Union, get_args, get_origin
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from fieldlens_core.errors import ConfigurationError, InvalidInputError

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
BROKER_URL_HINT = (
    "Write it as mqtt://HOST:PORT for plain TCP (for example mqtt://127.0.0.1:1883) or mqtts://HOST:PORT "
    "for TLS (AWS IoT Core: mqtts://ENDPOINT:8883 with --ca, --cert and --key)"
)
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


class BrokerAddress(NamedTuple):
    tls: bool
    host: str
    port: int


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (ports 1883 and 8883 by default), or
    InvalidInputError saying what is wrong with the URL and showing the form it takes.

    The one place a broker URL is read: the CLI's ``--broker``, a component's, and a
    configuration file's all get the same message. ``urlparse`` alone accepts
    ``127.0.0.1:1883`` (no scheme: it reads nothing useful) and raises a bare ValueError
    for port 99999 only when the port is first read, at connect time.
    """
    if "://" not in url:
        raise InvalidInputError(f"broker URL {url!r} has no scheme", BROKER_URL_HINT)
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts"):
        raise InvalidInputError(f"broker URL {url!r}: unknown scheme {parsed.scheme!r}", BROKER_URL_HINT)
    if not parsed.hostname:
        raise InvalidInputError(f"broker URL {url!r} names no host", BROKER_URL_HINT)
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise InvalidInputError(f"broker URL {url!r} has a path; a broker URL ends at the port", BROKER_URL_HINT)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        given = parsed.netloc.rpartition(":")[2]
        raise InvalidInputError(f"broker URL {url!r}: port {given!r} is not a port (1 to 65535)", BROKER_URL_HINT)
    tls = parsed.scheme == "mqtts"
    return BrokerAddress(tls, parsed.hostname, port or (8883 if tls else 1883))


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
        address = parse_broker_url(self.url)  # InvalidInputError, which pydantic lets through as it is
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (--cert and --key)")
        if not address.tls and (self.ca_file or self.cert_file):
            raise ValueError(f"a CA or certificate is only used over TLS: write the URL as mqtts://, not {self.url}")
        return self

    @property
    def host(self) -> str:
        return parse_broker_url(self.url).host

    @property
    def port(self) -> int:
        return parse_broker_url(self.url).port

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.url).tls


BROKER_FLAGS = ("broker", "client_id", "ca_file", "cert_file", "key_file")
"""The broker flags' dests, the same on every command and component: --broker, --client-id, --ca, --cert, --key."""


def broker_config_from(flags: Any, **settings: Any) -> BrokerConfig:
    """The BrokerConfig that parsed broker flags (an argparse namespace) name, with ``settings``
    besides (a connect timeout). InvalidInputError for a malformed URL, ConfigurationError otherwise."""
    raw = {k: getattr(flags, k) for k in BROKER_FLAGS if getattr(flags, k, None) is not None}
    raw["url"] = raw.pop("broker", DEFAULT_BROKER_URL)
    return validate_config(BrokerConfig, {**raw, **settings}, "broker settings")


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


def validate_config(model: type[M], raw: dict[str, Any], source: str | None = None) -> M:
    """Validate raw configuration, or raise ConfigurationError listing every problem by key.

    ``source`` says where the configuration came from (a file and its section) for the message;
    by default the model's name. An unknown key is named with the keys allowed in its place:
    a typo is then fixed from the message alone.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(model, error) for error in exc.errors())
        raise ConfigurationError(f"invalid {source or model.__name__}: {problems}") from None


def _problem(model: type[BaseModel], error: Any) -> str:
    """One validation error as ``key: message``; an unknown key as ``unknown key 'x'; allowed: a, b``."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden" and loc:
        where = ".".join(map(str, loc[:-1]))
        problem = f"unknown key {str(loc[-1])!r}"
        holder = _model_at(model, loc[:-1])
        if holder is not None:
            problem += "; allowed: " + ", ".join(f.alias or n for n, f in holder.model_fields.items())
        return f"{where}: {problem}" if where else problem
    message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]  # no "Value error, "
    return f"{'.'.join(map(str, loc))}: {message}" if loc else message


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X and ``X | None`` -> X, so that the type under them can be walked."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that holds the key at ``loc`` (pydantic's error location), or None where it cannot be told."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if get_origin(current) in (Union, UnionType):  # a tagged union: pydantic puts the tag in the location
            tagged = [m for m in get_args(current) if isinstance(m, type) and issubclass(m, BaseModel)]
            current = next((m for m in tagged if _tag_of(m) == part), None)
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            name = part if part in fields else next((n for n, f in fields.items() if f.alias == part), None)
            current = fields[name].annotation if name is not None else None
        elif get_origin(current) in (list, tuple, dict) and get_args(current):
            current = get_args(current)[-1]  # a list's item, a dict's value
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _tag_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("type")
    return field.default if field is not None else None


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


YAML_SUFFIXES = (".yaml", ".yml")


def _yaml_mapping(text: str) -> Any:
    """YAML parsed, its errors as ValueError; PyYAML imported only here, so a JSON configuration
    needs none (a component's artifact pins only what it imports)."""
    try:
        import yaml
    except ImportError:
        raise ValueError("reading YAML needs PyYAML (pip install pyyaml); or give the configuration as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a configuration file, JSON or YAML (by its suffix: .yaml, .yml), into a mapping: the
    off-device equivalent of a component's configuration. YAML because the recipes are YAML:
    their ``DefaultConfiguration`` can be copied into a file as it is."""
    kind = "YAML" if path.suffix.lower() in YAML_SUFFIXES else "JSON"
    try:
        text = path.read_text()
        document = _yaml_mapping(text) if kind == "YAML" else json.loads(text)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())
        raise ConfigurationError(
            f"cannot read configuration {path}: {reason}", f"It must be a readable {kind} file"
        ) from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"configuration {path} must be a {kind} mapping of keys to values")
    return document
