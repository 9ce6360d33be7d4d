from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_classifier import main as classifier_main
from fieldlens_cli.brokers import free_port


def test_flags_shape_the_nested_configuration(tmp_path: Path) -> None:
    args = classifier_main.parse_args(
        ["--camera", f"folder:{tmp_path}", "--socket", "/s.sock", "--name", "hens", "--workers", "3"]
    )
    assert classifier_main.config_flags(args) == {
        "name": "hens",
        "workers": 3,
        "camera": {"source": "folder", "folder": str(tmp_path)},
        "inference": {"socket_path": "/s.sock"},
    }


def test_continuous_flags_start_continuous_mode_at_a_rate() -> None:
    assert classifier_main.config_flags(classifier_main.parse_args(["--continuous", "--fps", "2.5"])) == {
        "continuous": {"enabled": True, "fps": 2.5}
    }
    assert classifier_main.config_flags(classifier_main.parse_args(["--fps", "8"])) == {"continuous": {"fps": 8.0}}
    assert classifier_main.config_flags(classifier_main.parse_args(["--fps", "0"])) == {"continuous": {"fps": None}}
    assert "continuous" not in classifier_main.config_flags(classifier_main.parse_args([]))


def test_invalid_configuration_exits_2_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"defaultTopK": 0, "colour": "red"}')
    assert classifier_main.main(["--config", str(config)]) == 2
    assert "colour" in caplog.text and "default_top_k" in caplog.text


def test_an_unreachable_broker_exits_3(caplog: pytest.LogCaptureFixture) -> None:
    assert classifier_main.main(["--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 3
    assert "cannot reach MQTT broker" in caplog.text


def test_a_name_the_access_control_does_not_allow_exits_4_naming_the_entry_to_add(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a user hits after setting `name: hens` in a deployment and not the recipe's accessControl."""
    import logging

    from fieldlens_core import bootstrap
    from fieldlens_core.bootstrap import NUCLEUS_SOCKET_ENV
    from fieldlens_core.errors import ExitCode
    from tests.helpers.ipc import FakeGreengrassIpc

    nucleus = FakeGreengrassIpc(
        {"name": "hens", "fieldDataDir": str(tmp_path / "field"), "camera": {"source": "test-pattern"}},
        allowed=("/request/classify/beverage_container", "/request/classify", "/response/#"),
    )
    monkeypatch.setenv(NUCLEUS_SOCKET_ENV, str(tmp_path / "ipc.socket"))
    monkeypatch.setattr(bootstrap, "connect_nucleus", lambda: nucleus)
    try:
        assert classifier_main.main([]) == ExitCode.NOT_AUTHORISED
    finally:
        nucleus.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "'/request/classify/hens'" in errors[0].getMessage()
    assert "accessControl.aws.greengrass.ipc.mqttproxy" in errors[0].getMessage()
