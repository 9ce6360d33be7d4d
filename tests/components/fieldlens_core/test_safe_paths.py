from __future__ import annotations

import os
from pathlib import Path

import pytest

from fieldlens_core.safe_paths import UnsafePathError, plain_name, resolve_inside


@pytest.mark.parametrize("name", ["a/../../x", "../x", "/etc/passwd", "a/./b", "", "a\x00b", "a//b/.."])
def test_names_that_leave_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path, name)


def test_a_link_inside_the_root_cannot_lead_out(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path, tmp_path / "root" / "up")
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path / "root", "up/secret")


def test_ordinary_keys_resolve_inside(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "field-data/coop-1/2026/x.jpg") == tmp_path / "field-data/coop-1/2026/x.jpg"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "", "x\x00"])
def test_plain_names_are_one_level(name: str) -> None:
    with pytest.raises(UnsafePathError):
        plain_name(name)
