"""The README's configuration reference names every key the components accept."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from fieldlens_classifier.config import ClassifierConfig, ContinuousConfig
from fieldlens_core.config import CameraConfig, InferenceClientConfig
from fieldlens_core.errors import EXIT_MEANINGS, ErrorCode, ExitCode
from fieldlens_inference.config import InferenceServiceConfig
from fieldlens_uploader.config import UploaderConfig

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        (ClassifierConfig, ""),
        (CameraConfig, "camera."),
        (ContinuousConfig, "continuous."),
        (InferenceClientConfig, "inference."),
        (InferenceServiceConfig, ""),
        (UploaderConfig, ""),
    ],
)
def test_every_configuration_key_is_documented(model: type[BaseModel], prefix: str) -> None:
    missing = [name for name in model.model_fields if f"| `{prefix}{to_camel(name)}` |" not in README]
    assert missing == []


def test_every_error_code_is_documented() -> None:
    assert [code.value for code in ErrorCode if f"| `{code.value}` |" not in README] == []


def test_the_exit_code_table_is_the_codes() -> None:
    assert [code.value for code in ExitCode if f"| {code.value} | {EXIT_MEANINGS[code]} |" not in README] == []
