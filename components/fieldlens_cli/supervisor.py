"""`fieldlens serve`: runs the inference service and the classifier as two child processes.

They are the same entry points Greengrass runs (``python -m fieldlens_inference.main`` and
``python -m fieldlens_classifier.main``), so what is tested here is what runs on a core.
Each child writes one ``<component> ready`` line on stdout when it serves; we start the
classifier only once the inference service is ready, and stop both if either dies.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fieldlens_core.errors import FieldlensError
from fieldlens_core.lifecycle import CONNECTED_WORD, DISCONNECTED_WORD, READY_WORD

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


class ChildFailedError(FieldlensError, RuntimeError):
    """A component process exited, or did not become ready in time."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)  # set while its broker link is up
    disconnected: threading.Event = field(default_factory=threading.Event)  # set while it is down

    @property
    def pid(self) -> int:
        return self.process.pid


def _pump(child: Child) -> None:
    """Watch a child's stdout for its ready line; forward everything else to our stderr."""
    assert child.process.stdout is not None
    for line in child.process.stdout:
        word = line.strip().rsplit(" ", 1)[-1]
        if word == READY_WORD:
            child.ready.set()
        elif word == CONNECTED_WORD:
            child.disconnected.clear()
            child.connected.set()
        elif word == DISCONNECTED_WORD:
            child.connected.clear()
            child.disconnected.set()
        else:
            sys.stderr.write(f"[{child.name}] {line}")
    child.process.wait()
    child.exited.set()


def spawn(
    name: str,
    module: str,
    arguments: Sequence[str],
    env: dict[str, str] | None = None,
    cpus: tuple[int, ...] | None = None,
) -> Child:
    """Run ``python -m module arguments``; with ``cpus``, under taskset from its first instruction
    (a Pi-sized budget on a bigger machine: every thread it starts inherits the set)."""
    pinned = ["taskset", "--cpu-list", ",".join(map(str, cpus))] if cpus else []
    process = subprocess.Popen(
        [*pinned, sys.executable, "-m", module, *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    child = Child(name, process)
    threading.Thread(target=_pump, args=(child,), name=f"pump-{name}", daemon=True).start()
    return child


def wait_ready(child: Child, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until ``child`` says ready; raise ChildFailedError if it exits or times out first."""
    deadline = time.monotonic() + timeout_s
    while not child.ready.wait(0.05):
        if child.exited.is_set():
            raise ChildFailedError(f"{child.name} exited with code {child.process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise ChildFailedError(f"{child.name} was not ready within {timeout_s:.0f}s")


def stop_children(children: Sequence[Child]) -> None:
    """SIGTERM in reverse start order (classifier first, so it drains against a live service)."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", child.name, STOP_TIMEOUT_S)
                child.process.kill()
                child.process.wait()


@dataclass(frozen=True)
class UploadOptions:
    """Where the uploader ships field data: a bucket, or the local stand-in directory."""

    bucket: str | None = None
    prefix: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    local_bucket_dir: Path | None = None
    retry_initial_s: float | None = None


@dataclass(frozen=True)
class ServeOptions:
    broker: str
    name: str
    camera: str
    field_data: Path
    model_dir: Path
    socket_path: Path
    service_name: str
    variant: str = "fp32"
    thing_name: str | None = None
    workers: int | None = None
    queue_size: int | None = None
    allow_spinning: bool = False
    continuous: bool = False
    fps: float | None = None
    cpus: tuple[int, ...] | None = None  # pin the components to these CPUs (taskset), ORT to as many threads
    log_level: str = "INFO"
    upload: UploadOptions | None = None  # None: no uploader process


def inference_arguments(options: ServeOptions) -> list[str]:
    spinning = ["--allow-spinning"] if options.allow_spinning else []
    threads = ["--threads", str(len(options.cpus))] if options.cpus else []
    return [
        *spinning,
        *threads,
        "--model-dir",
        str(options.model_dir),
        "--socket",
        str(options.socket_path),
        "--service-name",
        options.service_name,
        "--variant",
        options.variant,
        "--log-level",
        options.log_level,
    ]


def classifier_arguments(options: ServeOptions) -> list[str]:
    arguments = [
        "--broker",
        options.broker,
        "--name",
        options.name,
        "--camera",
        options.camera,
        "--field-data",
        str(options.field_data),
        "--socket",
        str(options.socket_path),
        "--service-name",
        options.service_name,
        "--log-level",
        options.log_level,
    ]
    for flag, value in (
        ("--thing-name", options.thing_name),
        ("--workers", options.workers),
        ("--queue-size", options.queue_size),
        ("--s3-prefix", options.upload.prefix if options.upload else None),
        ("--fps", options.fps),
    ):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments + (["--continuous"] if options.continuous else [])


def uploader_arguments(options: ServeOptions, upload: UploadOptions) -> list[str]:
    arguments = ["--broker", options.broker, "--field-data", str(options.field_data), "--log-level", options.log_level]
    flags = {
        "--thing-name": options.thing_name,
        "--bucket": upload.bucket,
        "--endpoint-url": upload.endpoint_url,
        "--region": upload.region,
        "--local-bucket-dir": upload.local_bucket_dir,
        "--retry-initial": upload.retry_initial_s,
    }
    for flag, value in flags.items():
        if value is not None:
            arguments += [flag, str(value)]
    return arguments


def start_components(options: ServeOptions) -> list[Child]:
    """Start the components and wait until each is ready; on failure nothing is left running."""
    children: list[Child] = []
    try:
        cpus = options.cpus
        children.append(spawn("inference", "fieldlens_inference.main", inference_arguments(options), cpus=cpus))
        wait_ready(children[-1])
        children.append(spawn("classifier", "fieldlens_classifier.main", classifier_arguments(options), cpus=cpus))
        wait_ready(children[-1])
        if options.upload is not None:
            children.append(spawn("uploader", "fieldlens_uploader.main", uploader_arguments(options, options.upload)))
            wait_ready(children[-1])
    except BaseException:
        stop_children(children)
        raise
    return children


def wait_until_signal_or_exit(
    children: Sequence[Child], max_disconnected_s: float = 60.0, on_watching: Callable[[], None] | None = None
) -> str:
    """Block until SIGINT/SIGTERM, until a child exits, or until a child has been disconnected from
    its broker for ``max_disconnected_s`` (alive but deaf); returns what happened.

    ``on_watching`` runs once the signal handlers are in place: announce readiness there, or a
    SIGTERM sent on reading the announcement can arrive while the default handler still kills."""
    done = threading.Event()
    reason = ["signal"]

    def on_signal(signum: int, frame: object) -> None:
        reason[0] = signal.Signals(signum).name
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:

        def watch(c: Child = child) -> None:
            c.exited.wait()
            reason[0] = f"{c.name} exited with code {c.process.returncode}"
            done.set()

        def watch_link(c: Child = child) -> None:
            while not done.is_set():
                c.disconnected.wait()
                if not c.connected.wait(max_disconnected_s) and c.disconnected.is_set():
                    reason[0] = f"{c.name} has been disconnected from its broker for {max_disconnected_s:g} s"
                    done.set()
                    return

        threading.Thread(target=watch, daemon=True).start()
        threading.Thread(target=watch_link, daemon=True).start()
    if on_watching is not None:
        on_watching()
    done.wait()
    return reason[0]
