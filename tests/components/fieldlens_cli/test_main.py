from __future__ import annotations

import argparse
import logging

import pytest

from fieldlens_cli import main as cli
from fieldlens_core.errors import EXIT_CONFIGURATION, ConfigurationError


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
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(args: argparse.Namespace) -> int:
        raise ConfigurationError("bucket: not a bucket name")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(handler=failing)  # the top level's default reaches every subcommand without its own
    for leaf in leaf_parsers(parser).values():
        leaf.set_defaults(handler=failing)
    with caplog.at_level(logging.ERROR):
        assert cli.main(["watch"]) == EXIT_CONFIGURATION
    assert "fieldlens watch: bucket: not a bucket name (exit 2)" in caplog.text


def test_classify_without_a_broker_exits_3_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    from fieldlens_cli.brokers import free_port

    with caplog.at_level(logging.ERROR):
        assert cli.main(["classify", "--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 3
    (line,) = [r.getMessage() for r in caplog.records if r.name == "fieldlens"]
    assert line.startswith("fieldlens classify: cannot reach MQTT broker") and line.endswith("(exit 3)")
