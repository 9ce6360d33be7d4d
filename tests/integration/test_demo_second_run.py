"""`fieldlens demo` run twice in a row, and the commands it prints, as a person follows them."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fieldlens_cli.brokers import free_port, uses_mosquitto
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.slow]

CLI = [sys.executable, "-m", "fieldlens_cli.main"]


def _demo_data(default_model: Path, tmp_path: Path) -> Path:
    data = tmp_path / "demo"
    shutil.copytree(default_model, data / "model")
    return data


def test_the_demo_run_twice_in_a_row_takes_the_same_port_and_counts_only_its_own_images(
    default_model: Path, tmp_path: Path
) -> None:
    data, port = _demo_data(default_model, tmp_path), free_port()
    runs = [
        subprocess.run(
            [*CLI, "demo", "--data-dir", str(data), "--port", str(port)], capture_output=True, text=True, timeout=180
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert (
            f"MQTT broker on mqtt://127.0.0.1:{port}: " in run.stdout
        )  # the second run listens where the first left TIME_WAIT
        assert f"classify --broker mqtt://127.0.0.1:{port} " in run.stdout
        assert "The uploader shipped 6 of them" in run.stdout  # 12 images are in the directory after the second
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(list((data / "field-images").rglob("*.jpg"))) == 12


def test_the_commands_the_demo_prints_work_as_printed_and_an_mqtt5_client_publishes(
    default_model: Path, tmp_path: Path
) -> None:
    if not uses_mosquitto(prefer_mosquitto=True) or shutil.which("mosquitto_pub") is None:
        pytest.skip("Debian's mosquitto and mosquitto-clients are not installed (make test installs them)")
    data, port = _demo_data(default_model, tmp_path), free_port()
    stderr = (tmp_path / "demo.err").open("w")
    process = subprocess.Popen(
        [*CLI, "demo", "--data-dir", str(data), "--port", str(port), "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(
            lambda: any("Ctrl-C to stop." in line for line in lines) or process.poll() is not None, 180, "serving"
        )
        output = "".join(lines)
        assert process.poll() is None, (tmp_path / "demo.err").read_text()[-3000:]
        assert f"MQTT broker on mqtt://127.0.0.1:{port}: mosquitto " in output and "3.1.1 only" not in output
        classify = next(line.strip() for line in lines if " classify --broker " in line)
        result = subprocess.run(shlex.split(classify), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert re.search(r'"predictions"', result.stdout), result.stdout

        responses: list[bytes] = []
        watcher = MqttBus(BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), "demo-test-watcher").connect()
        try:
            watcher.subscribe("/response/prediction/beverage_container", lambda m: responses.append(m.payload))
            publish = ["mosquitto_pub", "-V", "5", "-h", "127.0.0.1", "-p", str(port), "-q", "1"]
            publish += ["-t", "/request/classify/beverage_container", "-m", '{"request_id": "v5-pub", "top_k": 1}']
            published = subprocess.run(publish, capture_output=True, text=True, timeout=30)
            assert published.returncode == 0, published.stderr
            wait_until(lambda: any(b'"v5-pub"' in payload for payload in responses), 30, "the MQTT 5 request answered")
        finally:
            watcher.stop()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        stderr.close()
    assert code == 0
    assert "Traceback" not in (tmp_path / "demo.err").read_text()
