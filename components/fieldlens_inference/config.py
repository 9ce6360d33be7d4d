"""Configuration of the inference service component."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fieldlens_core.config import DEFAULT_SERVICE_NAME, ComponentSettings, default_inference_socket
from fieldlens_core.inference.protocol import DEFAULT_MAX_BODY_BYTES


class InferenceServiceConfig(ComponentSettings):
    service_name: str = Field(
        default=DEFAULT_SERVICE_NAME,
        title="Service name",
        description="Name callers pass as `service`; the seed's v1 connector used beverage-classifier.",
    )
    socket_path: Path = Field(
        default_factory=default_inference_socket,
        title="Socket",
        description="Unix socket to listen on, in a directory no other user can write (created 0700 if missing). "
        "Default: $XDG_RUNTIME_DIR/fieldlens/inference.sock, else <tmp>/fieldlens-<uid>/inference.sock.",
    )
    model_dir: Path = Field(
        title="Model directory",
        description="A model package, or a directory whose `current` link points at one. "
        "On Greengrass: {fieldlens.Model:artifacts:decompressedPath}/fieldlens-model.",
    )
    model_variant: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        title="Model variant",
        description="Which ONNX file of the package to serve. auto: int8 where this CPU's int8 kernels are exact "
        "(ARM, x86 with AVX-512 VNNI or AVX-VNNI) and it times faster than fp32 at load, else fp32.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        title="Threads",
        description="ONNX Runtime threads of a request alone, and the lanes of requests run side by side (counted "
        "at start); 0 = one per CPU the service may use.",
    )
    allow_spinning: bool = Field(
        default=True,
        title="Spin-wait",
        description="Let ONNX Runtime's threads spin between the steps of one inference; they stop when it ends, "
        "so they never burn CPU between requests. Off: each step wakes sleeping threads (slower, and more CPU).",
    )
    max_batch: int = Field(
        default=2,
        ge=1,
        le=64,
        title="Max batch (no longer used)",
        description="No longer used: requests in flight together run side by side, one ONNX Runtime thread each, "
        "instead of in batches (components/README.md, 'The inference service'). Accepted so that configurations "
        "deployed with it stay valid.",
    )
    reload_interval_s: float = Field(
        default=2.0, gt=0, le=3600, title="Reload check", description="How often to look for a new model version."
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1024, title="Max image", description="Largest image accepted, bytes."
    )
