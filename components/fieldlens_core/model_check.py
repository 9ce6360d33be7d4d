"""The one check a model package passes before it becomes current anywhere.

Hashes alone let a package through that the service cannot run: a card claiming 160 px for
a 224 px graph, or 3,000,000 labels for 3 outputs, installed with exit 0, and the device then
failed at its next restart. :func:`check_package` runs everything the service will, on every
variant the card lists (or on those asked for):

- every file the card lists matches its sha256;
- labels are bounded in number and length, unique, without control characters
  (:func:`~fieldlens_core.model_package.read_labels`);
- each graph loads in ONNX Runtime, takes one float tensor of 3 x size x size (the card's
  input) and gives ``num_classes`` outputs, and runs on a probe of that size;
- the known answer: each variant's top-1 for ``reference.png`` is the label ``reference.json``
  expects, its confidence within :data:`REFERENCE_TOLERANCE` (the writer computed both with
  the same preprocess and ONNX Runtime, the int8 graph as written; the tolerance absorbs
  another CPU's arithmetic). Served on a CPU whose int8 kernels saturate, the int8 graph may
  fail it: the hint then says so (:mod:`fieldlens_core.int8_kernels`).

`fieldlens model install`, the labelling page's Install (both through
:func:`~fieldlens_core.model_install.install_package`), the inference service's every load
and hot reload, `fieldlens build` and the fieldlens.Model component's Startup step on each
device (``python -m fieldlens_core.model_check DIR``, which fails the step and so rolls the
deployment back) all call this function. ONNX Runtime is imported only when a check runs, so
the CLI modules that import this one start as fast as before.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldlens_core.errors import ModelPackageError
from fieldlens_core.int8_kernels import int8_kernels
from fieldlens_core.model_package import (
    LABELS_FILE,
    REFERENCE_FILE,
    ModelCard,
    Reference,
    read_card,
    read_reference,
    resolve_package_dir,
    verify_files,
)

if TYPE_CHECKING:
    from fieldlens_core.model import LoadedModel

log = logging.getLogger(__name__)

REFERENCE_TOLERANCE = 0.05
"""How far the reference image's top-1 confidence may move from the writer's (another CPU, another build)."""
REFERENCE_IMAGE = "reference.png"
"""PNG, not JPEG: a lossless image decodes to the same pixels with any libpng, so only arithmetic differs."""
GRAPH_HINT = (
    "The graph and its card disagree: write the package again (fieldlens retrain, or model build-default) "
    "instead of editing model_card.json or replacing a graph. The current model stays"
)
REFERENCE_HINT = (
    "This graph does not compute what the package was written with (a replaced graph, or a runtime that "
    "computes it differently). The current model stays"
)


@dataclass(frozen=True)
class CheckedPackage:
    """A package that passed: its directory (``current`` resolved), card, and each checked variant loaded."""

    directory: Path
    card: ModelCard
    models: dict[str, LoadedModel]
    reference: Reference | None


def check_package(
    model_dir: Path,
    variants: Sequence[str] | None = None,
    *,
    require_reference: bool = False,
    threads: int = 0,
    spinning: bool = True,
) -> CheckedPackage:
    """Check the package at ``model_dir`` (a package, or a directory whose ``current`` points at one).

    ``variants`` None checks every variant and every listed file (install, build, the device),
    each graph as written (``load_model``'s ``as_written``: an x86 CPU whose int8 kernels saturate
    checks the int8 graph as a Pi computes it); the service names the variants it may serve and
    gets them back loaded as it serves them, so the check and the load are one session.
    ``require_reference`` refuses a package without a known answer (the device's check: every
    package `fieldlens build` ships has one). ModelPackageError with the reason and a hint when
    anything fails.
    """
    from fieldlens_core.model import load_model

    package_dir = resolve_package_dir(model_dir)
    card = read_card(package_dir)
    chosen = list(card.variants) if variants is None else list(variants)
    unknown = [v for v in chosen if v not in card.variants]
    if unknown:
        raise ModelPackageError(
            f"model {card.name} {card.version} has no {unknown[0]!r} variant ({sorted(card.variants)})"
        )
    loaded = {card.variants[v] for v in chosen} | {LABELS_FILE}  # load_package hashes these itself
    listed = set(card.files)
    verify_files(package_dir, card, listed - loaded if variants is None else {REFERENCE_FILE} & listed)
    reference = read_reference(package_dir, card)
    if reference is not None and variants is not None:
        verify_files(package_dir, card, {reference.image})
    if reference is None and require_reference:
        raise ModelPackageError(
            f"model {card.name} {card.version} has no known answer ({REFERENCE_FILE} and its image)",
            "Write the package again with this version of fieldlens (fieldlens retrain, or model build-default): "
            "the device checks the package against it before serving it",
        )
    models: dict[str, LoadedModel] = {}
    for variant in chosen:
        try:  # checking every variant (none served): each graph as written, whatever this CPU's int8 kernels do
            model = load_model(package_dir, variant, threads, spinning, as_written=variants is None)
        except ModelPackageError as exc:
            raise _explained(package_dir, card, variant, exc) from None
        problem = shape_problem(model.session.get_inputs(), model.session.get_outputs(), card)
        if problem:
            raise ModelPackageError(f"{card.variants[variant]} {problem}", GRAPH_HINT)
        if reference is not None:
            check_reference(model, package_dir, reference)
        models[variant] = model
    return CheckedPackage(package_dir, card, models, reference)


def shape_problem(inputs: Sequence[Any], outputs: Sequence[Any], card: ModelCard) -> str | None:
    """What the graph's declared input and output (ONNX Runtime's NodeArg) contradict in the card, or None.

    A named (dynamic) axis agrees with anything; the probe run decides for those.
    """
    size = card.input.size
    if len(inputs) != 1:
        return f"takes {len(inputs)} inputs; a package's graph takes one image tensor"
    if inputs[0].type != "tensor(float)":
        return f"takes a {inputs[0].type} input; the card's preprocessing gives tensor(float)"
    shape = list(inputs[0].shape)
    if len(shape) != 4:
        return f"takes a {len(shape)}-axis input; the card's preprocessing gives 4 (N x 3 x {size} x {size})"
    for axis, want in ((1, 3), (2, size), (3, size)):
        if isinstance(shape[axis], int) and shape[axis] != want:
            declared = "x".join(str(d) if isinstance(d, int) else "N" for d in shape)
            return f"takes {declared} images but the card's input is {size} px (input.size: 3x{size}x{size})"
    if not outputs:
        return "has no output"
    out = list(outputs[0].shape)
    if len(out) != 2:
        return f"gives a {len(out)}-axis output; a classifier gives N x {card.num_classes} logits"
    if isinstance(out[1], int) and out[1] != card.num_classes:
        return f"gives {out[1]} classes but the card says {card.num_classes} (num_classes, labels.json)"
    return None


def _explained(package_dir: Path, card: ModelCard, variant: str, failure: ModelPackageError) -> ModelPackageError:
    """``failure`` (the load or its probe run) said plainly: the graph's declared shapes against the card."""
    if failure.hint is not None or "sha256" in failure.message or " is missing " in failure.message:
        return failure  # a hash, a missing file or the labels: already the reason
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(package_dir / card.variants[variant]), providers=["CPUExecutionProvider"])
        problem = shape_problem(session.get_inputs(), session.get_outputs(), card)
    except Exception:  # the graph does not load at all: the original message says so
        problem = None
    message = failure.message if problem is None else f"{card.variants[variant]} {problem}"
    return ModelPackageError(message, GRAPH_HINT)


def top_two(model: LoadedModel, image: bytes, content_type: str) -> tuple[str, float, float]:
    """The top-1 label and confidence for ``image``, and the top-2's confidence (0 with one class)."""
    from fieldlens_core.model import BadImageError

    try:
        predictions = model.classify(image, 2, content_type).predictions
    except BadImageError as exc:
        raise ModelPackageError(f"the reference image does not decode: {exc}") from None
    second = predictions[1].confidence if len(predictions) > 1 else 0.0
    return predictions[0].label, predictions[0].confidence, second


def check_reference(model: LoadedModel, package_dir: Path, reference: Reference) -> None:
    """The model's top-1 for the reference image is the expected label, its confidence within the tolerance."""
    variant = model.package.variant
    expected = reference.expected[variant]
    label, confidence, _ = top_two(model, (package_dir / reference.image).read_bytes(), reference.content_type)
    if label != expected.label or abs(confidence - expected.confidence) > REFERENCE_TOLERANCE:
        kernels = int8_kernels()
        raise ModelPackageError(
            f"{model.package.model_path.name} answers the reference image {label!r} at {confidence:.3f}; "
            f"the package expects {expected.label!r} at {expected.confidence:.3f} "
            f"(confidence within {REFERENCE_TOLERANCE})",
            f"On this CPU ({kernels.reason}) the int8 graph answers otherwise: serve fp32 (modelVariant auto "
            "chooses it here). The current model stays"
            if variant == "int8" and not kernels.exact
            else REFERENCE_HINT,
        )


def reference_answers(models: Mapping[str, LoadedModel], image: bytes, content_type: str) -> tuple[Reference, float]:
    """The known answer each variant gives for ``image`` (what reference.json records), and its margin.

    The margin is the smallest gap between a variant's top-1 and top-2 confidence: the writer
    picks the image with the widest one, so that another CPU's rounding cannot swap the top-1.
    """
    expected: dict[str, dict[str, Any]] = {}
    margin = 1.0
    for variant, model in models.items():
        label, confidence, second = top_two(model, image, content_type)
        expected[variant] = {"label": label, "confidence": round(confidence, 6)}
        margin = min(margin, confidence - second)
    reference = Reference.model_validate({"image": REFERENCE_IMAGE, "content_type": content_type, "expected": expected})
    return reference, margin


def write_reference(package_dir: Path, image: bytes, reference: Reference) -> None:
    """Write the reference image and reference.json into a package being written (its card is written after)."""
    (package_dir / reference.image).write_bytes(image)
    (package_dir / REFERENCE_FILE).write_text(reference.model_dump_json(indent=2))


def main(argv: list[str] | None = None) -> int:
    """``python -m fieldlens_core.model_check DIR``: exit 0 when the package passes, non-zero with the reason.

    The fieldlens.Model component's Startup step: a non-zero exit fails the step, and with the
    deployment's ROLLBACK failure handling Greengrass puts the device's previous model back.
    """
    from fieldlens_core.lifecycle import configure_logging, startup_failure

    parser = argparse.ArgumentParser(
        prog="python -m fieldlens_core.model_check", description="Check a model package as the device serves it."
    )
    parser.add_argument("package", type=Path, help="a model package directory (or one with a `current` link)")
    parser.add_argument("--variant", action="append", choices=["fp32", "int8"], help="check only these variants")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        checked = check_package(args.package, args.variant, require_reference=True, threads=1)
    except ModelPackageError as exc:
        return startup_failure(log, exc)
    card = checked.card
    for variant, model in checked.models.items():
        log.info(
            "%s passes: %d classes at %d px; reference answer %s",
            card.variants[variant],
            len(model.labels),
            card.input.size,
            checked.reference.expected[variant].label if checked.reference else None,
        )
    log.info("model %s %s passed its checks", card.name, card.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
