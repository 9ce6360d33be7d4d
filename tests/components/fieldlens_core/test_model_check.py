"""The one package check: real tiny ONNX packages, tampered the ways a person or a bad copy would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.int8_kernels import Int8Kernels
from fieldlens_core.model_check import REFERENCE_TOLERANCE, check_package, main
from fieldlens_core.model_package import LABELS_FILE, MAX_LABEL_CHARS, MAX_LABELS, REFERENCE_FILE
from tests.helpers.tiny_model import LABELS, make_tiny_package, recard, tiny_onnx


@pytest.fixture
def package(tmp_path: Path) -> Path:
    make_tiny_package(tmp_path / "p", int8=True)
    return tmp_path / "p"


def write_labels(directory: Path, labels: list[str]) -> None:
    (directory / LABELS_FILE).write_text(json.dumps(labels))
    recard(directory, num_classes=len(labels))


def test_a_good_package_passes_every_variant_against_its_known_answer(package: Path) -> None:
    checked = check_package(package, require_reference=True)
    assert sorted(checked.models) == ["fp32", "int8"]
    assert checked.reference is not None and checked.reference.expected["int8"].label == "red"
    assert checked.models["fp32"].classify((package / "reference.png").read_bytes(), 1).predictions[0].label == "red"


def test_the_service_gets_back_the_one_variant_it_serves(package: Path) -> None:
    checked = check_package(package, ["int8"], threads=1)
    assert list(checked.models) == ["int8"] and checked.models["int8"].package.variant == "int8"


def test_a_card_claiming_another_input_size_is_refused_with_both_sizes(package: Path) -> None:
    recard(package, input={"size": 16, "resize": 16, "mean": [0, 0, 0], "std": [255, 255, 255]})
    with pytest.raises(
        ModelPackageError, match=r"model.onnx takes Nx3x32x32 images but the card's input is 16 px"
    ) as e:
        check_package(package)
    assert e.value.hint and "current model stays" in e.value.hint


def test_a_card_claiming_more_classes_than_the_graph_gives_is_refused(package: Path) -> None:
    write_labels(package, [*LABELS, "purple"])
    with pytest.raises(ModelPackageError, match=r"gives 3 classes but the card says 4"):
        check_package(package)


def test_millions_of_labels_are_refused_before_onnx_runtime(package: Path) -> None:
    write_labels(package, [f"c{i}" for i in range(MAX_LABELS + 1)])
    with pytest.raises(ModelPackageError, match=rf"claims {MAX_LABELS + 1} classes; at most {MAX_LABELS}"):
        check_package(package)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("x" * (MAX_LABEL_CHARS + 1), "characters long"),
        ("red", "appears twice"),
        ("gr\neen", "control character"),
        ("gr\u202eeen", "control character"),
        ("  ", "is empty"),
    ],
    ids=["long", "duplicate", "newline", "bidi", "blank"],
)
def test_labels_a_reply_cannot_carry_are_refused(package: Path, bad: str, reason: str) -> None:
    write_labels(package, ["red", "blue", bad])
    with pytest.raises(ModelPackageError, match=f"label 2 .* {reason}"):
        check_package(package)


def test_a_replaced_graph_fails_its_hash(package: Path) -> None:
    tiny_onnx(package / "model.onnx", swap=True)
    with pytest.raises(ModelPackageError, match="model.onnx fails its sha256 check"):
        check_package(package)


def test_a_replaced_graph_with_a_matching_card_fails_the_known_answer(package: Path) -> None:
    tiny_onnx(package / "model.int8.onnx", swap=True)  # red -> "blue"
    recard(package)  # every hash agrees again: only the known answer can tell
    with pytest.raises(ModelPackageError, match=r"model.int8.onnx answers the reference image 'blue'.*expects 'red'"):
        check_package(package)


def test_a_confidence_outside_the_tolerance_fails_the_known_answer(package: Path) -> None:
    reference = json.loads((package / REFERENCE_FILE).read_text())
    reference["expected"]["fp32"]["confidence"] -= 2 * REFERENCE_TOLERANCE
    (package / REFERENCE_FILE).write_text(json.dumps(reference))
    recard(package)
    with pytest.raises(ModelPackageError, match=rf"expects 'red' at .*within {REFERENCE_TOLERANCE}"):
        check_package(package)


def test_an_int8_graph_that_disagrees_with_the_card_is_named(package: Path) -> None:
    tiny_onnx(package / "model.int8.onnx", classes=4)
    recard(package)
    with pytest.raises(ModelPackageError, match=r"model.int8.onnx gives 4 classes but the card says 3"):
        check_package(package)
    assert check_package(package, ["fp32"]).models["fp32"]  # the service serving fp32 is not stopped by it


def test_a_package_without_a_known_answer_passes_install_but_not_the_device(tmp_path: Path) -> None:
    make_tiny_package(tmp_path / "old", reference=False)
    assert check_package(tmp_path / "old").reference is None
    with pytest.raises(ModelPackageError, match="no known answer") as e:
        check_package(tmp_path / "old", require_reference=True)
    assert e.value.hint and "Write the package again" in e.value.hint


def test_an_unknown_variant_is_a_package_error(package: Path) -> None:
    with pytest.raises(ModelPackageError, match="no 'int4' variant"):
        check_package(package, ["int4"])


def test_the_entry_point_exits_zero_only_for_a_package_that_passes(
    package: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main([str(package)]) == 0
    make_tiny_package(tmp_path / "old", reference=False)
    assert main([str(tmp_path / "old")]) != 0
    assert "no known answer" in caplog.text


def test_checking_every_variant_runs_int8_as_written_and_serving_it_does_not(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Install, build and a device's Startup check the graph a Pi computes even on a CPU whose int8
    kernels saturate; the service gets the session it serves."""
    import onnxruntime as ort

    from fieldlens_core import model

    monkeypatch.setattr(model, "int8_kernels", lambda: Int8Kernels(False, "x86_64 without VNNI"))
    every = check_package(package).models["int8"].session.get_session_options()
    served = check_package(package, ["int8"]).models["int8"].session.get_session_options()
    assert every.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert served.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_where_int8_kernels_saturate_a_failed_int8_answer_says_to_serve_fp32(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fieldlens_core import model_check

    monkeypatch.setattr(model_check, "int8_kernels", lambda: Int8Kernels(False, "x86_64 without VNNI"))
    tiny_onnx(package / "model.int8.onnx", swap=True)
    recard(package)
    with pytest.raises(ModelPackageError) as failure:
        check_package(package, ["int8"])
    assert failure.value.hint is not None and "x86_64 without VNNI" in failure.value.hint
    assert "serve fp32" in failure.value.hint
