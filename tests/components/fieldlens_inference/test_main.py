from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_inference import main as inference_main


def test_the_inference_service_refuses_to_start_without_a_valid_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert inference_main.main(["--model-dir", str(tmp_path), "--socket", str(tmp_path / "s.sock")]) == 1
    assert "no model card" in caplog.text
    assert inference_main.main(["--socket", str(tmp_path / "s.sock")]) == 2  # model_dir is required
