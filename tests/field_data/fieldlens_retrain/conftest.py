"""What the retrain tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def quantized(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The fp32 graphs a retrain has packaging.quantize_int8 quantize, in order (it still does)."""
    from fieldlens_retrain import packaging

    calls: list[Path] = []
    quantize = packaging.quantize_int8

    def counted(fp32: Path, int8: Path, calibration: Any) -> None:
        calls.append(fp32)
        quantize(fp32, int8, calibration)

    monkeypatch.setattr(packaging, "quantize_int8", counted)
    return calls
