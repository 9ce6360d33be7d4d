"""PyTorch -> ONNX (fp32) -> static int8 -> a model package, checked against torch on the way.

One way to write a model package: export, quantize, label, check against torch, card, known
answer (``reference.png`` with each variant's top-1 for it), the device's check, publish.

Both the embedded default model and every retrained candidate go through :func:`write_package`,
so a package always has the same files, the same checks and the same card fields. The package
is assembled in a staging directory beside ``out_dir`` and renamed into place: a crash leaves
the old package (or none), never half of a new one.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fieldlens_core.errors import ExitCode, TrainingError
from fieldlens_core.messages import utc_timestamp
from fieldlens_core.model import LoadedModel, decode, load_model
from fieldlens_core.model_check import check_package, reference_answers, write_reference
from fieldlens_core.model_package import (
    LABELS_FILE,
    InputSpec,
    ModelCard,
    Reference,
    card_for,
    package_with_card,
    write_card,
)

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(model: Any, path: Path, size: int) -> None:
    """One self-contained .onnx file with a dynamic batch axis (the legacy exporter, dynamo=False)."""
    export_graph(model, path, (3, size, size), INPUT_NAME)


def export_graph(
    model: Any, path: Path, shape: tuple[int, ...], input_name: str, outputs: tuple[str, ...] = (OUTPUT_NAME,)
) -> None:
    """``model`` for inputs of ``shape`` after a dynamic batch axis, as every graph here is exported;
    ``outputs`` names what ``model`` returns (a tuple for more than one), each batched the same."""
    import torch

    example = torch.zeros(1, *shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's notes on constant folding and deprecation
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in (input_name, *outputs)},
            opset_version=OPSET,
            dynamo=False,
        )


def onnx_logits(path: Path, tensors: Sequence[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: t})[0] for t in tensors])


def torch_logits(model: Any, tensors: Sequence[np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(t)).numpy() for t in tensors])


class _Calibration:
    """Feeds calibration tensors to ONNX Runtime's static quantizer, one at a time."""

    def __init__(self, tensors: Sequence[np.ndarray]) -> None:
        self._items: Iterator[np.ndarray] = iter(tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {INPUT_NAME: item}

    def rewind(self) -> None:  # part of CalibrationDataReader's interface in newer ORT
        return None


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Sequence[np.ndarray]) -> None:
    """Static int8 (QDQ, uint8 activations and per-channel int8 weights: U8S8) calibrated on real images.

    U8S8 is what ONNX Runtime's int8 kernels are built for. Where they are exact (ARM, with or
    without the dot product; x86 with AVX-512 VNNI or AVX-VNNI) it agrees with fp32 on 99% of
    the default model's decided views and runs faster than fp32.

    Plain MinMax ranges, every node quantized: the alternatives measured on the default model
    (Percentile and Entropy calibration, four times the calibration views, other calibration
    seeds, the stem conv or the classifier kept in float) agreed within one or two views of it
    in five hundred, each losing views of its own where fp32 leads by one or two logits; and
    Percentile and Entropy calibrate over ten times slower, where the retrain quantizes every
    candidate. A moving average of the ranges (CalibMovingAverage) clips real activations and
    agrees far less.

    On x86 with AVX2 but no VNNI its kernels add pairs of products into int16 (VPMADDUBSW),
    which saturates: the inference service then serves fp32 (fieldlens_core.int8_kernels), and
    the model check and this writer run the graph as written. U8U8, shipped before, never
    saturates, but it agrees less (96.6%) and its kernel is slow on every CPU measured (4x fp32
    on x86, where ONNX Runtime fuses both schemes into QLinearConv alike): wherever U8S8 is exact
    it is the better int8 graph, and wherever it is not fp32 is. So a package ships one int8 graph
    and fp32. The README's "The int8 variant" has the figures and how they were measured.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs one INFO line per rescaled bias to the root logger
    biases = _CountBiasWarnings()
    root.addFilter(biases)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(int8_path),
                Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    finally:
        root.removeFilter(biases)
        root.setLevel(level)
    if biases.count:
        log.info("quantizer: %d conv biases did not fit int32 at their scale and were clipped", biases.count)


FEATURES_NAME = "features"
"""The value where a frozen backbone ends and a head begins, in a stitched graph."""


def stitch_head(body_path: Path, head: Any, features: int, out: Path) -> None:
    """A head on a frozen backbone's graph: ``body_path`` (its pooled features as its one output)
    with ``head`` exported after it, in float, as one graph.

    The int8 graph is the backbone's int8 graph, quantized once
    (``fieldlens_retrain.embeddings.EmbeddingCache.int8_backbone``), with the head after it:
    quantizing the whole network again for each candidate cost most of an incremental retrain,
    though only the head differs between candidates. The head (a linear layer and the prototype
    blend: a thousandth of the network's multiply-adds) stays in float, so it adds no rounding of its
    own. A frozen candidate's fp32 graph is the backbone's fp32 graph (the one its embeddings
    came from) with the head after it the same way: exporting the whole network through torch again
    was a tenth of an incremental retrain (0.4 s), and the export check then compares the stitched
    graph with the torch network as it did the exported one. The staged package is checked like any
    other (known answer, device check).
    """
    import onnx
    from onnx import compose

    with tempfile.TemporaryDirectory() as scratch:
        head_path = Path(scratch) / "head.onnx"
        export_graph(head, head_path, (features,), FEATURES_NAME)
        tail = onnx.load(str(head_path))
    body = onnx.load(str(body_path))
    (ending,) = body.graph.output  # the backbone's pooled features, exported as OUTPUT_NAME
    for node in body.graph.node:
        node.output[:] = [FEATURES_NAME if name == ending.name else name for name in node.output]
    ending.name = FEATURES_NAME
    tail.ir_version = body.ir_version
    onnx.save(compose.merge_models(body, tail, io_map=[(FEATURES_NAME, FEATURES_NAME)]), str(out))


class _CountBiasWarnings(logging.Filter):
    """Counts the quantizer's per-layer 'bias exceeds the range of a int32' warnings and keeps them
    out of the log: one line with the count says the same. The agreement measured on held-out
    views (default_model.int8_agreement) is what tells whether it matters."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "exceeds the range of a int32" in record.getMessage():
            self.count += 1
            return False
        return True


FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
VARIANTS = {"fp32": FP32_FILE, "int8": INT8_FILE}
INT8_SCHEME = "U8S8: static QDQ, uint8 activations, per-channel int8 weights"
"""What the card says the int8 graph is (``metrics.int8_scheme``); which CPUs compute it exactly follows from it."""
EXPORT_TOLERANCE = 1e-3
"""Largest difference allowed between the probabilities torch and the exported fp32 graph give
(a tenth of a percentage point). Probabilities, not logits: the device reads the softmax, and a
retrained head outputs log-probabilities, where a class at 1e-11 (a prototype's cosine times 30)
sits near -25 and float32 rounding there moves a "logit" by 0.002 while its probability moves by
nothing anyone could measure."""


class ExportCheckError(TrainingError):
    """The exported graph answers otherwise than the network it came from: a bug in the export,
    not a problem with anyone's data, so it is an internal failure (exit 1)."""

    exit_code = ExitCode.FAILED


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def export_agreement(torch_out: np.ndarray, onnx_out: np.ndarray) -> dict[str, float]:
    """How far the exported graph is from torch: in probability (what is checked) and in logits
    (recorded, with their range, which tells how much rounding their scale allows)."""
    return {
        "fp32_max_abs_probability_diff_vs_torch": float(np.abs(softmax(torch_out) - softmax(onnx_out)).max()),
        "fp32_max_abs_logit_diff_vs_torch": float(np.abs(torch_out - onnx_out).max()),
        "fp32_logit_range": float(np.ptp(torch_out)),
    }


EXPORT_CHECKED = 8
"""Calibration inputs the export check runs through both (variety matters, not count)."""

REFERENCE_CANDIDATES = 8
"""Calibration views tried as the reference image; the one every variant answers most decidedly wins."""


def view_png(tensor: np.ndarray, spec: InputSpec) -> bytes:
    """A model input (1 x 3 x size x size, normalised) back as the PNG image it was made from."""
    pixels = tensor[0] * np.asarray(spec.std, dtype=np.float32)[:, None, None]
    pixels += np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def served_png(photo: bytes, spec: InputSpec) -> bytes:
    """``photo`` (JPEG or PNG) as a PNG of the pixels the service decodes from it
    (fieldlens_core.model.decode): every graph answers the PNG as it answers the photo."""
    buffer = io.BytesIO()
    decode(photo, spec).save(buffer, format="PNG")
    return buffer.getvalue()


def add_reference(staging: Path, images: Sequence[bytes], loaded: Callable[[str], LoadedModel]) -> float:
    """Write the package's known answer (reference.png, reference.json) into ``staging``; its top-1 margin.

    Each device checks the package against it before serving it (fieldlens_core.model_check):
    a replaced graph, or a runtime that computes this one differently, answers otherwise. Of the
    ``images`` (PNG, real photos, so the model answers with some confidence) the one whose top-1
    leads its top-2 the most in every variant wins, so that another CPU's rounding cannot swap
    them. Each graph runs as written (``load_model``'s ``as_written``), so that a package written
    on a CPU whose int8 kernels saturate expects what a Pi computes: ``loaded`` gives each variant
    so (see :func:`write_package`).
    """
    models = {variant: loaded(variant) for variant in VARIANTS}
    best: tuple[float, bytes, Reference] | None = None
    for image in images:
        reference, margin = reference_answers(models, image, "image/png")
        if best is None or margin > best[0]:
            best = (margin, image, reference)
    if best is None:
        raise TrainingError("no calibration image to make the package's reference answer from")
    margin, image, reference = best
    write_reference(staging, image, reference)
    log.info("reference answer: %s (top-1 ahead of top-2 by %.3f)", reference.expected, margin)
    return margin


Measure = Callable[[Callable[[str], LoadedModel]], dict[str, Any]]
"""Extra card metrics, from the staged package loaded as a variant (``"fp32"`` or ``"int8"``), as written."""


def write_package(
    out_dir: Path,
    network: Any,
    labels: list[str],
    spec: InputSpec,
    calibration: Sequence[np.ndarray],
    card: dict[str, Any],
    measure: Measure | None = None,
    int8: Callable[[Path], None] | None = None,
    fp32: Callable[[Path], None] | None = None,
    reference_images: Sequence[bytes] | None = None,
    torch_check: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
) -> ModelCard:
    """Write ``network`` (a torch module in eval mode) as a package at ``out_dir``, replacing it.

    ``card`` holds the fields only the caller knows (name, version, architecture, training);
    this function adds the input, classes, variants, creation time and the export check to its
    metrics. ExportCheckError when the exported graph's probabilities disagree with torch's.
    ``int8`` writes the int8 graph to the path it is given (a retrain's :func:`stitch_head`);
    by default the fp32 graph is quantized whole, calibrated on ``calibration``. ``fp32`` likewise
    writes the fp32 graph (a frozen candidate's :func:`stitch_head`); by default ``network`` is
    exported whole. Either way the fp32 graph is checked against ``network`` in torch: on
    :data:`EXPORT_CHECKED` of the calibration inputs, or on ``torch_check``'s inputs against its
    logits (a frozen candidate's head on the backbone's cached torch features, for which ``network``
    need not be loaded: EmbeddingCache.torch_features).
    ``reference_images`` (PNG) are the candidates for the reference answer (:func:`add_reference`);
    by default :data:`REFERENCE_CANDIDATES` of the calibration views, each graph run on each.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    try:
        if fp32 is None:
            export_onnx(network, staging / FP32_FILE, spec.size)
        else:
            fp32(staging / FP32_FILE)
        if int8 is None:
            quantize_int8(staging / FP32_FILE, staging / INT8_FILE, calibration)
        else:
            int8(staging / INT8_FILE)
        (staging / LABELS_FILE).write_text(json.dumps(labels))
        if torch_check is None:
            checked = list(calibration[:: max(1, len(calibration) // EXPORT_CHECKED)][:EXPORT_CHECKED])
            torch_check = checked, torch_logits(network, checked)
        inputs, expected = torch_check
        agreement = export_agreement(expected, onnx_logits(staging / FP32_FILE, inputs))
        difference = agreement["fp32_max_abs_probability_diff_vs_torch"]
        if difference > EXPORT_TOLERANCE:
            raise ExportCheckError(
                f"the ONNX export gives probabilities up to {difference:.2g} away from torch's "
                f"(at most {EXPORT_TOLERANCE:g}) at {len(labels)} classes",
                "A bug in the export, not in the labels: report it with the output of --log-level DEBUG",
            )
        fields = {
            **card,
            "input": spec.model_dump(),
            "num_classes": len(labels),
            "variants": VARIANTS,
            "created": utc_timestamp(),
            "metrics": {**card.get("metrics", {}), **agreement, "int8_scheme": INT8_SCHEME},
        }

        staged = card_for(staging, fields)  # the graphs and labels as the card will describe them
        sessions: dict[str, LoadedModel] = {}

        def loaded(variant: str) -> LoadedModel:
            """Each staged graph loaded once, for the reference and ``measure`` both: a session for
            each use cost 0.1 s of an incremental retrain."""
            if variant not in sessions:
                sessions[variant] = load_model(package_with_card(staging, staged, variant), variant, as_written=True)
            return sessions[variant]

        if reference_images is None:
            step = max(1, len(calibration) // REFERENCE_CANDIDATES)
            reference_images = [view_png(tensor, spec) for tensor in calibration[::step][:REFERENCE_CANDIDATES]]
        add_reference(staging, reference_images, loaded)
        if measure is not None:
            fields["metrics"].update(measure(loaded))
        written = write_card(staging, fields)  # once, complete: the only write of a package's card
        check_package(staging, require_reference=True)  # what each device runs before serving it
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def finish_fetched_package(package_dir: Path, card_fields: dict[str, Any]) -> ModelCard:
    """Give a package written elsewhere (the SageMaker job's, which cannot know the device's current
    model) its local version, parent and evaluation: its card's one rewrite, after which the package
    must pass the device's check as a local one does."""
    card = write_card(package_dir, card_fields)
    check_package(package_dir, require_reference=True)
    return card
