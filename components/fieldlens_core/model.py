"""The model: an image in, predictions out, the same way everywhere a model runs.

preprocess -> predict -> postprocess, in that order in this file:

- **preprocess**, the card's InputSpec: decode (only the declared format, within pixel
  budgets), resize the shorter side to ``resize`` and center-crop ``size`` x ``size`` in one
  resampling, scale 0-255 RGB by the card's mean and std, NCHW float32. For JPEG, Pillow's
  draft mode lets the decoder scale down by 1/2, 1/4 or 1/8 while decoding, which makes large
  photos cheap.
- **predict**: the ONNX Runtime session of a loaded package (:class:`LoadedModel`).
- **postprocess**: softmax, sorted top k.

The inference service, the retrain gate, the embeddings and the default model's checks all go
through :meth:`LoadedModel.classify`, :meth:`LoadedModel.top1` or :func:`image_tensor`, so
what is measured offline is what the device runs.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, UnidentifiedImageError

from fieldlens_core.errors import FieldlensError, ModelPackageError
from fieldlens_core.int8_kernels import int8_kernels
from fieldlens_core.messages import Prediction
from fieldlens_core.model_package import InputSpec, ModelPackage, load_package

# -- preprocess ------------------------------------------------------------------------------------
# Decompression-bomb guard: a few-KB PNG can claim 50,000 x 50,000 pixels. A JPEG of up to
# MAX_PIXELS decodes cheaply (draft mode scales by up to 1/8 while decoding); anything decoded at
# full size (PNG) is held to MAX_DECODED_PIXELS, and at most LARGE_DECODES of those over
# LARGE_PIXELS decode at once: four 39.7 Mpx PNGs once peaked the service at 1,257 MB.
MAX_PIXELS = 40_000_000
MAX_DECODED_PIXELS = 16_000_000  # 48 MB of RGB: a 12 Mpx Pi HQ camera frame fits
LARGE_PIXELS = 4_000_000
LARGE_DECODES = threading.BoundedSemaphore(2)
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}


class BadImageError(FieldlensError, ValueError):
    """The body is not an image Pillow can decode, or it is too large to decode safely."""


def decode(body: bytes, spec: InputSpec, content_type: str | None = None) -> Image.Image:
    """Decode ``body`` as the declared content type only (any of JPEG and PNG when None): a TIFF,
    BMP or GIF sent as image/jpeg is a BadImageError, not a job for another decoder."""
    formats = [FORMATS[content_type]] if content_type in FORMATS else list(FORMATS.values())
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: MAX_PIXELS below is the guard
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body), formats=formats)
        if image.width * image.height > MAX_PIXELS:
            raise BadImageError(f"image of {image.width}x{image.height} pixels is over {MAX_PIXELS}")
        image.draft("RGB", (spec.resize, spec.resize))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
        decoded = image.width * image.height
        if decoded > MAX_DECODED_PIXELS:
            raise BadImageError(
                f"{image.format} image of {image.width}x{image.height} pixels is over the "
                f"{MAX_DECODED_PIXELS} that decode at full size"
            )
        if decoded <= LARGE_PIXELS:
            return image.convert("RGB")
        with LARGE_DECODES:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise BadImageError(f"cannot decode image: {exc}") from None


def resize_and_crop(image: Image.Image, spec: InputSpec) -> Image.Image:
    """The center ``size`` square of the image scaled so its shorter side is ``resize``, in one resampling.

    Resampling only the source box that survives the crop costs a third less than resizing
    the whole image and cropping after, and gives the same pixels up to interpolation error.
    """
    side = min(image.size) * spec.size / spec.resize  # the crop, in source pixels
    left, top = (image.width - side) / 2, (image.height - side) / 2
    return image.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    return to_tensors([image], spec)


def to_tensors(images: Sequence[Image.Image], spec: InputSpec) -> np.ndarray:
    """RGB images of the model's size as one (n, 3, size, size) batch, scaled in one pass (the
    embeddings' views: six per image)."""
    arrays = [np.asarray(image) for image in images]
    stacked = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # a request's one image: no copy
    pixels = stacked.transpose(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
    tensor = np.empty(pixels.shape, dtype=np.float32)
    np.subtract(pixels, np.asarray(spec.mean, dtype=np.float32)[:, None, None], out=tensor)
    tensor /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return tensor


def image_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded image (any mode) as the model's input: training views and photos go this way."""
    return to_tensor(resize_and_crop(image.convert("RGB"), spec), spec)


def preprocess(body: bytes, spec: InputSpec, content_type: str | None = None) -> np.ndarray:
    """Encoded image bytes as the model's input: what every request goes through."""
    return to_tensor(resize_and_crop(decode(body, spec, content_type), spec), spec)


# -- postprocess -----------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    exp = np.exp(shifted, dtype=np.float64)
    result: np.ndarray = exp / exp.sum()
    return result


def top_k(logits: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes, most probable first: the one shape of a prediction from here
    to the wire. Built without validation (``model_construct``): the values are this function's own,
    a probability and a label the package check already bounded."""
    probabilities = softmax(np.asarray(logits, dtype=np.float64).reshape(-1))
    k = max(1, min(k, len(labels)))
    best = np.argpartition(-probabilities, k - 1)[:k]
    best = best[np.argsort(-probabilities[best], kind="stable")]
    return [Prediction.model_construct(label=labels[i], confidence=round(float(probabilities[i]), 6)) for i in best]


BATCH = 16
"""Images per run when many are classified offline (the gate, the default model's checks)."""


@dataclass(frozen=True)
class Classification:
    predictions: list[Prediction]
    timing_ms: dict[str, float]


@dataclass(frozen=True)
class LoadedModel:
    package: ModelPackage
    session: ort.InferenceSession
    input_name: str

    @property
    def info(self) -> dict[str, str]:
        return {"name": self.package.card.name, "version": self.package.card.version, "sha256": self.package.sha256}

    max_batch: int = 64  # 1 when the graph's batch axis is fixed
    choice: str | None = None  # why the inference service serves this graph (its variant choice); None elsewhere
    narrow_session: ort.InferenceSession | None = None
    """The same graph on one thread, for runs side by side (:func:`with_narrow_session`); None: ``session``."""

    @property
    def spec(self) -> InputSpec:
        return self.package.card.input

    @property
    def labels(self) -> list[str]:
        return self.package.labels

    def tensor(self, image: bytes | Image.Image, content_type: str | None = None) -> np.ndarray:
        """The model's input for an encoded image (decoded as ``content_type`` only) or a decoded one."""
        if isinstance(image, Image.Image):
            return image_tensor(image, self.spec)
        return preprocess(image, self.spec, content_type)

    def classify(
        self,
        image: bytes | Image.Image,
        k: int,
        content_type: str | None = None,
        predict: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Classification:
        """preprocess -> predict -> postprocess, each timed: what the service, the gate and the
        default model's checks all run. ``predict`` replaces the plain session call (the
        service passes its batcher). BadImageError for an image that does not decode."""
        started = time.perf_counter()
        tensor = self.tensor(image, content_type)
        preprocessed = time.perf_counter()
        logits = (predict or self.predict)(tensor)
        predicted = time.perf_counter()
        predictions = top_k(logits, self.labels, k)
        finished = time.perf_counter()
        return Classification(
            predictions,
            {
                "preprocess": round((preprocessed - started) * 1000, 3),
                "inference": round((predicted - preprocessed) * 1000, 3),
                "postprocess": round((finished - predicted) * 1000, 3),
            },
        )

    def top1(self, images: Sequence[bytes | Image.Image], batch: int = BATCH) -> list[str]:
        """The top-1 label of each image, run in batches (the gate's evaluation)."""
        labels: list[str] = []
        for start in range(0, len(images), batch):
            tensors = [self.tensor(image) for image in images[start : start + batch]]
            labels += [self.labels[int(i)] for i in self.logits(tensors, batch).argmax(axis=1)]
        return labels

    def logits(self, tensors: Sequence[np.ndarray], batch: int = BATCH) -> np.ndarray:
        """Logits of many ready tensors, ``batch`` images per run (fewer where the graph's batch axis
        is fixed): memory stays that of one batch."""
        batch = min(batch, self.max_batch)
        runs = [self.predict_batch(np.concatenate(tensors[s : s + batch])) for s in range(0, len(tensors), batch)]
        return np.concatenate(runs) if runs else np.empty((0, len(self.labels)), dtype=np.float32)

    def predict(self, tensor: np.ndarray, narrow: bool = False) -> np.ndarray:
        """Logits of one image; ``narrow``: on the one-thread session, beside other runs."""
        logits: np.ndarray = self.predict_batch(tensor, narrow)[0]
        return logits

    def predict_batch(self, tensor: np.ndarray, narrow: bool = False) -> np.ndarray:
        session = self.narrow_session if narrow and self.narrow_session is not None else self.session
        outputs = session.run(None, {self.input_name: tensor})
        logits: np.ndarray = outputs[0]
        return logits


def load_model(
    model_dir: Path | ModelPackage, variant: str, threads: int = 0, spinning: bool = True, as_written: bool = False
) -> LoadedModel:
    """The package's ``variant`` in an ONNX Runtime session, checked to run on a probe of the card's size.

    ``spinning``: ORT's intra-op threads spin between the parallel steps of one run and stop
    when the run ends (``session.force_spinning_stop``). Measured on a 2-vCPU Xeon with the
    default model (components/fieldlens_bench/README.md, "The edge path"): a run takes 3.6 ms
    instead of 4.6 ms with spinning off (every step of a run otherwise wakes sleeping threads)
    and 7.1 ms of CPU instead of 8.0; ORT's own default, spinning with no stop, burns 11.5 ms of
    CPU a run when requests come 4 ms apart: the cores the decoder and the classifier need.

    ``as_written`` is for checking and measuring a graph rather than serving it: where this CPU's
    int8 kernels would change the int8 graph's answers (:func:`~fieldlens_core.int8_kernels.int8_kernels`),
    it runs unfused, op by op in float (DequantizeLinear, Conv, QuantizeLinear), which computes
    what exact int8 kernels compute, only slower. So a package written or installed on an AVX2 x86
    machine is checked and measured as a Pi runs it.
    """
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir, variant)
    if package.variant != variant:
        raise ValueError(f"asked for the {variant} variant of a package loaded as {package.variant}")
    options = graph_options(variant, threads, as_written)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")  # never spin between runs
    session = _session(package, options)
    input_name = session.get_inputs()[0].name
    spec = package.card.input
    probe = np.zeros((1, 3, spec.size, spec.size), dtype=np.float32)
    try:
        classes = session.run(None, {input_name: probe})[0].shape[-1]  # also warms the session up
    except Exception as exc:
        raise ModelPackageError(f"model {package.model_path} does not run on a {spec.size}px input: {exc}") from None
    if classes != len(package.labels):
        raise ModelPackageError(f"model outputs {classes} classes but labels.json has {len(package.labels)}")
    batch_axis = session.get_inputs()[0].shape[0]
    return LoadedModel(package, session, input_name, max_batch=batch_axis if isinstance(batch_axis, int) else 64)


def with_narrow_session(model: LoadedModel) -> LoadedModel:
    """``model`` with a one-thread session of its graph beside its own, for runs side by side
    (fieldlens_inference.lanes). For fp32 its weights are not prepacked: measured with the default
    model on one thread of the 2-vCPU Xeon, the second session then adds 10 MB of RSS instead of
    32 MB, for runs 5% slower (7.1 ms against 6.8 ms). int8's kernels need them prepacked (9.9 ms
    a run without, 3.7 ms with), and its weights are a quarter of the size."""
    options = _options(1, model.session.get_session_options().graph_optimization_level)
    if model.package.variant == "fp32":
        options.add_session_config_entry("session.disable_prepacking", "1")
    return replace(model, narrow_session=_session(model.package, options))


_arena_lock = threading.Lock()
_one_arena = False


def share_one_arena() -> None:
    """Every session this process creates from now on allocates from one ONNX Runtime arena (the
    inference service's, whose wide and narrow runs never run at the same time: lanes.py). Measured
    with the default fp32 model, two narrow runs at once beside a wide session then add 29 MB at
    peak instead of 46 MB: they reuse what the wide runs allocated."""
    global _one_arena
    with _arena_lock:
        if not _one_arena:
            cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))
            _one_arena = True


def graph_options(variant: str, threads: int = 0, as_written: bool = False) -> ort.SessionOptions:
    """Session options for a graph of ``variant``; ``as_written``: unfused where this CPU's int8 kernels
    are not exact (:func:`load_model`), for any graph whose answers are checked rather than served."""
    unfused = as_written and variant == "int8" and not int8_kernels().exact
    return _options(
        threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL if unfused else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )


def _options(threads: int, optimization: ort.GraphOptimizationLevel) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = optimization
    if _one_arena:
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def _session(package: ModelPackage, options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(package.model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt graphs
        raise ModelPackageError(f"ONNX Runtime cannot load {package.model_path}: {exc}") from None
