"""What `fieldlens demo` prints for the person to type next: true for this run, from a fresh clone."""

from __future__ import annotations

import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fieldlens_cli import demo
from fieldlens_cli.brokers import free_port, port_is_free
from fieldlens_fielddata.directory import FieldDataDir
from tests.components.fieldlens_cli.test_brokers import _leave_time_wait
from tests.helpers.field_data import START, keep_images


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_from_a_fresh_clone_the_hint_is_the_virtualenvs_script_as_it_was_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / ".venv" / "bin" / "fieldlens")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/fieldlens", "demo"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert demo.fieldlens_command() == ".venv/bin/fieldlens"


def test_the_bare_name_when_fieldlens_on_path_is_this_very_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / ".venv" / "bin" / "fieldlens")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/fieldlens", "demo"])
    monkeypatch.setenv("PATH", str(script.parent))
    assert demo.fieldlens_command() == "fieldlens"


def test_not_the_bare_name_when_fieldlens_on_path_is_another_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / "clone" / ".venv" / "bin" / "fieldlens")
    other = _script(tmp_path / "usr" / "bin" / "fieldlens")
    monkeypatch.chdir(tmp_path / "clone")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", str(other.parent))
    assert demo.fieldlens_command() == str(script)


def test_under_python_m_the_hint_is_the_script_beside_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / ".venv" / "bin" / "fieldlens")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(Path(demo.__file__).with_name("main.py")), "demo"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert demo.fieldlens_command() == ".venv/bin/fieldlens"


def test_the_preferred_port_is_kept_when_only_time_wait_holds_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _leave_time_wait()
    monkeypatch.setattr(demo, "DEFAULT_PORT", port)
    assert demo.choose_port(None) == port
    assert capsys.readouterr().out == ""


def test_a_preferred_port_in_use_is_said_in_one_line_with_the_port_taken_instead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        monkeypatch.setattr(demo, "DEFAULT_PORT", port)
        taken = demo.choose_port(None)
        [line] = capsys.readouterr().out.splitlines()
    assert taken != port and port_is_free(taken)
    assert f"Port {port} is in use" in line and f"took port {taken} instead" in line


def test_a_port_given_with_port_is_used_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert demo.choose_port(port) == port and capsys.readouterr().out == ""


def _response(image_id: str, kept: bool = True) -> tuple[dict[str, Any], float]:
    return {"predictions": [], "image": {"id": image_id, "kept": kept}}, 1.0


def test_the_uploaded_count_is_this_runs_not_the_data_directorys(tmp_path: Path) -> None:
    earlier = keep_images(tmp_path, 6)
    this_run = keep_images(tmp_path, 3, start=START + timedelta(days=1))  # the same directory, a day later
    directory = FieldDataDir(tmp_path)
    for image in [*earlier, *this_run[:2]]:
        pair = directory.find(image.image_id)
        assert pair is not None
        directory.mark_uploaded(pair, b"{}")
    responses = [_response(image.image_id) for image in this_run] + [_response("not-kept", kept=False)]
    ids = demo.kept_ids([*responses, ({"error": {"code": "BAD_REQUEST"}}, 1.0)])
    assert ids == {image.image_id for image in this_run}
    assert demo.wait_for_upload(tmp_path, ids, timeout_s=0.5) == 2  # 2 of this run's 3; the 6 earlier ones do not count
