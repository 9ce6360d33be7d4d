"""`fieldlens serve`, `classify` and `watch`.

classify and watch print only the answer on stdout, and by default log warnings only, so that
their output can be piped; every failure is an error of the one table (no broker: 3, refused
credentials: 4, nothing answered in time: 5, an error response: 9).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from fieldlens_cli.arguments import (
    DATA_DIR,
    Subcommands,
    broker_arguments,
    broker_config,
    positive_seconds,
    upload_arguments,
)
from fieldlens_cli.output import emit
from fieldlens_cli.requester import Requester
from fieldlens_cli.stack import connect
from fieldlens_cli.supervisor import (
    COMPONENTS,
    UploadOptions,
    configure,
    flag_layers,
    start_components,
    stop_children,
    wait_until_signal_or_exit,
)
from fieldlens_core import topics
from fieldlens_core.bus import Message
from fieldlens_core.config import DEFAULT_SERVICE_NAME, load_config_file, private_socket
from fieldlens_core.errors import ExitCode, InvalidInputError, NotFoundError, TimedOutError
from fieldlens_core.model_package import CARD_FILE, resolve_package_dir

log = logging.getLogger(__name__)


class DefaultLevel(str):
    """The log level `serve` runs at when none is given (main() takes it as the default): a level
    serve can tell from one the person gave, which alone overrides each component's logLevel."""


SERVE_DEFAULT_LEVEL = DefaultLevel("INFO")


def register(commands: Subcommands) -> None:
    serve_parser = commands.add_parser("serve", help="run the inference service, the classifier and the uploader")
    serve_parser.add_argument(
        "--config",
        type=Path,
        help=f"JSON or YAML file, one section per component ({', '.join(COMPONENTS)}) with the keys of its "
        "recipe's ComponentConfiguration; the flags below override it (default: none)",
    )
    broker_arguments(serve_parser, serving=True)
    serve_parser.add_argument(
        "--camera", help="folder:DIR | test-pattern | picamera2 (default: the file's, else test-pattern)"
    )
    serve_parser.add_argument(
        "--field-data", type=Path, help=f"where kept images go (default: the file's, else {DATA_DIR / 'field-images'})"
    )
    serve_parser.add_argument(
        "--model", type=Path, help=f"model package directory (default: the file's modelDir, else {DATA_DIR / 'model'})"
    )
    serve_parser.add_argument(
        "--variant", choices=["auto", "fp32", "int8"], help="model variant (default: the file's, else auto)"
    )
    serve_parser.add_argument("--socket", type=Path, help="inference socket (default: the file's, else a fresh one)")
    serve_parser.add_argument(
        "--service-name", help=f"inference service name (default: the file's, else {DEFAULT_SERVICE_NAME})"
    )
    serve_parser.add_argument("--thing-name", help="the thing named in responses (default: the file's, else host name)")
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
    serve_parser.set_defaults(handler=serve, log_level_default=SERVE_DEFAULT_LEVEL)

    classify_parser = commands.add_parser("classify", help="send one classify request and print the response")
    broker_arguments(classify_parser)
    classify_parser.add_argument("--payload", default="{}", help="request JSON (default: {})")
    classify_parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds to connect and get the answer, together (default %(default)s)",
    )
    classify_parser.set_defaults(handler=classify, log_level_default="WARNING")

    watch_parser = commands.add_parser("watch", help="print each response as it arrives")
    broker_arguments(watch_parser)
    watch_parser.add_argument("--count", type=int, help="exit after this many responses (default: run until Ctrl-C)")
    watch_parser.add_argument(
        "--timeout",
        type=positive_seconds,
        help="watch this many seconds, connecting included; exit 5 if nothing arrived (or fewer than --count) "
        "(default: no limit)",
    )
    watch_parser.set_defaults(handler=watch, log_level_default="WARNING")


def serve(args: argparse.Namespace) -> int:
    """Validate everything first (the file, the flags, the broker URL, the model package), then start.

    A component that cannot start raises ChildFailedError: one line with its own reason, and
    its exit code."""
    sections = load_config_file(args.config) if args.config else {}
    layers = flag_layers(
        name=args.name,
        camera=args.camera,
        field_data=args.field_data,
        model_dir=args.model,
        socket_path=args.socket,
        service_name=args.service_name,
        variant=args.variant,
        thing_name=args.thing_name,
        continuous=args.continuous or None,
        fps=args.fps,
        log_level=None if isinstance(args.log_level, DefaultLevel) else args.log_level,
        upload=None if args.no_upload else upload_options(args),
    )
    configs = configure(
        sections,
        layers,
        broker_config(args),
        upload=not args.no_upload,
        source=str(args.config) if args.config else None,
        default_socket=private_socket(f"serve-{os.getpid()}"),
        default_model_dir=DATA_DIR / "model",
    )
    if args.fps is not None and not configs.classifier.continuous.enabled:
        log.warning(
            "--fps sets continuous mode's rate, and continuous mode is off: add --continuous, or start it with "
            '{"action": "start"} on /request/continuous/%s',
            configs.classifier.name,
        )
    model_dir = configs.inference.model_dir
    if not (resolve_package_dir(model_dir) / CARD_FILE).exists():
        raise NotFoundError(
            f"no model package at {model_dir}", f"Build one with `fieldlens model build-default --out {model_dir}`"
        )
    children = start_components(configs)
    classifier = configs.classifier
    requests, responses = [classifier.effective_request_topic], [classifier.effective_response_topic]
    if classifier.fleet_topics:
        requests.append(topics.FLEET_REQUEST_TOPIC)
        responses.append(topics.FLEET_RESPONSE_TOPIC)
    ready = (
        f"fieldlens ready: requests on {' and '.join(requests)}, responses on {' and '.join(responses)} "
        f"via {configs.broker.url} (pids {', '.join(str(c.pid) for c in children)})"
    )
    if classifier.continuous.enabled:
        ready += f"; continuous mode: events on {topics.event_topic(classifier.name)}"
    reason = wait_until_signal_or_exit(children, args.max_disconnected_s, on_watching=lambda: emit(ready))
    log.info("stopping: %s", reason)
    stop_children(children)
    return ExitCode.OK if reason in ("SIGINT", "SIGTERM") else ExitCode.FAILED


def upload_options(args: argparse.Namespace) -> UploadOptions:
    return UploadOptions(
        bucket=args.bucket,
        prefix=args.prefix,
        endpoint_url=args.endpoint_url,
        region=args.region,
        local_bucket_dir=args.local_bucket_dir.absolute() if args.local_bucket_dir else None,
    )


def _nobody_hint(name: str | None) -> str:
    asked = f"with --name {name}" if name else "(any --name: the request was fleet-wide)"
    return f"Is `fieldlens serve` or a device running {asked} on this broker? A slow device needs a longer --timeout"


def classify(args: argparse.Namespace) -> int:
    """Print the first response; exit 9 (ERROR_RESPONSE) when it is an error, TimedOutError when
    none comes within ``--timeout``, which bounds connecting and waiting together."""
    if args.payload.strip():  # an empty payload is a valid request; anything else must be JSON
        try:
            json.loads(args.payload)
        except ValueError as exc:
            raise InvalidInputError(
                f"--payload is not valid JSON: {exc}", "For example --payload '{\"top_k\": 3}'"
            ) from None
    deadline = time.monotonic() + args.timeout
    bus = connect(broker_config(args, connect_timeout_s=args.timeout), "classify")
    try:
        requester = Requester(bus, topics.request_topic(args.name), topics.response_topic(args.name))
        response = requester.request(args.payload.encode(), max(0.0, deadline - time.monotonic()))
    finally:
        bus.stop()
    if response is None:
        raise TimedOutError(
            f"no response on {topics.response_topic(args.name)} within {args.timeout:g}s", _nobody_hint(args.name)
        )
    emit(json.dumps(response, indent=2))
    return ExitCode.ERROR_RESPONSE if "error" in response else ExitCode.OK


def watch(args: argparse.Namespace) -> int:
    """Print each response until Ctrl-C, ``--count`` of them, or ``--timeout`` seconds; TimedOutError
    when the time ran out with nothing (or fewer than ``--count``) seen."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    settings = {} if args.timeout is None else {"connect_timeout_s": args.timeout}
    bus = connect(broker_config(args, **settings), "watch")
    done = threading.Event()
    seen = [0]
    topic = topics.response_topic(args.name)

    def on_response(message: Message) -> None:
        emit(message.payload.decode(errors="replace"))
        seen[0] += 1
        if args.count is not None and seen[0] >= args.count:
            done.set()

    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        bus.subscribe(topic, on_response)
        log.info("watching %s (Ctrl-C to stop)", topic)
        stopped = done.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    finally:
        bus.stop()
    if not stopped and (seen[0] == 0 or args.count is not None):
        got = "nothing" if seen[0] == 0 else f"{seen[0]} of {args.count} responses"
        raise TimedOutError(f"{got} arrived on {topic} within {args.timeout:g}s", _nobody_hint(args.name))
    return ExitCode.OK
