from __future__ import annotations

import argparse

import pytest

from fieldlens_cli import main as cli
from fieldlens_core.errors import ConfigurationError, ExitCode


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return {path: parser}
    leaves = {}
    for name, sub in actions[0].choices.items():
        leaves.update(leaf_parsers(sub, (*path, name)))
    return leaves


def test_every_command_a_module_registers_has_a_handler() -> None:
    leaves = leaf_parsers(cli.build_parser())
    assert ("serve",) in leaves and ("model", "install") in leaves and ("field-data", "sync") in leaves
    missing = [" ".join(path) for path, parser in leaves.items() if not callable(parser.get_default("handler"))]
    assert not missing


def test_a_failure_from_the_tree_is_one_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(args: argparse.Namespace) -> int:
        raise ConfigurationError("bucket: not a bucket name")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(handler=failing)  # the top level's default reaches every subcommand without its own
    for leaf in leaf_parsers(parser).values():
        leaf.set_defaults(handler=failing)
    assert cli.main(["watch"]) == ExitCode.INVALID_INPUT
    assert capsys.readouterr().err == "fieldlens watch: bucket: not a bucket name (exit 2)\n"


def test_classify_without_a_broker_exits_3_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from fieldlens_cli.brokers import free_port

    assert cli.main(["classify", "--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 3
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("fieldlens classify: cannot reach MQTT broker") and line.endswith("(exit 3)")


def test_every_option_names_its_default_or_says_what_happens_without_it() -> None:
    """A default that is a value is appended by the help formatter; one that is None must be said in words."""
    silent = []
    for path, parser in leaf_parsers(cli.build_parser()).items():
        for action in parser._actions:
            switch = isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction))
            if not action.option_strings or switch or action.required or action.default is not None:
                continue
            if "default" not in (action.help or ""):
                silent.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert silent == []


def test_flags_are_never_abbreviated_and_a_subcommands_mistake_shows_its_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--cam", "picamera2"])  # --cam was once taken as --camera, and --ca too
    assert exited.value.code == ExitCode.INVALID_INPUT
    err = capsys.readouterr().err
    assert err.startswith("usage: fieldlens serve ") and "unrecognized arguments: --cam" in err


def test_an_outside_error_is_translated_and_a_bug_says_it_is_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from botocore.exceptions import NoRegionError

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for failure, code, says in (
        (NoRegionError(), ExitCode.INVALID_INPUT, "no AWS region given. Pass --region REGION"),
        (OSError(98, "Address already in use"), ExitCode.IN_USE, "address already in use"),
        (ZeroDivisionError("division by zero"), ExitCode.FAILED, "internal error, a bug: ZeroDivisionError"),
    ):

        def failing(args: argparse.Namespace, failure: Exception = failure) -> int:
            raise failure

        for leaf in leaf_parsers(parser).values():
            leaf.set_defaults(handler=failing)
        assert cli.main(["watch"]) == code
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"fieldlens watch: {says}") and line.endswith(f"(exit {code.value})")
