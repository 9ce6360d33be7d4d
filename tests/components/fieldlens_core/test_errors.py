"""One exception tree: every exception the project defines derives from FieldlensError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from fieldlens_core.errors import ErrorCode, FieldlensError

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(
    path.name for folder in ("components", "field_data", "infra") for path in (ROOT / folder).glob("fieldlens_*")
)


def project_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, f"{package}.")]
    return names


@pytest.mark.parametrize("name", project_modules())
def test_every_exception_defined_here_is_a_fieldlens_error(name: str) -> None:
    module = importlib.import_module(name)
    defined = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name
    ]
    assert [cls.__name__ for cls in defined if not issubclass(cls, FieldlensError)] == []


def test_translated_errors_keep_their_standard_bases_and_a_response_code() -> None:
    from fieldlens_core.bus.mqtt import BusConnectionError
    from fieldlens_fielddata.store import StoreFullError

    assert issubclass(BusConnectionError, ConnectionError) and issubclass(StoreFullError, OSError)
    assert StoreFullError("full").code is ErrorCode.INTERNAL_ERROR and str(StoreFullError("full")) == "full"
