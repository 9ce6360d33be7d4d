"""The recipes' Install steps on a Raspberry Pi OS-like system: the arm64 bookworm root (Python 3.11,
PEP 668's EXTERNALLY-MANAGED in place), a Pi 4's CPU under QEMU (slow; skipped, with the reason,
where the machine cannot have the root).

What `fieldlens build` produced is deployed to the test core (:mod:`tests.helpers.nucleus.core`)
laid out inside the root: the aarch64 manifest of each recipe is chosen, its variables interpolated
by the core as the nucleus would (paths as the root sees them), and every lifecycle step runs under
``chroot``. Each Install builds its venv with ``--system-site-packages`` and pip-installs the
artifact's pinned requirements, exactly as the recipe says; the only stand-in is the package index,
a folder of aarch64 wheels for those requirements (``PIP_NO_INDEX``/``PIP_FIND_LINKS``), because pip
in the root may not verify TLS here. The components then start from those venvs: the model check,
the inference service, the classifier and the uploader, and one classify request is answered.

Emulated speed says nothing about a Pi: the four Installs take minutes here, all at once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.images import solid_jpeg
from tests.helpers.nucleus.core import GreengrassCore, State
from tests.helpers.nucleus.deployment import READY, built_artifacts
from tests.realparts import arm64_root

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

CPU = "cortex-a72"
"""A Pi 4's CPU: the older of the two boards, no dot product."""
COMPONENTS = ("fieldlens.Model", "fieldlens.InferenceService", "fieldlens.Classifier", "fieldlens.Uploader")
IMPORTS = {
    "fieldlens.Model": ["fieldlens_core.model_check", "onnxruntime", "numpy"],
    "fieldlens.InferenceService": ["fieldlens_inference.main", "onnxruntime", "numpy"],
    "fieldlens.Classifier": ["fieldlens_classifier.main"],
    "fieldlens.Uploader": ["fieldlens_uploader.main", "boto3"],
}
"""What each component's Run or Startup needs, imported with its venv's python and its Setenv PYTHONPATH."""
CLASSIFY, PREDICTION = "/request/classify/beverage_container", "/response/prediction/beverage_container"
STAMP = re.compile(r"^(\S+) \[lifecycle\] [.\w]+: (install: |state INSTALLED|state ERRORED)", re.MULTILINE)


@dataclass(frozen=True)
class Pi:
    root: Path  # the arm64 root, on this machine
    core: GreengrassCore  # laid out inside it
    build: Path
    environment: dict[str, str]  # what the core's steps run with

    def run(self, *command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """``command`` in the root as the core's steps run (its environment, the Pi 4's CPU), plus ``extra``."""
        variables = [f"{key}={value}" for key, value in {**self.environment, **extra}.items()]
        chroot = ["chroot", str(self.root), "/usr/bin/env", "-i", *variables, *command]
        return subprocess.run(chroot, capture_output=True, text=True, timeout=600)

    def venv(self, name: str) -> str:
        return self.core.visible(self.core.work_path(name)) + "/venv"

    def recipe(self, name: str) -> dict[str, Any]:
        """The built recipe's aarch64 manifest's Lifecycle, as written."""
        (path,) = (self.build / "recipes").glob(f"{name}-*.yaml")
        manifests = yaml.safe_load(path.read_text())["Manifests"]
        lifecycle: dict[str, Any] = next(
            m["Lifecycle"] for m in manifests if m["Platform"]["architecture"] == "aarch64"
        )
        return lifecycle

    def pythonpath(self, name: str) -> str:
        """The PYTHONPATH the recipe's Setenv gives its Run (the Model's: its Startup's), as interpolated."""
        lifecycle = self.core.components[name].lifecycle
        setenv = lifecycle.get("setenv") or lifecycle["startup"]["Setenv"]
        return str(setenv["PYTHONPATH"])

    def requirements(self, name: str) -> dict[str, str]:
        """name -> pinned version, from the requirements.txt the recipe's Install names."""
        (found,) = re.findall(r"-r (\S+)", self.core.components[name].lifecycle["install"]["Script"])
        text = (self.root / found.lstrip("/")).read_text()
        return dict(line.split("==", 1) for line in text.splitlines() if line.strip())


def requirements_files(built: Path, into: Path) -> list[Path]:
    """Every requirements.txt in the built artifacts (what the Installs will ask pip for)."""
    found = []
    for archive_path in sorted((built / "artifacts").glob("*/*/*.zip")):
        with zipfile.ZipFile(archive_path) as archive:
            for member in archive.namelist():
                if member.endswith("requirements.txt"):
                    target = into / f"{archive_path.stem}-{member.replace('/', '-')}"
                    target.write_bytes(archive.read(member))
                    found.append(target)
    return found


def link_or_copy(source: str, target: str) -> None:
    """A hard link where the cache and the root share a filesystem (the default), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@pytest.fixture(scope="module")
def root() -> Path:
    """The arm64 root, or the module skipped with the one line that says why, before anything is built."""
    return arm64_root.root_or_skip()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_artifacts(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def pi(root: Path, built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pi]:
    """All four components deployed to a core inside the root, once every Install has ended (not their Runs)."""
    wheels = arm64_root.aarch64_wheels(requirements_files(built, tmp_path_factory.mktemp("requirements")))
    place = Path(tempfile.mkdtemp(prefix="gg-", dir=root / "tmp"))  # short: the sockets' paths are limited
    try:
        shutil.copytree(wheels, place / "wheels", copy_function=link_or_copy)
        (place / "home").mkdir()
        (place / "photos").mkdir()
        (place / "photos" / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
        inside = "/" + str(place.relative_to(root))
        environment = {
            "PATH": arm64_root.PI_PATH,
            "HOME": f"{inside}/home",  # pip's cache there, not in the cached root's /root
            "LANG": "C.UTF-8",
            "QEMU_CPU": CPU,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": f"{inside}/wheels",
        }
        merges: dict[str, dict[str, Any]] = {
            "fieldlens.Classifier": {
                "camera": {"source": "folder", "folder": f"{inside}/photos"},  # no camera: a folder of one
                "fieldDataDir": f"{inside}/field-images",
            },
            "fieldlens.Uploader": {
                "fieldDataDir": f"{inside}/field-images",
                "bucket": None,  # the stand-in directory instead of S3 (no credentials here)
                "localBucketDir": f"{inside}/bucket",
                "statusIntervalS": 1.0,
                "pollIntervalS": 0.5,
            },
        }
        core = GreengrassCore(
            place / "v2", thing_name="pi-4", environment=environment, chroot=root, architecture="aarch64"
        )
        with core:
            core.deploy(built, ["fieldlens.Classifier", "fieldlens.Uploader"], merges)
            ended = [s for s in State if s is not State.NEW]
            for name in COMPONENTS:  # the core ends an Install at its recipe's Timeout (900 s): no longer
                core.wait_for_state(name, *ended, timeout_s=1000)
            yield Pi(root, core, built, environment)
    finally:
        shutil.rmtree(place, ignore_errors=True)


@pytest.mark.parametrize("name", COMPONENTS)
def test_the_aarch64_install_ran_as_written_in_the_root_and_exited_zero_within_its_timeout(pi: Pi, name: str) -> None:
    component = pi.core.components[name]
    assert component.history[:1] == [State.INSTALLED], f"{component.status}:\n{pi.core.log(name)[-4000:]}"
    install = pi.recipe(name)["Install"]
    work = pi.core.visible(pi.core.work_path(name))
    unpacked = pi.core.visible(pi.core.decompressed_path(name, component.recipe.version))
    assert work.startswith("/tmp/gg-") and not work.startswith(str(pi.root))  # the root's own paths
    written = install["Script"].replace("{work:path}", work).replace("{artifacts:decompressedPath}", unpacked)
    assert f"install: {written}\n" in pi.core.log(name)  # the aarch64 manifest's script, with the root's paths
    began, ended = (datetime.fromisoformat(s) for s, _ in STAMP.findall(pi.core.log(name))[:2])
    log.info(
        "%s: Install took %.0f s emulated as a %s (Timeout %s s)",
        name,
        (ended - began).total_seconds(),
        CPU,
        install["Timeout"],
    )


@pytest.mark.parametrize("name", COMPONENTS)
def test_the_venv_is_the_roots_python_3_11_on_aarch64_over_its_system_site_packages(pi: Pi, name: str) -> None:
    venv = pi.venv(name)
    code = (
        "import json, platform, site, sys; print(json.dumps([platform.machine(), sys.version_info[:2], "
        "sys.prefix, sys.base_prefix, '/usr/lib/python3/dist-packages' in sys.path]))"
    )
    result = pi.run(f"{venv}/bin/python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["aarch64", [3, 11], venv, "/usr", True]


def test_the_system_python_refuses_a_plain_pip_install_so_the_venv_is_what_made_it_work(pi: Pi) -> None:
    venv = pi.venv("fieldlens.InferenceService")
    assert (pi.root / "usr/lib/python3.11/EXTERNALLY-MANAGED").is_file()
    refused = pi.run(f"{venv}/bin/pip", "--python", "/usr/bin/python3", "install", "pydantic")
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused.stderr
    missing = pi.run("/usr/bin/python3", "-c", "import pydantic")
    assert missing.returncode != 0 and "No module named 'pydantic'" in missing.stderr
    assert pi.run(f"{venv}/bin/python", "-c", "import pydantic").returncode == 0


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_requirement_is_the_venvs_own_at_its_pin_and_the_components_code_imports(pi: Pi, name: str) -> None:
    pins = pi.requirements(name)
    venv = pi.venv(name)
    code = (
        "import importlib, importlib.metadata as m, json, sys\n"
        f"for module in {IMPORTS[name]!r}: importlib.import_module(module)\n"
        f"names = {sorted(pins)!r}\n"
        "print(json.dumps({n: [m.version(n), str(m.distribution(n).locate_file(''))] for n in names}))"
    )
    result = pi.run(f"{venv}/bin/python", "-c", code, PYTHONPATH=pi.pythonpath(name))
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout)
    assert {n: v for n, (v, _) in found.items()} == pins
    assert all(where.startswith(f"{venv}/lib/python3.11/site-packages") for _, where in found.values()), found


def test_the_components_start_from_their_venvs_in_the_root_and_a_request_is_answered(pi: Pi) -> None:
    core = pi.core
    assert core.wait_for_state("fieldlens.Model", State.RUNNING, State.ERRORED, timeout_s=600) == State.RUNNING
    for name, line in READY.items():
        core.wait_for_log(name, line, timeout_s=600)
    request = json.dumps({"request_id": "pi-1", "top_k": 1}).encode()
    assert core.nucleus.iot_core.send(CLASSIFY, request) == 1
    answer = core.nucleus.iot_core.wait_for(
        PREDICTION, lambda m: json.loads(m.payload)["request_id"] == "pi-1", timeout_s=120
    )
    body = json.loads(answer.payload)
    assert body["thing"] == "pi-4" and [p["label"] for p in body["predictions"]] == ["red"]
