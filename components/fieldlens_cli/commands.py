"""`fieldlens serve`, `classify` and `watch`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

from fieldlens_cli.arguments import DATA_DIR, Subcommands, broker_arguments, upload_arguments
from fieldlens_cli.output import emit
from fieldlens_cli.requester import Requester
from fieldlens_cli.stack import connect
from fieldlens_cli.supervisor import (
    ChildFailedError,
    ServeOptions,
    UploadOptions,
    start_components,
    stop_children,
    wait_until_signal_or_exit,
)
from fieldlens_core import topics
from fieldlens_core.bus import Message
from fieldlens_core.config import DEFAULT_SERVICE_NAME, private_socket
from fieldlens_core.errors import ConfigurationError
from fieldlens_core.model_package import CARD_FILE, resolve_package_dir

log = logging.getLogger(__name__)

EXIT_PREDICTION, EXIT_ERROR_RESPONSE, EXIT_TIMEOUT = 0, 1, 2  # and 3, no broker: BusConnectionError.exit_code


def register(commands: Subcommands) -> None:
    serve_parser = commands.add_parser("serve", help="run the inference service and the classifier")
    broker_arguments(serve_parser, serving=True)
    serve_parser.add_argument("--camera", default="test-pattern", help="folder:DIR | test-pattern | picamera2")
    serve_parser.add_argument("--field-data", type=Path, default=DATA_DIR / "field-images")
    serve_parser.add_argument("--model", type=Path, default=DATA_DIR / "model", help="model package directory")
    serve_parser.add_argument("--variant", default="fp32", choices=["fp32", "int8"])
    serve_parser.add_argument("--socket", type=Path, help="inference socket (default: a fresh one in the temp dir)")
    serve_parser.add_argument("--service-name", default=DEFAULT_SERVICE_NAME)
    serve_parser.add_argument("--thing-name")
    upload_arguments(serve_parser)
    serve_parser.add_argument("--no-upload", action="store_true", help="do not run the field-data uploader")
    serve_parser.add_argument(
        "--continuous", action="store_true", help="classify frames continuously and publish events (README)"
    )
    serve_parser.add_argument(
        "--fps", type=float, help="continuous mode's frames per second (default 5; 0: as fast as inference allows)"
    )
    serve_parser.add_argument(
        "--max-disconnected-s",
        type=float,
        default=60.0,
        help="stop (exit 1) when a component stays disconnected from the broker this long (default %(default)s)",
    )
    serve_parser.set_defaults(handler=serve)

    classify_parser = commands.add_parser("classify", help="send one classify request and print the response")
    broker_arguments(classify_parser)
    classify_parser.add_argument("--payload", default="{}", help="request JSON (default: {})")
    classify_parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default %(default)s)")
    classify_parser.set_defaults(handler=classify)

    watch_parser = commands.add_parser("watch", help="print each response as it arrives")
    broker_arguments(watch_parser)
    watch_parser.add_argument("--count", type=int, help="exit after this many responses")
    watch_parser.set_defaults(handler=watch)


def serve(args: argparse.Namespace) -> int:
    socket_path = args.socket or private_socket(f"serve-{os.getpid()}")
    if not (resolve_package_dir(args.model) / CARD_FILE).exists():
        log.error(
            "no model package at %s; build one with `fieldlens model build-default --out %s`", args.model, args.model
        )
        return 1
    options = ServeOptions(
        broker=args.broker,
        name=args.name,
        camera=args.camera,
        field_data=args.field_data,
        model_dir=args.model,
        socket_path=socket_path,
        service_name=args.service_name,
        variant=args.variant,
        thing_name=args.thing_name,
        log_level=args.log_level,
        continuous=args.continuous,
        fps=args.fps,
        upload=None if args.no_upload else upload_options(args),
    )
    try:
        children = start_components(options)
    except (ChildFailedError, ConfigurationError) as exc:
        log.error("could not start: %s", exc)
        return 1
    ready = (
        f"fieldlens ready: requests on {topics.request_topic(args.name)} and {topics.FLEET_REQUEST_TOPIC}, "
        f"responses on {topics.response_topic(args.name)} and {topics.FLEET_RESPONSE_TOPIC} via {args.broker} "
        f"(pids {', '.join(str(c.pid) for c in children)})"
    )
    if args.continuous:
        ready += f"; continuous mode: events on {topics.event_topic(args.name)}"
    reason = wait_until_signal_or_exit(children, args.max_disconnected_s, on_watching=lambda: emit(ready))
    log.info("stopping: %s", reason)
    stop_children(children)
    return 0 if reason in ("SIGINT", "SIGTERM") else 1


def upload_options(args: argparse.Namespace) -> UploadOptions:
    return UploadOptions(
        bucket=args.bucket,
        prefix=args.prefix,
        endpoint_url=args.endpoint_url,
        region=args.region,
        local_bucket_dir=args.local_bucket_dir.absolute(),
    )


def classify(args: argparse.Namespace) -> int:
    bus = connect(args.broker, "classify")  # BusConnectionError: main() reports it, exit 3
    try:
        requester = Requester(bus, topics.request_topic(args.name), topics.response_topic(args.name))
        response = requester.request(args.payload.encode(), args.timeout)
    finally:
        bus.stop()
    if response is None:
        log.error("no response on %s within %ss", topics.response_topic(args.name), args.timeout)
        return EXIT_TIMEOUT
    emit(json.dumps(response, indent=2))
    return EXIT_ERROR_RESPONSE if "error" in response else EXIT_PREDICTION


def watch(args: argparse.Namespace) -> int:
    bus = connect(args.broker, "watch")
    done = threading.Event()
    seen = [0]

    def on_response(message: Message) -> None:
        emit(message.payload.decode(errors="replace"))
        seen[0] += 1
        if args.count is not None and seen[0] >= args.count:
            done.set()

    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    bus.subscribe(topics.response_topic(args.name), on_response)
    log.info("watching %s (Ctrl-C to stop)", topics.response_topic(args.name))
    done.wait()
    bus.stop()
    return 0
