"""What every Debian root of the real-parts tests shares: its cache path, the checks that say in
one line why a machine cannot have it, and its build (each root's own script does the work).

A root's script (``libcamera_root.sh``, ``arm64_root.sh``) prints its cache path with
``--print-path`` and builds the root when run plainly, printing the path last; the root is
complete when it holds ``.complete``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DebianRoot:
    name: str
    """What the root is for, in the skip lines: "the libcamera root"."""
    script: Path
    mirror: str
    """A file the build downloads first: reachable means the build can run."""
    build_tools: Sequence[str] = ("mmdebstrap",)

    def path(self) -> Path:
        """Where the root for the current script is (named by its hash), built or not."""
        result = subprocess.run(["bash", str(self.script), "--print-path"], capture_output=True, text=True, check=True)
        return Path(result.stdout.strip())

    def why_unavailable(self, needs: str = "chroot") -> str | None:
        """One line on why this machine cannot have the root, or None when it can."""
        if os.geteuid() != 0:
            return f"{self.name} needs root ({needs})"
        if shutil.which("chroot") is None:
            return "no chroot command on this machine"
        if (self.path() / ".complete").exists():
            return None
        for tool in self.build_tools:
            if shutil.which(tool) is None:
                return f"{tool} is not installed (bash tests/system-deps.sh installs it)"
        try:
            urllib.request.urlopen(self.mirror, timeout=15).close()
        except OSError as exc:
            return f"cannot reach the Debian mirror to build {self.name} ({self.mirror}: {exc})"
        return None

    def build(self) -> Path:
        """The built root: the script builds it if missing, else returns at once."""
        result = subprocess.run(
            ["bash", str(self.script)], capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"tests/realparts/{self.script.name} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )
        return Path(result.stdout.strip().splitlines()[-1])
