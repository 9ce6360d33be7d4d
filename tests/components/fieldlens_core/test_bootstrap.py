"""Start-up on a Greengrass core: a component that cannot reach the nucleus says why in one line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldlens_classifier import main as classifier_main
from fieldlens_core.bootstrap import NUCLEUS_SOCKET_ENV, connect_nucleus
from fieldlens_core.errors import ExitCode, NucleusConnectionError
from fieldlens_inference import main as inference_main
from fieldlens_uploader import main as uploader_main

MAINS: dict[str, Callable[[list[str]], int]] = {
    "classifier": classifier_main.main,
    "inference": inference_main.main,
    "uploader": uploader_main.main,
}


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The socket variable set, SVCUID not: a component started by hand on a core device."""
    monkeypatch.setenv(NUCLEUS_SOCKET_ENV, str(tmp_path / "ipc.socket"))
    monkeypatch.delenv("SVCUID", raising=False)


@pytest.fixture
def no_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A token, but no nucleus listening where the variable points."""
    monkeypatch.setenv(NUCLEUS_SOCKET_ENV, str(tmp_path / "missing" / "ipc.socket"))
    monkeypatch.setenv("SVCUID", "not-a-real-token")


def test_without_a_token_the_error_says_this_process_was_not_started_by_the_nucleus(no_token: None) -> None:
    with pytest.raises(NucleusConnectionError, match="not started by the Greengrass nucleus") as raised:
        connect_nucleus()
    assert NUCLEUS_SOCKET_ENV in raised.value.message and "KeyError" not in raised.value.message


def test_without_a_nucleus_the_error_names_the_socket(no_socket: None, tmp_path: Path) -> None:
    with pytest.raises(NucleusConnectionError, match="cannot connect to the Greengrass nucleus") as raised:
        connect_nucleus()
    assert str(tmp_path / "missing" / "ipc.socket") in raised.value.message


@pytest.mark.parametrize("situation", ["no_token", "no_socket"])
@pytest.mark.parametrize("component", list(MAINS))
def test_each_component_exits_3_with_one_line_and_no_traceback(
    component: str, situation: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    request.getfixturevalue(situation)
    caplog.set_level(logging.INFO)
    assert MAINS[component]([]) == ExitCode.CANNOT_CONNECT
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "Greengrass nucleus" in errors[0].getMessage() and "\n" not in errors[0].getMessage()
