"""Entry point of the classifier component; the only place its adapters are built.

On a Greengrass core: IPC for MQTT (IoT Core or local pub/sub) and for configuration,
with proposals validated before they are accepted. Elsewhere: paho-mqtt to ``--broker``
and configuration from ``--config`` and flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from fieldlens_classifier.build import build_classifier
from fieldlens_classifier.config import ClassifierConfig
from fieldlens_core.bootstrap import add_broker_arguments, given_flags, run_component, set_up_component
from fieldlens_core.camera.registry import parse_camera_flag
from fieldlens_core.config import BROKER_FLAGS
from fieldlens_core.errors import FieldlensError, StartupError
from fieldlens_core.lifecycle import configure_logging, startup_failure

log = logging.getLogger("fieldlens_classifier")
COMPONENT = "fieldlens-classifier"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMPONENT, description="fieldlens classifier component")
    parser.add_argument("--config", help="JSON configuration file (off a Greengrass core)")
    add_broker_arguments(parser)
    parser.add_argument("--name")
    parser.add_argument("--thing-name", dest="thing_name")
    parser.add_argument("--camera", help="folder:DIR | test-pattern | picamera2")
    parser.add_argument("--field-data", dest="field_data_dir")
    parser.add_argument("--s3-prefix", dest="s3_prefix", help="key prefix of kept images in the bucket")
    parser.add_argument("--socket", help="inference service socket")
    parser.add_argument("--service-name", dest="service_name")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--queue-size", dest="queue_size", type=int)
    parser.add_argument("--log-level", dest="log_level")
    parser.add_argument("--continuous", action="store_true", help="start continuous mode (README, Continuous mode)")
    parser.add_argument(
        "--fps", type=float, help="continuous mode's frames per second (default 5; 0: as fast as inference allows)"
    )
    return parser.parse_args(argv)


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Flags shaped like ClassifierConfig: nested camera and inference sections."""
    flags = given_flags(args, skip=("config", "camera", "socket", "service_name", "continuous", "fps", *BROKER_FLAGS))
    if args.camera:
        flags["camera"] = parse_camera_flag(args.camera)
    inference = {k: v for k, v in (("socket_path", args.socket), ("service_name", args.service_name)) if v}
    if inference:
        flags["inference"] = inference
    continuous: dict[str, Any] = {"enabled": True} if args.continuous else {}
    if args.fps is not None:
        continuous["fps"] = args.fps or None  # 0: no rate, as fast as inference allows
    if continuous:
        flags["continuous"] = continuous
    return flags


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level or "INFO")
    try:
        flags = config_flags(args)  # a --camera that is no camera: ConfigurationError, one line like the rest
        setup = set_up_component(
            ClassifierConfig, flags, args, lambda c: f"fieldlens-classifier-{c.thing_name}-{c.name}"
        )
    except (FieldlensError, ConnectionError) as exc:  # configuration, broker URL, TLS files, the broker itself
        return startup_failure(log, exc)
    logging.getLogger().setLevel(setup.config.log_level)
    classifier, closing = build_classifier(setup.config, setup.bus)
    try:
        classifier.start()
    except (StartupError, ConnectionError) as exc:  # a subscription the accessControl does not allow
        classifier.stop()
        setup.bus.stop()
        return startup_failure(log, exc)
    return run_component(COMPONENT, setup, closing, classifier.update_config)


if __name__ == "__main__":
    sys.exit(main())
