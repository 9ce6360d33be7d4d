"""Backbone embeddings, computed once per image and cached by the image's sha256.

The backbone (EfficientNet-Lite0 without its classifier) is exported to ONNX once and run
with ONNX Runtime, which is several times faster than eager PyTorch on a CPU. Each image is
embedded in a few fixed augmented views (the image, its mirror, two crops, a darker and a
brighter copy), so a small dataset still trains a head that tolerates framing and lighting;
the views are deterministic, so the cache stays valid. A retrain with 50 new images embeds
only those 50.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageEnhance, ImageOps
from tqdm import tqdm

from fieldlens_core.atomic import atomic_write
from fieldlens_core.model import image_tensor, resize_and_crop, to_tensors
from fieldlens_retrain.backbone import FEATURE_DIM, INPUT_SPEC, load_backbone, weights_path
from fieldlens_retrain.finetune import TAP_BLOCK, TAP_NAME, TAP_SHAPE

log = logging.getLogger(__name__)

VIEWS = ("image", "mirror", "crop-left", "crop-right", "darker", "brighter")
BATCH = 32


def views_of(image: Image.Image) -> list[Image.Image]:
    """The :data:`VIEWS` of a decoded RGB image at the model's input size, in that order.

    Four resamplings, not six: the plain view is resized as every request is
    (fieldlens_core.model.resize_and_crop: its embedding is what the served graph sees, which
    evaluate.HeadAnswers relies on), the two crops from their own boxes, the brighter copy from the
    brightened image (brightening clips at white, which resizing after it would blur: 5% of a bright
    photo's pixels came out over 2 levels off); the mirror is the plain view flipped (resampling a
    centred box is mirror-symmetric: the same pixels) and the darker copy is darkened after resizing
    (no clipping: within 2 of 255 levels). The six views' tensors of a 160 px field photo, 2-vCPU AMD
    EPYC VM: 9.5-10.3 ms with a resampling each, 3.3-3.8 ms so."""
    width, height = image.size
    plain = resize_and_crop(image, INPUT_SPEC)
    return [
        plain,
        ImageOps.mirror(plain),
        resize_and_crop(image.crop((0, 0, int(width * 0.85), int(height * 0.85))), INPUT_SPEC),
        resize_and_crop(image.crop((int(width * 0.15), int(height * 0.15), width, height)), INPUT_SPEC),
        ImageEnhance.Brightness(plain).enhance(0.6),
        resize_and_crop(ImageEnhance.Brightness(image).enhance(1.4), INPUT_SPEC),
    ]


INT8_CALIBRATION = "photos-v1"
"""Names the calibration of the cached int8 backbone: the default model's (the bundled photos and
their views, fieldlens_retrain.default_model.calibration_tensors). Change it with that set."""


class FeatureBackbone:
    """The pretrained network up to global pooling, as an ONNX Runtime session.

    The session runs the tapped graph, whose second output is the activation entering the last
    blocks (fieldlens_retrain.finetune.TAP_BLOCK): one pass gives the embedding and what partial
    fine-tuning trains on. ``path`` is the same graph with the pooled features as its only output
    (the one the shared int8 backbone is quantized from, and the one a head is stitched onto)."""

    def __init__(self, cache_dir: Path) -> None:
        import onnxruntime as ort

        self.identity = hashlib.sha256(Path(weights_path()).read_bytes()).hexdigest()[:16]
        self.path = cache_dir / f"backbone-{self.identity}.onnx"  # exported once per backbone identity
        self.tapped_path = cache_dir / f"backbone-{self.identity}.tap{TAP_BLOCK}.onnx"
        if not self.tapped_path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.tapped_path, export_features(tapped=True), durable=False)
        if not self.path.exists():
            atomic_write(self.path, features_only(self.tapped_path.read_bytes()), durable=False)
        self._session = ort.InferenceSession(str(self.tapped_path), providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.both(batch)[0]

    def both(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, 1280), activations (n, 192, 7, 7)) of a batch of model inputs."""
        features, activations = self._session.run(None, {"input": batch})
        return features, activations


def export_features(tapped: bool = False, network: Any = None) -> bytes:
    """``network`` (default: the pretrained backbone) up to global pooling, exported the way every
    model package is; ``tapped``: with the activation entering ``blocks[TAP_BLOCK]`` as a second
    output."""
    import torch

    from fieldlens_retrain.packaging import INPUT_NAME, OUTPUT_NAME, export_graph

    model = network if network is not None else load_backbone()

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> Any:
            net = self.net
            x = net._swish(net._bn0(net._conv_stem(x)))
            for block in net._blocks[:TAP_BLOCK]:
                x = block(x)
            tap = x
            for block in net._blocks[TAP_BLOCK:]:
                x = block(x)
            pooled: torch.Tensor = net._avg_pooling(net._swish(net._bn1(net._conv_head(x)))).flatten(1)
            return (pooled, tap) if tapped else pooled

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "features.onnx"
        outputs = (OUTPUT_NAME, TAP_NAME) if tapped else (OUTPUT_NAME,)
        export_graph(Features().eval(), path, (3, INPUT_SPEC.size, INPUT_SPEC.size), INPUT_NAME, outputs)
        return path.read_bytes()


def features_only(tapped: bytes) -> bytes:
    """The tapped graph without its activation output: the features graph, node for node (the tap
    is an intermediate value the features need anyway, so nothing else changes)."""
    import onnx

    model = onnx.load_from_string(tapped)
    kept = [output for output in model.graph.output if output.name != TAP_NAME]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    serialized: bytes = model.SerializeToString()
    return serialized


class EmbeddingCache:
    """sha256 -> (views, 1280) float16 array, one .npy file each under ``cache_dir``; and beside it
    (``activations=True``, the default) sha256 -> (views, 192, 7, 7) float16, the activation entering
    the last blocks, from the same backbone pass (fieldlens_retrain.finetune: about 113 KB an image)."""

    def __init__(self, cache_dir: Path, activations: bool = True) -> None:
        self._backbone: FeatureBackbone | None = None
        self._cache_dir = cache_dir
        self._keep_activations = activations
        self.computed = 0
        self.reused = 0

    def _path(self, sha256: str) -> Path:
        backbone = self._ensure_backbone()
        return self._cache_dir / backbone.identity / sha256[:2] / f"{sha256}.npy"

    def _activation_path(self, sha256: str) -> Path:
        backbone = self._ensure_backbone()
        return self._cache_dir / backbone.identity / f"tap{TAP_BLOCK}" / sha256[:2] / f"{sha256}.npy"

    def activations(self, shas: Sequence[str]) -> np.ndarray:
        """(n, views, 192, 7, 7) float16 activations of images :meth:`embed` has seen with
        ``activations=True``."""
        if not shas:
            return np.zeros((0, len(VIEWS), *TAP_SHAPE), np.float16)
        return np.stack([np.load(self._activation_path(sha)) for sha in shas])

    def int8_backbone(self) -> Path:
        """The backbone's int8 graph (U8S8, as a package's), quantized once per backbone identity
        and calibration: every candidate's int8 graph is it with the candidate's head stitched on
        (packaging.stitch_head). Calibrated on the default model's photo views, not on a dataset's
        images, so that it does not depend on what is being trained; the candidate's int8 graph is
        measured against its fp32 graph on the validation images (its card's int8 agreement)."""
        from fieldlens_retrain.default_model import calibration_tensors
        from fieldlens_retrain.packaging import quantize_int8

        backbone = self._ensure_backbone()  # the one the embeddings came from: its identity and graph
        path = self._cache_dir / f"backbone-{backbone.identity}.int8-{INT8_CALIBRATION}.onnx"
        if not path.exists():
            log.info("quantizing the backbone once (its int8 graph is reused by every candidate)")
            partial = path.with_name(f".{path.name}.partial")
            quantize_int8(backbone.path, partial, calibration_tensors())
            partial.replace(path)
        return path

    def int8_features(self, items: Sequence[tuple[str, Path]]) -> np.ndarray:
        """(n, 1280) float32: the shared int8 backbone's (:meth:`int8_backbone`) pooled features of
        each (sha256, path) image as the inference service decodes it (fieldlens_core.model.preprocess),
        run as written (as a Pi runs it), computed once per image. A frozen candidate's int8 graph is
        this backbone with the candidate's head after it, so its int8 answers are its head on these
        (evaluate.HeadAnswers): on an x86 CPU without VNNI the graph runs op by op in float, 37 ms an
        image on two AMD EPYC cores, which the int8 check of every retrain paid again for 64 images.

        Kept by what decides them: the int8 graph's bytes (rebuilt, it is another graph), ONNX
        Runtime's version and whether this CPU's int8 kernels are exact (both decide the arithmetic),
        and Pillow's (the decode)."""
        import onnxruntime as ort

        from fieldlens_core.int8_kernels import int8_kernels
        from fieldlens_core.model import graph_options, preprocess

        graph = self.int8_backbone()
        decided_by = [
            hashlib.sha256(graph.read_bytes()).hexdigest()[:16],
            ort.__version__,
            str(int8_kernels().exact),
            PIL.__version__,
        ]
        sessions: list[Any] = []  # made at the first image not cached, once

        def run(chosen: list[int]) -> np.ndarray:
            if not sessions:
                options = graph_options("int8", as_written=True)
                sessions.append(ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"]))
            batch = np.concatenate([preprocess(items[i][1].read_bytes(), INPUT_SPEC) for i in chosen])
            features: np.ndarray = sessions[0].run(None, {"input": batch})[0]
            return features

        return self._cached_rows("int8", decided_by, items, run)

    def torch_features(self, items: Sequence[tuple[str, Path]]) -> tuple[list[np.ndarray], np.ndarray]:
        """Each (sha256, path) image's model input as the embedding decodes it (Image.open: any image
        a dataset holds), and (n, 1280) float32, the pretrained backbone's pooled features of it in
        torch (what the network's head reads), computed once per image. A frozen candidate's network
        is this backbone with the candidate's head after it, so the export check's torch logits are
        its head on these (packaging.write_package's ``torch_check``): loading the network and
        running it on the check's images took 0.4 s of every incremental retrain on two AMD EPYC
        cores. Kept by torch's and Pillow's versions (the backbone's weights name the folder)."""
        import torch

        inputs = [image_tensor(Image.open(path), INPUT_SPEC) for _, path in items]
        networks: list[Any] = []  # loaded at the first image not cached, once

        def run(chosen: list[int]) -> np.ndarray:
            if not networks:
                networks.append(load_backbone())
            net = networks[0]
            batch = torch.from_numpy(np.concatenate([inputs[i] for i in chosen]))
            with torch.no_grad():  # EfficientNet.forward up to its classifier (dropout is off in eval)
                return np.asarray(net._avg_pooling(net.extract_features(batch)).flatten(1).numpy())

        return inputs, self._cached_rows("torch", [torch.__version__, PIL.__version__], items, run)

    def _cached_rows(
        self,
        kind: str,
        decided_by: Sequence[str],
        items: Sequence[tuple[str, Path]],
        compute: Callable[[list[int]], np.ndarray],
    ) -> np.ndarray:
        """(n, 1280) float32 rows of the (sha256, path) ``items``, each computed once: kept under a
        folder named by ``kind`` and a key of ``decided_by`` (what decides the rows besides the
        backbone); ``compute`` gives the rows of the missing ones (their indices), :data:`BATCH` at a time."""
        key = hashlib.sha256("/".join(decided_by).encode()).hexdigest()[:16]
        folder = self._cache_dir / self._ensure_backbone().identity / f"{kind}-{key}"
        paths = [folder / sha256[:2] / f"{sha256}.npy" for sha256, _ in items]
        missing = [i for i, path in enumerate(paths) if not path.exists()]
        for start in range(0, len(missing), BATCH):
            chosen = missing[start : start + BATCH]
            for i, row in zip(chosen, compute(chosen), strict=True):
                _save(paths[i], row.astype(np.float32))
        if not paths:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return np.stack([np.load(path) for path in paths])

    def fp32_backbone(self) -> Path:
        """The backbone's fp32 graph up to its pooled features: the one the embeddings came from, and
        the body of a frozen candidate's fp32 graph (packaging.stitch_head)."""
        return self._ensure_backbone().path

    def _ensure_backbone(self) -> FeatureBackbone:
        if self._backbone is None:
            self._backbone = FeatureBackbone(self._cache_dir)
        return self._backbone

    def embed(
        self, items: Sequence[tuple[str, Path]], progress: bool = True, activations: bool = False
    ) -> dict[str, np.ndarray]:
        """Embeddings of (sha256, image path) items; computes only the ones not cached yet (with
        ``activations``, also the ones whose activation is not: an image embedded by a cache made
        with ``activations=False``, or before activations were cached)."""
        result: dict[str, np.ndarray] = {}
        missing: list[tuple[str, Path]] = []
        for sha256, path in items:
            cached = self._path(sha256)
            if cached.exists() and not (activations and not self._activation_path(sha256).exists()):
                result[sha256] = np.load(cached)
                self.reused += 1
            else:
                missing.append((sha256, path))
        backbone = self._ensure_backbone()
        per_batch = max(1, BATCH // len(VIEWS))
        bar = tqdm(total=len(missing), desc="embedding", unit="image", disable=None if progress else True)
        started, in_backbone = time.perf_counter(), 0.0
        for start in range(0, len(missing), per_batch):
            chunk = missing[start : start + per_batch]
            views = [view for _, path in chunk for view in views_of(Image.open(path).convert("RGB"))]
            batch = to_tensors(views, INPUT_SPEC)
            ran = time.perf_counter()
            features, taps = backbone.both(batch)
            in_backbone += time.perf_counter() - ran
            features = features.reshape(len(chunk), len(VIEWS), FEATURE_DIM)
            taps = taps.reshape(len(chunk), len(VIEWS), *TAP_SHAPE)
            for (sha256, _), vectors, tap in zip(chunk, features, taps, strict=True):
                stored = vectors.astype(np.float16)
                _save(self._path(sha256), stored)
                if self._keep_activations or activations:
                    _save(self._activation_path(sha256), tap.astype(np.float16))
                result[sha256] = stored
                self.computed += 1
            bar.update(len(chunk))
        bar.close()
        if missing or self.reused:
            log.info("embedded %d new images, %d from the cache", len(missing), len(result) - len(missing))
        if missing:  # where an embedding's time goes: the backbone, or decoding, views and the cache's files
            seconds = time.perf_counter() - started
            log.info(
                "embedding took %.1f s: the backbone %.1f s (%.0f views/s), the rest %.1f s",
                seconds,
                in_backbone,
                len(missing) * len(VIEWS) / max(in_backbone, 1e-9),
                seconds - in_backbone,
            )
        return result


def _save(target: Path, array: np.ndarray) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(target, buffer.getvalue(), durable=False)


def stack(embeddings: dict[str, Any], shas: Sequence[str], views: bool) -> np.ndarray:
    """(n * views or n, 1280) float32: every view for training, the plain image for evaluation."""
    if views:
        return np.concatenate([embeddings[s] for s in shas]).astype(np.float32)
    return np.stack([embeddings[s][0] for s in shas]).astype(np.float32)
