"""Installing packages under a running inference service: atomic, verified, no failed request."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.model_install import install_package
from fieldlens_core.model_package import resolve_package_dir
from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.service import InferenceService
from tests.helpers.images import solid_jpeg
from tests.helpers.tiny_model import make_tiny_package, recard, tiny_onnx

RED = solid_jpeg((240, 10, 10))


def test_a_plain_package_is_adopted_and_new_versions_switch_current(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "model")  # what build-default writes: a plain package
    make_tiny_package(tmp_path / "new", version="1.1.0", swap=True)
    install_package(tmp_path / "new", tmp_path / "model")
    assert os.readlink(tmp_path / "model" / "current") == "versions/1.1.0"
    assert (tmp_path / "model/versions/1.0.0/model_card.json").exists()
    assert not (tmp_path / "model/model_card.json").exists()
    install_package(tmp_path / "model/versions/1.0.0", tmp_path / "model")  # roll back
    assert resolve_package_dir(tmp_path / "model").name == "1.0.0"


def test_a_broken_package_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "good")
    install_package(tmp_path / "good", tmp_path / "model")
    make_tiny_package(tmp_path / "bad", version="2.0.0")
    (tmp_path / "bad/model.onnx").write_bytes(b"truncated")
    with pytest.raises(ModelPackageError, match="sha256"):
        install_package(tmp_path / "bad", tmp_path / "model")
    assert resolve_package_dir(tmp_path / "model").name == "1.0.0"
    assert not (tmp_path / "model/versions/2.0.0").exists()


def test_the_same_version_with_other_files_is_refused(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "a")
    make_tiny_package(tmp_path / "b", swap=True)
    install_package(tmp_path / "a", tmp_path / "model")
    with pytest.raises(ModelPackageError, match="different files"):
        install_package(tmp_path / "b", tmp_path / "model")


def test_a_running_service_picks_up_the_install_with_no_failed_request(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "v1")
    install_package(tmp_path / "v1", tmp_path / "model")
    manager = ModelManager(tmp_path / "model")
    manager.load_initial()
    service = InferenceService(manager, {"s"})
    replies: list[dict[str, object]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            replies.append(service.handle({"op": "classify", "service": "s", "top_k": 1}, RED))

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for worker in workers:
        worker.start()
    make_tiny_package(tmp_path / "v2", version="2.0.0", swap=True)
    install_package(tmp_path / "v2", tmp_path / "model")
    assert manager.check_for_update()  # what the watcher does every reloadIntervalS
    after = service.handle({"op": "classify", "service": "s", "top_k": 1}, RED)
    stop.set()
    for worker in workers:
        worker.join()
    assert replies and all(r["ok"] for r in replies)
    versions = {r["model"]["version"] for r in replies}  # type: ignore[index]
    assert versions <= {"1.0.0", "2.0.0"}
    assert after["model"]["version"] == "2.0.0" and after["predictions"][0]["label"] == "blue"


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname", "sub/dir.txt", "..", "model_card.json"])
def test_a_card_naming_a_file_outside_its_package_is_refused(tmp_path: Path, name: str) -> None:
    """`model install` once copied such a file out of the model directory and exited 0."""
    import json

    make_tiny_package(tmp_path / "evil")
    card_path = tmp_path / "evil/model_card.json"
    card = json.loads(card_path.read_text())
    card["files"][name] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match="invalid"):
        install_package(tmp_path / "evil", tmp_path / "model")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "model").exists()


def test_every_listed_file_is_hash_checked_before_install(tmp_path: Path) -> None:
    import hashlib
    import json

    make_tiny_package(tmp_path / "pkg")
    (tmp_path / "pkg/notes.txt").write_text("original")
    card_path = tmp_path / "pkg/model_card.json"
    card = json.loads(card_path.read_text())
    card["files"]["notes.txt"] = hashlib.sha256(b"original").hexdigest()
    card_path.write_text(json.dumps(card))
    (tmp_path / "pkg/notes.txt").write_text("tampered")  # not a variant: loading alone would never look
    with pytest.raises(ModelPackageError, match="notes.txt fails its sha256 check"):
        install_package(tmp_path / "pkg", tmp_path / "model")


def installed_version(model_dir: Path) -> str:
    return resolve_package_dir(model_dir).name


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda d: recard(d, input={"size": 16, "resize": 16, "mean": [0, 0, 0], "std": [255, 255, 255]}),
            "takes Nx3x32x32 images but the card's input is 16 px",
        ),
        (
            lambda d: (
                (d / "labels.json").write_text(json.dumps([f"c{i}" for i in range(3_000_000)])),
                recard(d, num_classes=3_000_000),
            ),
            "claims 3000000 classes",
        ),
        (
            lambda d: ((d / "labels.json").write_text(json.dumps(["red", "green", "b" * 20_000_000])), recard(d)),
            "20000000 characters long",
        ),
    ],
    ids=["card-size-not-graph-size", "3M-labels-for-3-outputs", "20MB-label"],
)
def test_a_package_the_service_cannot_serve_is_refused_and_the_current_model_stays(
    tmp_path: Path, tamper: Callable[[Path], object], reason: str
) -> None:
    """Each once installed with exit 0; the service then refused it at its next start."""
    make_tiny_package(tmp_path / "good")
    install_package(tmp_path / "good", tmp_path / "model")
    make_tiny_package(tmp_path / "bad", version="2.0.0", int8=True)
    tamper(tmp_path / "bad")
    with pytest.raises(ModelPackageError, match=reason) as refused:
        install_package(tmp_path / "bad", tmp_path / "model")
    assert refused.value.hint
    assert installed_version(tmp_path / "model") == "1.0.0"
    assert not (tmp_path / "model/versions/2.0.0").exists()
    assert ModelManager(tmp_path / "model").load_initial().info["version"] == "1.0.0"  # a fresh start still serves


def test_an_int8_graph_is_checked_even_when_fp32_is_served(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "bad", int8=True)
    tiny_onnx(tmp_path / "bad/model.int8.onnx", classes=4)
    recard(tmp_path / "bad")
    with pytest.raises(ModelPackageError, match="model.int8.onnx gives 4 classes"):
        install_package(tmp_path / "bad", tmp_path / "model")
    assert not (tmp_path / "model/current").exists()
