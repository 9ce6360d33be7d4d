"""Which project modules' code runs on each path: a classify request, a field image's life, a retrain.

Traced with sys.setprofile (every Python call, on every thread), so it counts what runs, not
what is imported. ``python -m tests.measurements.module_paths [REV]`` measures this checkout,
and with REV also that commit in a temporary git worktree (the same script, run there).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

SCRIPT = Path(__file__).resolve()


def trace_here() -> dict[str, list[str]]:
    root = Path.cwd()
    sys.path[:0] = [str(root / "components"), str(root / "field_data"), str(root)]
    seen: set[str] = set()
    recording = threading.Event()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and recording.is_set():
            name = str(frame.f_globals.get("__name__", ""))
            if name.startswith("fieldlens_"):
                seen.add(name)

    sys.setprofile(profile)
    threading.setprofile(profile)
    paths: dict[str, list[str]] = {}
    work = Path(tempfile.mkdtemp(prefix="fl-paths-"))

    def record(name: str, action: Any) -> None:
        seen.clear()
        recording.set()
        action()
        recording.clear()
        paths[name] = sorted(seen)

    request, field_image, close = _edge(work)
    record("request", request)
    record("field image (ship, label, dataset)", field_image)
    close()
    record("retrain (dataset build -> retrain -> gate)", _retrain(work))
    return paths


def _edge(work: Path) -> tuple[Any, Any, Any]:
    try:
        from fieldlens_classifier.build import assemble_classifier
    except ImportError:  # before the keeper and the continuous loop were built beside the classifier
        from fieldlens_classifier.service import Classifier as assemble_classifier  # type: ignore[assignment]
    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_core.bus.memory import InMemoryBus
    from fieldlens_core.camera.folder import FolderCamera
    from fieldlens_core.inference.client import InferenceClient
    from fieldlens_fielddata.destination import LocalDirectoryDestination
    from fieldlens_fielddata.store import FieldStore
    from fieldlens_fielddata.uploader import Uploader
    from fieldlens_inference.model_manager import ModelManager
    from fieldlens_inference.server import InferenceSocketServer
    from fieldlens_inference.service import InferenceService
    from fieldlens_retrain.dataset import build_manifest
    from fieldlens_retrain.labels import import_labels
    from tests.helpers.images import solid_jpeg
    from tests.helpers.tiny_model import make_tiny_package

    make_tiny_package(work / "model")
    manager = ModelManager(work / "model")
    manager.load_initial()
    server = InferenceSocketServer(work / "s.sock", InferenceService(manager, {"tiny"}), max_body=1 << 20)
    server.start()
    (work / "photos").mkdir()
    (work / "photos" / "red.jpg").write_bytes(solid_jpeg((240, 10, 10)))
    inference = {"service_name": "tiny", "socket_path": work / "s.sock"}
    config = ClassifierConfig.model_validate(
        {"thing_name": "t", "field_data_dir": work / "field", "inference": inference}
    )
    bus, answered = InMemoryBus(), threading.Event()
    bus.subscribe("/response/#", lambda *_: answered.set())
    store = FieldStore(config.field_data_dir, "t", config.s3_prefix)
    classifier = assemble_classifier(
        config, bus, FolderCamera(work / "photos"), InferenceClient(config.inference), store
    )
    classifier.start()

    def request() -> None:
        bus.publish("/request/classify", b'{"save": true}')
        answered.wait(10)

    def field_image() -> None:
        image_id = next((work / "field").rglob("*.json")).stem
        Uploader(work / "field", LocalDirectoryDestination(work / "bucket"), "t").drain()
        import_labels(work / "field", {image_id: "red"})
        build_manifest(work / "field", {}, None, None)

    def close() -> None:
        classifier.stop()
        server.stop()

    return request, field_image, close


def _retrain(work: Path) -> Any:
    import numpy as np

    try:
        from fieldlens_samples import fashion
    except ImportError:  # before the demo data moved out of the training library
        from fieldlens_retrain import fashion  # type: ignore[no-redef,attr-defined]
    from fieldlens_retrain.dataset import build_manifest, write_manifest
    from fieldlens_retrain.pipeline import run_retrain

    try:
        from fieldlens_retrain.gate import GateRules

        forced: dict[str, Any] = {"rules": GateRules(force=True)}
    except ImportError:  # before the gate had its rules
        forced = {"force": True}

    images, labels = fashion.load("t10k")
    fashion.write_studio(work / "base", images, labels, fashion.pick(labels, 4, np.random.default_rng(1)))

    def retrain() -> None:
        write_manifest(build_manifest(None, {}, work / "base", None), work / "m.json")
        run_retrain(work / "m.json", work / "models", None, work / "cache", **forced)

    return retrain


def traced(checkout: Path) -> dict[str, list[str]]:
    """This script's --here run in ``checkout``, in a fresh interpreter."""
    copy = checkout / "tests" / "measurements" / SCRIPT.name
    if copy != SCRIPT:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(SCRIPT.read_text())
    result = subprocess.run([sys.executable, str(copy), "--here"], cwd=checkout, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"tracing {checkout} failed:\n{result.stderr[-2000:]}")
    paths: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return paths


def traced_at(revision: str) -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="fl-paths-rev-") as checkout:
        subprocess.run(["git", "worktree", "add", "-q", "--detach", checkout, revision], check=True)
        try:
            return traced(Path(checkout))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", checkout], check=True)


def main() -> None:
    if sys.argv[1:] == ["--here"]:
        print(json.dumps(trace_here()))
        return
    now = traced(Path.cwd())
    before = traced_at(sys.argv[1]) if sys.argv[1:] else None
    for path, modules in now.items():
        counted = f"{len(before[path])} -> {len(modules)}" if before else str(len(modules))
        print(f"{path}: {counted} modules")
        if before:
            print("  only before:", " ".join(sorted(set(before[path]) - set(modules))) or "-")
            print("  only now:   ", " ".join(sorted(set(modules) - set(before[path]))) or "-")
        print("  now:", " ".join(modules))


if __name__ == "__main__":
    main()
