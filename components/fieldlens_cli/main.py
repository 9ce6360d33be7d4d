"""`fieldlens`: one command for the whole suite (`fieldlens COMMAND --help` for each).

fieldlens demo      everything on embedded defaults: broker, model, photos, requests
fieldlens serve     run the components in the foreground; classify and watch talk to them
fieldlens bench     measure latency, throughput, memory, cold start
fieldlens field-data, label, dataset, retrain, model   the retrain loop
fieldlens build, publish, deploy                        to a fleet of Greengrass cores
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType

from fieldlens_core.errors import FieldlensError
from fieldlens_core.lifecycle import configure_logging

log = logging.getLogger("fieldlens")

COMMAND_MODULES = (
    "fieldlens_cli.commands",
    "fieldlens_cli.demo",
    "fieldlens_cli.bench",
    "fieldlens_cli.field_data",
    "fieldlens_cli.model_commands",
    "fieldlens_cli.retrain_commands",
    "fieldlens_cli.greengrass_commands",
)
"""The registry: each module's ``register(subparsers)`` adds its commands, each with a ``handler``.
A module keeps its heavy imports (numpy, torch, boto3) inside its handlers, so that every
command starts as fast as the lightest."""


def command_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldlens", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    for module in command_modules():
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure from the project's tree that a command does not report itself
    becomes one line naming it, and an exit code: 2 invalid configuration or input, 3 cannot
    reach a broker or the nucleus, 4 not authorised, 1 anything else (the README's "Command line")."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        code: int = args.handler(args)
    except FieldlensError as exc:
        log.error("fieldlens %s: %s (exit %d)", args.command, exc, exc.exit_code)
        return exc.exit_code
    return code


def console_main() -> int:
    """The `fieldlens` script: like main(), and quiet when its output is cut short (`| head`).

    SIGPIPE stays ignored (Python's default): restoring it would let a write to a closed MQTT
    or inference socket kill the process, instead of raising an error it handles.
    """
    try:
        return main()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more can reach the reader; flush silently at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
