"""`label serve` on a LAN: the real page on a thread (uvicorn), reached with the Host header another
machine's browser sends (the connection itself comes in over the loopback: no second machine here)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fieldlens_cli.brokers import free_port
from fieldlens_core.errors import ExitCode, InvalidInputError
from fieldlens_labelling.serve import LabelServer, PageOptions
from tests.helpers.labelling import keep_predicted


def status(url: str, host: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_address_without_an_allowed_name_is_refused_before_listening(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    options = PageOptions(field_data=tmp_path, model_dir=None, cache_dir=tmp_path / "cache", host="0.0.0.0", port=port)
    with pytest.raises(InvalidInputError, match="needs --allow-host"):
        LabelServer(options)
    with socket.socket() as probe:  # nothing was left listening
        probe.bind(("0.0.0.0", port))


def test_lan_mode_answers_another_machines_host_header_and_prints_that_name(tmp_path: Path) -> None:
    ids = keep_predicted(tmp_path / "field", [("hen", 0.9)])
    options = PageOptions(
        field_data=tmp_path / "field",
        model_dir=None,
        cache_dir=tmp_path / "cache",
        host="0.0.0.0",
        port=0,
        allow_hosts=("labelbox.lan",),
    )
    with LabelServer(options) as server:
        port = server.port
        assert server.url.startswith(f"http://labelbox.lan:{port}/?token=")
        assert server.image_url.startswith(f"http://labelbox.lan:{port}/api/images/{{id}}?token=")
        state = f"http://127.0.0.1:{port}/api/state"
        assert status(state, f"labelbox.lan:{port}", server.token) == 200
        assert status(state, f"127.0.0.1:{port}", server.token) == 200  # the machine's own user still can
        assert status(state, f"0.0.0.0:{port}", server.token) == 400
        assert status(state, f"evil.example:{port}", server.token) == 400
        image = f"http://127.0.0.1:{port}/api/images/{ids[0]}"
        assert status(image, f"labelbox.lan:{port}", server.token) == 200


def test_label_serve_on_every_address_without_allow_host_is_one_line_and_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fieldlens_cli.main import main

    monkeypatch.setattr(LabelServer, "run", lambda self: pytest.fail(f"it serves at {self.url}"))
    arguments = ["label", "serve", "--field-data", str(tmp_path), "--model", str(tmp_path / "none")]
    assert main([*arguments, "--host", "0.0.0.0", "--port", "0"]) == ExitCode.INVALID_INPUT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("fieldlens label serve: --host 0.0.0.0 listens on every address and needs --allow-host")
    assert "LAN mode: add --allow-host NAME" in line and line.endswith("(exit 2)")
