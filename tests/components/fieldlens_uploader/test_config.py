from __future__ import annotations

import pytest

from fieldlens_uploader.config import UploaderConfig


def test_an_old_prefix_key_is_ignored_with_a_warning_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Keys come from the sidecars now; a device upgraded with its old configuration must still start."""
    config = UploaderConfig.model_validate({"prefix": "old", "thing_name": "coop-1"})
    assert config.thing_name == "coop-1" and not hasattr(config, "prefix")
    assert "prefix is ignored" in caplog.text
