"""`fieldlens demo`: the whole edge path on embedded defaults, no AWS account, nothing to configure.

An embedded MQTT broker, the default model (built on first run), a folder camera over the
scikit-image sample photos, the two real component processes, and a few classify requests
whose answers are printed as a table.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from fieldlens_cli.arguments import DATA_DIR, Subcommands
from fieldlens_cli.brokers import free_port
from fieldlens_cli.model_commands import ensure_default_model
from fieldlens_cli.output import emit
from fieldlens_cli.stack import local_stack
from fieldlens_cli.supervisor import ServeOptions, UploadOptions, wait_until_signal_or_exit
from fieldlens_core import topics
from fieldlens_core.config import DEFAULT_SERVICE_NAME, private_socket
from fieldlens_core.model_package import read_card, resolve_package_dir
from fieldlens_fielddata.directory import FieldDataDir, PairState
from fieldlens_fielddata.sidecar import Sidecar, SidecarError

log = logging.getLogger(__name__)

THING = "demo-device"
REQUEST_TIMEOUT_S = 30.0
UPLOAD_WAIT_S = 15.0


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("demo", help="the whole edge path on embedded defaults")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--port", type=int, help="embedded broker port (default: 1883 if free, else any free port)")
    parser.add_argument("--keep-running", action="store_true", help="keep serving after the demo requests")
    parser.add_argument("--loop", action="store_true", help="the retrain loop: collect, label, retrain, reload")
    parser.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    if args.loop:
        from fieldlens_cli.loop_demo import run_loop_demo

        return run_loop_demo(args.data_dir, args.port)
    return run_demo(args.data_dir, args.port, args.keep_running)


def wait_for_upload(field: Path, timeout_s: float) -> int:
    """Give the uploader (it polls every 2 s) a moment to ship what the demo kept; returns how many it did."""
    directory = FieldDataDir(field)
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while directory.queue_stats().queued and time.monotonic() < deadline:
        pause.wait(0.2)
    return sum(1 for pair in directory.pairs() if pair.state is PairState.UPLOADED)


def preferred_port() -> int:
    """1883 (the CLI's default broker address) when it is free, else any free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 1883))
            return 1883
        except OSError:
            return free_port()


def _photo_of(response: dict[str, Any], directory: FieldDataDir) -> str:
    pair = directory.find(response.get("image", {}).get("id", ""))
    try:
        sidecar = directory.read(pair) if pair else None
    except (SidecarError, OSError):
        sidecar = None
    return str(sidecar.capture.get("file", "?")) if isinstance(sidecar, Sidecar) else "?"


def print_table(responses: list[tuple[dict[str, Any], float]], field: Path) -> None:
    directory = FieldDataDir(field)
    emit(f"{'photo':<16} {'prediction':<24} {'conf':>6}  {'runner-up':<22} {'ms':>6}  kept as")
    emit("-" * 110)
    for response, latency in responses:
        if "error" in response:
            emit(f"{'-':<16} {response['error']['code']:<24} {'':>6}  {response['error']['message'][:60]}")
            continue
        first, second = response["predictions"][0], response["predictions"][1]
        emit(
            f"{_photo_of(response, directory):<16} {first['label'][:24]:<24} {first['confidence']:>6.3f}  "
            f"{second['label'][:22]:<22} {latency:>6.1f}  {response['image'].get('s3_key', '-')}"
        )


def run_demo(data_dir: Path, port: int | None, keep_running: bool) -> int:
    from fieldlens_samples.photos import write_sample_photos

    data_dir = data_dir.absolute()
    model_dir, photos, field = data_dir / "model", data_dir / "photos", data_dir / "field-images"
    bucket = data_dir / "bucket"
    ensure_default_model(model_dir)
    photo_paths = write_sample_photos(photos)
    card = read_card(resolve_package_dir(model_dir))

    def options(url: str) -> ServeOptions:
        return ServeOptions(
            broker=url,
            name=topics.DEFAULT_NAME,
            camera=f"folder:{photos}",
            field_data=field,
            model_dir=model_dir,
            socket_path=private_socket(f"demo-{os.getpid()}"),
            service_name=DEFAULT_SERVICE_NAME,
            thing_name=THING,
            log_level="WARNING",
            upload=UploadOptions(local_bucket_dir=bucket),
        )

    with local_stack(options, "demo", port or preferred_port()) as stack:
        emit(f"Embedded MQTT broker on {stack.url}")
        emit(f"Serving {card.name} {card.version}: camera = {len(photo_paths)} photos in {photos}")
        request_topic, response_topic = (
            topics.request_topic(topics.DEFAULT_NAME),
            topics.response_topic(topics.DEFAULT_NAME),
        )
        emit(f"Publishing classify requests to {request_topic}, reading {response_topic}\n")
        requester = stack.requester()
        answered: list[tuple[dict[str, Any], float]] = []
        for payload in [b'{"top_k": 3}'] * len(photo_paths) + [b'{"top_k": "three"}']:
            pending = requester.send(payload)
            response = pending.wait(REQUEST_TIMEOUT_S)
            if response is None:
                log.error("no response within %ss", REQUEST_TIMEOUT_S)
                return 1
            answered.append((response, pending.latency_ms))
        print_table(answered, field)
        emit(f"\nField images and their JSON sidecars were kept under {field}")
        shipped = wait_for_upload(field, UPLOAD_WAIT_S)
        emit(f"The uploader shipped {shipped} of them to {bucket} (it stands in for an S3 bucket: pass --bucket)")
        emit("The last row is a deliberately malformed request: errors come back as structured responses.")
        own_request = f"fieldlens classify --broker {stack.url} --payload '{{\"top_k\": 3}}'"
        if keep_running:
            still = f"\nStill serving. In another terminal:\n  {own_request}\n  fieldlens watch --broker {stack.url}"
            wait_until_signal_or_exit(stack.children, on_watching=lambda: emit(still + "\nCtrl-C to stop."))
        else:
            emit("\nTo send your own requests: run `fieldlens demo --keep-running`, then from another terminal")
            emit(f"  {own_request}\n(or publish to {request_topic} from any MQTT client).")
    return 0
