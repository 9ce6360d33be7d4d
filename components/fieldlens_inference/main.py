"""Entry point of the inference service component; the only place its adapters are built.

On a Greengrass core (the nucleus sets AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT)
configuration comes from IPC and live updates are validated there; elsewhere from
``--config FILE`` and flags. Flags win over either source: a recipe's Run step passes the
model path that only the nucleus can interpolate.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fieldlens_core.bootstrap import given_flags, load_component_config, run_component
from fieldlens_core.errors import FieldlensError, ModelPackageError
from fieldlens_core.lifecycle import configure_logging, startup_failure
from fieldlens_core.model import share_one_arena
from fieldlens_inference.config import InferenceServiceConfig
from fieldlens_inference.lanes import LaneRunner, lanes_for
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.server import InferenceSocketServer, SocketInUseError
from fieldlens_inference.service import InferenceService

log = logging.getLogger("fieldlens_inference")
COMPONENT = "fieldlens-inference"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMPONENT, description="fieldlens local inference service")
    parser.add_argument("--config", type=str, help="JSON configuration file (off a Greengrass core)")
    parser.add_argument("--model-dir", dest="model_dir")
    parser.add_argument("--socket", dest="socket_path")
    parser.add_argument("--service-name", dest="service_name")
    parser.add_argument("--variant", dest="model_variant", choices=["auto", "fp32", "int8"])
    parser.add_argument("--threads", dest="intra_op_threads", type=int)
    parser.add_argument("--no-spinning", dest="allow_spinning", action="store_const", const=False)
    parser.add_argument("--log-level", dest="log_level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = given_flags(args)
    configure_logging(flags.get("log_level", "INFO"))
    try:
        setup = load_component_config(InferenceServiceConfig, flags, args.config)
    except FieldlensError as exc:  # configuration, or the nucleus
        return startup_failure(log, exc)
    config = setup.config
    logging.getLogger().setLevel(config.log_level)  # the file's logLevel (flags set it before the file was read)
    lanes = lanes_for(config.intra_op_threads)  # counted once, at start
    if lanes > 1:
        share_one_arena()  # the wide and the narrow runs take turns with the same memory
    manager = ModelManager(
        config.model_dir, config.model_variant, config.intra_op_threads, config.allow_spinning, narrow=lanes > 1
    )
    try:
        manager.load_initial()
        service = InferenceService(manager, {config.service_name}, LaneRunner(lanes))
        log.info("%d lane(s): a request alone runs on all of them, requests in flight together on one each", lanes)
        server = InferenceSocketServer(config.socket_path, service, config.max_body_bytes)
    except (ModelPackageError, SocketInUseError, OSError) as exc:
        return startup_failure(log, exc)
    server.start()
    manager.start_watching(config.reload_interval_s)
    log.info("serving %r on %s", config.service_name, config.socket_path)
    return run_component(
        COMPONENT,
        setup,
        [manager.stop, server.stop],
        lambda new: manager.reconfigure(new.model_variant, new.intra_op_threads),
    )


if __name__ == "__main__":
    sys.exit(main())
