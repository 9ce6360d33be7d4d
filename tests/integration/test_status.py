"""`fieldlens status` against the real `fieldlens serve` processes over the real mosquitto broker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldlens_core.errors import ExitCode
from tests.helpers.broker import Mosquitto
from tests.integration.test_serve import Serve

pytestmark = [pytest.mark.slow, pytest.mark.broker]

CLI = [sys.executable, "-m", "fieldlens_cli.main"]


@pytest.fixture
def served(mosquitto: Mosquitto, tiny_package: Path, tmp_path: Path) -> Iterator[Serve]:
    arguments = ["--broker", mosquitto.url, "--name", "hens", "--camera", "test-pattern", "--model", str(tiny_package)]
    arguments += ["--field-data", str(tmp_path / "field"), "--thing-name", "coop-7", "--socket", str(tmp_path / "s")]
    process = Serve([*arguments, "--local-bucket-dir", str(tmp_path / "bucket")], tmp_path / "serve.log")
    yield process
    process.stop()


def status(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "status", *argv], capture_output=True, text=True, timeout=60)


def test_status_reports_every_component_of_a_served_device(served: Serve, mosquitto: Mosquitto) -> None:
    result = status("--broker", mosquitto.url, "--name", "hens", "--expect", "1", "--timeout", "20")
    assert result.returncode == ExitCode.OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("coop-7  name hens  answered ")
    assert "tiny-colour 1.0.0 fp32" in result.stdout
    # serve starts the uploader after the classifier, so its first report is relayed
    assert "uploaded" in next(line for line in lines if line.lstrip().startswith("uploads"))

    raw = status("--broker", mosquitto.url, "--expect", "1", "--timeout", "20", "--json")  # the fleet-wide pair
    answer = json.loads(raw.stdout)[0]
    assert answer["thing"] == "coop-7" and answer["uploads"]["thing"] == "coop-7"
    assert answer["queue"]["workers"] >= 1 and answer["continuous"]["running"] is False


def test_a_name_nobody_serves_times_out_with_a_hint(served: Serve, mosquitto: Mosquitto) -> None:
    result = status("--broker", mosquitto.url, "--name", "geese", "--timeout", "1")
    assert result.returncode == ExitCode.TIMED_OUT and result.stdout == ""
    assert "no device answered on /response/status/geese within 1 s" in result.stderr
    assert "same --name and --broker" in result.stderr
