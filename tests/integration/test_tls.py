"""AWS IoT Core's way in, from the command line: mqtts:// with --ca, --cert, --key and --client-id,
against Debian's mosquitto with TLS and client certificates made here with openssl (a CA, the
broker's certificate for 127.0.0.1, a client certificate; ``require_certificate``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldlens_samples.photos import write_sample_photos
from tests.helpers.broker import Certificates, TlsMosquitto, make_certificates
from tests.integration.test_serve import CLI, Serve

pytestmark = [pytest.mark.slow, pytest.mark.broker]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMosquitto]:
    mosquitto = TlsMosquitto(tmp_path_factory.mktemp("mosquitto-tls"), certificates)
    yield mosquitto
    mosquitto.stop()


def run(command: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, command, *arguments], capture_output=True, text=True, timeout=60)


def one_line(result: subprocess.CompletedProcess[str], command: str, code: int) -> str:
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.splitlines()
    assert result.stdout == "" and line.startswith(f"fieldlens {command}: ") and line.endswith(f"(exit {code})")
    return line


def test_classify_and_watch_through_serve_over_tls(
    broker: TlsMosquitto, certificates: Certificates, default_model: Path, tmp_path: Path
) -> None:
    """serve hands the certificates to each component; classify and watch use them too."""
    write_sample_photos(tmp_path / "all")
    photos = tmp_path / "camera"
    photos.mkdir()
    shutil.copy(tmp_path / "all" / "coffee.jpg", photos / "coffee.jpg")
    arguments = [*broker.client_flags(), "--client-id", certificates.client_name, "--camera", f"folder:{photos}"]
    arguments += ["--model", str(default_model), "--socket", str(tmp_path / "s.sock"), "--field-data", str(tmp_path)]
    serve = Serve([*arguments, "--local-bucket-dir", str(tmp_path / "bucket")], tmp_path / "serve.log")
    try:
        assert f"via {broker.url}" in serve.ready_line
        watcher = subprocess.Popen(
            [*CLI, "--log-level", "INFO", "watch", *broker.client_flags(), "--count", "1", "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watcher.stderr is not None
        for line in watcher.stderr:  # the watcher logs once it is subscribed
            if "watching" in line:
                break
        result = run("classify", *broker.client_flags(), "--payload", '{"request_id": "over-tls"}')
        assert result.returncode == 0 and result.stderr == "", result.stderr
        response = json.loads(result.stdout)
        assert response["request_id"] == "over-tls" and response["predictions"][0]["label"] == "espresso"
        out, _ = watcher.communicate(timeout=60)
        assert watcher.returncode == 0 and json.loads(out)["request_id"] == "over-tls"
    finally:
        assert serve.stop() == 0


@pytest.mark.parametrize("command", ["classify", "watch"])
def test_a_wrong_ca_cannot_connect_and_says_which_flag(
    command: str, broker: TlsMosquitto, certificates: Certificates
) -> None:
    line = one_line(run(command, *broker.client_flags(ca=certificates.other_ca), "--timeout", "10"), command, 3)
    assert "certificate of the MQTT broker at" in line and "is not trusted" in line and "--ca" in line


@pytest.mark.parametrize("command", ["classify", "watch"])
def test_no_client_certificate_is_not_authorised_and_says_which_flags(command: str, broker: TlsMosquitto) -> None:
    line = one_line(run(command, *broker.client_flags(client_cert=False), "--timeout", "10"), command, 4)
    assert "wants a client certificate" in line and "--cert and --key" in line


def test_a_certificate_the_broker_does_not_trust_is_not_authorised(
    broker: TlsMosquitto, certificates: Certificates
) -> None:
    stranger = ["--cert", str(certificates.other_ca), "--key", str(certificates.other_key)]
    line = one_line(
        run("classify", *broker.client_flags(client_cert=False), *stranger, "--timeout", "10"), "classify", 4
    )
    assert "--cert" in line


def test_plain_mqtt_to_the_tls_port_says_it_is_one(broker: TlsMosquitto) -> None:
    line = one_line(run("classify", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--timeout", "10"), "classify", 3)
    assert "mqtts://" in line


def test_serve_without_a_client_certificate_stops_with_the_classifiers_reason(
    broker: TlsMosquitto, certificates: Certificates, default_model: Path, tmp_path: Path
) -> None:
    arguments = [*broker.client_flags(client_cert=False), "--model", str(default_model), "--no-upload"]
    result = subprocess.run(
        [*CLI, "--log-level", "WARNING", "serve", *arguments, "--socket", str(tmp_path / "s.sock")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"fieldlens serve: classifier could not start: MQTT broker at {broker.url} wants a client")
    assert "--cert and --key" in line
