from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_classifier import main as classifier_main
from fieldlens_cli.embedded_broker import free_port


def test_flags_shape_the_nested_configuration() -> None:
    args = classifier_main.parse_args(
        ["--camera", "folder:/photos", "--socket", "/s.sock", "--name", "hens", "--workers", "3"]
    )
    assert classifier_main.config_flags(args) == {
        "name": "hens",
        "workers": 3,
        "camera": {"source": "folder", "folder": "/photos"},
        "inference": {"socket_path": "/s.sock"},
    }


def test_invalid_configuration_exits_2_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"defaultTopK": 0, "colour": "red"}')
    assert classifier_main.main(["--config", str(config)]) == 2
    assert "colour" in caplog.text and "default_top_k" in caplog.text


def test_an_unreachable_broker_exits_1(caplog: pytest.LogCaptureFixture) -> None:
    assert classifier_main.main(["--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach MQTT broker" in caplog.text
