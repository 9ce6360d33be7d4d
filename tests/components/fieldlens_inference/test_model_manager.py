from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.int8_kernels import Int8Kernels
from fieldlens_core.model import LoadedModel, load_model, preprocess
from fieldlens_core.model_package import sha256_file
from fieldlens_inference import model_manager
from fieldlens_inference.model_manager import ModelManager
from tests.helpers.images import solid_jpeg
from tests.helpers.tiny_model import make_tiny_package, recard, tiny_onnx

RED = solid_jpeg((240, 10, 10))


def label_of(manager: ModelManager) -> str:
    model = manager.current
    assert model is not None
    logits = model.predict(preprocess(RED, model.package.card.input))
    return model.package.labels[int(logits.argmax())]


def switch_current(root: Path, version: str) -> None:
    """An atomic install: point a new link at the new version, rename it over `current`."""
    os.symlink(f"versions/{version}", root / "current.new")
    os.replace(root / "current.new", root / "current")


def test_a_new_version_is_swapped_in_and_in_flight_requests_keep_theirs(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "versions/1.0.0")
    make_tiny_package(tmp_path / "versions/2.0.0", version="2.0.0", swap=True)
    switch_current(tmp_path, "1.0.0")
    manager = ModelManager(tmp_path)
    manager.load_initial()
    in_flight = manager.current
    assert label_of(manager) == "red" and not manager.check_for_update()

    switch_current(tmp_path, "2.0.0")
    assert manager.check_for_update()
    assert manager.current is not None and manager.current.info["version"] == "2.0.0"
    assert label_of(manager) == "blue"  # the new weights answer
    assert in_flight is not None and in_flight.info["version"] == "1.0.0"  # still usable by its request
    assert in_flight.predict(preprocess(RED, in_flight.package.card.input)).argmax() == 0


def test_a_broken_new_package_is_refused_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "versions/1.0.0")
    make_tiny_package(tmp_path / "versions/1.0.1", version="1.0.1")
    (tmp_path / "versions/1.0.1/model.onnx").write_bytes(b"half a copy")
    switch_current(tmp_path, "1.0.0")
    manager = ModelManager(tmp_path)
    manager.load_initial()
    switch_current(tmp_path, "1.0.1")
    assert not manager.check_for_update()
    assert manager.current is not None and manager.current.info["version"] == "1.0.0"


def test_a_model_whose_outputs_do_not_match_its_labels_is_refused(tmp_path: Path) -> None:
    make_tiny_package(tmp_path)
    card = tmp_path / "model_card.json"
    document = json.loads(card.read_text())
    document["num_classes"] = 4
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c", "d"]))
    document["files"]["labels.json"] = sha256_file(tmp_path / "labels.json")
    card.write_text(json.dumps(document))
    with pytest.raises(ModelPackageError, match="outputs 3 classes but labels.json has 4"):
        load_model(tmp_path, "fp32")


def test_reconfigure_switches_variant_only_when_it_exists(tiny_package: Path) -> None:
    manager = ModelManager(tiny_package)
    manager.load_initial()
    manager.reconfigure("int8", 0)  # the tiny package has no int8: logged, old model kept
    assert manager.current is not None and manager.current.package.variant == "fp32"


def test_the_service_refuses_to_start_on_a_package_that_fails_its_check(tmp_path: Path) -> None:
    make_tiny_package(tmp_path, int8=True)
    tiny_onnx(tmp_path / "model.onnx", swap=True)
    recard(tmp_path)  # hashes agree; the known answer does not
    with pytest.raises(ModelPackageError, match="answers the reference image 'blue'"):
        ModelManager(tmp_path).load_initial()
    assert ModelManager(tmp_path, "int8").load_initial().package.variant == "int8"  # the variant it serves


def test_a_hot_reload_runs_the_same_check_and_keeps_the_old_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_tiny_package(tmp_path / "versions/1.0.0")
    make_tiny_package(tmp_path / "versions/2.0.0", version="2.0.0")
    recard(tmp_path / "versions/2.0.0", input={"size": 16, "resize": 16, "mean": [0, 0, 0], "std": [255, 255, 255]})
    switch_current(tmp_path, "1.0.0")
    manager = ModelManager(tmp_path)
    manager.load_initial()
    switch_current(tmp_path, "2.0.0")
    assert not manager.check_for_update()
    assert manager.current is not None and manager.current.info["version"] == "1.0.0"
    assert "takes Nx3x32x32 images but the card's input is 16 px" in caplog.text


EXACT = Int8Kernels(True, "aarch64: int8 kernels widen products into int32 (exact)")
SATURATING = Int8Kernels(False, "x86_64 without AVX-512 VNNI or AVX-VNNI: ... which saturates")


def on_a_cpu(monkeypatch: pytest.MonkeyPatch, kernels: Int8Kernels, timings: dict[str, float] | None = None) -> None:
    """The manager as on a CPU whose int8 kernels are ``kernels``, each variant timing ``timings`` ms."""
    monkeypatch.setattr(model_manager, "int8_kernels", lambda: kernels)
    if timings is not None:
        monkeypatch.setattr(model_manager, "time_per_image_ms", lambda models: {v: timings[v] for v in models})


def served(manager: ModelManager) -> LoadedModel:
    manager.load_initial()
    assert manager.current is not None
    return manager.current


def test_auto_serves_int8_where_its_kernels_are_exact_and_it_times_faster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_tiny_package(tmp_path, int8=True)
    on_a_cpu(monkeypatch, EXACT, {"fp32": 41.3, "int8": 22.7})
    caplog.set_level("INFO")
    model = served(ModelManager(tmp_path))
    assert model.package.variant == "int8"
    assert model.choice is not None and "aarch64" in model.choice and "int8 22.7 ms, fp32 41.3 ms" in model.choice
    assert f"int8: {model.choice}" in caplog.text  # the log says which and why


def test_auto_serves_fp32_where_int8_is_exact_but_slower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_package(tmp_path, int8=True)
    on_a_cpu(monkeypatch, EXACT, {"fp32": 20.0, "int8": 30.0})
    model = served(ModelManager(tmp_path))
    assert model.package.variant == "fp32" and model.choice is not None and "fp32 is the faster" in model.choice


def test_auto_serves_fp32_where_int8_saturates_without_loading_int8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tiny_package(tmp_path, int8=True)
    on_a_cpu(monkeypatch, SATURATING)
    (tmp_path / "model.int8.onnx").write_bytes(b"never loaded here")  # it would fail its hash if it were
    model = served(ModelManager(tmp_path))
    assert model.package.variant == "fp32" and model.choice is not None and "saturates" in model.choice


def test_a_configured_int8_is_served_where_it_saturates_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_tiny_package(tmp_path, int8=True)
    on_a_cpu(monkeypatch, SATURATING)
    model = served(ModelManager(tmp_path, "int8"))
    assert model.package.variant == "int8" and model.choice is not None and "configured" in model.choice
    assert "serving int8 as configured, although" in caplog.text


def test_reconfiguring_to_auto_chooses_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_package(tmp_path, int8=True)
    on_a_cpu(monkeypatch, EXACT, {"fp32": 41.3, "int8": 22.7})
    manager = ModelManager(tmp_path, "fp32")
    assert served(manager).package.variant == "fp32"
    manager.reconfigure("auto", 0)
    assert manager.current is not None and manager.current.package.variant == "int8"


def test_the_load_time_timing_times_each_graph_given(tmp_path: Path) -> None:
    make_tiny_package(tmp_path, int8=True)
    models = {variant: load_model(tmp_path, variant) for variant in ("fp32", "int8")}
    timings = model_manager.time_per_image_ms(models, runs=2)
    assert set(timings) == {"fp32", "int8"} and all(ms > 0 for ms in timings.values())
