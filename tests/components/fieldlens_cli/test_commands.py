"""`classify`, `watch` and `serve`'s checks before anything starts, over the real mosquitto: only the
answer on stdout, one line on stderr for a failure, and the exit code of the one table."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldlens_cli import main as cli
from fieldlens_core.bus import Message
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig
from fieldlens_core.errors import ErrorCode, ExitCode
from fieldlens_core.messages import ClassifyResponse
from tests.helpers.broker import Mosquitto

pytestmark = pytest.mark.broker

NAME = "cmdtest"


@pytest.fixture
def answering(mosquitto: Mosquitto) -> Iterator[MqttBus]:
    """A device stand-in on the real broker that answers every request on /request/classify/cmdtest
    with a CAMERA_UNAVAILABLE error, as a classifier without a camera does."""
    bus = MqttBus(BrokerConfig(url=mosquitto.url), "cmdtest-device").connect()

    def answer(message: Message) -> None:
        request_id = json.loads(message.payload)["request_id"]
        failure = ClassifyResponse.failure(request_id, "stand-in", ErrorCode.CAMERA_UNAVAILABLE, "no camera")
        bus.publish(f"/response/prediction/{NAME}", failure.to_payload())

    bus.subscribe(f"/request/classify/{NAME}", answer)
    yield bus
    bus.stop()


def one_error_line(capsys: pytest.CaptureFixture[str], command: str, code: ExitCode) -> str:
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert captured.out == ""
    assert line.startswith(f"fieldlens {command}: ") and line.endswith(f"(exit {code.value})")
    return line


def test_an_error_response_is_printed_and_exits_9_with_nothing_on_stderr(
    mosquitto: Mosquitto, answering: MqttBus
) -> None:
    """The real command line, whose default log level for classify is WARNING: stdout holds the answer only."""
    result = subprocess.run(
        [sys.executable, "-m", "fieldlens_cli.main", "classify", "--broker", mosquitto.url, "--name", NAME],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.ERROR_RESPONSE, result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "CAMERA_UNAVAILABLE"
    assert result.stderr == ""


def test_no_answer_is_timed_out_with_a_hint(mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["classify", "--broker", mosquitto.url, "--name", "nobody_here", "--timeout", "0.5"])
    assert code == ExitCode.TIMED_OUT
    line = one_error_line(capsys, "classify", ExitCode.TIMED_OUT)
    assert "no response on /response/prediction/nobody_here within 0.5s" in line and "--name nobody_here" in line


@pytest.mark.parametrize("url", ["127.0.0.1:1883", "mqtt://127.0.0.1:99999", "tcp://127.0.0.1:1883"])
@pytest.mark.parametrize("command", ["classify", "watch"])
def test_a_broker_url_mistake_is_one_line_showing_the_form(
    url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([command, "--broker", url]) == ExitCode.INVALID_INPUT
    line = one_error_line(capsys, command, ExitCode.INVALID_INPUT)
    assert f"broker URL {url!r}" in line and "mqtt://HOST:PORT" in line


def test_a_certificate_without_mqtts_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["classify", "--ca", str(tmp_path / "ca.pem")]) == ExitCode.INVALID_INPUT
    assert "write the URL as mqtts://" in one_error_line(capsys, "classify", ExitCode.INVALID_INPUT)


def test_watch_times_out_when_nothing_arrives(mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["watch", "--broker", mosquitto.url, "--name", "silent", "--timeout", "0.5"])
    assert code == ExitCode.TIMED_OUT
    assert "nothing arrived on /response/prediction/silent within 0.5s" in one_error_line(
        capsys, "watch", ExitCode.TIMED_OUT
    )


def test_watch_prints_what_arrives_and_only_that(mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    """watch runs in this (the main) thread for its signal handlers; a publisher repeats one response
    until watch has seen it, so no guess is made about when it subscribed."""
    publisher = MqttBus(BrokerConfig(url=mosquitto.url), "cmdtest-publisher").connect()
    seen = threading.Event()
    response = ClassifyResponse.failure("watched-1", "stand-in", ErrorCode.BUSY, "busy").to_payload()

    def publish_until_seen() -> None:
        while not seen.wait(0.1):
            publisher.publish("/response/prediction/watched", response)

    thread = threading.Thread(target=publish_until_seen, daemon=True)
    thread.start()
    try:
        code = cli.main(["watch", "--broker", mosquitto.url, "--name", "watched", "--count", "1", "--timeout", "30"])
    finally:
        seen.set()
        thread.join()
        publisher.stop()
    assert code == ExitCode.OK
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["request_id"] == "watched-1"


def test_serve_refuses_a_bad_file_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("fieldlens.Classifier:\n  camera:\n    sorce: folder\nfieldlens.Uploader:\n  buket: b\n")
    assert cli.main(["serve", "--config", str(config)]) == ExitCode.INVALID_INPUT
    line = one_error_line(capsys, "serve", ExitCode.INVALID_INPUT)
    assert f"configuration {config}, fieldlens.Classifier: camera: unknown key 'sorce'; allowed: source," in line
    assert f"configuration {config}, fieldlens.Uploader: unknown key 'buket'" in line  # both sections at once
    config.write_text('{"fieldlens.Inference": {}}')
    assert cli.main(["serve", "--config", str(config)]) == ExitCode.INVALID_INPUT
    line = one_error_line(capsys, "serve", ExitCode.INVALID_INPUT)
    assert "unknown section 'fieldlens.Inference'; allowed: fieldlens.InferenceService, fieldlens.Classifier" in line


def test_serve_without_a_model_says_how_to_build_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"fieldlens.InferenceService": {"modelDir": str(tmp_path / "from-file")}}))
    assert cli.main(["serve", "--config", str(config)]) == ExitCode.NOT_FOUND
    line = one_error_line(capsys, "serve", ExitCode.NOT_FOUND)
    assert f"no model package at {tmp_path / 'from-file'}" in line and "fieldlens model build-default" in line
    assert cli.main(["serve", "--config", str(config), "--model", str(tmp_path / "flag")]) == ExitCode.NOT_FOUND
    assert f"no model package at {tmp_path / 'flag'}" in one_error_line(capsys, "serve", ExitCode.NOT_FOUND)


def test_the_timeout_bounds_connecting_too(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that accepts and never answers MQTT: classify gives up after its --timeout, not the default 10 s."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"mqtt://127.0.0.1:{silent.getsockname()[1]}"
        assert cli.main(["classify", "--broker", url, "--timeout", "0.5"]) == ExitCode.CANNOT_CONNECT
    assert "no CONNACK within 0.5s" in one_error_line(capsys, "classify", ExitCode.CANNOT_CONNECT)


def test_serve_says_that_a_rate_without_continuous_mode_does_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="fieldlens_cli.commands"):
        assert cli.main(["serve", "--fps", "5", "--model", str(tmp_path / "none")]) == ExitCode.NOT_FOUND
    assert "continuous mode is off: add --continuous" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fieldlens_cli.commands"):
        assert (
            cli.main(["serve", "--continuous", "--fps", "5", "--model", str(tmp_path / "none")]) == ExitCode.NOT_FOUND
        )
    assert "continuous mode is off" not in caplog.text
