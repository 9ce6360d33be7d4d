"""The arm64 root's cache naming and its one-line skip reasons (fast: nothing is built or enabled)."""

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

from tests.realparts import arm64_root
from tests.realparts.debian_root import DebianRoot


def print_path(script: Path, cache: Path) -> str:
    environment = {**os.environ, "FIELDLENS_CACHE": str(cache)}
    command = ["bash", str(script), "--print-path"]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=environment).stdout


def test_the_root_is_cached_outside_the_clone_under_the_hash_of_its_commands(tmp_path: Path) -> None:
    default = arm64_root.root_path()
    assert default.parent == Path("/var/cache/fieldlens") and default.name.startswith("arm64-root-")
    original = print_path(arm64_root.SCRIPT, tmp_path)
    assert original.startswith(str(tmp_path / "arm64-root-"))
    changed = tmp_path / "arm64_root.sh"
    changed.write_text(arm64_root.SCRIPT.read_text() + "  # a comment changes nothing built\n")
    assert print_path(changed, tmp_path) == original
    changed.write_text(arm64_root.SCRIPT.read_text() + "true\n")
    assert print_path(changed, tmp_path) != original  # a changed command builds a new root


class Binfmt:
    """Stands in for ``arm64_root.sh --binfmt`` (which mounts binfmt_misc on the host) and records calls."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.returncode, self.stderr, self.calls = returncode, stderr, 0

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert command[-1] == "--binfmt"
        self.calls += 1
        return subprocess.CompletedProcess(command, self.returncode, "", self.stderr)


@pytest.fixture
def unbuilt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Binfmt:
    """As root on a machine where the root was never built, with every tool, binfmt and the mirror."""
    binfmt = Binfmt()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(DebianRoot, "path", lambda self: tmp_path / "arm64-root-0")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(subprocess, "run", binfmt)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO())
    return binfmt


def test_a_machine_that_can_build_the_root_is_not_skipped_and_has_binfmt_enabled(unbuilt: Binfmt) -> None:
    assert arm64_root.why_unavailable() is None
    assert unbuilt.calls == 1


def test_without_root_the_skip_says_so(unbuilt: Binfmt, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert arm64_root.why_unavailable() == "the arm64 root needs root (binfmt_misc, mmdebstrap, chroot)"
    assert unbuilt.calls == 0


@pytest.mark.parametrize("tool", ["qemu-aarch64-static", "update-binfmts", "mmdebstrap", "arch-test"])
def test_a_missing_tool_is_named_with_how_to_install_it(
    unbuilt: Binfmt, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None if name == tool else name)
    assert arm64_root.why_unavailable() == f"{tool} is not installed (bash tests/system-deps.sh installs it)"


def test_where_binfmt_cannot_be_enabled_the_scripts_reason_is_the_skip(
    unbuilt: Binfmt, monkeypatch: pytest.MonkeyPatch
) -> None:
    unbuilt.returncode, unbuilt.stderr = 2, "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc (a container)\n"
    assert arm64_root.why_unavailable() == "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc (a container)"


def test_without_the_debian_mirror_the_skip_names_it(unbuilt: Binfmt, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str, timeout: float) -> Any:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    reason = arm64_root.why_unavailable()
    assert reason is not None and reason.startswith("cannot reach the Debian mirror") and "\n" not in reason


def test_a_root_built_earlier_needs_neither_mmdebstrap_nor_the_mirror(
    unbuilt: Binfmt, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "arm64-root-0").mkdir()
    (tmp_path / "arm64-root-0" / ".complete").touch()
    monkeypatch.setattr(shutil, "which", lambda name: None if name in ("mmdebstrap", "arch-test") else name)
    monkeypatch.setattr(urllib.request, "urlopen", None)
    assert arm64_root.why_unavailable() is None
