"""The libcamera root's cache naming and its one-line skip reasons (fast: nothing is built)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.realparts import libcamera_root
from tests.realparts.debian_root import DebianRoot


def print_path(script: Path, cache: Path) -> str:
    environment = {**os.environ, "FIELDLENS_CACHE": str(cache)}
    command = ["bash", str(script), "--print-path"]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=environment).stdout


def test_the_root_is_cached_outside_the_clone_under_the_hash_of_its_commands(tmp_path: Path) -> None:
    default = libcamera_root.root_path()
    assert default.parent == Path("/var/cache/fieldlens") and default.name.startswith("libcamera-root-")
    original = print_path(libcamera_root.SCRIPT, tmp_path)
    assert original.startswith(str(tmp_path / "libcamera-root-"))
    changed = tmp_path / "libcamera_root.sh"
    changed.write_text(libcamera_root.SCRIPT.read_text() + "  # a comment changes nothing built\n")
    assert print_path(changed, tmp_path) == original
    changed.write_text(libcamera_root.SCRIPT.read_text() + "true\n")
    assert print_path(changed, tmp_path) != original  # a changed command builds a new root


@pytest.fixture
def unbuilt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As root on a machine where the root was never built, with mmdebstrap and the mirror."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(DebianRoot, "path", lambda self: tmp_path / "libcamera-root-0")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO())


def test_a_machine_that_can_build_the_root_is_not_skipped(unbuilt: None) -> None:
    assert libcamera_root.why_unavailable() is None


def test_without_root_the_skip_says_so(unbuilt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert libcamera_root.why_unavailable() == "the libcamera root needs root (mmdebstrap, chroot)"


def test_without_mmdebstrap_the_skip_says_how_to_install_it(unbuilt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "mmdebstrap" else name)
    assert libcamera_root.why_unavailable() == "mmdebstrap is not installed (bash tests/system-deps.sh installs it)"


def test_without_the_debian_mirror_the_skip_names_it(unbuilt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str, timeout: float) -> Any:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    reason = libcamera_root.why_unavailable()
    assert reason is not None and reason.startswith("cannot reach the Debian mirror") and "\n" not in reason


def test_a_root_built_earlier_needs_neither_mmdebstrap_nor_the_mirror(
    unbuilt: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "libcamera-root-0").mkdir()
    (tmp_path / "libcamera-root-0" / ".complete").touch()
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "mmdebstrap" else name)
    monkeypatch.setattr(urllib.request, "urlopen", None)
    assert libcamera_root.why_unavailable() is None
