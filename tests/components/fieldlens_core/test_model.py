from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldlens_core import model as model_module
from fieldlens_core.int8_kernels import Int8Kernels
from fieldlens_core.model import (
    BadImageError,
    load_model,
    preprocess,
    softmax,
    to_tensor,
    to_tensors,
    top_k,
    with_narrow_session,
)
from fieldlens_core.model_package import InputSpec
from tests.helpers.images import solid_jpeg, solid_png
from tests.helpers.tiny_model import make_tiny_package, recard, tiny_onnx

SPEC = InputSpec(size=32, resize=36, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))


def test_top_k_is_sorted_probabilities() -> None:
    result = top_k(np.array([1.0, 3.0, 2.0, -1.0]), ["a", "b", "c", "d"], 3)
    assert [r.label for r in result] == ["b", "c", "a"]
    confidences = [r.confidence for r in result]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences) and sum(confidences) < 1.0


def test_k_is_clipped_to_the_label_count() -> None:
    assert len(top_k(np.array([0.0, 1.0]), ["a", "b"], 10)) == 2


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([1000.0, 1000.0]))
    assert probabilities == pytest.approx([0.5, 0.5])


def test_tensor_shape_scaling_and_channel_order() -> None:
    tensor = preprocess(solid_png((255, 0, 127)), SPEC)
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    assert tensor[0, :, 5, 5] == pytest.approx([(255 - 127) / 128, -127 / 128, 0.0], abs=1e-6)


def test_a_tensor_keeps_rows_columns_and_channels_where_they_were() -> None:
    """On an image that no transpose leaves the same: each pixel (row, column) lands at [:, row, column]."""
    rows, columns = np.mgrid[0 : SPEC.size, 0 : SPEC.size]
    pixels = np.stack([rows * 7 % 256, columns * 3 % 256, (rows + 2 * columns) % 256], axis=-1).astype(np.uint8)
    images = [Image.fromarray(pixels), Image.fromarray(pixels[::-1])]
    mean, std = np.array(SPEC.mean, np.float32), np.array(SPEC.std, np.float32)
    wanted = [((image_pixels - mean) / std).transpose(2, 0, 1) for image_pixels in (pixels, pixels[::-1])]
    np.testing.assert_allclose(to_tensor(images[0], SPEC)[0], wanted[0], rtol=0, atol=1e-6)
    batch = to_tensors(images, SPEC)
    assert batch.shape == (2, 3, SPEC.size, SPEC.size) and batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_allclose(batch, np.stack(wanted), rtol=0, atol=1e-6)


def test_wide_images_are_center_cropped() -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white middle third
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    tensor = preprocess(buffer.getvalue(), SPEC)
    assert tensor.min() > 0.9  # only the white middle survives the crop


def test_large_jpegs_decode_through_draft_mode() -> None:
    tensor = preprocess(solid_jpeg((10, 200, 10), size=(2000, 1500)), SPEC)
    assert tensor.shape == (1, 3, 32, 32)
    assert tensor[0, 1].mean() > 0.5


@pytest.mark.parametrize("body", [b"", b"hello", b"\xff\xd8\xff\xe0garbage", solid_jpeg((1, 2, 3))[:40]])
def test_corrupt_images_are_bad_image_errors(body: bytes) -> None:
    with pytest.raises(BadImageError):
        preprocess(body, SPEC)


def test_decompression_bombs_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")  # 100 MP, a few KB
    with pytest.raises(BadImageError, match="pixels"):
        preprocess(buffer.getvalue(), SPEC)


def test_a_large_png_is_refused_before_it_is_decoded() -> None:
    """A PNG decodes at full size: 39.7 Mpx ones once peaked the service at 1,257 MB."""
    import io

    from PIL import Image

    from fieldlens_core.model import MAX_DECODED_PIXELS, BadImageError

    buffer = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buffer, format="PNG")  # 20 Mpx, a few KB compressed
    with pytest.raises(BadImageError, match=str(MAX_DECODED_PIXELS)):
        preprocess(buffer.getvalue(), SPEC, "image/png")


def test_a_large_jpeg_decodes_scaled_down_in_draft_mode() -> None:
    from fieldlens_core.model import decode

    image = decode(solid_jpeg((10, 200, 10), size=(6000, 4000)), SPEC, "image/jpeg")  # 24 Mpx, a Pi HQ frame is 12
    assert image.width * image.height <= 1_000_000


def test_classify_and_top1_give_the_same_answer_from_bytes_and_from_a_decoded_image(tmp_path: Path) -> None:
    """The service (bytes), the gate (top1 in batches) and the checks on photos (PIL) share one path."""
    make_tiny_package(tmp_path)
    model = load_model(tmp_path, "fp32")
    red, blue = solid_jpeg((240, 10, 10)), solid_jpeg((10, 10, 240))
    result = model.classify(red, 2, "image/jpeg")
    assert len(result.predictions) == 2 and set(result.timing_ms) == {"preprocess", "inference", "postprocess"}
    decoded = Image.open(io.BytesIO(red))
    assert model.classify(decoded, 1).predictions[0].label == result.predictions[0].label
    assert model.top1([red, blue, decoded]) == [
        model.classify(image, 1).predictions[0].label for image in (red, blue, decoded)
    ]
    assert model.top1([red, blue])[0] != model.top1([red, blue])[1]  # the tiny model tells red from blue


def test_classify_takes_the_callers_predict(tmp_path: Path) -> None:
    make_tiny_package(tmp_path)
    model = load_model(tmp_path, "fp32")
    shapes: list[tuple[int, ...]] = []

    def predict(tensor: np.ndarray) -> np.ndarray:
        shapes.append(tensor.shape)
        return model.predict(tensor)

    model.classify(solid_jpeg((240, 10, 10)), 1, predict=predict)
    assert shapes == [(1, 3, model.spec.size, model.spec.size)]


def test_a_graph_whose_batch_axis_is_fixed_runs_one_image_at_a_time(tmp_path: Path) -> None:
    """The gate's and the checks' batches of 16 would not fit a graph exported with a batch of 1."""
    make_tiny_package(tmp_path)
    tiny_onnx(tmp_path / "model.onnx", batch=1)
    recard(tmp_path)
    model = load_model(tmp_path, "fp32")
    assert model.max_batch == 1
    colours = [(240, 10, 10), (10, 240, 10), (10, 10, 240)] * 6
    assert model.top1([solid_jpeg(colour) for colour in colours]) == ["red", "green", "blue"] * 6


def test_sessions_spin_only_within_a_run(tmp_path: Path) -> None:
    """Spinning lets ORT's threads wait for each other between a run's steps without sleeping; the
    stop after each run keeps them from burning CPU between requests."""
    make_tiny_package(tmp_path)
    for spinning, entry in ((True, "1"), (False, "0")):
        options = load_model(tmp_path, "fp32", spinning=spinning).session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def test_a_narrow_session_is_the_same_graph_on_one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inference service's runs side by side (fieldlens_inference/lanes.py) answer as its wide ones;
    the unfused int8 of a CPU whose kernels saturate stays unfused in it."""
    import onnxruntime as ort

    make_tiny_package(tmp_path, int8=True)
    model = load_model(tmp_path, "fp32", threads=2)
    assert model.narrow_session is None
    narrow = with_narrow_session(model)
    options = narrow.narrow_session.get_session_options()  # type: ignore[union-attr]
    assert options.intra_op_num_threads == 1 and options.get_session_config_entry("session.disable_prepacking") == "1"
    for colour in ((240, 10, 10), (10, 240, 10), (10, 10, 240)):
        tensor = preprocess(solid_jpeg(colour), model.spec)
        np.testing.assert_allclose(narrow.predict(tensor, narrow=True), model.predict(tensor), rtol=1e-4, atol=1e-5)
    assert narrow.session is model.session  # a wide run is still the served session's
    monkeypatch.setattr(model_module, "int8_kernels", lambda: Int8Kernels(False, "a CPU"))
    unfused = with_narrow_session(load_model(tmp_path, "int8", as_written=True)).narrow_session
    assert unfused is not None
    assert unfused.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with pytest.raises(RuntimeError, match="does not have"):  # int8's kernels need their weights prepacked
        unfused.get_session_options().get_session_config_entry("session.disable_prepacking")


@pytest.mark.parametrize(
    ("exact", "as_written", "unfused"),
    [(False, True, True), (False, False, False), (True, True, False), (True, False, False)],
)
def test_int8_runs_op_by_op_only_when_asked_as_written_where_its_kernels_saturate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exact: bool, as_written: bool, unfused: bool
) -> None:
    """As written, op by op in float, is what exact int8 kernels compute: checks and measurements
    ask for it, the service never does (it serves fp32 there instead)."""
    import onnxruntime as ort

    make_tiny_package(tmp_path, int8=True)
    monkeypatch.setattr(model_module, "int8_kernels", lambda: Int8Kernels(exact, "a CPU"))
    level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL if unfused else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    loaded = load_model(tmp_path, "int8", as_written=as_written)
    assert loaded.session.get_session_options().graph_optimization_level == level
    fp32 = load_model(tmp_path, "fp32", as_written=as_written)  # fp32 is the same graph everywhere
    assert fp32.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
