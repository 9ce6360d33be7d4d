"""`fieldlens demo`: the whole edge path on embedded defaults, no AWS account, nothing to configure.

A local MQTT broker (Debian's mosquitto when installed, else the embedded amqtt), the default
model (built on first run), a folder camera over the scikit-image sample photos, the two real
component processes, and a few classify requests whose answers are printed as a table.

What it prints is what the person types next, so it must be true for this run: the port the
broker actually took (1883, the CLI's default, unless something else listens there), the
`fieldlens` command as this person can run it, and this run's counts only (the data directory
keeps earlier runs' images).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fieldlens_cli.arguments import DATA_DIR, Subcommands
from fieldlens_cli.brokers import EMBEDDED_LIMIT, preferred_port, uses_mosquitto
from fieldlens_cli.model_commands import ensure_default_model
from fieldlens_cli.output import emit
from fieldlens_cli.stack import local_stack
from fieldlens_cli.supervisor import ServeOptions, UploadOptions, wait_until_signal_or_exit
from fieldlens_core import topics
from fieldlens_core.config import DEFAULT_BROKER_URL, DEFAULT_SERVICE_NAME, private_socket
from fieldlens_core.model_package import read_card, resolve_package_dir
from fieldlens_fielddata.directory import FieldDataDir, PairState
from fieldlens_fielddata.sidecar import Sidecar, SidecarError

log = logging.getLogger(__name__)

THING = "demo-device"
REQUEST_TIMEOUT_S = 30.0
UPLOAD_WAIT_S = 15.0
DEFAULT_PORT = urlsplit(DEFAULT_BROKER_URL).port or 1883
"""The port the CLI's commands reach without --broker: the demo's broker takes it when it can."""


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("demo", help="the whole edge path on embedded defaults")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--port", type=int, help=f"the broker's port (default: {DEFAULT_PORT} if free, else any free port)"
    )
    parser.add_argument("--keep-running", action="store_true", help="keep serving after the demo requests")
    parser.add_argument("--loop", action="store_true", help="the retrain loop: collect, label, retrain, reload")
    parser.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    if args.loop:
        from fieldlens_cli.loop_demo import run_loop_demo

        return run_loop_demo(args.data_dir, args.port)
    return run_demo(args.data_dir, args.port, args.keep_running)


def wait_for_upload(field: Path, image_ids: set[str], timeout_s: float) -> int:
    """Give the uploader (it polls every 2 s) a moment to ship the images this run kept; returns how
    many of them it shipped. Only these: the data directory also holds earlier runs' images."""
    directory = FieldDataDir(field)
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        shipped = sum(
            1 for image_id in image_ids if (pair := directory.find(image_id)) and pair.state is PairState.UPLOADED
        )
        if shipped == len(image_ids) or time.monotonic() > deadline:
            return shipped
        pause.wait(0.2)


def kept_ids(responses: list[tuple[dict[str, Any], float]]) -> set[str]:
    """The ids of the images this run's responses say were kept."""
    images = [response.get("image") or {} for response, _ in responses]
    return {str(image["id"]) for image in images if image.get("kept") and image.get("id")}


def choose_port(requested: int | None) -> int:
    """``--port`` as given (the broker refuses it in one line if it is taken), else
    :data:`DEFAULT_PORT` when a broker can listen there (TIME_WAIT from the last run counts as
    free), else any free port, said in one line: the hints below then carry that port."""
    if requested is not None:
        return requested
    port = preferred_port(DEFAULT_PORT)
    if port != DEFAULT_PORT:
        emit(
            f"Port {DEFAULT_PORT} is in use by another program (`ss -ltnp 'sport = :{DEFAULT_PORT}'` names it); "
            f"the demo's broker took port {port} instead, and the commands below use it."
        )
    return port


def fieldlens_command() -> str:
    """`fieldlens` as the person can type it here: the bare name when it is on PATH and is this
    very script, else the script's path as they ran it (``.venv/bin/fieldlens`` from a fresh
    clone, where the virtualenv's bin is not on PATH), else the script beside this interpreter
    (``python -m fieldlens_cli.main``), relative to the working directory when it is below it."""
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if invoked is not None and invoked.name == "fieldlens" and invoked.is_file():
        script, shown = invoked, sys.argv[0]
    else:
        script = Path(sys.executable).parent / "fieldlens"
        if not script.is_file():
            return f"{shlex.quote(sys.executable)} -m fieldlens_cli.main"
        shown = str(script)
        if script.is_relative_to(Path.cwd()):
            shown = str(script.relative_to(Path.cwd()))
    on_path = shutil.which("fieldlens")
    if on_path is not None and os.path.samefile(on_path, script):
        return "fieldlens"
    return shlex.quote(shown if "/" in shown else f"./{shown}")


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

    command = fieldlens_command()
    on_mosquitto = uses_mosquitto(prefer_mosquitto=True)
    with local_stack(options, "demo", choose_port(port), prefer_mosquitto=True) as stack:
        emit(f"MQTT broker on {stack.url}: {stack.broker}")
        if not on_mosquitto:
            emit(EMBEDDED_LIMIT)
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
        shipped = wait_for_upload(field, kept_ids(answered), UPLOAD_WAIT_S)
        emit(f"The uploader shipped {shipped} of them to {bucket} (it stands in for an S3 bucket: pass --bucket)")
        emit("The last row is a deliberately malformed request: errors come back as structured responses.")
        own_request = f"{command} classify --broker {stack.url} --payload '{{\"top_k\": 3}}'"
        if keep_running:
            still = f"\nStill serving. In another terminal:\n  {own_request}\n  {command} watch --broker {stack.url}"
            wait_until_signal_or_exit(stack.children, on_watching=lambda: emit(still + "\nCtrl-C to stop."))
        else:
            again = "" if stack.url == DEFAULT_BROKER_URL else f" --port {stack.url.rsplit(':', 1)[-1]}"
            emit(f"\nTo send your own requests: run `{command} demo --keep-running{again}`, then from another terminal")
            emit(f"  {own_request}\n(or publish to {request_topic} from any MQTT client).")
    return 0
