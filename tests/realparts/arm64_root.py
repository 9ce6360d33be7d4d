"""The arm64 Debian bookworm root (built by arm64_root.sh), and running the project's model code in it
as a Pi 4's or a Pi 5's CPU under QEMU user emulation.

The root is cached outside the clone and built once per machine; where a machine cannot build or
enter it (not root, no qemu-user-static or binfmt_misc, no mmdebstrap, no Debian mirror)
:func:`why_unavailable` says so in one line and the tests skip with it. Everything else that goes
wrong fails, with the build's output.

Nothing of the host's ``/proc`` or ``/sys`` is mounted in the root: ONNX Runtime's cpuinfo would
parse the x86 host's files there and crash. Without them it warns once on stderr and takes the
CPU's features from the HWCAPs that QEMU sets for ``QEMU_CPU``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.realparts.debian_root import DebianRoot

HERE = Path(__file__).parent
SCRIPT = HERE / "arm64_root.sh"
RUNNER = HERE / "arm64_model_run.py"
CORE = HERE.parent.parent / "components" / "fieldlens_core"
MIRROR = "http://deb.debian.org/debian/dists/bookworm/InRelease"
VENV_PYTHON = "/opt/fieldlens/venv/bin/python"  # the venv arm64_root.sh makes ($VENV)
CPUS = {"cortex-a72": "a Pi 4's (no dot product)", "cortex-a76": "a Pi 5's (asimddp)"}
"""The QEMU_CPU models the tests run as, and whose CPU each stands for."""


ROOT = DebianRoot("the arm64 root", SCRIPT, MIRROR, ("mmdebstrap", "arch-test"))


def root_path() -> Path:
    return ROOT.path()


def why_unavailable() -> str | None:
    """One line on why this machine cannot have the root, or None when it can (binfmt then enabled)."""
    if os.geteuid() == 0:  # binfmt before the root: without it, a built root cannot run either
        for tool in ("qemu-aarch64-static", "update-binfmts"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (bash tests/system-deps.sh installs it)"
        binfmt = subprocess.run(["bash", str(SCRIPT), "--binfmt"], capture_output=True, text=True)
        if binfmt.returncode != 0:
            lines = binfmt.stderr.strip().splitlines()
            return lines[-1] if lines else "cannot enable binfmt for arm64"
    return ROOT.why_unavailable("binfmt_misc, mmdebstrap, chroot")


def build_root() -> Path:
    """The built root: arm64_root.sh builds it if missing (about three minutes), else returns at once."""
    return ROOT.build()


def root_or_skip() -> Path:
    """The built root, or the test skipped with :func:`why_unavailable`'s line (a module fixture's body)."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return build_root()


PI_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""A service's PATH on Raspberry Pi OS (systemd's default), where ``python3`` is the system's 3.11."""
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
"""The wheel tags that bookworm's glibc 2.36 on aarch64 takes (arm64_root.sh downloads with the same)."""


def aarch64_wheels(requirements: Sequence[Path]) -> Path:
    """A folder of aarch64 CPython 3.11 wheels for ``requirements`` (requirements.txt files) and all they
    depend on: the test-only stand-in for the package index in the root, whose pip may not verify TLS
    here. Downloaded once per machine by this side's pip (``--platform``), cached outside the clone
    beside the root and named by the hash of the requirements; a requirement with no such wheel fails
    here, as its Install would on a Pi without a compiler."""
    lines = sorted({line.strip() for path in requirements for line in path.read_text().splitlines() if line.strip()})
    arguments = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    for platform in PLATFORMS:
        arguments += ["--platform", platform]
    digest = hashlib.sha256("\n".join([*arguments, *lines]).encode()).hexdigest()[:12]
    cache = root_path().parent
    folder = cache / f"arm64-wheels-{digest}"
    if (folder / ".complete").exists():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "arm64-wheels.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be downloading the same: then use its folder
        if (folder / ".complete").exists():
            return folder
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        listed = partial / "requirements.txt"
        listed.write_text("".join(f"{line}\n" for line in lines))
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        result = subprocess.run(
            [*command, "--dest", str(partial), *arguments, "-r", str(listed)], capture_output=True, text=True
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"no aarch64 wheels for {', '.join(lines)}:\n{result.stderr[-4000:]}")
        listed.unlink()
        (partial / ".complete").touch()
        partial.rename(folder)
    return folder


@dataclass(frozen=True)
class InRoot:
    """A fresh directory inside the root holding a copy of fieldlens_core and the runner."""

    root: Path
    directory: Path  # on the host, under root/tmp

    def inside(self, path: Path) -> str:
        """``path`` (under the root, on the host) as the chroot sees it."""
        return "/" + str(path.relative_to(self.root))

    def command(self, cpu: str, *args: str) -> list[str]:
        """The chroot command line that runs arm64_model_run.py with ``args`` in the root's Python 3.11
        as the CPU ``cpu`` (a QEMU_CPU model), on one ONNX Runtime thread."""
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "QEMU_CPU": cpu,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": self.inside(self.directory / "src"),
        }
        command = ["chroot", str(self.root), "/usr/bin/env", "-i"]
        command += [f"{key}={value}" for key, value in environment.items()]
        return [*command, VENV_PYTHON, self.inside(self.directory / RUNNER.name), *args]


@contextmanager
def in_root(root: Path) -> Iterator[InRoot]:
    """A working directory in ``root`` (fieldlens_core on its PYTHONPATH), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="fieldlens-", dir=root / "tmp"))
    try:
        shutil.copytree(CORE, directory / "src" / "fieldlens_core", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(RUNNER, directory / RUNNER.name)
        yield InRoot(root, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
