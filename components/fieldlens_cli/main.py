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
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

import shtab

from fieldlens_core.errors import ExitCode, FieldlensError, exit_code_table
from fieldlens_core.lifecycle import configure_logging
from fieldlens_core.outside_errors import mapped_errors

log = logging.getLogger("fieldlens")

COMMAND_MODULES = (
    "fieldlens_cli.commands",
    "fieldlens_cli.status_command",
    "fieldlens_cli.demo",
    "fieldlens_cli.bench",
    "fieldlens_cli.field_data",
    "fieldlens_cli.model_commands",
    "fieldlens_cli.retrain_commands",
    "fieldlens_cli.greengrass_commands",
)
"""The registry: each module's ``register(subparsers)`` adds its commands, each with a ``handler``.
A module keeps its heavy imports (numpy, torch, boto3) inside its handlers, so that every
command starts as fast as the lightest. A command that wants only its answer on the terminal
(classify, watch) sets ``log_level_default="WARNING"``."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help names its default: appended where the help does not say it already.

    An option without a default (None) or a plain switch says in its own words what happens when
    it is not given; ``tests/components/fieldlens_cli/test_main.py`` checks that each one does.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The conventions of a command-line tool, for every command and subcommand alike.

    - no abbreviated flags: ``--ca`` is not ``--camera``;
    - a mistake in a subcommand shows that subcommand's usage, not the top level's (argparse hands
      a subcommand's unknown flags up to the top level, which would print its own usage);
    - defaults in every option's help (:class:`HelpFormatter`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "fieldlens":
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.INVALID_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def command_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def version() -> str:
    try:
        return importlib.metadata.version("fieldlens")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fieldlens", description=__doc__, epilog=f"exit codes:\n{exit_code_table()}")
    parser.add_argument("--version", action="version", version=f"fieldlens {version()}")
    shtab.add_argument_to(
        parser, "--print-completion", help=f"print a shell completion script ({', '.join(shtab.SUPPORTED_SHELLS)})"
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what is logged on stderr (default: INFO, WARNING for classify and watch); DEBUG also shows "
        "the traceback behind an error",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in command_modules():
        module.register(commands)
    return parser


def report(command: str, exc: FieldlensError, debug: bool) -> ExitCode:
    """One line on stderr, no log-record prefix: what went wrong, what to do, the exit code."""
    if debug:
        log.debug("the error's traceback", exc_info=exc)
    sys.stderr.write(f"fieldlens {command}: {exc.one_line()} (exit {exc.exit_code.value})\n")
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure becomes one line and an exit code of the one table
    (``fieldlens --help`` prints it): the project's errors as they are, the outside world's
    translated by fieldlens_core.outside_errors, anything else reported as a bug."""
    args = build_parser().parse_args(argv)
    args.log_level = args.log_level or getattr(args, "log_level_default", "INFO")
    configure_logging(args.log_level)
    debug = args.log_level == "DEBUG"
    command = " ".join(part for part in (args.command, *_subcommands(args)) if part)
    try:
        with mapped_errors():
            code: int = args.handler(args)
    except FieldlensError as exc:
        return report(command, exc, debug)
    except BrokenPipeError:  # the reader went away (`| head`): console_main ends quietly
        raise
    except KeyboardInterrupt:
        sys.stderr.write(f"fieldlens {command}: interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # not the project's, not a known outside failure: a bug
        if debug:
            log.exception("fieldlens %s: internal error, a bug", command)
            return ExitCode.FAILED
        hint = "Run again with --log-level DEBUG for the traceback, and report it"
        return report(command, FieldlensError(f"internal error, a bug: {type(exc).__name__}: {exc}", hint), debug)
    return code


def _subcommands(args: argparse.Namespace) -> list[str]:
    """The nested command words (``field-data ls``, ``model install``) for the error line."""
    return [value for key, value in vars(args).items() if key.endswith("_command") and isinstance(value, str)]


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
