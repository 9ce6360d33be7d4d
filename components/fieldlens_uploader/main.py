"""Entry point of the uploader component: its bus, its configuration, its loops."""

from __future__ import annotations

import argparse
import logging
import sys

from fieldlens_core.bootstrap import add_broker_arguments, given_flags, run_component, set_up_component
from fieldlens_core.config import BROKER_FLAGS
from fieldlens_core.errors import FieldlensError
from fieldlens_core.lifecycle import configure_logging, startup_failure
from fieldlens_fielddata.retry import Backoff
from fieldlens_uploader.build import build_uploader
from fieldlens_uploader.config import UploaderConfig
from fieldlens_uploader.service import UploaderService

log = logging.getLogger("fieldlens_uploader")
COMPONENT = "fieldlens-uploader"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMPONENT, description="fieldlens field-data uploader component")
    parser.add_argument("--config", help="JSON configuration file (off a Greengrass core)")
    add_broker_arguments(parser)
    parser.add_argument("--field-data", dest="field_data_dir")
    parser.add_argument("--thing-name", dest="thing_name")
    parser.add_argument("--bucket")
    parser.add_argument("--region")
    parser.add_argument("--endpoint-url", dest="endpoint_url")
    parser.add_argument("--local-bucket-dir", dest="local_bucket_dir")
    parser.add_argument("--poll-interval", dest="poll_interval_s", type=float)
    parser.add_argument("--retry-initial", dest="retry_initial_s", type=float)
    parser.add_argument("--retry-max", dest="retry_max_s", type=float)
    parser.add_argument("--status-interval", dest="status_interval_s", type=float)
    parser.add_argument("--log-level", dest="log_level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = given_flags(args, skip=("config", *BROKER_FLAGS))
    configure_logging(flags.get("log_level", "INFO"))
    try:
        setup = set_up_component(UploaderConfig, flags, args, lambda c: f"fieldlens-uploader-{c.thing_name}")
    except (FieldlensError, ConnectionError) as exc:  # configuration, broker URL, TLS files, the broker itself
        return startup_failure(log, exc)
    config = setup.config
    logging.getLogger().setLevel(config.log_level)
    service = UploaderService(
        build_uploader(config),
        Backoff(config.retry_initial_s, config.retry_max_s),
        setup.bus,
        config.effective_status_topic,
        config.poll_interval_s,
        config.status_interval_s,
    )
    service.start()
    return run_component(COMPONENT, setup, [service.stop])  # updates are validated, applied on restart


if __name__ == "__main__":
    sys.exit(main())
