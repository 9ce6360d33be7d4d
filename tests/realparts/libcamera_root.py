"""The Debian trixie root with real libcamera 0.7.1 and picamera2 (built by libcamera_root.sh), and
running the project's code in it through chroot, on libcamera's virtual camera playing photos.

The root is cached outside the clone and built once per machine; where a machine cannot build or
enter it (not root, no mmdebstrap, no Debian mirror) :func:`why_unavailable` says so in one line
and the tests skip with it. Everything else that goes wrong fails, with the build's output.

No ``/proc``, ``/sys`` or ``/dev`` is mounted in the root: the virtual camera needs none, and the
stand-ins in ``standins/`` replace what a container lacks (see picamera2_container.py).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.realparts.debian_root import DebianRoot

HERE = Path(__file__).parent
SCRIPT = HERE / "libcamera_root.sh"
STANDINS = HERE / "standins"
CLONE = HERE.parent.parent
CORE = CLONE / "components" / "fieldlens_core"
MIRROR = "http://deb.debian.org/debian/dists/trixie-backports/InRelease"
VENV_PYTHON = "/opt/fieldlens/venv/bin/python"  # the venv libcamera_root.sh makes ($VENV)
VIRTUAL_YAML = "usr/share/libcamera/pipeline/virtual/virtual.yaml"  # the only place libcamera reads it
SENSOR_FPS = "FIELDLENS_TEST_SENSOR_FPS"  # read by standins/picamera2_container.py (it cannot import this)
# Run in the root before the code under test: the container stand-ins, then the script or module.
BOOT = (
    "import importlib, runpy, sys; importlib.import_module('picamera2_container').install(); "
    "kind, target = sys.argv[1:3]; sys.argv = [target, *sys.argv[3:]]; "
    "runpy.run_module(target, run_name='__main__', alter_sys=True) if kind == 'module' "
    "else runpy.run_path(target, run_name='__main__')"
)


ROOT = DebianRoot("the libcamera root", SCRIPT, MIRROR)


def root_path() -> Path:
    return ROOT.path()


def why_unavailable() -> str | None:
    """One line on why this machine cannot have the root, or None when it can."""
    return ROOT.why_unavailable("mmdebstrap, chroot")


def build_root() -> Path:
    """The built root: libcamera_root.sh builds it if missing (about a minute), else returns at once."""
    return ROOT.build()


@dataclass(frozen=True)
class InRoot:
    """A fresh directory inside the root holding a copy of fieldlens_core and the stand-ins."""

    root: Path
    directory: Path  # on the host, under root/tmp

    def inside(self, path: Path) -> str:
        """``path`` (under the root, on the host) as the chroot sees it."""
        return "/" + str(path.relative_to(self.root))

    def add_package(self, package: Path) -> None:
        """Copies one of the project's packages beside fieldlens_core, onto the root's PYTHONPATH."""
        shutil.copytree(package, self.directory / "src" / package.name, ignore=shutil.ignore_patterns("__pycache__"))

    def add(self, path: Path) -> str:
        """Copies ``path`` into the directory; returns where the chroot sees the copy."""
        shutil.copy(path, self.directory / path.name)
        return self.inside(self.directory / path.name)

    def play_photos(self, photos: Sequence[Image.Image], sizes: Sequence[tuple[int, int]]) -> None:
        """The virtual camera plays ``photos`` in a loop (0.jpg, 1.jpg, …) at ``sizes``: it offers
        only the sizes listed and scales each photo to the size configured."""
        frames = self.directory / "frames"
        frames.mkdir()
        for index, photo in enumerate(photos):
            photo.convert("RGB").save(frames / f"{index}.jpg", quality=95)
        listed = "".join(f"    - width: {width}\n      height: {height}\n" for width, height in sizes)
        (self.root / VIRTUAL_YAML).write_text(
            f'%YAML 1.1\n---\n"Virtual0":\n  supported_formats:\n{listed}'
            f'  frames:\n    path: "{self.inside(frames)}/"\n  model: "fieldlens test photos"\n'
        )

    def command(self, kind: str, target: str, *args: str, sensor_fps: float | None = None) -> list[str]:
        """The chroot command line that runs a script (``kind`` "path", ``target`` inside the root) or
        a module (``kind`` "module") in the root's Python 3.13, after the stand-ins are installed.

        ``sensor_fps`` paces the virtual camera as a sensor at that frame rate (the stand-ins'
        SensorClock): each played photo is then in view for 4 frame periods (libcamera's
        frameRepeat). Without it frames come as fast as they are taken, and a photo is in view
        for a few milliseconds.
        """
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{self.inside(self.directory / 'src')}:{self.inside(self.directory / 'standins')}",
        }
        if sensor_fps is not None:
            environment[SENSOR_FPS] = str(sensor_fps)
        command = ["chroot", str(self.root), "/usr/bin/env", "-i"]
        command += [f"{key}={value}" for key, value in environment.items()]
        return [*command, VENV_PYTHON, "-c", BOOT, kind, target, *args]

    def run(self, kind: str, target: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs :meth:`command` to its end; it never waits past ``timeout``."""
        return subprocess.run(self.command(kind, target, *args), capture_output=True, text=True, timeout=timeout)


@contextmanager
def in_root(root: Path) -> Iterator[InRoot]:
    """A working directory in ``root``, removed afterwards. The root has one virtual camera (one
    virtual.yaml), so sessions on the same machine take turns with it."""
    with (root / ".camera.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        directory = Path(tempfile.mkdtemp(prefix="fieldlens-", dir=root / "tmp"))
        try:
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(CORE, directory / "src" / "fieldlens_core", ignore=ignore)
            shutil.copytree(STANDINS, directory / "standins", ignore=ignore)
            yield InRoot(root, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
